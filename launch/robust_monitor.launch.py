"""Launch robust_monitor beside a vehicle stack.

    ros2 launch robust_monitor robust_monitor.launch.py image_topic:=/camera/image_raw \
        cmd_vel_in:=/cmd_vel_nav cmd_vel_out:=/cmd_vel preset:=none single_process:=false

Starts the monitor node (camera -> certificates) and the arbiter node (certificates + cmd_vel_in
-> speed limit, gated cmd_vel_out), or both in one process with ``single_process:=true``. The
same arguments work without the ``ros2`` command: ``robust-monitor launch image_topic:=...``.
What to start is decided by ``robust_monitor.ros.launch_config.plan_nodes`` for both.
"""

from __future__ import annotations

from dataclasses import fields

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from robust_monitor.ros.launch_config import LaunchOptions, plan_nodes

DESCRIPTIONS = {
    "model": "ONNX model path (empty: the parameter files' model_path, default the shipped model)",
    "image_topic": "camera topic (empty: the parameter files' image_topic)",
    "compressed": "true: the camera topic is sensor_msgs/CompressedImage (empty: parameter files)",
    "cmd_vel_in": "velocity commands from the planner, gated by the arbiter",
    "cmd_vel_out": "gated velocity commands (empty: the preset's topic, else cmd_vel_out)",
    "params_file": "extra ROS 2 parameter file applied after the defaults and the preset",
    "use_sim_time": "true: follow /clock (empty: the parameter files'; presets set true)",
    "preset": "none | carla | gazebo: simulator bridge presets from config/",
    "single_process": "true: monitor and arbiter in one process for the lowest latency",
    "log_level": "ROS log level of the nodes",
}


def _nodes(context, *_args, **_kwargs):  # type: ignore[no-untyped-def]
    values = {f.name: LaunchConfiguration(f.name).perform(context) for f in fields(LaunchOptions)}
    options = LaunchOptions(**values)
    return [
        Node(
            package="robust_monitor",
            executable=plan.executable,
            name=plan.name,
            output="screen",
            emulate_tty=True,
            parameters=[*plan.params_files, plan.parameters],
            remappings=list(plan.remappings),
            ros_arguments=["--log-level", options.log_level],
        )
        for plan in plan_nodes(options)
    ]


def generate_launch_description() -> LaunchDescription:
    defaults = LaunchOptions()
    arguments = [
        DeclareLaunchArgument(
            f.name, default_value=str(getattr(defaults, f.name)), description=DESCRIPTIONS[f.name]
        )
        for f in fields(LaunchOptions)
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
