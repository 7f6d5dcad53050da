"""``FramePipeline`` in sequential mode, on the shipped model and frames of the shipped drive.

Sequential decisions are compared with fixed-n certification (n = 500) of the same frames: where
the fixed radius is far above ``r_required`` the sequential mode certifies it with fewer samples,
where the fixed certificate is far below it (an abstention, a weak vote) it stops as
``unreachable``. Noise is seeded, so the outcomes are reproducible.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest

from robust_monitor.assets import DEFAULT_MODEL, SAMPLE_DRIVE
from robust_monitor.core.arbiter.policy import ArbiterPolicy, EvidenceLevel
from robust_monitor.core.certify.certificate import ABSTAIN, Certificate
from robust_monitor.core.certify.sequential import (
    DECISIONS,
    FIRST_LOOK_SHARE,
    max_certifiable_radius,
    min_unanimous_n,
    required_p,
)
from robust_monitor.core.certify.stats import clopper_pearson_lower, radius_from_p_lower
from robust_monitor.core.errors import ConfigError
from robust_monitor.core.pipeline import (
    DEFAULT_MAX_N,
    CertifyConfig,
    FramePipeline,
    FrameResult,
    default_r_required,
    verifiable,
)
from robust_monitor.tools.recordings import iter_frames

SIGMA = 0.25  # the shipped model's
R_REQUIRED = default_r_required()
MAX_N = 2_000  # radius cap 0.63 at alpha 0.001: room above r_required, a bounded worst case
CLEAR = (0, 45, 105)
"""Drive frames fixed-n certifies with every vote (radius at the n = 500 cap, 0.55)."""
HARD = (150, 300)
"""A weak vote (387 of 500, radius 0.14) and an abstention (237 of 500)."""


@pytest.fixture(scope="module")
def frames() -> dict[int, tuple[np.ndarray, float]]:
    wanted = set(CLEAR + HARD)
    out = {}
    for frame in itertools.islice(iter_frames(SAMPLE_DRIVE / "roadside_drive"), max(wanted) + 1):
        if frame.index in wanted:
            out[frame.index] = (frame.image, frame.stamp_s)
    return out


def pipeline(**certify: object) -> FramePipeline:
    config = CertifyConfig(providers="cpu", seed=7, **certify)  # type: ignore[arg-type]
    p = FramePipeline(DEFAULT_MODEL, config, calibration=None)
    p.warmup()
    return p


@pytest.fixture(scope="module")
def fixed() -> FramePipeline:
    return pipeline()


@pytest.fixture(scope="module")
def sequential() -> FramePipeline:
    return pipeline(mode="sequential", max_n=MAX_N)


# --- configuration --------------------------------------------------------------------------------
def test_fixed_mode_defaults_are_unchanged() -> None:
    c = CertifyConfig()
    assert (c.n0, c.n, c.alpha, c.batch_size, c.providers, c.sigma) == (
        64,
        500,
        0.001,
        500,
        "auto",
        None,
    )
    assert (c.mode, c.r_required, c.budget_ms, c.max_n) == ("fixed", None, None, DEFAULT_MAX_N)
    assert not c.sequential


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "adaptive"}, "mode must be one of"),
        ({"mode": ""}, "mode must be one of"),
        ({"r_required": -0.1}, "r_required"),
        ({"r_required": math.nan}, "r_required"),
        ({"r_required": math.inf}, "r_required"),
        ({"r_required": True}, "r_required"),
        ({"budget_ms": 0.0}, "budget_ms"),
        ({"budget_ms": -5.0}, "budget_ms"),
        ({"budget_ms": math.nan}, "budget_ms"),
        ({"max_n": 0}, "max_n"),
        ({"max_n": 1.5}, "max_n"),
        ({"max_n": True}, "max_n"),
    ],
)
def test_invalid_sequential_settings_raise_config_error(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CertifyConfig(**{"mode": "sequential", **change})
    with pytest.raises(ConfigError, match=message):  # checked in fixed mode too
        CertifyConfig(**{"mode": "fixed", **change})


def test_an_unreachable_r_required_is_refused_at_construction() -> None:
    assert max_certifiable_radius(SIGMA, 0.001, 50, FIRST_LOOK_SHARE) < R_REQUIRED
    with pytest.raises(ConfigError, match="cannot be certified with max_n=50"):
        FramePipeline(
            DEFAULT_MODEL, CertifyConfig(mode="sequential", max_n=50), calibration=None
        )  # the default r_required 0.3 needs 60 unanimous samples (in the first look)
    with pytest.raises(ConfigError, match="raise max_n or lower r_required"):
        FramePipeline(
            DEFAULT_MODEL,
            CertifyConfig(mode="sequential", r_required=0.9, providers="cpu"),
            calibration=None,
        )
    # Fixed mode never looks at the sequential fields.
    FramePipeline(DEFAULT_MODEL, CertifyConfig(max_n=60, r_required=0.9), calibration=None)


def test_the_default_r_required_is_healthy_in_every_arbiter_state() -> None:
    policy = ArbiterPolicy()
    assert default_r_required() == policy.r_recover == default_r_required(policy)
    custom = ArbiterPolicy(degraded_exit_radius_l2=0.4)
    assert default_r_required(custom) == 0.4
    # Why not r_required: a radius just above it keeps NOMINAL but never leaves DEGRADED.
    just_above = policy.r_required + 0.005
    assert policy.radius_level(just_above, EvidenceLevel.HEALTHY) is EvidenceLevel.HEALTHY
    assert policy.radius_level(just_above, EvidenceLevel.DEGRADED) is EvidenceLevel.DEGRADED
    for level in EvidenceLevel:
        assert policy.radius_level(R_REQUIRED, level) is EvidenceLevel.HEALTHY


# --- decisions against fixed-n certification ------------------------------------------------------
def test_clear_frames_are_certified_with_fewer_samples_and_the_same_class(
    frames: dict[int, tuple[np.ndarray, float]], fixed: FramePipeline, sequential: FramePipeline
) -> None:
    unanimous = min_unanimous_n(0.001, required_p(R_REQUIRED, SIGMA), MAX_N)
    for index in CLEAR:
        image, stamp_s = frames[index]
        ref = fixed.process(image, stamp_s).certificate
        assert ref.radius > R_REQUIRED + 0.1, (index, ref)
        result = sequential.process(image, stamp_s)
        cert = result.certificate
        assert (result.mode, result.decision, result.r_required) == (
            "sequential",
            "certified",
            R_REQUIRED,
        )
        assert cert.label == ref.label and cert.label_name == ref.label_name
        assert cert.radius >= R_REQUIRED
        assert cert.n < ref.n and cert.n <= unanimous + 1, (index, cert.n)
        assert result.looks == 1 and result.samples == cert.n0 + cert.n
        assert cert.p_lower <= clopper_pearson_lower(cert.count, cert.n, cert.alpha)
        assert result.verdict is not None and result.clean_logits.shape == (
            fixed.engine.spec.num_classes,
        )


def test_frames_far_below_r_required_stop_as_unreachable(
    frames: dict[int, tuple[np.ndarray, float]], fixed: FramePipeline
) -> None:
    unbanded = pipeline(mode="sequential", max_n=MAX_N, bands=())
    for index in HARD:
        image, stamp_s = frames[index]
        ref = fixed.process(image, stamp_s).certificate
        assert ref.radius < R_REQUIRED - 0.1, (index, ref)
        result = unbanded.process(image, stamp_s)
        assert result.decision == "unreachable", (index, result.decision, result.certificate)
        assert result.certificate.radius < R_REQUIRED
        assert result.certificate.n < MAX_N


def test_by_default_every_arbiter_threshold_is_decided() -> None:
    policy = ArbiterPolicy()
    assert policy.radius_thresholds == (0.10, 0.15, 0.25, 0.30)
    assert CertifyConfig(mode="sequential").sequential_config().bands == policy.radius_thresholds
    assert CertifyConfig(mode="sequential", bands=(0.2,)).sequential_config().bands == (0.2,)


def test_a_weak_frame_samples_on_until_its_arbiter_level_is_decided(
    frames: dict[int, tuple[np.ndarray, float]], sequential: FramePipeline
) -> None:
    """Frame 300 (an abstention at n = 500) is shown below every threshold, so the arbiter
    gets handover-level evidence, as from an exact radius; without the bands it stops as soon
    as r_required is out of reach."""
    unbanded = pipeline(mode="sequential", max_n=MAX_N, bands=())
    image, stamp_s = frames[HARD[1]]
    banded = sequential.process(image, stamp_s)
    quick = unbanded.process(image, stamp_s)
    assert banded.decision == quick.decision == "unreachable"
    assert banded.certificate.n >= quick.certificate.n
    # "unreachable" with bands means every band was decided; not certified at the lowest,
    # so the frame was shown below the handover threshold.
    assert banded.certificate.radius < ArbiterPolicy().handover_enter_radius_l2


def test_fixed_mode_results_carry_no_sequential_details(
    frames: dict[int, tuple[np.ndarray, float]], fixed: FramePipeline
) -> None:
    result = fixed.process(*frames[CLEAR[0]])
    assert (result.mode, result.decision, result.looks, result.r_required) == (
        "fixed",
        None,
        0,
        None,
    )
    assert result.certificate.n == 500 and result.samples == 564


# --- the budget -----------------------------------------------------------------------------------
def test_a_budget_spent_in_selection_gives_an_abstention_with_a_verdict(
    frames: dict[int, tuple[np.ndarray, float]],
) -> None:
    p = pipeline(mode="sequential", budget_ms=1e-3)
    result = p.process(*frames[CLEAR[0]])
    cert = result.certificate
    assert result.decision == "budget" and result.looks == 0
    assert (cert.n, cert.count, cert.label, cert.radius, cert.abstained) == (
        0,
        0,
        ABSTAIN,
        0.0,
        True,
    )
    assert result.verdict is not None


def test_a_budget_stops_a_frame_that_would_need_far_more_samples(
    frames: dict[int, tuple[np.ndarray, float]],
) -> None:
    # r_required 0.9 = 3.6 sigma: even unanimous votes need ~4 x 10^4 samples, far beyond 40 ms.
    # (max_n stays within the CPU generator's cap on samples per frame, 174,762 at 3x64x64.)
    budget_ms, max_n = 40.0, 150_000
    p = pipeline(mode="sequential", r_required=0.9, budget_ms=budget_ms, max_n=max_n)
    result = p.process(*frames[CLEAR[1]])
    assert result.decision == "budget"
    assert result.certificate.n < min_unanimous_n(0.001, required_p(0.9, SIGMA), max_n)
    # Loose: a look is sized to the time left, so the overrun is about one look at most.
    assert result.certificate.latency_ms < budget_ms + 2_000.0


def test_warmup_measures_the_quickest_certification(
    fixed: FramePipeline, sequential: FramePipeline
) -> None:
    assert fixed.quickest_certify_ms is None
    assert sequential.quickest_certify_ms is not None and sequential.quickest_certify_ms > 0


def test_every_decision_is_a_known_one(
    frames: dict[int, tuple[np.ndarray, float]], sequential: FramePipeline
) -> None:
    for image, stamp_s in frames.values():
        assert sequential.process(image, stamp_s).decision in DECISIONS


# --- the published certificate is checkable from its counts ---------------------------------------
def _cert(p_lower: float, count: int = 400, n: int = 500) -> Certificate:
    return Certificate(
        label=3,
        p_lower=p_lower,
        radius=radius_from_p_lower(p_lower, SIGMA),
        n0=64,
        n=n,
        alpha=0.001,
        sigma=SIGMA,
        abstained=False,
        provider="cpu",
        latency_ms=1.0,
        count=count,
        label_name="stop",
    )


def test_verifiable_lowers_only_a_bound_its_counts_do_not_support() -> None:
    bound = clopper_pearson_lower(400, 500, 0.001)
    below = _cert(bound - 0.01)
    assert verifiable(below, "abstain") is below
    lowered = verifiable(_cert(bound + 0.05), "abstain")
    assert lowered.p_lower == bound and lowered.radius == radius_from_p_lower(bound, SIGMA)
    assert (lowered.label, lowered.abstained) == (3, False)
    # Lowered under 1/2: an abstention.
    weak = verifiable(_cert(0.9, count=260, n=500), "abstain")
    assert weak.abstained and weak.label == ABSTAIN and weak.radius == 0.0
    assert weak.label_name == "abstain"
    empty = replace(_cert(0.0, count=0, n=0), abstained=True, label=ABSTAIN, radius=0.0)
    assert verifiable(empty, "abstain") is empty


def test_frame_results_built_positionally_keep_working() -> None:
    cert = _cert(0.9)
    result = FrameResult(1.0, cert, None, np.zeros(3), None)  # type: ignore[arg-type]
    assert result.mode == "fixed" and result.decision is None and result.samples == 564
