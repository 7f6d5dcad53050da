"""Faults with real rclpy over loopback DDS: a killed monitor, a frame burst, a model that throws.

- (a) The monitor and the arbiter run as two processes (as ``robust-monitor launch`` starts
  them); the monitor is killed with SIGKILL mid-run. The arbiter must reach MINIMAL_RISK within
  ``stale_after_s`` plus one tick (plus ``SLACK_S`` of scheduling on a loaded machine) of the
  last frame's stamp and publish only zero commands; when the monitor is back, autonomy must stay
  stopped until an operator release, which is refused until the evidence has been healthy for
  ``recovery_time_s``.
- (b) A burst of frames at ~1 kHz into a monitor node: it keeps at most one pending frame
  (``FrameMailbox``), counts the drops and keeps certifying.
- (d) The model throws at run time (the engine's onnxruntime session is swapped in-process for
  a real session of a graph that fails on the real input shape): no certificate for those
  frames, the error on ``/diagnostics``, the node alive and certifying again once the model is.

Clock jumps of the arbiter core are in ``test_arbiter_state_machine.py``. Small model (the
``small_cnn_path`` fixture) and n0 = 16, n = 64 for speed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from onnx import TensorProto, helper
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosutil import (
    Inbox,
    RosHarness,
    TimedInbox,
    call_trigger,
    known_frame,
    raw_image,
    ros_harness,
    unique_name,
    wait_until,
)
from sensor_msgs.msg import Image
from std_msgs.msg import String

from robust_monitor.core.certify.graph import CLEAN_LOGITS, COUNTS, FRAME, NUM_CLEAN, NUM_NOISY
from robust_monitor.ros.contract import diagnostics_to_evidence
from robust_monitor.ros.monitor_node import MonitorNode
from robust_monitor.ros.qos import evidence_qos, latched_qos

pytestmark = pytest.mark.ros

FAST_MONITOR = {"sigma": 0.25, "n0": 16, "n": 64, "batch_size": 64, "provider": "cpu"}
TICK_HZ = 20.0
STALE_AFTER_S = 0.5
RECOVERY_TIME_S = 0.5
MAX_DECEL_MPS2 = 100.0
SLACK_S = 0.35
"""Scheduling allowance on a loaded 2-core machine (three processes, DDS), on top of the times
the policy promises."""
COMMAND_MPS = 8.0
FRAME_RGB = known_frame()  # certified healthy by the small CNN at sigma 0.25


def _time_msg(t_s: float) -> Any:
    from builtin_interfaces.msg import Time

    sec = int(t_s)
    return Time(sec=sec, nanosec=min(round((t_s - sec) * 1e9), 999_999_999))


@dataclass
class Spawned:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def tail(self) -> str:
        return "".join(self.lines[-30:])


@contextmanager
def spawned(module: str, namespace: str, params: dict[str, Any]) -> Iterator[Spawned]:
    """``python -m <module>`` with ``params`` in its own process group; SIGKILLed on exit."""
    command = [sys.executable, "-m", module, "--ros-args", "-r", f"__ns:=/{namespace}"]
    for key, value in params.items():
        command += ["-p", f"{key}:={value}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    child = Spawned(proc)
    reader = threading.Thread(target=lambda: child.lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        yield child
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10.0)
        reader.join(5.0)


def kill(child: Spawned) -> None:
    os.killpg(child.proc.pid, signal.SIGKILL)
    child.proc.wait(10.0)


class Camera:
    """Frames (stamped with the wall clock, a little sensor noise) at 15 Hz and planner commands
    (8 m/s) at 20 Hz, each on its own thread."""

    def __init__(self, node: Node, namespace: str) -> None:
        self._frames = node.create_publisher(
            Image, f"/{namespace}/image_raw", qos_profile_sensor_data
        )
        self._commands = node.create_publisher(
            TwistStamped, f"/{namespace}/cmd_vel_in", QoSProfile(depth=1)
        )
        self._rng = np.random.default_rng(0)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(p,), daemon=True)
                         for p in (1 / 15, 1 / 20)]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def _run(self, period_s: float) -> None:
        while not self._stop.is_set():
            if period_s < 0.06:
                cmd = TwistStamped()
                cmd.header.frame_id = "base_link"
                cmd.twist.linear.x = COMMAND_MPS
                self._commands.publish(cmd)
            else:
                noise = self._rng.integers(-3, 4, FRAME_RGB.shape)
                rgb = np.clip(FRAME_RGB.astype(int) + noise, 0, 255).astype(np.uint8)
                msg, _ = raw_image(rgb, "rgb8", _time_msg(time.time()))
                self._frames.publish(msg)
            self._stop.wait(period_s)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2.0)


@pytest.fixture
def harness() -> Iterator[RosHarness]:
    with ros_harness() as h:
        yield h


def _stamp_s(msg: DiagnosticArray | Image) -> float:
    return float(msg.header.stamp.sec) + float(msg.header.stamp.nanosec) * 1e-9


# --- (a) the monitor process killed mid-run --------------------------------------------------
def test_killed_monitor_stops_the_vehicle_and_autonomy_needs_a_release_after_restart(
    harness: RosHarness, small_cnn_path: Path
) -> None:
    ns = unique_name("fault")
    arbiter_fqn = f"/{ns}/robust_monitor_arbiter"
    probe = harness.node("probe", ns)
    states, certificates, commands = (TimedInbox(time.time) for _ in range(3))
    probe.create_subscription(String, f"{arbiter_fqn}/state", states, latched_qos())
    probe.create_subscription(
        DiagnosticArray, f"/{ns}/robust_monitor/certificate", certificates, evidence_qos()
    )
    probe.create_subscription(TwistStamped, f"/{ns}/cmd_vel_out", commands, QoSProfile(depth=100))
    arbiter_params = {
        "publish_rate_hz": TICK_HZ, "stale_after_s": STALE_AFTER_S,
        "recovery_time_s": RECOVERY_TIME_S, "ramp_up_mps2": 1000.0,
        "max_decel_mps2": MAX_DECEL_MPS2, "cmd_timeout_s": 0.5,
    }  # fmt: skip
    monitor_params = {"model_path": str(small_cnn_path), "image_topic": f"/{ns}/image_raw",
                      **FAST_MONITOR}  # fmt: skip

    def state_names(since: float = 0.0) -> list[str]:
        return [m.data for _, m in states.items(since)]

    def release() -> tuple[bool, str]:
        return call_trigger(probe, f"{arbiter_fqn}/operator_release")

    with spawned("robust_monitor.ros.arbiter_node", ns, arbiter_params) as arbiter:
        assert wait_until(lambda: "MINIMAL_RISK" in state_names(), 30.0), arbiter.tail()
        camera = Camera(probe, ns)
        try:
            with spawned("robust_monitor.ros.monitor_node", ns, monitor_params) as monitor:
                assert wait_until(lambda: len(certificates.items()) >= 3, 60.0), monitor.tail()
                deadline = time.monotonic() + 10.0
                while not release()[0]:
                    assert time.monotonic() < deadline, release()
                    time.sleep(0.1)
                assert wait_until(lambda: "NOMINAL" in state_names(), 5.0), state_names()
                assert wait_until(
                    lambda: any(m.twist.linear.x == COMMAND_MPS for _, m in commands.items()), 5.0
                )
                time.sleep(0.5)
                kill(monitor)  # SIGKILL mid-run: no goodbye, no last message
                killed_at = time.time()
            last_stamp = max(_stamp_s(m) for _, m in certificates.items())

            # MINIMAL_RISK within stale_after_s + one tick of the last frame's stamp.
            assert wait_until(lambda: "MINIMAL_RISK" in state_names(killed_at - 0.5), 5.0)
            entered = next(t for t, m in states.items(killed_at - 0.5) if m.data == "MINIMAL_RISK")
            reaction_s = entered - last_stamp
            assert reaction_s <= STALE_AFTER_S + 1 / TICK_HZ + SLACK_S, reaction_s
            # Then zero commands: after the controlled stop (8 m/s at 100 m/s^2) and one tick.
            stopped_by = entered + COMMAND_MPS / MAX_DECEL_MPS2 + 1 / TICK_HZ + 0.05
            time.sleep(max(0.0, stopped_by + 1.0 - time.time()))
            after = [m.twist for _, m in commands.items(stopped_by)]
            assert len(after) >= 10, "the arbiter must keep publishing (zero) commands"
            assert all(t.linear.x == 0.0 and t.angular.z == 0.0 for t in after), after[:3]

            # The monitor comes back: evidence is healthy again, but autonomy stays stopped.
            restarted_at = time.time()
            with spawned("robust_monitor.ros.monitor_node", ns, monitor_params) as monitor:
                assert wait_until(lambda: len(certificates.items(restarted_at)) >= 1, 60.0), (
                    monitor.tail()
                )
                first_back = certificates.items(restarted_at)[0][0]
                accepted, reason = release()
                refused_at = time.time()
                assert not accepted and reason, reason  # healthy for less than recovery_time_s
                time.sleep(RECOVERY_TIME_S + 0.5)
                assert state_names(restarted_at) == [], state_names(restarted_at)
                assert all(m.twist.linear.x == 0.0 for _, m in commands.items(restarted_at))
                deadline = time.monotonic() + 10.0
                while not (answer := release())[0]:
                    assert time.monotonic() < deadline, answer
                    time.sleep(0.05)
                released_at = time.time()
                assert "release accepted" in answer[1]
                assert released_at - first_back >= RECOVERY_TIME_S - 1 / TICK_HZ
                assert wait_until(lambda: "NOMINAL" in state_names(restarted_at), 5.0)
                assert wait_until(
                    lambda: any(
                        m.twist.linear.x == COMMAND_MPS for _, m in commands.items(released_at)
                    ),
                    5.0,
                )
                print(
                    f"\nkilled monitor -> MINIMAL_RISK {reaction_s:.3f} s after the last stamp "
                    f"(bound {STALE_AFTER_S + 1 / TICK_HZ + SLACK_S:.2f} s); release refused "
                    f"{refused_at - first_back:.3f} s after evidence came back: {reason!r}; "
                    f"accepted after {released_at - first_back:.3f} s"
                )
        finally:
            camera.stop()
        assert arbiter.proc.poll() is None, arbiter.tail()
    assert not any("Traceback" in line for line in arbiter.lines), arbiter.tail()


# --- in-process monitor rig for (b) and (d) ---------------------------------------------------
@dataclass
class MonitorRig:
    monitor: MonitorNode
    camera: Node
    publisher: Any
    certificates: Inbox
    diagnostics: Inbox

    def publish_until_certified(self, msg: Image, timeout_s: float = 6.0) -> bool:
        """Publish ``msg`` every 0.2 s until its certificate arrives (best effort may lose it)."""
        want = _stamp_s(msg)

        def certified() -> bool:
            self.publisher.publish(msg)
            return any(_stamp_s(m) == want for m in self.certificates.items)

        return wait_until(certified, timeout_s, 0.2)

    def status(self, predicate: Any, timeout_s: float = 5.0) -> DiagnosticStatus:
        name = f"{self.monitor.get_fully_qualified_name()}: monitor"

        def matches(msg: DiagnosticArray) -> bool:
            return any(s.name == name and predicate(s) for s in msg.status)

        found = self.diagnostics.wait_for(matches, timeout_s)
        assert found is not None, f"no {name!r} status matching within {timeout_s} s"
        return next(s for s in found.status if s.name == name)


def start_monitor(harness: RosHarness, model: Path, **params: Any) -> MonitorRig:
    ns = unique_name("fault")
    topic = f"/{ns}/image_raw"
    settings = {"model_path": str(model), "image_topic": topic, "diagnostics_period_s": 0.2,
                **FAST_MONITOR, **params}  # fmt: skip
    overrides = [Parameter(k, value=v) for k, v in settings.items()]
    monitor = harness.add(
        MonitorNode(context=harness.context, namespace=f"/{ns}", parameter_overrides=overrides)
    )
    camera = harness.node("camera", ns)
    publisher = camera.create_publisher(Image, topic, qos_profile_sensor_data)
    certificates, diagnostics = Inbox(), Inbox()
    camera.create_subscription(
        DiagnosticArray, f"/{ns}/robust_monitor/certificate", certificates, evidence_qos()
    )
    camera.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, evidence_qos())
    assert wait_until(lambda: publisher.get_subscription_count() > 0, 10.0)
    assert monitor.wait_ready(30.0), monitor.state
    return MonitorRig(monitor, camera, publisher, certificates, diagnostics)


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


# --- (b) a 1 kHz burst --------------------------------------------------------------------------
def test_a_1khz_burst_keeps_one_pending_frame_counts_drops_and_keeps_certifying(
    harness: RosHarness, small_cnn_path: Path
) -> None:
    rig = start_monitor(harness, small_cnn_path)
    frames = [raw_image(FRAME_RGB, "rgb8", _time_msg(1000.0 + i * 1e-3))[0] for i in range(1000)]
    pending: list[int] = []
    begin = time.monotonic()
    for i, msg in enumerate(frames):  # paced to 1 kHz (as far as Python publishes that fast)
        rig.publisher.publish(msg)
        pending.append(rig.monitor.pending_frames)
        while time.monotonic() < begin + (i + 1) * 1e-3:
            pass
    burst_s = time.monotonic() - begin
    certified_during = len(rig.certificates.items)

    def settled() -> bool:
        s = rig.monitor.stats
        return s.received > 0 and s.received == s.dropped + s.certified + s.decode_errors

    assert wait_until(settled, 10.0), rig.monitor.stats
    stats = rig.monitor.stats
    assert max(pending) <= 1, max(pending)
    assert rig.monitor.pending_frames == 0
    assert stats.dropped > 0 and stats.certified >= 2 and stats.decode_errors == 0, stats
    assert certified_during >= 1, "no certificate during the burst"
    # The newest frame is the one certified last: nothing queued behind the mailbox.
    last = max(_stamp_s(m) for m in rig.certificates.items)
    received_last = 1000.0 + 0.999
    assert last >= received_last - 0.2, (last, stats)
    status = rig.status(lambda s: int(values(s)["frames_dropped"]) == stats.dropped)
    assert int(values(status)["pending_frames"]) <= 1
    # Still certifying after the burst.
    after, _ = raw_image(FRAME_RGB, "rgb8", _time_msg(2000.0))
    assert rig.publish_until_certified(after), rig.monitor.stats
    print(
        f"\n1 kHz burst: {len(frames)} sent in {burst_s:.2f} s ({len(frames) / burst_s:.0f} Hz), "
        f"{stats.received} received, {stats.dropped} dropped, {stats.certified} certified, "
        f"max pending {max(pending)}"
    )


# --- (d) a model that throws at run time ----------------------------------------------------------
def failing_session(outputs: list[str]) -> ort.InferenceSession:
    """A real session with the smoothing graph's inputs and ``outputs`` whose Reshape fails on
    any real frame (it wants 5 x 5 values): onnxruntime raises its own exception type at run
    time."""
    shape = helper.make_tensor("bad_shape", TensorProto.INT64, [2], [5, 5])
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", [FRAME, "bad_shape"], ["reshaped"]),
            helper.make_node("Cast", ["reshaped"], [COUNTS], to=TensorProto.INT64),
            *(helper.make_node("Identity", ["reshaped"], [name]) for name in outputs[1:]),
        ],
        "fails_at_run_time",
        [
            helper.make_tensor_value_info(FRAME, TensorProto.FLOAT, ["c", "h", "w"]),
            helper.make_tensor_value_info(NUM_NOISY, TensorProto.INT64, [1]),
            helper.make_tensor_value_info(NUM_CLEAN, TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info(COUNTS, TensorProto.INT64, [5, 5]),
            *(helper.make_tensor_value_info(n, TensorProto.FLOAT, [5, 5]) for n in outputs[1:]),
        ],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the test expects the failure; do not log it per frame
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def test_a_model_that_throws_at_run_time_is_reported_and_the_node_keeps_running(
    harness: RosHarness, small_cnn_path: Path
) -> None:
    rig = start_monitor(harness, small_cnn_path)
    good, _ = raw_image(FRAME_RGB, "rgb8", _time_msg(3000.0))
    assert rig.publish_until_certified(good), rig.monitor.stats
    engine = rig.monitor._pipeline.engine  # type: ignore[union-attr]  # the worker's pipeline
    healthy_session = engine._session
    assert engine._outputs[:2] == [COUNTS, CLEAN_LOGITS]
    engine._session = failing_session(list(engine._outputs))
    try:
        for i in range(10):
            bad, _ = raw_image(FRAME_RGB, "rgb8", _time_msg(3100.0 + i))
            rig.publisher.publish(bad)
            time.sleep(0.05)
        assert wait_until(lambda: rig.monitor.stats.certify_errors >= 3, 5.0), rig.monitor.stats
        status = rig.status(lambda s: int(values(s)["certify_errors"]) >= 3)
        assert status.level in (DiagnosticStatus.WARN, DiagnosticStatus.ERROR), status
        assert "Reshape" in status.message or "Reshape" in values(status)["last_error"], status
        assert all(_stamp_s(m) < 3100.0 for m in rig.certificates.items)  # nothing for those
    finally:
        engine._session = healthy_session
    # The node kept running: the worker is alive and certifies again once the model works.
    again, _ = raw_image(FRAME_RGB, "rgb8", _time_msg(3200.0))
    assert rig.publish_until_certified(again), rig.monitor.stats
    for msg in rig.certificates.items:
        _, cert, _, problems = diagnostics_to_evidence(msg)
        assert problems == [] and cert is not None
    assert all(not 3100.0 <= _stamp_s(m) < 3200.0 for m in rig.certificates.items)
    rig.status(lambda s: s.level == DiagnosticStatus.OK, 5.0)
