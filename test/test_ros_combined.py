"""Monitor and arbiter in one process (``robust_monitor.ros.combined``): real frames are certified
by the small random CNN and the arbiter reacts to them, over loopback DDS.

The process is started the way both launch front ends start it (``-r __node:=robust_monitor``,
the default parameter file), which also checks that the arbiter keeps its own name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from rosutil import (
    Inbox,
    RosHarness,
    call_trigger,
    known_frame,
    raw_image,
    ros_harness,
    stamp,
    unique_name,
    wait_until,
)
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String

from robust_monitor.ros.combined import arbiter_cli_args
from robust_monitor.ros.contract import diagnostics_to_evidence
from robust_monitor.ros.qos import evidence_qos, latched_qos

CONFIG = Path(__file__).resolve().parents[1] / "config"
# known_frame() is certified by the small CNN with all 64 votes (radius ~0.32 >= 0.30: healthy,
# OOD OK); a flat grey frame abstains and fails the camera checks (handover level).
GOOD = known_frame()
GREY = np.full_like(GOOD, 128)


# --- the command line ----------------------------------------------------------------------------
def test_arbiter_cli_args_drop_only_node_name_remaps() -> None:
    argv = [
        "robust_monitor_all", "--ros-args", "-r", "__node:=robust_monitor", "-r", "__ns:=/car",
        "--params-file", "a.yaml", "-p", "use_sim_time:=true", "--remap", "__name:=x",
        "-r", "cmd_vel_in:=/nav", "--", "extra", "--ros-args", "--log-level", "info",
    ]  # fmt: skip
    assert arbiter_cli_args(argv) == [
        "--ros-args", "-r", "__ns:=/car", "--params-file", "a.yaml", "-p", "use_sim_time:=true",
        "-r", "cmd_vel_in:=/nav", "--log-level", "info",
    ]  # fmt: skip
    assert arbiter_cli_args(["prog"]) == ["--ros-args"]
    targeted = ["p", "--ros-args", "-r", "robust_monitor_arbiter:__node:=gate"]
    assert arbiter_cli_args(targeted) == ["--ros-args", "-r", "robust_monitor_arbiter:__node:=gate"]


# --- the process ---------------------------------------------------------------------------------
@pytest.fixture
def harness() -> Iterator[RosHarness]:
    with ros_harness() as h:
        yield h


class Camera:
    """Publishes ``frame`` at 15 Hz, stamped now, with a little sensor noise (not frozen)."""

    def __init__(self, publisher: object) -> None:
        self.publisher = publisher
        self.frame = GOOD
        self._rng = np.random.default_rng(0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            noise = self._rng.integers(-3, 4, self.frame.shape)
            rgb = np.clip(self.frame.astype(int) + noise, 0, 255).astype(np.uint8)
            now = time.time()
            msg, _ = raw_image(rgb, "rgb8", stamp(int(now), int((now % 1) * 1e9)))
            self.publisher.publish(msg)  # type: ignore[attr-defined]
            self._stop.wait(1 / 15)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


@pytest.mark.ros
def test_one_process_certifies_frames_and_the_arbiter_reacts(
    harness: RosHarness, small_cnn_path: Path
) -> None:
    ns = unique_name()
    command = [
        sys.executable, "-m", "robust_monitor.ros.combined", "--ros-args",
        "-r", "__node:=robust_monitor", "-r", f"__ns:=/{ns}",
        "--params-file", str(CONFIG / "robust_monitor.yaml"),
        "-p", f"model_path:={small_cnn_path}", "-p", f"image_topic:=/{ns}/image",
        "-p", "sigma:=0.25", "-p", "n0:=16", "-p", "n:=64", "-p", "batch_size:=64",
        "-p", "provider:=cpu", "-p", "recovery_time_s:=0.5",
        # The monitor is a separate, CPU-bound process: on a busy 2-core machine it can stall
        # longer than the default 0.5 s, and this test is about evidence, not about staleness.
        "-p", "stale_after_s:=2.0",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    camera: Camera | None = None
    try:
        probe = harness.node("probe", ns)
        states, ready, certificates = Inbox(), Inbox(), Inbox()
        arbiter = f"/{ns}/robust_monitor_arbiter"
        probe.create_subscription(String, f"{arbiter}/state", states, latched_qos())
        probe.create_subscription(Bool, f"/{ns}/robust_monitor/ready", ready, latched_qos())
        probe.create_subscription(
            DiagnosticArray, f"/{ns}/robust_monitor/certificate", certificates, evidence_qos()
        )
        # Both nodes are up under their own names despite the global __node remap.
        assert states.wait_for(lambda m: m.data == "MINIMAL_RISK", 30.0) is not None, lines
        assert ready.wait_for(lambda m: m.data is True, 30.0) is not None, lines
        publisher = probe.create_publisher(Image, f"/{ns}/image", qos_profile_sensor_data)
        assert wait_until(lambda: publisher.get_subscription_count() > 0, 10.0)

        camera = Camera(publisher)
        assert wait_until(lambda: len(certificates.items) >= 3, 15.0), lines
        _, cert, verdict, problems = diagnostics_to_evidence(certificates.items[-1])
        assert problems == [] and cert is not None and verdict is not None
        assert cert.radius >= 0.30 and verdict.level == 0, (cert, verdict)

        deadline, message = time.monotonic() + 10.0, ""
        while time.monotonic() < deadline:  # healthy for recovery_time_s, then released
            accepted, message = call_trigger(probe, f"{arbiter}/operator_release")
            if accepted:
                break
            time.sleep(0.2)
        assert "release accepted" in message, (message, lines[-10:])
        assert states.wait_for(lambda m: m.data == "NOMINAL", 5.0) is not None

        camera.frame = GREY  # abstains, camera checks fail: handover-level evidence
        found = states.wait_for(lambda m: m.data == "HANDOVER_REQUESTED", 10.0)
        assert found is not None, [m.data for m in states.items]
        handover = Inbox()  # latched: a late subscriber sees the standing request
        probe.create_subscription(Bool, f"{arbiter}/handover_request", handover, latched_qos())
        assert handover.wait_for(lambda m: m.data is True, 5.0) is not None
        camera.stop()
        assert proc.poll() is None, "the process exited on its own"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15.0) == 0, lines[-30:]
    finally:
        if camera is not None:
            camera.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5.0)
    assert not any("Traceback" in line for line in lines), "".join(lines)
