"""``robust-monitor sim --ros``: scenarios over real DDS against the monitor and arbiter processes.

Two scenarios of the suite, chosen for the paths the in-process loop does not cross: a camera
dropout (no frames: the clock advances on the arbiter's tick times and staleness must stop the
car) and an operator who takes over and releases (the real Trigger services). Each runs through
the command line, must pass its expectations, and must agree with the in-process run on when the
state changed: the node's noise is not seeded, so certificates differ draw to draw, but not by
more than a frame or two in when the arbiter acts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robust_monitor.tools.sim import run_scenario

ROOT = Path(__file__).resolve().parents[1]


def _first_times(steps: list[tuple[float, str]]) -> dict[str, float]:
    """The first time each state was entered."""
    out: dict[str, float] = {}
    for t, state in steps:
        out.setdefault(state, t)
    return out


@pytest.mark.parametrize("name", ["camera_dropout", "operator_answers"])
def test_a_scenario_over_dds_passes_and_matches_the_in_process_run(
    name: str, tmp_path: Path
) -> None:
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    scenario = ROOT / "scenarios" / f"{name}.yaml"
    out = tmp_path / name
    cmd = [sys.executable, "-m", "robust_monitor.tools.cli", "sim", str(scenario), "--ros"]
    done = subprocess.run(
        [*cmd, "--out", str(out), "--no-plot"], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "PASS" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["transport"] == "ros" and summary["passed"]
    assert all(e["passed"] for e in summary["expectations"])

    local = run_scenario(scenario)
    assert local.passed
    ros_entered = _first_times([(t["t_s"], t["to"]) for t in summary["arbiter"]["transitions"]])
    local_entered = _first_times(
        [(t["t_s"], t["to"]) for t in local.summary["arbiter"]["transitions"]]
    )
    assert set(ros_entered) == set(local_entered), (ros_entered, local_entered)
    frame = 1.0 / summary["scenario"]["frame_rate_hz"]
    for state, t in local_entered.items():
        assert abs(ros_entered[state] - t) <= 2 * frame + 1e-6, (state, ros_entered, local_entered)
    if name == "operator_answers":
        assert summary["operator"]["takeovers_s"] and summary["operator"]["releases_s"]
