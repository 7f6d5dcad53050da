"""Sequential (anytime-valid) certification, against closed forms and by error rates over trials.

The soundness tests use the two-class linear model of ``conftest.py``: at ``x(t)`` the smoothed
probability is ``Phi(t / sigma)`` and the true radius is ``t``. They run at a large alpha (0.1)
and with 20 looks per frame, so that the same test catches a procedure that is *not* valid
under optional stopping: ``test_naive_repeated_clopper_pearson_exceeds_alpha`` runs such a
procedure in the same setting and shows the check failing for it.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy.special import betaln
from scipy.stats import beta, binom, binomtest, norm

from robust_monitor.core.certify.engine import SmoothingEngine
from robust_monitor.core.certify.sequential import (
    DECISIONS,
    FIRST_LOOK,
    FIRST_LOOK_SHARE,
    ConfidenceSequence,
    SequentialConfig,
    certify_sequential,
    first_look_size,
    max_certifiable_radius,
    min_unanimous_cp_n,
    min_unanimous_n,
    mixture_bounds,
    mixture_bounds_array,
    required_p,
)
from robust_monitor.core.certify.stats import (
    certify_from_counts,
    clopper_pearson_lower,
    radius_from_p_lower,
    select_clean,
)
from robust_monitor.core.errors import ConfigError, ModelError
from robust_monitor.tools.reference_models import linear_truth

SIGMA = 0.25
R_REQUIRED = 0.25  # Phi(1) = 0.841: a threshold p_A meets at moderate sample sizes
LOOSE_ALPHA = 0.1  # large, so that an invalid procedure's excess shows in a few hundred trials
LOOKS, LOOK_SIZE, N0 = 20, 100, 64
BELOW, ABOVE = 0.98, 1.02  # true radius t = fraction * r_required
BANDS = (0.5 * R_REQUIRED, 0.9 * R_REQUIRED)  # lower thresholds, as the arbiter's


def not_significantly_above(errors: int, trials: int, alpha: float) -> bool:
    """One-sided binomial test of H0 'error rate <= alpha' at the 1% level (True = pass)."""
    return bool(binomtest(errors, trials, alpha, alternative="greater").pvalue > 0.01)


@pytest.fixture(scope="module")
def engine(linear_setup) -> SmoothingEngine:
    return SmoothingEngine(linear_setup.path, SIGMA, batch_size=5000, seed=2406)


# -- the confidence sequence, pure ----------------------------------------------------------------
def test_uniform_prior_bounds_have_a_closed_form_when_every_vote_agrees() -> None:
    # Beta(1, 1): marginal likelihood 1/(n+1), so the set ends where p^n = alpha / (n + 1).
    for n, alpha in [(10, 0.05), (1000, 0.001), (50_000, 1e-6)]:
        p_lower, p_upper = mixture_bounds(n, n, alpha, a=1.0, b=1.0)
        assert p_upper == 1.0
        assert p_lower == pytest.approx((alpha / (n + 1)) ** (1 / n), rel=1e-12, abs=1e-15)
        assert p_lower <= (alpha / (n + 1)) ** (1 / n) + 1e-15  # rounded outward
        p_lower, p_upper = mixture_bounds(0, n, alpha, a=1.0, b=1.0)
        assert p_lower == 0.0
        assert p_upper == pytest.approx(1 - (alpha / (n + 1)) ** (1 / n), rel=1e-9)


def test_bounds_contain_the_estimate_and_are_wider_than_one_clopper_pearson_interval() -> None:
    for n in (1, 7, 100, 2000):
        for count in sorted({0, 1, n // 3, n // 2, n - 1, n} & set(range(n + 1))):
            p_lower, p_upper = mixture_bounds(count, n, 0.01)
            assert 0.0 <= p_lower <= count / n <= p_upper <= 1.0
            # The price of anytime validity: never tighter than the fixed-n bound at one level.
            assert p_lower <= clopper_pearson_lower(count, n, 0.01) + 1e-12
            # A smaller alpha gives a wider interval.
            lo2, hi2 = mixture_bounds(count, n, 0.001)
            assert lo2 <= p_lower and hi2 >= p_upper
    assert mixture_bounds(0, 0, 0.01) == (0.0, 1.0)


def test_bounds_are_rounded_outward_onto_the_ends_of_the_mixture_set() -> None:
    """At each returned end, M_n(p) >= 1/alpha (outside the set, up to the rounding of the log
    in the last digits), and a hair inside it is not."""
    alpha, a, b = 0.001, 0.5, 0.5
    for count, n in [(1, 3), (90, 100), (999, 1000), (5000, 10_000), (100_000, 100_000)]:
        log_marginal = float(betaln(a + count, b + n - count) - betaln(a, b))

        def log_m(p: float, count: int = count, n: int = n, log_marginal: float = log_marginal):
            return log_marginal - count * math.log(p) - (n - count) * math.log1p(-p)

        p_lower, p_upper = mixture_bounds(count, n, alpha, a, b)
        threshold = math.log(1 / alpha)
        assert log_m(p_lower) >= threshold - 1e-10
        assert log_m(p_lower + 1e-9) < threshold
        if count < n:
            assert log_m(p_upper) >= threshold - 1e-10
            assert log_m(p_upper - 1e-9) < threshold


def test_array_and_scalar_bounds_agree() -> None:
    rng = np.random.default_rng(1)
    n = rng.integers(0, 5000, size=300)
    count = rng.integers(0, n + 1)
    lo, hi = mixture_bounds_array(count, n, 0.001)
    expected = np.array(
        [mixture_bounds(int(k), int(m), 0.001) for k, m in zip(count, n, strict=True)]
    )
    np.testing.assert_allclose(lo, expected[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(hi, expected[:, 1], rtol=0, atol=1e-12)


def test_bad_counts_and_priors_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="count <= n"):
        mixture_bounds(5, 4, 0.01)
    with pytest.raises(ConfigError, match="alpha"):
        mixture_bounds(1, 4, 1.5)
    with pytest.raises(ConfigError, match="prior"):
        mixture_bounds(1, 4, 0.01, a=0.0)
    with pytest.raises(ConfigError, match="count <= n"):
        mixture_bounds_array(np.array([3]), np.array([2]), 0.01)


def test_running_intersection_accumulates_counts_and_only_tightens() -> None:
    cs = ConfidenceSequence(0.01)
    rng = np.random.default_rng(2)
    last = (0.0, 1.0)
    for _ in range(30):
        lo, hi = cs.update(int(rng.binomial(50, 0.8)), 50)
        assert lo >= last[0] and hi <= last[1]
        last = (lo, hi)
    assert cs.n == 1500 and cs.looks == 30
    assert cs.p_lower <= cs.count / cs.n <= cs.p_upper


def _ever_miscovered(p: float, looks: np.ndarray, trials: int, alpha: float, seed: int):
    """For Bernoulli(p) streams read at ``looks``: (CS ever misses p, naive CP ever misses p)."""
    rng = np.random.default_rng(seed)
    steps = np.diff(np.concatenate([[0], looks]))
    count = rng.binomial(steps, p, size=(trials, looks.size)).cumsum(axis=1)
    n = np.broadcast_to(looks, count.shape)
    lo, hi = mixture_bounds_array(count, n, alpha)
    cs_miss = ((lo > p) | (hi < p)).any(axis=1)
    # Naive: a two-sided Clopper-Pearson interval at level alpha, recomputed at every look.
    cp_lo = np.where(count > 0, beta.ppf(alpha / 2, count, n - count + 1), 0.0)
    cp_hi = np.where(count < n, beta.ppf(1 - alpha / 2, count + 1, n - count), 1.0)
    naive_miss = ((cp_lo > p) | (cp_hi < p)).any(axis=1)
    return int(cs_miss.sum()), int(naive_miss.sum())


@pytest.mark.parametrize("p", [0.5, 0.84, 0.99])
def test_confidence_sequence_covers_at_every_look_at_the_stated_rate(p: float) -> None:
    alpha, trials = 0.1, 3000
    looks = np.arange(1, 51) * 40  # 50 looks up to 2000 trials
    cs_miss, naive_miss = _ever_miscovered(p, looks, trials, alpha, seed=int(p * 1000))
    assert not_significantly_above(cs_miss, trials, alpha), f"CS missed p in {cs_miss}/{trials}"
    # The same check rejects the naive procedure: it is able to fail.
    assert not not_significantly_above(naive_miss, trials, alpha), (
        f"naive CP missed p in only {naive_miss}/{trials}"
    )


# -- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r_required": -0.1}, "r_required must be a finite number >= 0"),
        ({"r_required": math.nan}, "r_required must be a finite number >= 0"),
        ({"r_required": "0.1"}, "r_required must be a finite number >= 0"),
        ({"r_required": 0.1, "budget_ms": 0.0}, "budget_ms must be None"),
        ({"r_required": 0.1, "budget_ms": math.inf}, "budget_ms must be None"),
        ({"r_required": 0.1, "alpha": 0.0}, r"alpha must be in \(0, 1\)"),
        ({"r_required": 0.1, "alpha": 1.0}, r"alpha must be in \(0, 1\)"),
        ({"r_required": 0.1, "alpha": "0.1"}, r"alpha must be a number in \(0, 1\)"),
        ({"r_required": 0.1, "n0": -1}, "n0 .* integer >= 0"),
        ({"r_required": 0.1, "n0": 2.5}, "n0 .* integer >= 0"),
        ({"r_required": 0.1, "batch_size": 0}, "batch_size must be None"),
        ({"r_required": 0.1, "batch_size": True}, "batch_size must be None"),
        ({"r_required": 0.1, "max_n": 0}, "max_n .* integer >= 1"),
        ({"r_required": 0.1, "first_look_share": 1.0}, r"first_look_share .* in \[0, 1\)"),
        ({"r_required": 0.1, "first_look_share": -0.1}, r"first_look_share .* in \[0, 1\)"),
        ({"r_required": 0.1, "bands": [0.05]}, "bands must be a tuple"),
        ({"r_required": 0.1, "bands": (0.0,)}, "bands must be a tuple of finite L2 radii > 0"),
        ({"r_required": 0.1, "bands": (math.nan,)}, "bands must be a tuple of finite"),
    ],
)
def test_bad_config_values_raise_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SequentialConfig(**kwargs)


def test_numpy_scalars_are_accepted() -> None:
    config = SequentialConfig(np.float32(0.1), np.float64(5.0), np.float64(0.01), np.int64(10))
    assert config.n0 == 10 and config.budget_ms == 5.0


def test_an_uncertifiable_r_required_is_refused(engine, linear_setup) -> None:
    config = SequentialConfig(r_required=1.0, max_n=1000)
    assert max_certifiable_radius(SIGMA, config.alpha, config.max_n) < 1.0
    with pytest.raises(ConfigError, match="cannot be certified with max_n=1000"):
        certify_sequential(engine, linear_setup.frame(0.3), config)


# -- soundness on the closed-form model ------------------------------------------------------------
def _trial_frames(linear_setup, fraction: float, trials: int):
    """Frames at true radius ``fraction * R_REQUIRED``, alternating sides (true class 1, 0)."""
    for i in range(trials):
        t = fraction * R_REQUIRED * (1 if i % 2 == 0 else -1)
        x = linear_setup.frame(t)
        label, _, distance = linear_truth(linear_setup.weights, linear_setup.bias, x, SIGMA)
        yield x, label, distance


@pytest.mark.parametrize(
    ("n0", "share", "bands"),
    [(N0, FIRST_LOOK_SHARE, ()), (0, FIRST_LOOK_SHARE, BANDS), (0, 0.0, ())],
    ids=["votes-select", "clean-selects-bands", "sequence-only"],
)
def test_sequential_certificates_are_sound_below_at_and_above_the_threshold(
    engine, linear_setup, n0: int, share: float, bands: tuple[float, ...]
) -> None:
    """1,000 frames: unsound certificates (radius > true radius, or the wrong class) at most
    alpha of the time; below the threshold, 'certified' at most alpha of the time. With
    Cohen's selection samples and with the clean prediction selecting (n0 = 0); with alpha
    shared between the first look's Clopper-Pearson bound and the confidence sequence, and
    with the sequence alone; with bands decided below r_required, whose certificates the same
    radius check covers."""
    looks = {"first_look_share": share, "bands": bands}
    fixed = SequentialConfig(
        R_REQUIRED, None, LOOSE_ALPHA, n0, LOOK_SIZE, LOOKS * LOOK_SIZE, **looks
    )
    adaptive = SequentialConfig(R_REQUIRED, None, LOOSE_ALPHA, n0, None, LOOKS * LOOK_SIZE, **looks)
    groups = [(BELOW, 500, fixed), (1.0, 250, adaptive), (ABOVE, 250, adaptive)]
    total = unsound = certified_below = non_abstained = 0
    for fraction, trials, config in groups:
        for x, label, distance in _trial_frames(linear_setup, fraction, trials):
            result = certify_sequential(engine, x, config)
            cert = result.certificate
            assert result.decision in DECISIONS
            total += 1
            if cert.abstained:
                continue
            non_abstained += 1
            if cert.label != label or cert.radius > distance:
                unsound += 1
            if fraction < 1.0 and result.decision == "certified":
                certified_below += 1
    assert total >= 1000
    assert non_abstained > total // 2, "the test must exercise certificates, not abstentions"
    assert not_significantly_above(unsound, total, LOOSE_ALPHA), f"{unsound}/{total} unsound"
    assert not_significantly_above(certified_below, 500, LOOSE_ALPHA), (
        f"certified r_required for {certified_below}/500 frames whose true radius is below it"
    )


def test_naive_repeated_clopper_pearson_exceeds_alpha(engine, linear_setup) -> None:
    """The same check, on a procedure that recomputes a fixed-n Clopper-Pearson bound at each
    of the 20 looks and stops when it clears Phi(r_required / sigma): it certifies frames whose
    true radius is below r_required far more often than alpha, so the check above can fail."""
    trials, q = 400, required_p(R_REQUIRED, SIGMA)
    certified_below = 0
    for x, _, distance in _trial_frames(linear_setup, BELOW, trials):
        assert distance < R_REQUIRED
        label = int(np.argmax(engine.sample(x, N0).counts))
        count = n = 0
        for _ in range(LOOKS):
            count += int(engine.sample(x, LOOK_SIZE, with_clean=False).counts[label])
            n += LOOK_SIZE
            if clopper_pearson_lower(count, n, LOOSE_ALPHA) >= q:
                certified_below += 1
                break
    assert not not_significantly_above(certified_below, trials, LOOSE_ALPHA), (
        f"naive procedure certified only {certified_below}/{trials}: the test has no power"
    )


# -- behaviour ------------------------------------------------------------------------------------
def _fixed_n_for_power(p: float, q: float, alpha: float, power: float) -> int:
    """Smallest n at which fixed-n CERTIFY (Clopper-Pearson) clears q with probability >= power
    when the true probability is p."""
    for n in range(10, 100_000):
        count = int(binom.ppf(1 - power, n, p))  # the (1 - power) quantile of the votes
        if clopper_pearson_lower(count, n, alpha) >= q:
            return n
    raise AssertionError("no n found")


def test_far_above_the_threshold_stops_after_far_fewer_samples_than_fixed_n(
    engine, linear_setup
) -> None:
    alpha = 0.001
    q = required_p(R_REQUIRED, SIGMA)
    # The n a fixed-n deployment needs to certify r_required 90% of the time at 1.25 r_required.
    n_fixed = _fixed_n_for_power(float(norm.cdf(1.25 * R_REQUIRED / SIGMA)), q, alpha, 0.9)
    near = linear_setup.frame(1.25 * R_REQUIRED)
    rate = np.mean(
        [not engine.certify(near, N0, n_fixed, alpha).certificate.abstained for _ in range(40)]
    )
    assert rate >= 0.75  # (the analytic n_fixed is right)
    config = SequentialConfig(R_REQUIRED, alpha=alpha, n0=N0, max_n=10 * n_fixed)
    far = linear_setup.frame(2.4 * SIGMA)
    results = [certify_sequential(engine, far, config) for _ in range(40)]
    assert all(r.decision == "certified" for r in results)
    mean_n = float(np.mean([r.certificate.n for r in results]))
    assert mean_n <= n_fixed / 4, f"sequential used {mean_n:.0f} samples vs fixed n={n_fixed}"
    assert all(r.certificate.radius >= R_REQUIRED for r in results)


def test_far_below_the_threshold_stops_as_unreachable(engine, linear_setup) -> None:
    config = SequentialConfig(R_REQUIRED, alpha=0.001, n0=N0, max_n=100_000)
    result = certify_sequential(engine, linear_setup.frame(0.2 * R_REQUIRED), config)
    assert result.decision == "unreachable"
    # The lattice margin (graph.py) is certified on top of r_required.
    margin = engine.radius_margin
    assert result.p_upper < result.p_required == pytest.approx(norm.cdf(1.0 + margin / SIGMA))
    assert result.certificate.n < 10_000
    assert result.certificate.radius < R_REQUIRED


def test_bands_keep_a_frame_below_r_required_sampling_until_its_level_is_decided(
    engine, linear_setup
) -> None:
    """At 0.6 r_required the frame cannot reach r_required; without bands it stops as soon
    as that is shown, with whatever radius it has by then. With a band at 0.3 r_required (true
    radius twice that) it keeps sampling until the band is certified too."""
    x = linear_setup.frame(0.6 * R_REQUIRED)
    plain = SequentialConfig(R_REQUIRED, alpha=0.001, n0=0, max_n=20_000)
    banded = replace(plain, bands=(0.3 * R_REQUIRED, 2.0 * R_REQUIRED))  # 2x: above, ignored
    quick = [certify_sequential(engine, x, plain) for _ in range(10)]
    decided = [certify_sequential(engine, x, banded) for _ in range(10)]
    assert all(r.decision == "unreachable" and r.bands_decided for r in quick + decided)
    assert all(r.certificate.radius >= 0.3 * R_REQUIRED for r in decided)
    assert all(r.certificate.radius < R_REQUIRED for r in decided)
    assert np.mean([r.certificate.n for r in decided]) > np.mean([r.certificate.n for r in quick])
    assert min(r.certificate.radius for r in quick) < 0.3 * R_REQUIRED  # what bands fix


def test_an_undecided_band_is_reported_when_max_n_stops_first(engine, linear_setup) -> None:
    # True radius at the band itself: no finite sample decides it, so max_n stops.
    band = 0.5 * R_REQUIRED
    config = SequentialConfig(R_REQUIRED, alpha=0.001, n0=0, max_n=600, bands=(band,))
    result = certify_sequential(engine, linear_setup.frame(band), config)
    assert result.decision == "max_n" and not result.bands_decided


def test_the_first_look_bound_is_clopper_pearson_at_its_share_of_alpha(
    engine, linear_setup
) -> None:
    config = SequentialConfig(R_REQUIRED, alpha=0.01, n0=0, batch_size=300, max_n=300)
    result = certify_sequential(engine, linear_setup.frame(0.8 * R_REQUIRED), config)
    cert = result.certificate
    assert result.looks == 1 and cert.n == 300
    first = clopper_pearson_lower(cert.count, cert.n, 0.01 * FIRST_LOOK_SHARE)
    sequence = mixture_bounds(cert.count, cert.n, 0.01 * (1.0 - FIRST_LOOK_SHARE))[0]
    assert cert.p_lower == pytest.approx(max(first, sequence), rel=1e-12)
    assert first > sequence  # for one look the exact bound is the tighter


@pytest.mark.parametrize("alpha", [0.0008, 0.04])
def test_min_unanimous_cp_n_is_the_least_n_whose_bound_clears(alpha: float) -> None:
    p = required_p(R_REQUIRED, SIGMA)
    n = min_unanimous_cp_n(alpha, p, 10_000)
    assert n == math.ceil(math.log(alpha) / math.log(p))  # the bound of n of n is alpha^(1/n)
    assert clopper_pearson_lower(n, n, alpha) >= p > clopper_pearson_lower(n - 1, n - 1, alpha)
    assert min_unanimous_cp_n(alpha, 0.9999999, 50) == 50


def test_the_ceiling_counts_the_first_look() -> None:
    alpha, max_n = 0.001, 60
    sequence_only = max_certifiable_radius(SIGMA, alpha, max_n)
    shared = max_certifiable_radius(SIGMA, alpha, max_n, FIRST_LOOK_SHARE)
    exact = radius_from_p_lower((alpha * FIRST_LOOK_SHARE) ** (1 / max_n), SIGMA)
    assert shared == pytest.approx(exact) and shared > sequence_only


def test_max_n_stops_with_the_running_bound(engine, linear_setup) -> None:
    config = SequentialConfig(R_REQUIRED, alpha=0.001, n0=N0, batch_size=100, max_n=450)
    result = certify_sequential(engine, linear_setup.frame(R_REQUIRED), config)
    cert = result.certificate
    assert result.decision == "max_n"
    assert (cert.n, result.looks) == (450, 5)  # four looks of 100, the last one cut to 50
    expected = radius_from_p_lower(cert.p_lower, SIGMA) - engine.radius_margin
    assert cert.radius == pytest.approx(max(0.0, expected))
    assert cert.abstained == (cert.p_lower < 0.5)
    assert 0 <= cert.count <= cert.n and cert.n0 == N0 and cert.alpha == 0.001


def test_a_tiny_budget_stops_with_a_valid_abstention(engine, linear_setup) -> None:
    config = SequentialConfig(R_REQUIRED, budget_ms=1e-6, n0=N0)
    result = certify_sequential(engine, linear_setup.frame(0.5), config)
    cert = result.certificate
    assert result.decision == "budget"
    assert (cert.n, result.looks, cert.p_lower, result.p_upper) == (0, 0, 0.0, 1.0)
    assert cert.abstained and cert.label == -1 and cert.radius == 0.0
    assert cert.label_name == "abstain"


def test_a_short_budget_stops_within_about_one_look(engine, linear_setup) -> None:
    budget_ms = 20.0
    config = SequentialConfig(R_REQUIRED, budget_ms=budget_ms, n0=N0, max_n=10_000_000)
    result = certify_sequential(engine, linear_setup.frame(R_REQUIRED), config)
    cert = result.certificate
    assert result.decision == "budget"
    assert 0 < cert.n < config.max_n and result.looks >= 1
    assert cert.radius == pytest.approx(
        0.0 if cert.abstained else engine.sound_radius(radius_from_p_lower(cert.p_lower, SIGMA))
    )
    # One look of overrun at most; looks are sized to the time left, so the slack is loose
    # only for a busy machine.
    assert cert.latency_ms < budget_ms + 250.0


def test_clean_outputs_match_the_fixed_mode(engine, linear_setup) -> None:
    x = linear_setup.frame(0.4)
    fixed = engine.certify(x, n0=N0, n=200)
    result = certify_sequential(engine, x, SequentialConfig(0.1, n0=N0))
    np.testing.assert_array_equal(result.clean_logits, fixed.clean_logits)
    assert result.clean_features is None and fixed.clean_features is None
    assert result.certificate.label == fixed.certificate.label == 1
    assert result.certificate.provider == engine.provider and result.certificate.sigma == SIGMA


def test_with_n0_zero_the_clean_prediction_selects_and_no_selection_samples_are_drawn(
    engine, linear_setup
) -> None:
    config = SequentialConfig(r_required=R_REQUIRED, alpha=0.001, n0=0)
    far = min(linear_setup.max_t, 1.2)  # p_A >= Phi(4.8): unanimous votes
    for t, expected in ((far, 1), (-far, 0)):
        result = certify_sequential(engine, linear_setup.frame(t), config)
        cert = result.certificate
        assert int(np.argmax(result.clean_logits)) == expected
        assert result.decision == "certified" and cert.label == expected and cert.n0 == 0
        # One look, sized for unanimous votes: the clean pass rode along with it.
        p_required = required_p(R_REQUIRED + engine.radius_margin, SIGMA)
        assert result.looks == 1
        assert cert.n == first_look_size(config, p_required)


def test_with_n0_zero_even_a_spent_budget_draws_one_look_for_the_clean_outputs(
    engine, linear_setup
) -> None:
    """The clean pass comes with the first look, so it runs whatever the clock says: the OOD
    scores always get their logits, and the certificate is still a valid one."""
    config = SequentialConfig(R_REQUIRED, budget_ms=1e-6, n0=0)
    result = certify_sequential(engine, linear_setup.frame(0.4), config)
    assert result.looks == 1 and result.certificate.n >= 1
    assert result.clean_logits.shape == (2,) and np.all(np.isfinite(result.clean_logits))
    assert result.decision in ("budget", "certified", "unreachable")


def test_a_wrong_clean_guess_abstains_instead_of_certifying(engine, linear_setup) -> None:
    """The guess only names the class whose votes are counted: votes of the frame at +t
    counted for the class the frame at -t's clean pass selects (the wrong one) abstain."""
    assert engine.certify(linear_setup.frame(0.5), n0=0, n=500).certificate.label == 1
    assert engine.certify(linear_setup.frame(-0.5), n0=0, n=500).certificate.label == 0
    wrong = select_clean(engine.certify(linear_setup.frame(-0.5), n0=0, n=1).clean_logits, 2)
    votes = engine.sample(linear_setup.frame(0.5), 500, with_clean=False).counts
    outcome = certify_from_counts(wrong, votes, 0.001, SIGMA)
    assert wrong.tolist() == [1, 0] and outcome.abstained and outcome.label == -1
    with pytest.raises(ModelError, match="3 values for 2 classes"):
        select_clean(np.zeros(3, np.float32), 2)


@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_min_unanimous_n_is_the_least_n_that_certifies(alpha: float) -> None:
    p = required_p(R_REQUIRED, SIGMA)
    n = min_unanimous_n(alpha, p, 10_000)
    assert mixture_bounds(n, n, alpha)[0] >= p > mixture_bounds(n - 1, n - 1, alpha)[0]
    assert min_unanimous_n(alpha, 0.9999999, 50) == 50  # out of reach: max_n


def test_a_clear_frame_is_certified_in_one_look(engine, linear_setup) -> None:
    config = SequentialConfig(r_required=R_REQUIRED, alpha=0.001, n0=16)
    t = min(linear_setup.max_t, 1.2)  # p_A = Phi(t / sigma) >= Phi(4.8): unanimous votes
    result = certify_sequential(engine, linear_setup.frame(t), config)
    assert result.decision == "certified" and result.looks == 1
    p_required = required_p(R_REQUIRED + engine.radius_margin, SIGMA)
    assert result.certificate.n == first_look_size(config, p_required)
    # The first look's Clopper-Pearson bound needs fewer unanimous votes than the sequence.
    sequence_only = replace(config, first_look_share=0.0)
    alone = certify_sequential(engine, linear_setup.frame(t), sequence_only)
    assert alone.decision == "certified" and alone.looks == 1
    assert alone.certificate.n == max(FIRST_LOOK, min_unanimous_n(0.001, p_required, 10_000))
    assert result.certificate.n < alone.certificate.n
