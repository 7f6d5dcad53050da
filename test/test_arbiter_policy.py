"""The arbiter policy: the shipped YAML, validation of every key, and the shared definitions."""

from __future__ import annotations

import array
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from robust_monitor.core.arbiter import ArbiterPolicy, EvidenceLevel
from robust_monitor.core.errors import ConfigError
from robust_monitor.core.ood.verdict import OodLevel

CONFIG = Path(__file__).resolve().parents[1] / "config" / "arbiter_policy.yaml"


@pytest.fixture
def defaults() -> dict[str, Any]:
    return ArbiterPolicy().as_dict()


@pytest.fixture
def write_yaml(tmp_path: Path) -> Any:
    def write(text: str) -> Path:
        path = tmp_path / "policy.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


# --- the shipped file ----------------------------------------------------------------------------
def test_shipped_yaml_equals_the_code_defaults() -> None:
    assert ArbiterPolicy.from_yaml(CONFIG) == ArbiterPolicy()


def test_shipped_yaml_sets_every_key_and_documents_its_unit() -> None:
    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    params = raw["/**"]["ros__parameters"]
    assert set(params) == set(ArbiterPolicy().as_dict())
    lines = CONFIG.read_text(encoding="utf-8").splitlines()
    for key in params:
        line = next(x for x in lines if x.strip().startswith(f"{key}:"))
        assert "#" in line and "[" in line.split("#", 1)[1], f"{key} has no unit comment"


def test_shipped_defaults_are_sensible_for_a_car(defaults: dict[str, Any]) -> None:
    policy = ArbiterPolicy()
    assert policy.nominal_speed_mps == 10.0
    assert policy.handover_enter_radius_l2 < policy.r_required < policy.r_recover < 0.9
    # the controlled stop from nominal speed takes a few seconds, not an emergency brake
    assert 2.0 < policy.nominal_speed_mps / policy.max_decel_mps2 < 6.0


def test_flat_and_ros_layouts_load_the_same(write_yaml: Any) -> None:
    flat = ArbiterPolicy.from_yaml(write_yaml("nominal_speed_mps: 12\ncrawl_speed_mps: 0.5\n"))
    ros = ArbiterPolicy.from_yaml(
        write_yaml(
            "arbiter:\n  ros__parameters:\n    nominal_speed_mps: 12.0\n    crawl_speed_mps: 0.5\n"
        )
    )
    assert flat == ros and flat.nominal_speed_mps == 12.0 and flat.trigger_frames == 2


def test_ros_parameter_values_are_accepted() -> None:
    # rclpy hands double arrays over as array.array("d"); integers stand in for floats
    curve = array.array("d", [0.1, 0.2, 0.3])
    policy = ArbiterPolicy.from_mapping({"degraded_curve_radius_l2": curve, "stale_after_s": 1})
    assert policy.degraded_curve_radius_l2 == (0.1, 0.2, 0.3) and policy.stale_after_s == 1.0


def test_as_dict_round_trips(defaults: dict[str, Any]) -> None:
    policy = ArbiterPolicy.from_mapping({**defaults, "ood_warn_as": "ignore"})
    assert ArbiterPolicy.from_mapping(policy.as_dict()) == policy


# --- validation ----------------------------------------------------------------------------------
def test_unknown_key_is_rejected_with_the_allowed_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown arbiter policy key\(s\) \['nominal_speed'\]"):
        ArbiterPolicy.from_mapping({"nominal_speed": 3.0})
    with pytest.raises(ConfigError, match=r"allowed: .*nominal_speed_mps"):
        ArbiterPolicy.from_mapping({"nominal_speed": 3.0})


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        ({"nominal_speed_mps": 0.0}, "nominal_speed_mps", "> 0"),
        ({"nominal_speed_mps": math.nan}, "nominal_speed_mps", "finite"),
        ({"nominal_speed_mps": math.inf}, "nominal_speed_mps", "finite"),
        ({"nominal_speed_mps": "fast"}, "nominal_speed_mps", "a number"),
        ({"nominal_speed_mps": True}, "nominal_speed_mps", "a number"),
        ({"crawl_speed_mps": -0.1}, "crawl_speed_mps", "in \\[0, nominal"),
        ({"crawl_speed_mps": 4.0}, "degraded_curve_speed_mps", "within \\[crawl"),
        ({"degraded_curve_speed_mps": [3.0, 2.0, 8.0]}, "degraded_curve_speed_mps", "non-decr"),
        ({"degraded_curve_speed_mps": [3.0, 5.0, 12.0]}, "degraded_curve_speed_mps", "within"),
        ({"degraded_curve_speed_mps": [3.0, 5.0]}, "degraded_curve_speed_mps", "as many"),
        ({"degraded_curve_radius_l2": [0.1, 0.1, 0.3]}, "degraded_curve_radius_l2", "strictly"),
        ({"degraded_curve_radius_l2": [-0.1, 0.1, 0.3]}, "degraded_curve_radius_l2", ">= 0"),
        (
            {"degraded_curve_radius_l2": [], "degraded_curve_speed_mps": []},
            "degraded_curve_radius_l2",
            "non-empty",
        ),
        ({"degraded_curve_radius_l2": 0.3}, "degraded_curve_radius_l2", "a list"),
        ({"degraded_curve_radius_l2": [0.1, "x", 0.3]}, "degraded_curve_radius_l2", "a list"),
        ({"degraded_curve_radius_l2": [0.1, math.nan, 0.3]}, "degraded_curve_radius_l2", "finite"),
        ({"degraded_exit_radius_l2": 0.2}, "degraded_exit_radius_l2", ">= degraded_enter"),
        ({"handover_exit_radius_l2": 0.05}, "handover_exit_radius_l2", ">= handover_enter"),
        ({"handover_exit_radius_l2": 0.35}, "degraded_exit_radius_l2", ">= handover_exit"),
        ({"handover_enter_radius_l2": 0.0}, "handover_enter_radius_l2", "> 0"),
        ({"handover_enter_radius_l2": 0.26}, "handover_exit_radius_l2", ">= handover_enter"),
        ({"degraded_enter_radius_l2": 0.05}, "degraded_enter_radius_l2", ">= handover_enter"),
        ({"trigger_frames": 0}, "trigger_frames", ">= 1"),
        ({"trigger_frames": 2.0}, "trigger_frames", "an integer"),
        ({"release_frames": True}, "release_frames", "an integer"),
        ({"degraded_min_dwell_s": -1.0}, "degraded_min_dwell_s", ">= 0"),
        ({"handover_min_dwell_s": -1.0}, "handover_min_dwell_s", ">= 0"),
        ({"max_decel_mps2": 0.0}, "max_decel_mps2", "> 0"),
        ({"ramp_up_mps2": -1.0}, "ramp_up_mps2", "> 0"),
        ({"handover_timeout_s": 0.0}, "handover_timeout_s", "> 0"),
        ({"stale_after_s": 0.0}, "stale_after_s", "> 0"),
        ({"future_tolerance_s": -0.01}, "future_tolerance_s", ">= 0"),
        ({"clock_tolerance_s": -0.01}, "clock_tolerance_s", ">= 0"),
        ({"recovery_time_s": -1.0}, "recovery_time_s", ">= 0"),
        ({"ood_warn_as": "panic"}, "ood_warn_as", "one of \\['degraded', 'handover', 'ignore'\\]"),
        ({"ood_warn_as": 3}, "ood_warn_as", "a string"),
        ({"ood_error_as": "ignore"}, "ood_error_as", "may not be ignored"),
        (
            {"ood_warn_as": "handover", "ood_error_as": "degraded"},
            "ood_error_as",
            "at least as severe as ood_warn_as",
        ),
        ({"require_ood_verdict": "yes"}, "require_ood_verdict", "true or false"),
    ],
)
def test_invalid_values_name_the_key_and_what_is_allowed(
    overrides: dict[str, Any], key: str, allowed: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{key} must be .*{allowed}"):
        ArbiterPolicy.from_mapping(overrides)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"^stale_after_s must be > 0"):
        ArbiterPolicy(stale_after_s=-1.0)
    with pytest.raises(ConfigError, match=r"^trigger_frames must be an integer"):
        ArbiterPolicy(trigger_frames=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("nominal_speed_mps: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("nominal_speed: 3\n", "unknown arbiter policy key"),
    ],
)
def test_bad_files_raise_config_error(write_yaml: Any, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ArbiterPolicy.from_yaml(write_yaml(text))


def test_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read arbiter policy file"):
        ArbiterPolicy.from_yaml(tmp_path / "absent.yaml")


def test_empty_file_gives_the_defaults(write_yaml: Any) -> None:
    assert ArbiterPolicy.from_yaml(write_yaml("# nothing\n")) == ArbiterPolicy()


# --- shared definitions --------------------------------------------------------------------------
def test_r_required_is_the_radius_that_keeps_nominal() -> None:
    policy = ArbiterPolicy()
    assert policy.r_required == policy.degraded_enter_radius_l2 == 0.25
    r = policy.r_required
    assert policy.radius_level(r, EvidenceLevel.HEALTHY) is EvidenceLevel.HEALTHY
    assert policy.radius_level(math.nextafter(r, 0.0), EvidenceLevel.HEALTHY) > 0
    # outside NOMINAL the same radius is not enough (hysteresis)
    assert policy.radius_level(r, EvidenceLevel.DEGRADED) is EvidenceLevel.DEGRADED
    assert policy.radius_level(policy.r_recover, EvidenceLevel.HANDOVER) is EvidenceLevel.HEALTHY


@pytest.mark.parametrize(
    ("radius", "current", "expected"),
    [
        (0.12, EvidenceLevel.HEALTHY, EvidenceLevel.DEGRADED),
        (0.12, EvidenceLevel.HANDOVER, EvidenceLevel.HANDOVER),  # below handover exit 0.15
        (0.09, EvidenceLevel.DEGRADED, EvidenceLevel.HANDOVER),
        (0.27, EvidenceLevel.HEALTHY, EvidenceLevel.HEALTHY),
        (0.27, EvidenceLevel.DEGRADED, EvidenceLevel.DEGRADED),  # below degraded exit 0.30
        (0.0, EvidenceLevel.HEALTHY, EvidenceLevel.HANDOVER),
        (math.nan, EvidenceLevel.HEALTHY, EvidenceLevel.HANDOVER),
    ],
)
def test_radius_levels_have_hysteresis(
    radius: float, current: EvidenceLevel, expected: EvidenceLevel
) -> None:
    assert ArbiterPolicy().radius_level(radius, current) is expected


def test_ood_levels_map_as_configured() -> None:
    default = ArbiterPolicy()
    assert default.ood_evidence_level(OodLevel.OK) is EvidenceLevel.HEALTHY
    assert default.ood_evidence_level(OodLevel.WARN) is EvidenceLevel.DEGRADED
    assert default.ood_evidence_level(OodLevel.ERROR) is EvidenceLevel.HANDOVER
    lenient = ArbiterPolicy(ood_warn_as="ignore", ood_error_as="degraded")
    assert lenient.ood_evidence_level(OodLevel.WARN) is EvidenceLevel.HEALTHY
    assert lenient.ood_evidence_level(OodLevel.ERROR) is EvidenceLevel.DEGRADED


def test_degraded_curve_interpolates_and_clamps() -> None:
    policy = ArbiterPolicy()
    assert policy.degraded_speed_mps(0.0) == 3.0
    assert policy.degraded_speed_mps(0.15) == pytest.approx(4.0)
    assert policy.degraded_speed_mps(0.25) == pytest.approx(6.5)
    assert policy.degraded_speed_mps(5.0) == 8.0
    assert policy.degraded_speed_mps(math.nan) == 3.0
    assert policy.speed_cap_mps(EvidenceLevel.HANDOVER, 0.9) == policy.crawl_speed_mps
    assert policy.speed_cap_mps(EvidenceLevel.HEALTHY, 0.0) == policy.nominal_speed_mps


@st.composite
def curves(draw: st.DrawFn) -> ArbiterPolicy:
    speeds = sorted(draw(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=6)))
    steps = draw(st.lists(st.floats(1e-3, 0.5), min_size=len(speeds), max_size=len(speeds)))
    return ArbiterPolicy(
        crawl_speed_mps=speeds[0] / 2,
        degraded_curve_radius_l2=tuple(float(r) for r in np.cumsum(steps)),
        degraded_curve_speed_mps=tuple(speeds),
    )


@settings(max_examples=150, deadline=None)
@given(curves(), st.floats(0.0, 3.0), st.floats(0.0, 3.0))
def test_degraded_curve_is_monotone_bounded_and_matches_numpy(
    policy: ArbiterPolicy, a: float, b: float
) -> None:
    low, high = sorted((a, b))
    assert policy.degraded_speed_mps(low) <= policy.degraded_speed_mps(high)
    for r in (low, high):
        v = policy.degraded_speed_mps(r)
        assert policy.crawl_speed_mps <= v <= policy.nominal_speed_mps
        expected = np.interp(r, policy.degraded_curve_radius_l2, policy.degraded_curve_speed_mps)
        assert v == pytest.approx(expected, abs=1e-9)
