"""The launch plan shared by ``ros2 launch`` and ``robust-monitor launch``.

CI has no ``launch``/``launch_ros`` (they are not on PyPI), so the launch file's logic lives in
``robust_monitor.ros.launch_config`` and is tested here; ``robust-monitor launch`` runs the very
plan as real processes over loopback DDS.
"""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import pytest

from robust_monitor.core.errors import ConfigError
from robust_monitor.ros.launch_config import LaunchOptions, config_dir, plan_nodes
from robust_monitor.tools.ros_cmd import parse_assignments

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "robust_monitor.launch.py"


def test_launch_file_describes_every_argument() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text())
    descriptions = next(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DESCRIPTIONS"
    )
    assert isinstance(descriptions, ast.Dict)
    keys = {k.value for k in descriptions.keys if isinstance(k, ast.Constant)}
    assert keys == {f.name for f in fields(LaunchOptions)}
    assert "plan_nodes" in LAUNCH_FILE.read_text()


def test_two_processes_by_default_with_remapped_cmd_vel() -> None:
    plans = plan_nodes(LaunchOptions(cmd_vel_in="/nav/cmd_vel", cmd_vel_out="/cmd_vel"))
    assert [p.executable for p in plans] == ["monitor_node", "arbiter_node"]
    arbiter = plans[1]
    assert ("cmd_vel_in", "/nav/cmd_vel") in arbiter.remappings
    assert ("cmd_vel_out", "/cmd_vel") in arbiter.remappings
    assert all(p.params_files[0].endswith("config/robust_monitor.yaml") for p in plans)
    assert all("use_sim_time" not in p.parameters for p in plans)  # the files decide


def test_presets_choose_the_simulator_output_topic() -> None:
    carla = plan_nodes(LaunchOptions(preset="carla"))[1]
    assert ("cmd_vel_out", "/carla/ego_vehicle/twist") in carla.remappings
    gazebo = plan_nodes(LaunchOptions(preset="gazebo", cmd_vel_out="/robot/cmd_vel"))[1]
    assert ("cmd_vel_out", "/robot/cmd_vel") in gazebo.remappings


def test_single_process_and_presets_and_overrides(tmp_path: Path) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text("robust_monitor:\n  ros__parameters:\n    n: 100\n")
    (plan,) = plan_nodes(
        LaunchOptions(
            single_process="true",
            preset="carla",
            params_file=str(extra),
            model="/m.onnx",
            compressed="false",
            use_sim_time="true",
        )
    )
    assert plan.executable == "robust_monitor_all"
    assert [Path(f).name for f in plan.params_files] == [
        "robust_monitor.yaml",
        "carla.yaml",
        "mine.yaml",
    ]
    assert plan.parameters["model_path"] == "/m.onnx"
    assert plan.parameters["compressed"] is False and plan.parameters["use_sim_time"] is True
    args = plan.ros_args()
    assert args[:2] == ["--ros-args", "-r"] and "model_path:=/m.onnx" in args


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (LaunchOptions(preset="webots"), "preset must be one of"),
        (LaunchOptions(use_sim_time="maybe"), "use_sim_time must be true or false"),
        (LaunchOptions(params_file="/nonexistent.yaml"), "params_file not found"),
    ],
)
def test_invalid_launch_arguments(options: LaunchOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_nodes(options)


def test_cli_assignments() -> None:
    assert parse_assignments(["preset:=gazebo"]).preset == "gazebo"
    with pytest.raises(ConfigError, match="NAME:=VALUE"):
        parse_assignments(["preset=gazebo"])
    with pytest.raises(ConfigError, match="unknown launch argument"):
        parse_assignments(["camera:=x"])


def test_presets_exist() -> None:
    for name in ("robust_monitor.yaml", "carla.yaml", "gazebo.yaml"):
        assert (config_dir() / name).is_file()
