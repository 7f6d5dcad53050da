"""``robust-monitor sim``: the scenario suite passes, a broken configuration fails it, bad files
are refused with clear messages, and a run is deterministic.

The suite runs in-process with the shipped model (n0 = 16, n = 100 per frame); each scenario is
8-12.5 s of simulated time at 10 Hz.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from robust_monitor.core.errors import ConfigError
from robust_monitor.sim import load_scenario, parse_scenario
from robust_monitor.sim.scenario import OperatorModel
from robust_monitor.tools import cli
from robust_monitor.tools.sim import run_scenario

ROOT = Path(__file__).resolve().parents[1]
SUITE = sorted((ROOT / "scenarios").glob("*.yaml"))

BROKEN_PARAMS = {
    "/**/robust_monitor_arbiter": {
        "ros__parameters": {
            # Thresholds that (nearly) never trigger: radii must stay > 0, so take the least.
            "degraded_enter_radius_l2": 0.001,
            "degraded_exit_radius_l2": 0.001,
            "handover_enter_radius_l2": 0.001,
            "handover_exit_radius_l2": 0.001,
            # OOD warnings ignored; an ERROR may not be ignored, only mapped to degraded.
            "ood_warn_as": "ignore",
            "ood_error_as": "degraded",
        }
    }
}


def test_suite_has_the_required_scenarios() -> None:
    names = {p.stem for p in SUITE}
    for required in (
        "clean_baseline",
        "noise_ramp",
        "blur_ramp",
        "weather_ramp",
        "digital_ramp",
        "frozen_camera",
        "camera_dropout",
        "unfamiliar_tunnel",
        "operator_never_answers",
        "operator_answers",
    ):
        assert required in names
    for path in SUITE:
        assert load_scenario(path).name == path.stem


@pytest.mark.slow
@pytest.mark.parametrize("path", SUITE, ids=[p.stem for p in SUITE])
def test_scenario_suite_passes(path: Path) -> None:
    result = run_scenario(path)
    failed = [f"{e.description}: {e.observed}" for e in result.expectations if not e.passed]
    assert result.expectations and not failed, failed


@pytest.mark.slow
def test_broken_thresholds_fail_the_suite(tmp_path: Path) -> None:
    params = tmp_path / "broken.yaml"
    params.write_text(yaml.safe_dump(BROKEN_PARAMS), encoding="utf-8")
    result = run_scenario(ROOT / "scenarios" / "frozen_camera.yaml", params_file=params)
    assert not result.passed
    failed = {e.description for e in result.expectations if not e.passed}
    assert any("HANDOVER_REQUESTED" in d for d in failed), failed


@pytest.mark.slow
def test_operator_who_never_takes_over_fails_operator_answers() -> None:
    sc = load_scenario(ROOT / "scenarios" / "operator_answers.yaml")
    never = dataclasses.replace(sc, duration_s=5.0, operator=OperatorModel(takeover_after_s=None))
    result = run_scenario(never)
    by_type = [(e.description, e.passed) for e in result.expectations]
    assert ("within 2 s of glare.start the state is MANUAL", False) in by_type
    assert not result.passed


def _short(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": "robust_monitor.scenario/1",
        "name": "short",
        "seed": 3,
        "duration_s": 1.5,
        "effects": [{"name": "fog", "type": "fog", "start_s": 0.5, "end_s": 1.5, "severity": 4}],
        "expect": [
            {
                "type": "reach_state",
                "after": "fog",
                "within_s": 0.6,
                "state": "DEGRADED",
                "or_worse": True,
            },
        ],
    }
    data.update(extra)
    return data


def test_same_seed_same_timeline() -> None:
    sc = parse_scenario(_short())
    a, b = run_scenario(sc), run_scenario(sc)
    key = [(f.t_s, f.result.certificate.radius, f.decision.state) for f in a.run.frames]
    assert key == [(f.t_s, f.result.certificate.radius, f.decision.state) for f in b.run.frames]
    assert [s.vehicle_speed_mps for s in a.run.samples] == [
        s.vehicle_speed_mps for s in b.run.samples
    ]


def test_a_sequential_file_with_a_budget_still_gives_a_reproducible_run(tmp_path: Path) -> None:
    """A wall-clock budget would make a seeded run depend on the machine's speed: the sim drops
    it (a sequential file keeps its mode), unless the caller sets budget_ms explicitly."""
    from robust_monitor.tools.sim import monitor_overrides

    params = tmp_path / "sequential.yaml"
    params.write_text(
        "/**/robust_monitor:\n  ros__parameters:\n"
        "    certify_mode: sequential\n    budget_ms: 33.0\n",
        encoding="utf-8",
    )
    sc = parse_scenario(_short())
    assert monitor_overrides(sc, params)["budget_ms"] == 0.0
    assert monitor_overrides(sc, params, {"budget_ms": 5.0})["budget_ms"] == 5.0
    assert monitor_overrides(sc, None)["budget_ms"] == 0.0  # the shipped file is sequential too
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(
        "/**/robust_monitor:\n  ros__parameters:\n    certify_mode: fixed\n", encoding="utf-8"
    )
    assert "budget_ms" not in monitor_overrides(sc, fixed)  # fixed mode: no such key set
    a, b = run_scenario(sc, params_file=params), run_scenario(sc, params_file=params)
    assert all(f.result.mode == "sequential" for f in a.run.frames)
    key = [(f.t_s, f.result.certificate.n, f.decision.state) for f in a.run.frames]
    assert key == [(f.t_s, f.result.certificate.n, f.decision.state) for f in b.run.frames]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "robust_monitor.scenario/2"}, "format must be 'robust_monitor.scenario/1'"),
        ({"duration_s": -1}, "duration_s must be in (0, 600]"),
        ({"colour": "red"}, "unknown key(s) ['colour']"),
        ({"effects": [{"type": "smoke", "start_s": 0, "end_s": 1}]}, "type must be one of"),
        ({"effects": [{"type": "fog", "start_s": 0, "end_s": 1}]}, "severity is required"),
        (
            {"effects": [{"type": "fog", "start_s": 0, "end_s": 1, "severity": 6}]},
            "severity must be an integer 1..5",
        ),
        (
            {"effects": [{"type": "frozen", "start_s": 1, "end_s": 1}]},
            "start_s must be < end_s",
        ),
        ({"expect": [{"type": "be_safe"}]}, "type must be one of"),
        (
            {"expect": [{"type": "reach_state", "after": "rain", "within_s": 1, "state": "X"}]},
            "after must be a time in seconds, <effect>",
        ),
        (
            {"expect": [{"type": "reach_state", "after": 0, "within_s": 1, "state": "SLOW"}]},
            "state must be one of",
        ),
        ({"operator": {"takeover_after_s": "soon"}}, "takeover_after_s must be a number"),
    ],
)
def test_bad_scenarios_raise_config_error(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_scenario(_short(**change), "bad.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("bad.yaml")


def test_cli_reports_a_bad_file_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("format: robust_monitor.scenario/1\nname: x\n", encoding="utf-8")
    assert cli.main(["sim", str(path)]) == 2
    assert "duration_s is required" in capsys.readouterr().err
    path.write_text("format: [unclosed\n", encoding="utf-8")
    assert cli.main(["sim", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(_short()), encoding="utf-8")
    out = tmp_path / "out"
    status = cli.main(["sim", str(path), "--out", str(out), "--no-plot"])
    summary = json.loads((out / "summary.json").read_text())
    assert status == (0 if summary["passed"] else 1)
    assert (out / "timeline.csv").read_text().startswith("index,stamp_s,t_s")
    assert summary["format"] == "robust_monitor.sim/1"
    assert summary["configuration"]["certify"]["n"] == 100
    assert "time_to_stop_s" in summary["metrics"]["hazards"][0]
    assert "scenario short" in capsys.readouterr().out


def test_cli_runs_a_scenario_in_sequential_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(_short()), encoding="utf-8")
    out = tmp_path / "out"
    argv = ["sim", str(path), "--out", str(out), "--no-plot", "--mode", "sequential"]
    status = cli.main([*argv, "--max-n", "1000", "--r-required", "0.3"])
    summary = json.loads((out / "summary.json").read_text())
    assert status == (0 if summary["passed"] else 1)
    configured = summary["configuration"]["certify"]
    assert (configured["mode"], configured["r_required"], configured["max_n"]) == (
        "sequential",
        0.3,
        1000,
    )
    cert = summary["certification"]
    assert cert["mode"] == "sequential"
    assert sum(cert["decisions"].values()) == summary["frames"]["certified"] == 15
    assert cert["decisions"]["certified"] >= 1  # the clear start (fog from 0.5 s)
    assert 0 < cert["samples_per_frame"]["mean"] <= cert["samples_per_frame"]["max"] <= 1000
    assert "sequential (r_required 0.3): samples per frame mean" in capsys.readouterr().out
