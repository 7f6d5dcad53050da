"""The ~/certificate contract: certificate -> DiagnosticArray -> evidence round-trips, and the
reader never raises and never hands back a certificate claiming more than the original."""

from __future__ import annotations

import dataclasses
import math
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from hypothesis import given, settings
from hypothesis import strategies as st
from rosutil import stamp

from robust_monitor.core.certify.certificate import ABSTAIN, Certificate
from robust_monitor.core.certify.sequential import ConfidenceSequence
from robust_monitor.core.certify.stats import clopper_pearson_lower, radius_from_p_lower
from robust_monitor.core.ood.verdict import OodLevel, OodVerdict
from robust_monitor.core.pipeline import FrameResult
from robust_monitor.ros.contract import (
    CERTIFICATE_KEYS,
    FORMAT,
    MODE_KEYS,
    SEQUENTIAL_KEYS,
    STATUS_NAME,
    certificate_to_diagnostics,
    diagnostics_to_evidence,
)

SHA = "ab" * 32


def certificate(
    count: int = 480, n: int = 500, alpha: float = 0.001, sigma: float = 0.25
) -> Certificate:
    p_lower = clopper_pearson_lower(count, n, alpha)
    abstained = p_lower < 0.5
    return Certificate(
        label=ABSTAIN if abstained else 2,
        p_lower=p_lower,
        radius=0.0 if abstained else radius_from_p_lower(p_lower, sigma),
        n0=64,
        n=n,
        alpha=alpha,
        sigma=sigma,
        abstained=abstained,
        provider="cpu",
        latency_ms=12.5,
        count=count,
        label_name="abstain" if abstained else "stop",
    )


CERTIFIED = certificate()
ABSTAINED = certificate(count=200)
VERDICT = OodVerdict(
    OodLevel.WARN, ("blur", "energy"), MappingProxyType({"blur": 0.75, "energy": -3.5}), 10.25
)


def result(cert: Certificate = CERTIFIED, verdict: OodVerdict | None = None) -> FrameResult:
    return FrameResult(10.25, cert, verdict, np.zeros(3, np.float32), None)


def message(cert: Certificate = CERTIFIED, verdict: OodVerdict | None = None) -> DiagnosticArray:
    return certificate_to_diagnostics(
        result(cert, verdict), stamp(10, 250_000_000), "roadsigns", SHA, "camera"
    )


def values_of(msg: DiagnosticArray) -> dict[str, str]:
    return {kv.key: kv.value for kv in msg.status[0].values}


def with_values(
    pairs: list[tuple[str, str]], base: DiagnosticArray | None = None
) -> DiagnosticArray:
    msg = base or message()
    msg.status[0].values = [KeyValue(key=k, value=v) for k, v in pairs]
    return msg


def replaced(key: str, value: str | None, cert: Certificate = CERTIFIED) -> DiagnosticArray:
    """The message of ``cert`` with ``key`` set to ``value`` (removed when None)."""
    pairs = [(k, v) for k, v in values_of(message(cert)).items() if k != key]
    if value is not None:
        pairs.append((key, value))
    return with_values(pairs)


# --- writing and reading back ---------------------------------------------------------------------
@pytest.mark.parametrize("cert", [CERTIFIED, ABSTAINED], ids=["certified", "abstained"])
@pytest.mark.parametrize("verdict", [None, VERDICT], ids=["no-ood", "ood"])
def test_round_trip_is_exact(cert: Certificate, verdict: OodVerdict | None) -> None:
    msg = message(cert, verdict)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (10, 250_000_000)
    assert msg.header.frame_id == "camera"
    assert len(msg.status) == 1
    status = msg.status[0]
    assert status.name == STATUS_NAME and status.hardware_id == "roadsigns"
    stamp_s, back, back_verdict, problems = diagnostics_to_evidence(msg)
    assert problems == []
    assert stamp_s == 10.25
    assert back == cert
    if verdict is None:
        assert back_verdict is None
    else:
        assert back_verdict is not None
        assert back_verdict.level is verdict.level
        assert back_verdict.reasons == verdict.reasons
        assert dict(back_verdict.scores) == dict(verdict.scores)
        assert back_verdict.stamp_s == stamp_s


def test_every_documented_key_is_written() -> None:
    keys = set(values_of(message(CERTIFIED, VERDICT)))
    documented = {*CERTIFICATE_KEYS, *MODE_KEYS, "format", "model_sha256", "ood_level"}
    assert documented | {"ood_reasons", "ood.blur", "ood.energy"} == keys
    values = values_of(message(CERTIFIED, VERDICT))
    assert values["format"] == FORMAT
    assert values["certify_mode"] == "fixed"
    assert values["ood_level"] == "warn" and values["ood_reasons"] == "blur,energy"
    assert values["model_sha256"] == SHA
    assert values_of(message())["ood_level"] == "none"


def test_non_finite_scores_survive() -> None:
    verdict = OodVerdict(OodLevel.OK, (), MappingProxyType({"energy": math.inf, "x": math.nan}))
    _, _, back, problems = diagnostics_to_evidence(message(CERTIFIED, verdict))
    assert problems == [] and back is not None
    assert back.scores["energy"] == math.inf and math.isnan(back.scores["x"])


# --- sequential certificates ---------------------------------------------------------------------
def sequential_certificate(counts: list[tuple[int, int]], alpha: float = 0.001) -> Certificate:
    """The certificate ``certify_sequential`` reports after looks of (votes, samples)."""
    cs = ConfidenceSequence(alpha)
    for count, n in counts:
        cs.update(count, n)
    abstained = cs.p_lower < 0.5
    return Certificate(
        label=ABSTAIN if abstained else 2,
        p_lower=cs.p_lower,
        radius=0.0 if abstained else radius_from_p_lower(cs.p_lower, 0.25),
        n0=64,
        n=cs.n,
        alpha=alpha,
        sigma=0.25,
        abstained=abstained,
        provider="cpu",
        latency_ms=20.0,
        count=cs.count,
        label_name="abstain" if abstained else "stop",
    )


def sequential_result(cert: Certificate, decision: str, looks: int) -> FrameResult:
    return FrameResult(
        10.25,
        cert,
        VERDICT,
        np.zeros(3, np.float32),
        None,
        mode="sequential",
        decision=decision,
        looks=looks,
        r_required=0.3,
    )


def test_a_sequential_certificate_round_trips_with_its_decision() -> None:
    cert = sequential_certificate([(80, 80)])
    assert not cert.abstained and cert.p_lower < clopper_pearson_lower(80, 80, 0.001)
    msg = certificate_to_diagnostics(
        sequential_result(cert, "certified", 1), stamp(10, 250_000_000), "roadsigns", SHA
    )
    values = values_of(msg)
    assert set(SEQUENTIAL_KEYS) <= set(values)
    assert values["certify_mode"] == "sequential" and values["decision"] == "certified"
    assert values["looks"] == "1" and float(values["r_required"]) == 0.3
    _, back, verdict, problems = diagnostics_to_evidence(msg)
    assert problems == [] and back == cert and verdict is not None


def test_a_certificate_whose_class_the_clean_prediction_chose_round_trips() -> None:
    """n0 = 0 (no selection samples: the clean frame's prediction chose the class)."""
    cert = dataclasses.replace(sequential_certificate([(80, 80)]), n0=0)
    msg = certificate_to_diagnostics(
        sequential_result(cert, "certified", 1), stamp(10, 250_000_000), "roadsigns", SHA
    )
    assert values_of(msg)["n0"] == "0"
    _, back, _, problems = diagnostics_to_evidence(msg)
    assert problems == [] and back == cert


def test_a_budget_spent_in_selection_is_a_readable_abstention() -> None:
    """n = 0 (no estimation sample) is allowed only for an abstention claiming nothing."""
    cert = sequential_certificate([])
    assert (cert.n, cert.count, cert.p_lower, cert.abstained) == (0, 0, 0.0, True)
    msg = certificate_to_diagnostics(
        sequential_result(cert, "budget", 0), stamp(10, 250_000_000), "roadsigns", SHA
    )
    _, back, _, problems = diagnostics_to_evidence(msg)
    assert problems == [] and back == cert
    for key, value in (("abstained", "false"), ("label", "2"), ("p_lower", "0.5")):
        pairs = [(k, v) for k, v in values_of(msg).items() if k != key] + [(key, value)]
        if key == "abstained":
            pairs = [(k, "2" if k == "label" else v) for k, v in pairs]
        _, back, _, problems = diagnostics_to_evidence(with_values(pairs, msg))
        assert back is None and problems, (key, problems)


@pytest.mark.parametrize(
    ("cert", "verdict", "level"),
    [
        (CERTIFIED, None, DiagnosticStatus.OK),
        (CERTIFIED, OodVerdict(OodLevel.OK), DiagnosticStatus.OK),
        (ABSTAINED, None, DiagnosticStatus.WARN),
        (CERTIFIED, OodVerdict(OodLevel.WARN, ("blur",)), DiagnosticStatus.WARN),
        (ABSTAINED, OodVerdict(OodLevel.ERROR, ("energy",)), DiagnosticStatus.ERROR),
        (CERTIFIED, OodVerdict(OodLevel.ERROR, ("energy",)), DiagnosticStatus.ERROR),
    ],
)
def test_status_level(cert: Certificate, verdict: OodVerdict | None, level: bytes) -> None:
    assert message(cert, verdict).status[0].level == level


# --- malformed messages ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("radius", None, "radius: missing"),
        ("radius", "nan", "radius"),
        ("radius", "-0.5", "radius"),
        ("radius", "big", "radius"),
        ("radius", "1e400", "radius"),
        ("radius", repr(CERTIFIED.radius * 2), "exceeds sigma"),
        ("p_lower", "0.9999", "exceeds the Clopper-Pearson bound"),
        ("p_lower", "1.5", "p_lower"),
        ("count", "501", "exceeds n"),
        ("count", "1_000", "not an integer"),
        ("count", "٤٨٠", "not an integer"),
        ("n", "0", "n:"),
        ("n0", "-1", "n0"),
        ("alpha", "0", "alpha"),
        ("alpha", "1", "alpha"),
        ("sigma", "0.0", "sigma"),
        ("sigma", "inf", "sigma"),
        ("abstained", "yes", "abstained"),
        ("abstained", "true", "contradicts"),
        ("label", "-1", "contradicts"),
        ("label", "2.0", "label"),
        ("format", "robust_monitor.certificate/2", "format"),
        ("format", None, "format"),
        ("latency_ms", "-1", "latency_ms"),
    ],
)
def test_malformed_certificate_fields_drop_the_certificate(
    key: str, value: str | None, expected: str
) -> None:
    stamp_s, cert, verdict, problems = diagnostics_to_evidence(replaced(key, value))
    assert cert is None
    assert any(expected in p for p in problems), problems
    assert stamp_s == 10.25  # the stamp and the verdict part are still read
    assert verdict is None and not any("ood" in p for p in problems)


def test_abstained_certificate_with_a_radius_is_dropped() -> None:
    _, cert, _, problems = diagnostics_to_evidence(replaced("radius", "0.1", ABSTAINED))
    assert cert is None and any("abstained certificate has radius" in p for p in problems)


def test_not_abstained_but_counts_too_low_is_dropped() -> None:
    msg = replaced("count", str(ABSTAINED.count))
    _, cert, _, problems = diagnostics_to_evidence(msg)
    assert cert is None and any("exceeds" in p or "< 0.5" in p for p in problems)


def test_repeated_key_is_malformed() -> None:
    pairs = [*values_of(message()).items(), ("radius", "0.0")]
    _, cert, _, problems = diagnostics_to_evidence(with_values(pairs))
    assert cert is None and any("more than once" in p for p in problems)


def test_lower_radius_than_the_counts_support_is_kept() -> None:
    _, cert, _, problems = diagnostics_to_evidence(replaced("radius", "0.01"))
    assert problems == [] and cert is not None and cert.radius == 0.01


@pytest.mark.parametrize(
    ("level", "extra", "expected"),
    [
        (None, [], "ood_level: missing"),
        ("fine", [], "not one of ok, warn, error, none"),
        ("warn", [("ood.blur", "high")], "ood.blur"),
        ("warn", [("ood.", "1.0")], "ood."),
    ],
)
def test_malformed_verdict_is_dropped(
    level: str | None, extra: list[tuple[str, str]], expected: str
) -> None:
    pairs = [(k, v) for k, v in values_of(message()).items() if k != "ood_level"]
    if level is not None:
        pairs.append(("ood_level", level))
    _, cert, verdict, problems = diagnostics_to_evidence(with_values(pairs + extra))
    assert verdict is None and cert == CERTIFIED
    assert any(expected in p for p in problems), problems


def test_error_verdict_survives_a_broken_certificate() -> None:
    msg = message(CERTIFIED, OodVerdict(OodLevel.ERROR, ("energy",)))
    msg.status[0].values = [kv for kv in msg.status[0].values if kv.key != "n"]
    _, cert, verdict, _ = diagnostics_to_evidence(msg)
    assert cert is None and verdict is not None and verdict.level is OodLevel.ERROR


@pytest.mark.parametrize(
    "msg",
    [None, "text", 42, object(), DiagnosticArray(), KeyValue()],
    ids=["none", "str", "int", "object", "empty-array", "wrong-type"],
)
def test_anything_at_all_never_raises(msg: Any) -> None:
    _, cert, verdict, problems = diagnostics_to_evidence(msg)
    assert cert is None and verdict is None and problems


def test_status_must_be_unique() -> None:
    msg = message()
    msg.status = [msg.status[0], msg.status[0]]
    assert diagnostics_to_evidence(msg)[1] is None
    msg.status = [DiagnosticStatus(name="other")]
    _, cert, _, problems = diagnostics_to_evidence(msg)
    assert cert is None and any("found 0" in p for p in problems)


def test_bad_stamps() -> None:
    msg = message()
    msg.header.stamp.nanosec = 1_500_000_000
    stamp_s, cert, _, problems = diagnostics_to_evidence(msg)
    assert math.isnan(stamp_s) and any("nanosec" in p for p in problems)
    assert cert == CERTIFIED  # the stamp is judged by the consumer (NaN -> refused)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 0, 0
    assert any("zero" in p for p in diagnostics_to_evidence(msg)[3])


# --- property-based: garbage never raises and never raises a radius -------------------------------
def _is_usable_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value >= 0.0


# Malformed values: not numbers, not finite, or negative (never a plausible bigger number).
GARBAGE = st.one_of(
    st.text(max_size=12).filter(lambda s: not _is_usable_number(s)),
    st.sampled_from(
        ["", "nan", "NaN", "inf", "-inf", "-1", "-0.5", "1e999", "true", "0x10", "1,5", " ", "None"]
    ),
    st.floats(max_value=-1e-6).map(repr),
)
ANY_VALUE = st.one_of(
    st.text(max_size=12), st.floats().map(repr), st.integers(-(10**12), 10**12).map(str)
)
ALL_KEYS = sorted({*values_of(message(CERTIFIED, VERDICT))})


@settings(max_examples=200, deadline=None)
@given(
    cert=st.sampled_from([CERTIFIED, ABSTAINED]),
    removed=st.sets(st.sampled_from(ALL_KEYS)),
    garbled=st.dictionaries(st.sampled_from(ALL_KEYS), GARBAGE),
)
def test_missing_keys_and_garbage_values(
    cert: Certificate, removed: set[str], garbled: dict[str, str]
) -> None:
    pairs = [
        (k, garbled.get(k, v))
        for k, v in values_of(message(cert, VERDICT)).items()
        if k not in removed
    ]
    stamp_s, back, _, problems = diagnostics_to_evidence(with_values(pairs))
    assert stamp_s == 10.25
    if back is None:
        assert problems
    else:
        assert back.radius <= cert.radius


@settings(max_examples=200, deadline=None)
@given(
    cert=st.sampled_from([CERTIFIED, ABSTAINED]),
    key=st.sampled_from(ALL_KEYS),
    value=ANY_VALUE,
)
def test_any_single_field_changed_never_raises_the_radius(
    cert: Certificate, key: str, value: str
) -> None:
    _, back, _, _ = diagnostics_to_evidence(replaced(key, value, cert))
    if back is not None:
        assert back.radius <= cert.radius
        assert back.p_lower <= cert.p_lower


KEY_VALUES = st.lists(
    st.tuples(st.one_of(st.sampled_from(ALL_KEYS), st.text(max_size=8)), ANY_VALUE), max_size=30
)


@settings(max_examples=200, deadline=None)
@given(pairs=KEY_VALUES, name=st.sampled_from([STATUS_NAME, "other", ""]))
def test_arbitrary_key_values_yield_only_self_consistent_certificates(
    pairs: list[tuple[str, str]], name: str
) -> None:
    msg = message()
    msg.status = [DiagnosticStatus(name=name, values=[KeyValue(key=k, value=v) for k, v in pairs])]
    _, back, _, _ = diagnostics_to_evidence(msg)
    if back is not None:
        bound = clopper_pearson_lower(back.count, back.n, back.alpha) if back.n else 0.0
        supported = radius_from_p_lower(bound, back.sigma)
        assert 0.0 <= back.radius <= supported
        assert back.abstained == (back.label == ABSTAIN)
        assert not back.abstained or back.radius == 0.0
