"""Monitor and arbiter in one process: the lowest-latency option (``single_process:=true``).

    ros2 run robust_monitor robust_monitor_all --ros-args --params-file config/robust_monitor.yaml

Both nodes spin in one SingleThreadedExecutor: the monitor's certification worker thread keeps
the executor free, so every callback it dispatches is short. (rclpy 9.1's MultiThreadedExecutor
is avoided on purpose: it spins holding the GIL while a task waits in its thread pool,
ros2/rclpy#1452, which delayed certificates by up to a second on a 2-core machine.) rclpy has no
intra-process communication of its own (that is rclcpp's), but both nodes live in one DDS
participant, where Fast DDS delivers between them without the network stack (its intraprocess
delivery, on by default); only the topics cross no process boundary, nothing else changes, so
other nodes still see ``~/certificate``, ``~/speed_limit`` and the rest as usual.

Node names: a ``__node:=`` remapping in the global arguments renames every node of a process,
which would give the arbiter the monitor's name (``ros2 launch`` and ``robust-monitor launch``
pass ``-r __node:=robust_monitor`` for this executable). So the monitor takes the global
arguments as they are, and the arbiter gets the same ``--ros-args`` (parameter files,
parameters, remappings such as ``cmd_vel_in``/``cmd_vel_out``, ``__ns``) without the node-name
remappings, and keeps its name ``robust_monitor_arbiter``. Node-targeted rules
(``robust_monitor_arbiter:__node:=...``) still apply to it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rclpy.node import Node

from robust_monitor.ros.arbiter_node import ArbiterNode
from robust_monitor.ros.monitor_node import MonitorNode
from robust_monitor.ros.spin import run_nodes

_ROS_ARGS = "--ros-args"
_END = "--"
_REMAP_FLAGS = ("-r", "--remap")
_NODE_NAME_RULES = ("__node:=", "__name:=")


def arbiter_cli_args(argv: Sequence[str]) -> list[str]:
    """The ROS arguments of ``argv`` for the arbiter: every one but a global node-name remap.

    Reads every ``--ros-args ... [--]`` section of ``argv`` (a full command line; the program
    name and non-ROS arguments are skipped) and returns them as one ``--ros-args`` list.
    """
    out: list[str] = [_ROS_ARGS]
    inside = False
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == _ROS_ARGS:
            inside = True
        elif token == _END:
            inside = False
        elif inside:
            if token in _REMAP_FLAGS and i + 1 < len(argv):
                rule = argv[i + 1]
                if not rule.startswith(_NODE_NAME_RULES):
                    out += [token, rule]
                i += 2
                continue
            out.append(token)
        i += 1
    return out


def create_nodes(argv: Sequence[str] | None = None, **kwargs: object) -> tuple[Node, Node]:
    """(MonitorNode, ArbiterNode) for the command line ``argv`` (default: ``sys.argv``).

    ``kwargs`` (``context``, ``namespace``, ...) go to both nodes. rclpy must be initialised.
    """
    args = list(sys.argv if argv is None else argv)
    monitor = MonitorNode(**kwargs)
    try:
        arbiter = ArbiterNode(
            cli_args=arbiter_cli_args(args),
            use_global_arguments=False,
            **kwargs,
        )
    except Exception:
        monitor.destroy_node()
        raise
    return monitor, arbiter


def main(args: list[str] | None = None) -> int:
    """Entry point: spin monitor and arbiter until SIGINT (Ctrl-C) or a ROS shutdown; returns 0."""
    return run_nodes(lambda: create_nodes(args), args)


if __name__ == "__main__":
    raise SystemExit(main())
