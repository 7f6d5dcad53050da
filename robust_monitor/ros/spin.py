"""How every executable of the package runs its nodes: one executor, an orderly stop.

``run_nodes`` initialises rclpy, builds the nodes, spins them on one SingleThreadedExecutor
until SIGINT (Ctrl-C), SIGTERM or a ROS shutdown, then destroys them and shuts rclpy down.

Why one thread: every callback of the monitor and the arbiter is short (certification has its
own worker thread). rclpy 9.1's MultiThreadedExecutor re-yields a task that waits in its thread
pool and spins holding the GIL meanwhile (ros2/rclpy#1452); here it delayed certificates by up
to a second and starved the certification worker.

Why no signal ever raises here: Ctrl-C in a terminal reaches the whole foreground process group,
so a node started by ``robust-monitor launch`` (or ``ros2 launch``) gets SIGINT once from the
terminal and once more from the launcher. Python's default handler raises KeyboardInterrupt
wherever the main thread happens to be, and a second one landing in ``destroy_node`` (even
between the first one and a ``signal.SIG_IGN``) ended the process with a traceback and exit 2.
So before ``rclpy.init`` SIGINT and SIGTERM get a handler that only counts; rclpy's own handler
(which chains to it) shuts the context down, ``spin`` ends with ExternalShutdownException, and
the stop that has begun always finishes (SIGKILL still works). Once the nodes are destroyed both
signals are ignored, so a late one cannot turn a clean exit into status 130 while Python
finalizes (checked with four SIGINTs or SIGTERMs within 160 ms: exit 0, no traceback).

One race remains in rclpy itself: when the signal's shutdown lands while the executor is
building its next wait set, ``spin`` raises RCLError ("the given context is not valid")
instead of ExternalShutdownException (seen in CI: exit 1 with a traceback). An error from
``spin`` once the context is shut down is that stop, and ends the same way; one while the
context is still valid is a real failure and propagates. The executor is built right after
``rclpy.init`` and before the nodes, so a stop while the nodes start cannot catch it half-built.
"""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SHUTDOWN_DUMP_S = 10.0
"""A stop still running after this long prints every thread's stack to stderr (faulthandler)."""
"""Ctrl-C, and SIGTERM (systemd, docker stop, launch's escalation): both stop the nodes."""


class _StopRequests:
    """A signal handler that only counts: rclpy's handler, which chains to it, does the stop."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, _signum: int, _frame: object) -> None:
        self.count += 1


def run_nodes(
    make_nodes: Callable[[], Sequence[Node]],
    args: list[str] | None = None,
    executor_type: type[SingleThreadedExecutor] = SingleThreadedExecutor,
) -> int:
    """Spin the nodes ``make_nodes()`` returns until asked to stop; returns 0.

    ``executor_type``: the executor class (a SingleThreadedExecutor; tests pass a subclass)."""
    requests = _StopRequests()
    _install(requests)  # before rclpy.init, so rclpy's handler chains to it
    rclpy.init(args=args)
    nodes: Sequence[Node] = ()
    # The executor first: built once the nodes exist, a stop that had already shut the context
    # down made its constructor fail, and rclpy printed a traceback from the half-built
    # executor's __del__ (seen in CI when a test stopped a node as soon as it came up).
    executor = executor_type()
    try:
        nodes = make_nodes()
        for node in nodes:
            executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise  # the context is valid: a real failure, not the stop racing the executor
    finally:
        _install(requests)  # whatever rclpy left in place: from here on a signal only counts
        # A stop that hangs (a launcher kills the node after 15 s) leaves every thread's stack
        # on stderr first, so the log says where it hung.
        faulthandler.dump_traceback_later(SHUTDOWN_DUMP_S, exit=False)
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown()
        faulthandler.cancel_dump_traceback_later()
        # Ignored, not counted, until the process is gone: Python resets its own handlers to the
        # default (terminate) while it finalizes, which would turn a late signal into exit 130.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    return 0


def _install(handler: _StopRequests) -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


class BackgroundSpin:
    """Spin one node on a SingleThreadedExecutor in a daemon thread (the tools' probe nodes).

    ``close`` stops the executor, joins the thread and only then destroys the node: destroying a
    node whose handles another thread is waiting on can crash the interpreter.
    """

    def __init__(self, node: Node, context: Any) -> None:
        self.node = node
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        with contextlib.suppress(Exception):  # the context may be shut down under the executor
            self.executor.spin()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
