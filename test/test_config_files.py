"""The parameter files in config/: they parse, every key is a parameter the nodes declare (with
the node's default in robust_monitor.yaml), the presets load cleanly and turn on sim time, and a
node started with the files (``--ros-args --params-file``) comes up without complaint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosutil import Inbox, RosHarness, ros_harness, unique_name
from std_msgs.msg import String

from robust_monitor.ros.arbiter_node import NODE_NAME as ARBITER
from robust_monitor.ros.arbiter_node import ArbiterNode
from robust_monitor.ros.monitor_node import NODE_NAME as MONITOR
from robust_monitor.ros.monitor_node import MonitorNode
from robust_monitor.ros.qos import latched_qos

CONFIG = Path(__file__).resolve().parents[1] / "config"
DEFAULTS = CONFIG / "robust_monitor.yaml"
PRESETS = ("carla", "gazebo")
ROS_PARAMETERS = "ros__parameters"
NOT_IN_FILE = {"model_path", "roi", "bands_l2"}
"""Monitor parameters whose default cannot be written in a file (a path inside the installed
package; unset arrays); the file documents them in comments."""
RCLPY_OWN = {"use_sim_time", "start_type_description_service"}


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def section(data: dict[str, Any], node: str) -> dict[str, Any]:
    """The parameters of ``node`` in a file keyed by ``/**/<node>`` (or the plain name)."""
    for key in (f"/**/{node}", node, f"/{node}"):
        if key in data:
            params = data[key][ROS_PARAMETERS]
            assert isinstance(params, dict)
            return params
    return {}


@pytest.fixture
def harness() -> Iterator[RosHarness]:
    with ros_harness() as h:
        yield h


def make_nodes(harness: RosHarness, *files: Path) -> tuple[MonitorNode, ArbiterNode]:
    """Both nodes in a fresh namespace with ``files`` as ``--params-file`` arguments."""
    args = ["--ros-args"]
    for path in files:
        args += ["--params-file", str(path)]
    ns = f"/{unique_name()}"
    # A model that does not exist: the monitor fails fast instead of loading the shipped one.
    missing = [Parameter("model_path", value=str(CONFIG / "absent.onnx"))]
    monitor = harness.add(
        MonitorNode(
            context=harness.context,
            namespace=ns,
            cli_args=args,
            use_global_arguments=False,
            parameter_overrides=missing,
        )
    )
    arbiter = harness.add(
        ArbiterNode(
            context=harness.context, namespace=ns, cli_args=args, use_global_arguments=False
        )
    )
    return monitor, arbiter


def plain(value: Any) -> Any:
    """Parameter value as YAML gives it (arrays come back from rclpy as array.array)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return list(value)


def declared(node: Node) -> dict[str, Any]:
    """Every parameter the node declared (not rclpy's own) -> its value."""
    params = node.get_parameters_by_prefix("")
    return {name: plain(p.value) for name, p in params.items() if name not in RCLPY_OWN}


# --- files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(CONFIG.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_is_a_ros_parameter_file(path: Path) -> None:
    data = load(path)
    for key, body in data.items():
        assert key == "/**" or key.lstrip("/").split("/")[-1] in (MONITOR, ARBITER), key
        assert isinstance(body, dict) and set(body) == {ROS_PARAMETERS}, key
        assert isinstance(body[ROS_PARAMETERS], dict) and body[ROS_PARAMETERS], key


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_turn_on_sim_time(preset: str) -> None:
    data = load(CONFIG / f"{preset}.yaml")
    assert data["/**"][ROS_PARAMETERS]["use_sim_time"] is True


def test_carla_preset_wires_the_bridge_topics() -> None:
    data = load(CONFIG / "carla.yaml")
    assert section(data, MONITOR)["image_topic"] == "/carla/ego_vehicle/rgb_front/image"
    arbiter = section(data, ARBITER)
    assert arbiter["stamped_cmd_vel"] is False  # carla_twist_to_control reads Twist
    assert arbiter["manual_override_topic"] == "/carla/ego_vehicle/vehicle_control_manual_override"
    assert "/carla/ego_vehicle/twist" in (CONFIG / "carla.yaml").read_text()  # cmd_vel_out hint
    gazebo = load(CONFIG / "gazebo.yaml")
    assert section(gazebo, MONITOR)["image_topic"] == "/camera/image_raw"
    assert section(gazebo, ARBITER)["stamped_cmd_vel"] is False


def test_the_arbiter_section_is_the_policy_file() -> None:
    policy = load(CONFIG / "arbiter_policy.yaml")["/**"][ROS_PARAMETERS]
    arbiter = section(load(DEFAULTS), ARBITER)
    assert {k: arbiter[k] for k in policy} == policy


# --- the nodes read them -------------------------------------------------------------------------
@pytest.mark.ros
def test_every_key_is_declared_with_the_nodes_default(harness: RosHarness) -> None:
    data = load(DEFAULTS)
    monitor, arbiter = make_nodes(harness)  # no file: the built-in defaults
    for node, name in ((monitor, MONITOR), (arbiter, ARBITER)):
        params = section(data, name)
        defaults = declared(node)
        assert set(params) <= set(defaults), f"{name}: undeclared {set(params) - set(defaults)}"
        assert set(defaults) - set(params) <= NOT_IN_FILE, f"{name}: not in the file"
        for key, value in params.items():
            assert defaults[key] == value, (name, key)
    assert arbiter.config_error == ""


@pytest.mark.ros
@pytest.mark.parametrize("preset", [None, *PRESETS])
def test_the_nodes_accept_the_files(harness: RosHarness, preset: str | None) -> None:
    files = [DEFAULTS] + ([CONFIG / f"{preset}.yaml"] if preset else [])
    monitor, arbiter = make_nodes(harness, *files)
    assert arbiter.config_error == ""
    merged: dict[str, dict[str, Any]] = {MONITOR: {}, ARBITER: {}}
    for path in files:
        data = load(path)
        for name in merged:
            merged[name] |= data.get("/**", {}).get(ROS_PARAMETERS, {})
            merged[name] |= section(data, name)
    for node, name in ((monitor, MONITOR), (arbiter, ARBITER)):
        for key, value in merged[name].items():
            got = plain(node.get_parameter(key).value)
            assert got == value, (name, key, got, value)
    if preset:
        assert arbiter.get_parameter("use_sim_time").value is True
        assert monitor.get_parameter("use_sim_time").value is True
    assert "model not loaded" in monitor.state.error or monitor.state.error == ""


@pytest.mark.ros
def test_a_node_started_with_the_files_comes_up_and_stops_cleanly(harness: RosHarness) -> None:
    """``--ros-args --params-file`` in a real process, preset and sim time (no /clock) included."""
    ns = unique_name()
    command = [
        sys.executable, "-m", "robust_monitor.ros.arbiter_node", "--ros-args",
        "-r", f"__ns:=/{ns}", "--params-file", str(DEFAULTS),
        "--params-file", str(CONFIG / "carla.yaml"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        probe = harness.node("probe", ns)
        states = Inbox()
        probe.create_subscription(String, f"/{ns}/{ARBITER}/state", states, latched_qos())
        assert states.wait_for(lambda m: m.data == "MINIMAL_RISK", 30.0) is not None, lines
        assert proc.poll() is None, "the node exited on its own"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15.0) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5.0)
    text = "".join(lines)
    assert "Traceback" not in text and "invalid configuration" not in text, text
