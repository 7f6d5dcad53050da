"""How every executable of the package runs its nodes: one executor, an orderly stop.

``run_nodes`` initialises rclpy, builds the nodes, spins them on one SingleThreadedExecutor
until SIGINT (Ctrl-C), SIGTERM or a ROS shutdown, then destroys them and shuts rclpy down.

Why one thread: every callback of the monitor and the arbiter is short (certification has its
own worker thread). rclpy 9.1's MultiThreadedExecutor re-yields a task that waits in its thread
pool and spins holding the GIL meanwhile (ros2/rclpy#1452); here it delayed certificates by up
to a second and starved the certification worker.

Why a second SIGINT is ignored: Ctrl-C in a terminal reaches the whole foreground process group,
so a node started by ``robust-monitor launch`` (or ``ros2 launch``) gets it once from the
terminal and once more from the launcher. Interrupting ``destroy_node`` half-way would end the
process with a traceback and a non-zero status, so the stop that has begun is allowed to finish
(SIGKILL still works).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


def run_nodes(make_nodes: Callable[[], Sequence[Node]], args: list[str] | None = None) -> int:
    """Spin the nodes ``make_nodes()`` returns until asked to stop; returns 0."""
    rclpy.init(args=args)
    nodes: Sequence[Node] = ()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        nodes = make_nodes()
        executor = SingleThreadedExecutor()
        for node in nodes:
            executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown()
        signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM stops the node the way Ctrl-C does (systemd, docker stop, launch's escalation)."""
    raise KeyboardInterrupt
