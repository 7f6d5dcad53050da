"""What to start, decided once for both front ends: ``ros2 launch`` and ``robust-monitor launch``.

``launch/robust_monitor.launch.py`` (under a ROS 2 installation) and ``robust-monitor launch``
(pip installs without the ``ros2`` command) take the same arguments and both call
``plan_nodes``; one turns the plan into ``launch_ros`` Node actions, the other into processes.
Pure Python: no launch or rclpy import here, so CI tests the plan without a ROS installation.

Parameter files are applied in order (later wins): the preset (``config/<preset>.yaml``), then
the user's ``params_file``, then the explicit launch arguments.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from robust_monitor.core.errors import ConfigError

PRESETS = ("none", "carla", "gazebo")
PRESET_CMD_VEL_OUT = {
    "none": "cmd_vel_out",
    # carla_twist_to_control reads geometry_msgs/Twist here and drives the ego vehicle.
    "carla": "/carla/ego_vehicle/twist",
    # ros_gz_bridge's usual mapping of the diff-drive plugin's command topic.
    "gazebo": "/cmd_vel",
}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def config_dir() -> Path:
    """The package's config/ folder: the source tree, else the ament index's share folder (a
    colcon install), else ``<sys.prefix>/share/robust_monitor/config`` (a pip install). The
    ament index comes before ``sys.prefix`` so an old pip install in the same Python never
    shadows the workspace being run."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "config"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("robust_monitor")) / "config")
    except Exception:  # no ament index (pip install) or package not in it
        pass
    candidates.append(Path(sys.prefix) / "share" / "robust_monitor" / "config")
    for candidate in candidates:
        if (candidate / "robust_monitor.yaml").is_file():
            return candidate
    raise ConfigError(f"config folder not found; looked in {[str(c) for c in candidates]}")


def parse_bool(name: str, value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"launch argument {name} must be true or false, got {value!r}")


@dataclass(frozen=True, slots=True)
class LaunchOptions:
    """The launch arguments (each is also a DeclareLaunchArgument of the launch file)."""

    model: str = ""
    """ONNX model path; empty: the parameter files' value (default: the shipped model)."""
    image_topic: str = ""
    """Camera topic; empty: the parameter files' value."""
    compressed: str = ""
    """true|false: subscribe sensor_msgs/CompressedImage; empty: the parameter files' value."""
    cmd_vel_in: str = "cmd_vel_in"
    cmd_vel_out: str = ""
    """Gated output; empty: the preset's (CARLA: /carla/ego_vehicle/twist, Gazebo: /cmd_vel),
    else ``cmd_vel_out``."""
    params_file: str = ""
    use_sim_time: str = ""
    """true|false; empty: the parameter files' value (the CARLA and Gazebo presets set true)."""
    preset: str = "none"
    single_process: str = "false"
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class NodePlan:
    """One process to start: which executable, with which parameters and remappings."""

    executable: str
    """Console script installed by setup.py (``ros2 run robust_monitor <executable>``)."""
    module: str
    """``python -m`` module, for installs without ``ros2``."""
    name: str
    params_files: tuple[str, ...]
    parameters: dict[str, str | bool | float | int] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()

    def ros_args(self, log_level: str = "info") -> list[str]:
        """The ``--ros-args`` part of a command line for this node."""
        args = ["--ros-args", "-r", f"__node:={self.name}", "--log-level", log_level]
        for path in self.params_files:
            args += ["--params-file", path]
        for key, value in self.parameters.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["-p", f"{key}:={text}"]
        for old, new in self.remappings:
            args += ["-r", f"{old}:={new}"]
        return args


def plan_nodes(options: LaunchOptions, config: Path | None = None) -> list[NodePlan]:
    """The nodes to start for ``options``; raises ConfigError on invalid arguments."""
    if options.preset not in PRESETS:
        raise ConfigError(f"preset must be one of {PRESETS}, got {options.preset!r}")
    folder = config or config_dir()
    files = [str(folder / "robust_monitor.yaml")]
    if options.preset != "none":
        files.append(str(folder / f"{options.preset}.yaml"))
    if options.params_file:
        if not Path(options.params_file).is_file():
            raise ConfigError(f"params_file not found: {options.params_file}")
        files.append(options.params_file)
    common: dict[str, str | bool | float | int] = {}
    if options.use_sim_time:
        common["use_sim_time"] = parse_bool("use_sim_time", options.use_sim_time)
    monitor: dict[str, str | bool | float | int] = dict(common)
    if options.model:
        monitor["model_path"] = options.model
    if options.image_topic:
        monitor["image_topic"] = options.image_topic
    if options.compressed:
        monitor["compressed"] = parse_bool("compressed", options.compressed)
    cmd_vel_out = options.cmd_vel_out or PRESET_CMD_VEL_OUT[options.preset]
    remaps = (("cmd_vel_in", options.cmd_vel_in), ("cmd_vel_out", cmd_vel_out))
    if parse_bool("single_process", options.single_process):
        return [
            NodePlan(
                "robust_monitor_all",
                "robust_monitor.ros.combined",
                "robust_monitor",
                tuple(files),
                {**monitor},
                remaps,
            )
        ]
    return [
        NodePlan(
            "monitor_node",
            "robust_monitor.ros.monitor_node",
            "robust_monitor",
            tuple(files),
            monitor,
        ),
        NodePlan(
            "arbiter_node",
            "robust_monitor.ros.arbiter_node",
            "robust_monitor_arbiter",
            tuple(files),
            dict(common),
            remaps,
        ),
    ]
