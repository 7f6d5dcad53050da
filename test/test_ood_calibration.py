"""Conformal threshold calibration: the false-alarm guarantee, YAML files, model binding."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from robust_monitor.core.errors import ConfigError, InputError, ModelError
from robust_monitor.core.ood import calibration as K
from robust_monitor.core.ood.scores import MahalanobisModel
from robust_monitor.core.ood.verdict import OodLevel

SHA = hashlib.sha256(b"model A").hexdigest()
OTHER_SHA = hashlib.sha256(b"model B").hexdigest()


@pytest.fixture(scope="module")
def calibration() -> K.Calibration:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 4000)
    features = rng.normal(size=(4000, 5)) + labels[:, None] * 3.0
    logits = rng.normal(size=(4000, 3)) + 4.0 * np.eye(3)[labels]
    return K.calibrate_outputs(
        model_sha256=SHA,
        logits=logits,
        features=features,
        labels=labels,
        abstained=rng.random(4000) < 0.002,
        p_lower=rng.beta(20, 2, 4000),
        rng=np.random.default_rng(1),
    )


# --- the order statistic ------------------------------------------------------------------------
def test_threshold_is_the_conformal_order_statistic() -> None:
    scores = np.arange(1.0, 100.0)  # n = 99
    assert K.conformal_threshold(scores, 0.01) == 99.0  # k = ceil(100 * 0.99) = 99
    assert K.conformal_threshold(np.arange(1.0, 200.0), 0.01) == 198.0  # k = 200 - 2
    assert K.conformal_threshold(np.arange(1.0, 21.0), 0.1) == 19.0  # k = ceil(21 * 0.9) = 19
    shuffled = np.random.default_rng(0).permutation(np.arange(1.0, 200.0))
    assert K.conformal_threshold(shuffled, 0.01) == 198.0


def test_too_few_samples_says_how_many_are_needed() -> None:
    assert K.min_samples(0.01) == 99
    assert K.min_samples(0.001) == 999
    assert K.min_samples(0.05) == 19
    K.conformal_threshold(np.zeros(99), 0.01)
    with pytest.raises(ConfigError, match="need at least 99"):
        K.conformal_threshold(np.zeros(98), 0.01)
    with pytest.raises(ConfigError, match="need at least 999"):
        K.calibrate({"energy": np.zeros(500)}, model_sha256=SHA)  # error level: 0.1 %


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, float("nan"), True, "0.01"])
def test_bad_rates_raise_config_error(rate: Any) -> None:
    with pytest.raises(ConfigError, match="must be a number in"):
        K.conformal_threshold(np.zeros(1000), rate)


def test_bad_samples_raise_input_error() -> None:
    with pytest.raises(InputError, match="no calibration scores"):
        K.conformal_threshold([], 0.1)
    with pytest.raises(InputError, match="finite"):
        K.conformal_threshold([0.0] * 50 + [np.nan], 0.1)


# --- the guarantee, checked statistically -------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "rate"), [(99, 0.01), (199, 0.05), (1000, 0.01)], ids=["n99", "n199", "n1000"]
)
def test_false_alarm_rate_on_fresh_in_distribution_data(n: int, rate: float) -> None:
    """Over many seeded calibrations on N(0, 1) scores, the exact false-alarm rate of each
    threshold, P(Z > t) = 1 - Phi(t), averages to at most the target, and not much less
    (conformal: between rate - 1/(n+1) and rate). A naive empirical quantile overshoots here."""
    trials = 3000
    rng = np.random.default_rng(12345)
    samples = rng.standard_normal((trials, n))
    fpr = np.array([stats.norm.sf(K.conformal_threshold(s, rate)) for s in samples])
    mean, sem = fpr.mean(), fpr.std(ddof=1) / np.sqrt(trials)
    assert mean <= rate + 4 * sem, (mean, sem)
    assert mean >= rate - 1.0 / (n + 1) - 4 * sem, (mean, sem)
    if n == 99:  # the naive quantile would have ~2x the rate at this n
        naive = np.array([stats.norm.sf(np.quantile(s, 1 - rate)) for s in samples[:500]])
        assert naive.mean() > rate + 8 * sem


def test_false_alarm_rate_with_fresh_samples_and_the_error_level() -> None:
    """Literal check: calibrate on exponential scores, count alarms on fresh draws."""
    rng = np.random.default_rng(7)
    warn_alarms = error_alarms = fresh_total = 0
    for _ in range(40):
        cal = K.calibrate({"energy": rng.exponential(size=2000)}, model_sha256=SHA)
        fresh = rng.exponential(size=20000)
        warn_alarms += int(np.sum(fresh > cal.thresholds["energy"].warn))
        error_alarms += int(np.sum(fresh > cal.thresholds["energy"].error))
        fresh_total += fresh.size
    assert warn_alarms / fresh_total <= 0.01 + 0.001
    assert warn_alarms / fresh_total >= 0.01 - 0.001 - 1 / 2001
    assert error_alarms / fresh_total <= 0.001 + 0.0004


def test_ties_only_make_alarms_rarer() -> None:
    """Binary abstention scores: alarms are strictly above the threshold, so <= the rate."""
    rng = np.random.default_rng(3)
    for abstain_rate in (0.002, 0.005, 0.03):
        worst = 0.0
        for _ in range(200):
            t = K.conformal_threshold((rng.random(500) < abstain_rate).astype(float), 0.01)
            worst += abstain_rate if t < 1.0 else 0.0  # P(new score > t)
        assert worst / 200 <= 0.01 + 0.002, abstain_rate


# --- the Calibration object ---------------------------------------------------------------------
def test_calibrate_outputs_covers_every_detector(calibration: K.Calibration) -> None:
    assert calibration.detectors == ("msp", "energy", "mahalanobis", "abstain", "p_lower")
    assert calibration.num_samples == 2000  # the half not used to fit Mahalanobis
    assert calibration.mahalanobis is not None and calibration.mahalanobis.num_samples == 2000
    assert calibration.target_false_alarm_rate == 0.01
    assert calibration.error_false_alarm_rate == pytest.approx(0.001)
    for name, t in calibration.thresholds.items():
        assert t.error >= t.warn, name
    assert calibration.thresholds["abstain"].warn == 0.0  # 0.2 % abstain: any abstention fires
    scores = calibration.scores(logits=[9.0, 0.0, 0.0], abstained=True, p_lower=0.99)
    # 0.2 % of in-distribution frames abstain: more than the 0.1 % error rate allows, so an
    # abstention alone can only be a warning.
    assert calibration.thresholds["abstain"].error == 1.0
    assert calibration.level("abstain", scores["abstain"]) is OodLevel.WARN
    assert calibration.level("msp", scores["msp"]) is OodLevel.OK


def test_detector_levels_are_strictly_above_thresholds() -> None:
    t = K.DetectorThreshold(warn=1.0, error=2.0, num_samples=100)
    assert t.level(1.0) is OodLevel.OK
    assert t.level(1.5) is OodLevel.WARN
    assert t.level(2.0) is OodLevel.WARN
    assert t.level(2.01) is OodLevel.ERROR
    assert t.level(float("nan")) is OodLevel.ERROR  # a broken output is the worst case
    with pytest.raises(ConfigError, match="must be >= warn"):
        K.DetectorThreshold(warn=2.0, error=1.0, num_samples=100)


def test_yaml_round_trip(calibration: K.Calibration, tmp_path: Path) -> None:
    path = calibration.save(tmp_path / "ood_calibration.yaml")
    text = path.read_text()
    assert text.startswith("# OOD detector thresholds") and SHA in text
    loaded = K.Calibration.load(path, model_sha256=SHA)
    assert loaded.as_dict() == calibration.as_dict()
    assert loaded.thresholds == calibration.thresholds
    assert loaded.mahalanobis is not None and calibration.mahalanobis is not None
    probe = np.random.default_rng(9).normal(size=(5, 5))
    np.testing.assert_array_equal(
        loaded.mahalanobis.score(probe), calibration.mahalanobis.score(probe)
    )


def test_a_calibration_for_another_model_is_refused(
    calibration: K.Calibration, tmp_path: Path
) -> None:
    calibration.check_model(SHA)
    calibration.check_model(SHA.upper())
    with pytest.raises(ModelError, match="recalibrate"):
        calibration.check_model(OTHER_SHA)
    path = calibration.save(tmp_path / "c.yaml")
    with pytest.raises(ModelError, match=OTHER_SHA[:12]):
        K.Calibration.load(path, model_sha256=OTHER_SHA)


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    del out[key]
    return out


def _with(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: _without(d, "thresholds"), r"missing keys \['thresholds'\]"),
        (lambda d: _without(d, "model_sha256"), "missing keys.*model_sha256"),
        (lambda d: _with(d, ("colour",), "red"), r"unknown keys \['colour'\]"),
        (lambda d: _with(d, ("format",), "something"), "format must be"),
        (
            lambda d: _with(d, ("version",), 3),
            r"version must be one of \[1, 2\], got 3; this file is newer",
        ),
        (lambda d: _with(d, ("model_sha256",), "abc"), "64 hexadecimal digits"),
        (lambda d: _with(d, ("target_false_alarm_rate",), "1%"), "must be a number"),
        (lambda d: _with(d, ("target_false_alarm_rate",), 0.0001), "error_false_alarm_rate"),
        (lambda d: _with(d, ("thresholds",), []), "thresholds must be a mapping"),
        (lambda d: _with(d, ("thresholds", "energy", "warn"), "high"), r"energy'\]\.warn"),
        (lambda d: _with(d, ("thresholds", "energy", "error"), -1e9), "must be >= warn"),
        (lambda d: _with(d, ("thresholds", "energy", "num_samples"), 0), "num_samples"),
        (lambda d: _with(d, ("thresholds", "entropy"), d["thresholds"]["msp"]), "unknown detector"),
        (lambda d: _with(d, ("thresholds", "msp"), {"warn": 1.0}), "exactly the keys"),
        (lambda d: _with(d, ("mahalanobis",), None), "needs the mahalanobis model"),
        (lambda d: _with(d, ("mahalanobis", "shrinkage"), "auto"), "shrinkage"),
    ],
)
def test_bad_files_raise_config_error(
    calibration: K.Calibration, tmp_path: Path, edit: Any, match: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(edit(calibration.as_dict())))
    with pytest.raises(ConfigError, match=match):
        K.Calibration.load(path)


def test_unreadable_files_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        K.Calibration.load(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("thresholds: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        K.Calibration.load(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        K.Calibration.load(tmp_path / "list.yaml")


_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.floats(-1, 1), max_size=3),
    st.dictionaries(st.sampled_from(["warn", "error", "num_samples", "x"]), st.integers(0, 5)),
)


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from(
        [
            ("format",),
            ("version",),
            ("model_sha256",),
            ("target_false_alarm_rate",),
            ("error_false_alarm_rate",),
            ("thresholds",),
            ("thresholds", "energy"),
            ("thresholds", "energy", "warn"),
            ("thresholds", "energy", "num_samples"),
            ("mahalanobis",),
            ("mahalanobis", "means"),
        ]
    ),
    value=_JUNK,
)
def test_any_corrupted_field_is_a_config_error_or_still_valid(
    calibration: K.Calibration, key: tuple[str, ...], value: Any
) -> None:
    data = _with(calibration.as_dict(), key, value)
    try:
        loaded = K.Calibration.from_mapping(data)
    except ConfigError:
        return
    assert loaded.model_sha256 == SHA  # only harmless edits get through
    for t in loaded.thresholds.values():
        assert t.error >= t.warn


def test_calibrate_rejects_unknown_detectors_and_bad_shas() -> None:
    with pytest.raises(ConfigError, match="unknown detector 'entropy'"):
        K.calibrate({"entropy": np.zeros(2000)}, model_sha256=SHA)
    with pytest.raises(ConfigError, match="64 hexadecimal"):
        K.calibrate({"energy": np.zeros(2000)}, model_sha256="not-a-sha")
    with pytest.raises(InputError, match=r"detector 'energy'.*finite"):
        K.calibrate({"energy": [np.nan] * 2000}, model_sha256=SHA)
    maha = MahalanobisModel.fit(np.random.default_rng(0).normal(size=(50, 2)), np.zeros(50, int))
    cal = K.calibrate(
        {"mahalanobis": np.zeros(2000)},
        model_sha256=SHA,
        mahalanobis=maha,
        target_false_alarm_rate=0.05,
        error_false_alarm_rate=0.01,
    )
    assert cal.error_false_alarm_rate == 0.01
