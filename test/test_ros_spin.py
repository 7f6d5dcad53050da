"""``run_nodes``'s stop: a shutdown that races the executor ends cleanly, a real error does not.

Each case runs in its own process (``run_nodes`` owns rclpy's global context and the signal
handlers), with the loopback DDS environment ``conftest.py`` set.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import sys
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from robust_monitor.ros.spin import run_nodes

class Racing(SingleThreadedExecutor):
    # What a SIGINT landing mid-spin does: rclpy's handler shuts the context down, and the
    # executor's next wait goes to rcl with an invalid context (a real RCLError from rclpy).
    def spin(self):
        rclpy.shutdown()
        self.spin_once(timeout_sec=0.1)

class Broken(SingleThreadedExecutor):
    def spin(self):
        raise RuntimeError("a real failure while running")

def stopped_while_starting():
    # What a SIGINT right after the nodes came up does (a launcher or a test that stops the node
    # as soon as it publishes its latched state): the context is shut down before spin.
    nodes = [Node("spin_probe")]
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.3)
    return nodes

import os, signal, time
if sys.argv[1] == "starting":
    sys.exit(run_nodes(stopped_while_starting))
kind = {"racing": Racing, "broken": Broken}[sys.argv[1]]
sys.exit(run_nodes(lambda: [Node("spin_probe")], None, kind))
"""


def _run(kind: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, kind],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


@pytest.mark.ros
def test_a_shutdown_racing_the_executor_is_a_clean_stop() -> None:
    result = _run("racing")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.ros
def test_an_error_while_the_context_is_valid_still_fails() -> None:
    result = _run("broken")
    assert result.returncode == 1
    assert "a real failure while running" in result.stderr


@pytest.mark.ros
def test_a_stop_while_the_nodes_start_is_a_clean_stop() -> None:
    """Seen in CI: SIGINT between building the nodes and building the executor made the
    executor's constructor fail on the shut-down context, and rclpy printed a traceback from
    the half-built executor's ``__del__``. The executor now exists before the nodes."""
    result = _run("starting")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
