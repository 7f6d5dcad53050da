"""The CARLA and Gazebo presets end to end, against emulated bridges, over loopback DDS.

Each test starts the product the way a user does beside a simulator (``robust-monitor launch
preset:=carla`` or ``preset:=gazebo``: two processes, the shipped parameter files plus the
preset, the launch plan's remappings) and plays the bridge from a probe node:

- CARLA ROS 2 bridge: ``/clock``, the ego vehicle's front camera on
  ``/carla/ego_vehicle/rgb_front/image`` as ``sensor_msgs/Image`` bgra8, and the unstamped
  ``geometry_msgs/Twist`` that ``carla_twist_to_control`` reads on ``/carla/ego_vehicle/twist``;
  the manual-override flag on ``/carla/ego_vehicle/vehicle_control_manual_override``.
- ros_gz_bridge: ``/clock``, ``/camera/image_raw`` as rgb8, ``/cmd_vel`` as ``Twist``.

Simulated time starts at 5000 s, far from the wall clock: a node that used wall time would see
every frame as 1.7e9 s stale, so reaching NOMINAL already shows that stamps and staleness follow
``/clock``. The CARLA test also pauses the clock with the camera off (no staleness while
simulated time stands still) and resumes it (MINIMAL_RISK within stale_after_s of sim time).

Only the model and the sample counts are overridden (a small random CNN, n = 64, for CI speed),
in a parameter file applied after the preset, as a user's ``params_file`` would be.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock
from rosutil import (
    Inbox,
    RosHarness,
    call_trigger,
    known_frame,
    raw_image,
    ros_harness,
    wait_until,
)
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String

from robust_monitor.ros.contract import diagnostics_to_evidence
from robust_monitor.ros.qos import evidence_qos, latched_qos

pytestmark = pytest.mark.ros

SIM_T0_S = 5000.0
FRAME = known_frame()  # certified with every vote by the small CNN (radius ~0.32: healthy)
STALE_AFTER_S = 1.0
ARBITER = "/robust_monitor_arbiter"
MONITOR = "/robust_monitor"


class SimClock:
    """Simulated time on ``/clock`` at 100 Hz: SIM_T0_S plus the wall time it has run."""

    def __init__(self, node: Node) -> None:
        self._pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=10))
        self._lock = threading.Lock()
        self._sim_s = SIM_T0_S
        self._running = True
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now_s(self) -> float:
        with self._lock:
            if self._running:
                t = time.monotonic()
                self._sim_s += t - self._last
                self._last = t
            return self._sim_s

    def pause(self) -> None:
        self.now_s()
        with self._lock:
            self._running = False

    def resume(self) -> None:
        with self._lock:
            self._running, self._last = True, time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = Clock()
            msg.clock = _time_msg(self.now_s())
            self._pub.publish(msg)
            self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


def _time_msg(t_s: float) -> Any:
    from builtin_interfaces.msg import Time

    sec = int(t_s)
    return Time(sec=sec, nanosec=min(round((t_s - sec) * 1e9), 999_999_999))


class Bridge:
    """Camera frames (stamped with sim time, a little sensor noise so they are not frozen) at
    15 Hz and planner commands at 20 Hz, each on its own thread."""

    def __init__(self, node: Node, clock: SimClock, image_topic: str, encoding: str) -> None:
        self.clock = clock
        self.encoding = encoding
        self.camera_on = True
        self.stamps: list[float] = []
        self._camera = node.create_publisher(Image, image_topic, QoSProfile(depth=10))
        self._planner = node.create_publisher(Twist, "/cmd_vel_in", QoSProfile(depth=1))
        self._rng = np.random.default_rng(0)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._frames, daemon=True),
            threading.Thread(target=self._commands, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _frames(self) -> None:
        while not self._stop.is_set():
            if self.camera_on:
                noise = self._rng.integers(-3, 4, FRAME.shape)
                rgb = np.clip(FRAME.astype(int) + noise, 0, 255).astype(np.uint8)
                t = self.clock.now_s()
                msg, _ = raw_image(rgb, self.encoding, _time_msg(t))
                self._camera.publish(msg)
                self.stamps.append(t)
            self._stop.wait(1 / 15)

    def _commands(self) -> None:
        while not self._stop.is_set():
            twist = Twist()
            twist.linear.x, twist.angular.z = 8.0, 0.2  # below the 10 m/s nominal limit
            self._planner.publish(twist)
            self._stop.wait(1 / 20)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2.0)


@dataclass
class Launched:
    """The launcher process and what the probe hears from it."""

    proc: subprocess.Popen[str]
    lines: list[str]
    probe: Node
    states: Inbox
    ready: Inbox
    certificates: Inbox
    commands_out: Inbox

    def release(self, timeout_s: float = 15.0) -> str:
        deadline, message = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline:
            accepted, message = call_trigger(self.probe, f"{ARBITER}/operator_release")
            if accepted:
                return message
            time.sleep(0.2)
        raise AssertionError(f"release never accepted: {message}; {self.tail()}")

    def wait_state(self, state: str, timeout_s: float, since: int = 0) -> None:
        def reached() -> bool:
            return any(m.data == state for m in self.states.items[since:])

        assert wait_until(reached, timeout_s), (state, [m.data for m in self.states.items])

    def tail(self) -> str:
        return "".join(self.lines[-30:])


@pytest.fixture
def harness() -> Iterator[RosHarness]:
    with ros_harness() as h:
        yield h


@contextmanager
def launched(
    harness: RosHarness, preset: str, out_topic: str, model: Path, tmp_path: Path
) -> Iterator[Launched]:
    """``robust-monitor launch preset:=<preset>`` in its own process group, stopped on exit."""
    params = tmp_path / "ci_overrides.yaml"
    params.write_text(
        "/**/robust_monitor:\n  ros__parameters:\n"
        "    sigma: 0.25\n    n0: 16\n    n: 64\n    batch_size: 64\n    provider: cpu\n"
        "/**/robust_monitor_arbiter:\n  ros__parameters:\n"
        f"    recovery_time_s: 0.5\n    stale_after_s: {STALE_AFTER_S}\n    ramp_up_mps2: 100.0\n"
    )
    command = [
        sys.executable, "-m", "robust_monitor.tools.cli", "launch", f"preset:={preset}",
        f"model:={model}", f"params_file:={params}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # the nodes are the launcher's children: stop the whole group
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        probe = harness.node("bridge_probe")
        states, ready, certificates, commands_out = Inbox(), Inbox(), Inbox(), Inbox()
        probe.create_subscription(String, f"{ARBITER}/state", states, latched_qos())
        probe.create_subscription(Bool, f"{MONITOR}/ready", ready, latched_qos())
        probe.create_subscription(
            DiagnosticArray, f"{MONITOR}/certificate", certificates, evidence_qos()
        )
        probe.create_subscription(Twist, out_topic, commands_out, QoSProfile(depth=10))
        rig = Launched(proc, lines, probe, states, ready, certificates, commands_out)
        assert states.wait_for(lambda m: m.data == "MINIMAL_RISK", 60.0) is not None, rig.tail()
        assert ready.wait_for(lambda m: m.data is True, 60.0) is not None, rig.tail()
        yield rig
        assert proc.poll() is None, f"the launch ended on its own: {rig.tail()}"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=20.0) == 0, rig.tail()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        else:  # the launcher is gone; make sure no node of its group outlives it
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        reader.join(5.0)
    assert not any("Traceback" in line for line in lines), "".join(lines)


def certified_stamps(rig: Launched) -> list[float]:
    stamps = []
    for msg in rig.certificates.items:
        stamp_s, cert, _verdict, problems = diagnostics_to_evidence(msg)
        assert problems == [] and cert is not None
        stamps.append(stamp_s)
    return stamps


def assert_controlled_stop(rig: Launched) -> None:
    """From MINIMAL_RISK: the commanded speed falls to 0 (8 m/s at max_decel_mps2 = 3 m/s^2 is
    about 2.7 s), never rises on the way, and stays 0."""
    count = len(rig.commands_out.items)

    def speeds() -> list[float]:
        return [m.linear.x for m in rig.commands_out.items[count:]]

    assert wait_until(lambda: 0.0 in speeds(), 8.0 / 3.0 + 2.0), speeds()
    ramp = speeds()
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(ramp)), ramp
    count = len(rig.commands_out.items)
    assert wait_until(lambda: len(rig.commands_out.items) > count + 3, 3.0)
    assert all(m.linear.x == 0.0 for m in rig.commands_out.items[count:]), speeds()


def test_carla_preset_drives_certificates_and_the_arbiter_on_sim_time(
    harness: RosHarness, small_cnn_path: Path, tmp_path: Path
) -> None:
    out_topic = "/carla/ego_vehicle/twist"
    override_topic = "/carla/ego_vehicle/vehicle_control_manual_override"
    with launched(harness, "carla", out_topic, small_cnn_path, tmp_path) as rig:
        override = Inbox()
        rig.probe.create_subscription(Bool, override_topic, override, latched_qos())
        clock = SimClock(rig.probe)
        bridge = Bridge(rig.probe, clock, "/carla/ego_vehicle/rgb_front/image", "bgra8")
        try:
            assert wait_until(lambda: len(rig.certificates.items) >= 3, 30.0), rig.tail()
            # The certificate carries the frame's (simulated) stamp, not the wall clock.
            sent = set(bridge.stamps)
            stamps = certified_stamps(rig)
            assert all(abs(s - SIM_T0_S) < 600 for s in stamps), stamps
            assert all(any(abs(s - t) < 1e-6 for t in sent) for s in stamps)

            assert "release accepted" in rig.release()
            rig.wait_state("NOMINAL", 5.0)
            # Unstamped Twist to carla_twist_to_control, the planner's command passed through
            # once the limit has ramped past it (while it ramps, the gate scales the command:
            # on a slow machine a command at 7.998 m/s with its turn rate scaled comes first).
            moving = rig.commands_out.wait_for(lambda m: m.linear.x >= 8.0, 8.0)
            assert moving is not None and abs(moving.angular.z - 0.2) < 1e-9

            # Takeover: the bridge is told to take the operator's commands.
            accepted, _ = call_trigger(rig.probe, f"{ARBITER}/operator_takeover")
            assert accepted
            rig.wait_state("MANUAL", 5.0)
            assert override.wait_for(lambda m: m.data is True, 5.0) is not None
            before = len(rig.states.items)
            assert "release accepted" in rig.release()
            rig.wait_state("NOMINAL", 5.0, since=before)
            assert wait_until(lambda: override.items[-1].data is False, 5.0)

            # Camera off and simulated time stopped: nothing goes stale while time stands still.
            bridge.camera_on = False
            clock.pause()
            before = len(rig.states.items)
            time.sleep(3 * STALE_AFTER_S)
            assert [m.data for m in rig.states.items[before:]] == [], rig.tail()
            # Time moves again: the evidence is stale after stale_after_s of simulated time.
            clock.resume()
            begin = time.monotonic()
            rig.wait_state("MINIMAL_RISK", 5.0, since=before)
            assert time.monotonic() - begin < STALE_AFTER_S + 1.0
            assert_controlled_stop(rig)
        finally:
            bridge.stop()
            clock.stop()


def test_gazebo_preset_gates_cmd_vel_and_stops_when_the_camera_dies(
    harness: RosHarness, small_cnn_path: Path, tmp_path: Path
) -> None:
    with launched(harness, "gazebo", "/cmd_vel", small_cnn_path, tmp_path) as rig:
        clock = SimClock(rig.probe)
        bridge = Bridge(rig.probe, clock, "/camera/image_raw", "rgb8")
        try:
            assert wait_until(lambda: len(rig.certificates.items) >= 3, 30.0), rig.tail()
            assert all(abs(s - SIM_T0_S) < 600 for s in certified_stamps(rig))
            assert "release accepted" in rig.release()
            rig.wait_state("NOMINAL", 5.0)
            assert rig.commands_out.wait_for(lambda m: m.linear.x > 7.9, 5.0) is not None
            before = len(rig.states.items)
            bridge.camera_on = False  # the bridge loses the camera; the clock goes on
            rig.wait_state("MINIMAL_RISK", STALE_AFTER_S + 3.0, since=before)
            assert_controlled_stop(rig)
        finally:
            bridge.stop()
            clock.stop()
