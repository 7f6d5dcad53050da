"""``robust-monitor node`` and ``robust-monitor launch``: the ROS 2 nodes without the ``ros2`` CLI.

A pip install has rclpy (the ``ros`` extra) but no ``ros2`` command, so these entry points take
the same arguments as ``ros2 run`` and ``ros2 launch``::

    robust-monitor node monitor --ros-args -p image_topic:=/camera/image_raw
    robust-monitor launch image_topic:=/camera/image_raw cmd_vel_in:=/cmd_vel_nav preset:=gazebo

``launch`` starts the processes that ``launch/robust_monitor.launch.py`` would (both use
``launch_config.plan_nodes``), forwards Ctrl-C to them, and stops all when one exits.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import subprocess
import sys
import time
from dataclasses import fields

from robust_monitor.core.errors import ConfigError
from robust_monitor.ros.launch_config import LaunchOptions, plan_nodes

NODES = {
    "monitor": "robust_monitor.ros.monitor_node",
    "arbiter": "robust_monitor.ros.arbiter_node",
    "all": "robust_monitor.ros.combined",
}


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    node = sub.add_parser("node", help="run one ROS 2 node (like `ros2 run robust_monitor ...`)")
    node.add_argument(
        "which", choices=sorted(NODES), help="monitor, arbiter, or all in one process"
    )
    node.add_argument("ros_args", nargs=argparse.REMAINDER, help="--ros-args ... passed to rclpy")
    node.set_defaults(run=run_node)
    launch = sub.add_parser(
        "launch", help="start the nodes like `ros2 launch robust_monitor robust_monitor.launch.py`"
    )
    names = ", ".join(f.name for f in fields(LaunchOptions))
    launch.add_argument("assignments", nargs="*", metavar="NAME:=VALUE", help=f"any of: {names}")
    launch.add_argument("--dry-run", action="store_true", help="print the commands, start nothing")
    launch.set_defaults(run=run_launch)


def run_node(args: argparse.Namespace) -> int:
    module = importlib.import_module(NODES[args.which])
    result = module.main([f"robust-monitor-{args.which}", *args.ros_args])
    return int(result or 0)


def parse_assignments(items: list[str]) -> LaunchOptions:
    allowed = {f.name for f in fields(LaunchOptions)}
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep:
            raise ConfigError(f"launch arguments are NAME:=VALUE, got {item!r}")
        if name not in allowed:
            raise ConfigError(f"unknown launch argument {name!r}; allowed: {sorted(allowed)}")
        values[name] = value
    return LaunchOptions(**values)


def run_launch(args: argparse.Namespace) -> int:
    options = parse_assignments(args.assignments)
    commands = [
        [sys.executable, "-m", plan.module, *plan.ros_args(options.log_level)]
        for plan in plan_nodes(options)
    ]
    if args.dry_run:
        for command in commands:
            print(" ".join(command))
        return 0
    processes = [subprocess.Popen(command) for command in commands]
    signaled: set[int] = set()

    def stop(signum: int) -> None:
        # Each child is asked once: a second SIGINT would interrupt its orderly shutdown.
        for process in processes:
            if process.poll() is None and process.pid not in signaled:
                signaled.add(process.pid)
                process.send_signal(signum)

    def forward(signum: int, _frame: object) -> None:
        stop(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.2)
    finally:
        stop(signal.SIGINT)  # one process ended: stop the others
        deadline = time.monotonic() + 15.0
        for command, process in zip(commands, processes, strict=True):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(
                    f"robust-monitor launch: {command[2]} did not stop within 15 s; killed",
                    file=sys.stderr,
                    flush=True,
                )
                process.kill()
                process.wait()
    return max((abs(p.returncode or 0) for p in processes), default=0)
