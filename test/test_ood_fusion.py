"""Fusion of camera-health checks and model scores into one OodVerdict."""

from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.core.ood.calibration import Calibration, DetectorThreshold
from robust_monitor.core.ood.camera_health import CHECKS, CameraHealthMonitor, CameraHealthResult
from robust_monitor.core.ood.fusion import (
    MODEL_RULES,
    FusionConfig,
    OodFusion,
    combine_model_levels,
)
from robust_monitor.core.ood.verdict import OodLevel

SHA = hashlib.sha256(b"model").hexdigest()
OK, WARN, ERROR = OodLevel.OK, OodLevel.WARN, OodLevel.ERROR


@pytest.fixture(scope="module")
def calibration() -> Calibration:
    """msp fires WARN above 0.5 and ERROR above 0.8; energy at -2 / 0; p_lower at 0.3 / 0.5."""
    return Calibration(
        model_sha256=SHA,
        target_false_alarm_rate=0.01,
        error_false_alarm_rate=0.001,
        thresholds={
            "msp": DetectorThreshold(0.5, 0.8, 1000),
            "energy": DetectorThreshold(-2.0, 0.0, 1000),
            "p_lower": DetectorThreshold(0.3, 0.5, 1000),
        },
    )


QUIET = {"msp": 0.1, "energy": -5.0, "p_lower": 0.0}


def camera_result(fired: dict[str, OodLevel], stamp_s: float = 1.5) -> CameraHealthResult:
    scores = dict.fromkeys(CHECKS, 0.0)
    return CameraHealthResult(
        stamp_s=stamp_s,
        level=max(fired.values(), default=OK),
        fired=MappingProxyType(fired),
        scores=MappingProxyType(scores),
        details=MappingProxyType({}),
    )


def test_a_quiet_frame_is_ok(calibration: Calibration) -> None:
    verdict = OodFusion(calibration).fuse(QUIET, camera_result({}))
    assert verdict.level is OK and verdict.reasons == () and verdict.ok
    assert verdict.stamp_s == 1.5
    assert set(verdict.scores) == set(CHECKS) | set(QUIET)


@pytest.mark.parametrize(
    ("camera", "model", "expected"),
    [
        ({"blur": WARN}, {"msp": 0.9}, ERROR),  # model ERROR beats camera WARN
        ({"black": ERROR}, {"msp": 0.6}, ERROR),  # camera ERROR beats model WARN
        ({"blur": WARN}, {}, WARN),
        ({}, {"energy": -1.0}, WARN),
        ({"frozen": WARN, "blur": ERROR}, {"p_lower": 0.4}, ERROR),
        ({}, {}, OK),
    ],
)
def test_the_most_severe_level_wins(
    calibration: Calibration,
    camera: dict[str, OodLevel],
    model: dict[str, float],
    expected: OodLevel,
) -> None:
    verdict = OodFusion(calibration).fuse({**QUIET, **model}, camera_result(camera))
    assert verdict.level is expected
    assert set(verdict.reasons) == set(camera) | set(model)
    for name, value in model.items():
        assert verdict.scores[name] == value


def test_k_of_n_needs_agreement(calibration: Calibration) -> None:
    fusion = OodFusion(calibration, FusionConfig(model_rule="k_of_n", model_k=2))
    one = fusion.fuse({**QUIET, "msp": 0.95})
    assert one.level is OK and one.reasons == ()
    assert one.scores["msp"] == 0.95  # reported even though it did not decide
    two = fusion.fuse({**QUIET, "msp": 0.95, "energy": -1.0})
    assert two.level is WARN and set(two.reasons) == {"msp", "energy"}
    both_error = fusion.fuse({**QUIET, "msp": 0.95, "energy": 1.0})
    assert both_error.level is ERROR
    # Camera checks are not subject to the vote.
    assert fusion.fuse(QUIET, camera_result({"overexposed": ERROR})).level is ERROR


def test_ignored_camera_checks_do_not_fire(calibration: Calibration) -> None:
    fusion = OodFusion(calibration, FusionConfig(ignored_camera_checks=("frame_gap",)))
    verdict = fusion.fuse(QUIET, camera_result({"frame_gap": ERROR, "blur": WARN}))
    assert verdict.level is WARN and verdict.reasons == ("blur",)


def test_a_nan_score_is_an_error(calibration: Calibration) -> None:
    verdict = OodFusion(calibration).fuse({**QUIET, "energy": float("nan")})
    assert verdict.level is ERROR and verdict.reasons == ("energy",)


def test_missing_and_extra_scores(calibration: Calibration) -> None:
    fusion = OodFusion(calibration)
    with pytest.raises(InputError, match=r"\['p_lower'\] are missing"):
        fusion.fuse({"msp": 0.1, "energy": -5.0})
    verdict = fusion.fuse({**QUIET, "abstain": 1.0})  # not calibrated: reported, never fires
    assert verdict.level is OK and verdict.scores["abstain"] == 1.0
    only = OodFusion(calibration, FusionConfig(model_detectors=("msp",)))
    assert only.fuse({"msp": 0.6}).level is WARN


def test_without_a_calibration_only_the_camera_decides() -> None:
    fusion = OodFusion()
    assert fusion.detectors == ()
    assert fusion.fuse({"msp": 0.99}, camera_result({"blur": WARN})).level is WARN
    assert fusion.fuse({"msp": 0.99}).level is OK
    with pytest.raises(ConfigError, match="not calibrated"):
        OodFusion(None, FusionConfig(model_detectors=("msp",)))


def test_with_a_real_camera_monitor(calibration: Calibration) -> None:
    frame = np.zeros((240, 320, 3), np.uint8)
    camera = CameraHealthMonitor().check(frame, 42.0)
    verdict = OodFusion(calibration).fuse(QUIET, camera)
    assert verdict.level is ERROR and "black" in verdict.reasons and verdict.stamp_s == 42.0
    assert OodFusion(calibration).fuse(QUIET, camera, stamp_s=7.0).stamp_s == 7.0


# --- the rule itself ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("levels", "rule", "k", "expected"),
    [
        ([OK, WARN, ERROR], "any", 1, ERROR),
        ([OK, OK], "any", 1, OK),
        ([], "any", 1, OK),
        ([WARN, ERROR, OK], "k_of_n", 2, WARN),
        ([ERROR, ERROR, OK], "k_of_n", 2, ERROR),
        ([ERROR, OK, OK], "k_of_n", 2, OK),
        ([WARN, WARN, WARN], "k_of_n", 3, WARN),
    ],
)
def test_combine_model_levels(
    levels: list[OodLevel], rule: str, k: int, expected: OodLevel
) -> None:
    assert combine_model_levels(levels, rule, k) is expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(OodLevel)), max_size=6), st.integers(1, 6))
def test_k_of_n_properties(levels: list[OodLevel], k: int) -> None:
    any_level = combine_model_levels(levels, "any", 1)
    assert any_level == max(levels, default=OK)
    assert combine_model_levels(levels, "k_of_n", 1) == any_level
    fused = combine_model_levels(levels, "k_of_n", k)
    assert fused <= any_level  # agreement never makes things worse
    assert fused >= combine_model_levels(levels, "k_of_n", k + 1)  # monotone in k
    # at least k detectors reach the fused level
    assert fused == OK or sum(1 for lv in levels if lv >= fused) >= k


# --- configuration ------------------------------------------------------------------------------
def test_config_round_trip() -> None:
    cfg = FusionConfig.from_mapping(
        {"model_rule": " K_of_N ", "model_k": 2, "model_detectors": ["msp", "energy"]}
    )
    assert cfg.model_rule == "k_of_n" and cfg.model_detectors == ("msp", "energy")
    assert FusionConfig.from_mapping(cfg.as_dict()) == cfg
    assert FusionConfig.from_mapping({}) == FusionConfig()


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"rule": "any"}, r"unknown OOD fusion key.*allowed"),
        ({"model_rule": "majority"}, r"model_rule must be one of \['any', 'k_of_n'\]"),
        ({"model_k": 0}, "model_k must be >= 1"),
        ({"model_k": 1.5}, "model_k must be an integer"),
        ({"model_k": True}, "model_k must be an integer"),
        ({"model_detectors": "msp"}, "must be a list of names"),
        ({"model_detectors": ["msp", "entropy"]}, r"unknown \['entropy'\]"),
        ({"model_detectors": ["msp", "msp"]}, "twice"),
        ({"ignored_camera_checks": ["glare"]}, r"unknown \['glare'\]; allowed"),
        (
            {"model_rule": "k_of_n", "model_k": 3, "model_detectors": ["msp", "energy"]},
            "model_k .3. must be <=",
        ),
    ],
)
def test_bad_config_says_what_is_allowed(mapping: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FusionConfig.from_mapping(mapping)


def test_k_larger_than_the_calibrated_detectors_is_refused(calibration: Calibration) -> None:
    with pytest.raises(ConfigError, match=r"model_k \(4\) must be <= the number of detectors"):
        OodFusion(calibration, FusionConfig(model_rule="k_of_n", model_k=4))
    with pytest.raises(ConfigError, match="not calibrated"):
        OodFusion(calibration, FusionConfig(model_detectors=("mahalanobis",)))


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["model_rule", "model_k", "model_detectors", "ignored_camera_checks"]),
        st.one_of(
            st.sampled_from([*MODEL_RULES, "vote"]),
            st.integers(-1, 6),
            st.lists(st.sampled_from(["msp", "energy", "blur", "frozen", "x"]), max_size=3),
            st.none(),
            st.booleans(),
        ),
    )
)
def test_any_mapping_gives_a_valid_config_or_a_config_error(mapping: dict[str, Any]) -> None:
    try:
        cfg = FusionConfig.from_mapping(mapping)
    except ConfigError:
        return
    assert cfg.model_rule in MODEL_RULES and cfg.model_k >= 1
    assert FusionConfig.from_mapping(cfg.as_dict()) == cfg
