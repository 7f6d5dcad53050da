"""``robust-monitor sim SCENARIO --ros``: a scenario over real DDS against the node processes.

The in-process loop (``robust_monitor.sim.engine``) calls ``FramePipeline.process`` and
``Arbiter.step`` directly. Here the same camera, vehicle and operator models drive the monitor
and arbiter *nodes*, started as two processes (as ``robust-monitor launch`` does) with
``use_sim_time`` in a namespace of their own; this process publishes ``/clock`` and the camera
frames and reads what comes back over loopback DDS:

- lock step, like CARLA's synchronous mode: for each frame, ``/clock`` is set to the frame's
  time, the frame is published stamped with it, the probe waits for the monitor's certificate of
  exactly that stamp, then for an arbiter ``/diagnostics`` report stamped at that time that has
  counted the certificate (``evidence_received``); its state, limit, gating and handover flag
  are the step's decision. Certification therefore takes no simulated time, as in-process, and
  a slow machine slows the run, not the verdicts. While the camera delivers nothing (a dropout),
  the clock advances at the arbiter's tick times instead, so staleness acts as it would.
- start-up: a fresh arbiter starts in MINIMAL_RISK. Before the scenario's time 0 a pre-roll
  of clean frames at the start position (``PREROLL_HZ``) gives the arbiter ``recovery_time_s``
  of healthy evidence; the operator model releases it and the limit ramps to nominal; then the
  scenario runs exactly as in-process (vehicle at its start speed). The pre-roll is not part of
  the run that is judged.
- the operator acts through the real services (``~/operator_takeover``, ``~/operator_release``)
  with the in-process rules.

Differences that remain: the monitor node draws its noise from the OS entropy source (the node
has no seed parameter, on purpose), so certificates vary from run to run as on a vehicle; the
pipeline latency recorded per frame is the node's ``latency_ms``.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robust_monitor.core.arbiter import ArbiterPolicy, ArbiterState, Decision
from robust_monitor.core.errors import ConfigError, RobustMonitorError
from robust_monitor.core.pipeline import FrameResult
from robust_monitor.sim.camera import SimCamera
from robust_monitor.sim.engine import (
    SimFrame,
    SimRun,
    SimSample,
    _times,
    release_due,
    takeover_due,
)
from robust_monitor.sim.scenario import Scenario
from robust_monitor.sim.vehicle import Vehicle
from robust_monitor.tools.node_process import exit_report, node_process

PREROLL_HZ = 5.0
"""Frame rate of the pre-roll: fast enough for freshness (stale_after_s 0.5), cheap to certify."""
CLOCK_BASE_S = 1000.0
"""ROS time of the scenario's t = 0 (ROS time cannot be negative; the pre-roll comes before)."""
STEP_TIMEOUT_S = 30.0
ARBITER_DIAGNOSTICS_PERIOD_S = 0.05
PREROLL_FRAME_OFFSET = 1_000_000
"""Pre-roll frames use camera indices from here (fresh read noise, never a scenario index)."""


class SimRosError(RobustMonitorError):
    """The ROS run could not go on (a node died, a reply never came)."""


def _stamp(msg_stamp: Any) -> float:
    return float(msg_stamp.sec) + float(msg_stamp.nanosec) * 1e-9


def _time_msg(t_s: float) -> tuple[int, int]:
    ns = round(t_s * 1e9)
    return ns // 10**9, ns % 10**9


class _Probe:
    """Publishes /clock and frames; collects certificates and arbiter reports; calls services."""

    def __init__(self, context: Any, namespace: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool
        from std_srvs.srv import Trigger

        from robust_monitor.ros.qos import camera_qos, evidence_qos, latched_qos
        from robust_monitor.ros.spin import BackgroundSpin

        self.ns = namespace
        self._clock_cls, self._image_cls, self._trigger = Clock, Image, Trigger.Request
        self.node = Node("sim_ros_probe", namespace=f"/{namespace}", context=context)
        self.clock_pub = self.node.create_publisher(
            Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.image_pub = self.node.create_publisher(
            Image, f"/{namespace}/camera/image_raw", camera_qos(depth=5)
        )
        self.cond = threading.Condition()
        self.certificates: dict[int, Any] = {}  # stamp (ns) -> message
        self.reports: list[tuple[int, float, dict[str, str]]] = []  # (seq, stamp, values)
        self.seq = 0
        self.ready = False
        self.node.create_subscription(
            DiagnosticArray,
            f"/{namespace}/robust_monitor/certificate",
            self._on_certificate,
            evidence_qos(),
        )
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics", self._on_diagnostics, evidence_qos(depth=50)
        )
        self.node.create_subscription(
            Bool, f"/{namespace}/robust_monitor/ready", self._on_ready, latched_qos()
        )
        self.clients: dict[str, Any] = {
            name: self.node.create_client(
                Trigger, f"/{namespace}/robust_monitor_arbiter/operator_{name}"
            )
            for name in ("takeover", "release")
        }
        self._spinner = BackgroundSpin(self.node, context)

    def _on_certificate(self, msg: Any) -> None:
        ns = int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)
        with self.cond:
            self.certificates[ns] = msg
            self.cond.notify_all()

    def _on_diagnostics(self, msg: Any) -> None:
        name = f"/{self.ns}/robust_monitor_arbiter: arbiter"
        for status in msg.status:
            if status.name == name:
                values = {kv.key: kv.value for kv in status.values}
                with self.cond:
                    self.seq += 1
                    self.reports.append((self.seq, _stamp(msg.header.stamp), values))
                    del self.reports[:-200]
                    self.cond.notify_all()

    def _on_ready(self, msg: Any) -> None:
        with self.cond:
            self.ready = bool(msg.data)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                found = predicate()
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SimRosError(f"timed out after {timeout_s:.0f} s waiting for {what}")
                self.cond.wait(min(left, 0.02))

    def set_clock(self, t_s: float) -> None:
        msg = self._clock_cls()
        msg.clock.sec, msg.clock.nanosec = _time_msg(t_s)
        self.clock_pub.publish(msg)

    def publish_frame(self, image: np.ndarray, t_s: float) -> int:
        msg = self._image_cls()
        msg.header.stamp.sec, msg.header.stamp.nanosec = _time_msg(t_s)
        msg.header.frame_id = "camera"
        msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
        msg.encoding, msg.step = "rgb8", int(image.shape[1]) * 3
        msg.data = np.ascontiguousarray(image).tobytes()
        self.image_pub.publish(msg)
        return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)

    def call(self, name: str, timeout_s: float = 10.0) -> tuple[bool, str]:
        client = self.clients[name]
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise SimRosError(f"operator_{name} service not available")
        future = client.call_async(self._trigger())
        deadline = time.monotonic() + timeout_s
        while not future.done():
            if time.monotonic() > deadline:
                raise SimRosError(f"operator_{name} did not answer within {timeout_s:.0f} s")
            time.sleep(0.005)
        response = future.result()
        return bool(response.success), str(response.message)

    def close(self) -> None:
        self._spinner.close()


def _decision(t_s: float, values: dict[str, str]) -> Decision:
    """A step's decision from an arbiter /diagnostics report."""
    reasons = tuple(r for r in values.get("reasons", "").split("; ") if r) or ("over DDS",)
    return Decision(
        stamp_s=t_s,
        state=ArbiterState(values["state"]),
        speed_limit_mps=float(values["speed_limit_mps"]),
        gated=values.get("gated") == "true",
        handover_requested=values.get("handover_requested") == "true",
        reasons=reasons,
    )


def _params_file(
    path: Path,
    namespace: str,
    monitor: dict[str, Any],
    arbiter: dict[str, Any],
) -> Path:
    data = {
        f"/{namespace}/robust_monitor": {"ros__parameters": monitor},
        f"/{namespace}/robust_monitor_arbiter": {"ros__parameters": arbiter},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def simulate_ros(
    scenario: Scenario,
    *,
    params_file: Path,
    monitor_overrides: dict[str, Any],
    policy: ArbiterPolicy,
    tick_hz: float,
    progress: Callable[[str], None] | None = None,
) -> SimRun:
    """Run ``scenario`` against the node processes (see the module docstring).

    ``params_file`` is given to both nodes as is (the in-process run reads the same file);
    ``monitor_overrides`` (the scenario's certification budget) come after it. ``policy`` and
    ``tick_hz`` are the file's arbiter values, as the in-process run reads them; they size the
    pre-roll and go into the run's record.
    """
    nominal_speed_mps = policy.nominal_speed_mps
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        raise ConfigError(
            "sim --ros starts DDS participants: set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a "
            "loopback Fast DDS profile first (the Makefile does)"
        )
    import rclpy
    from rclpy.context import Context

    from robust_monitor.ros.contract import diagnostics_to_evidence

    say = progress or (lambda _msg: None)
    namespace = f"sim_{uuid.uuid4().hex[:8]}"
    monitor = {
        **monitor_overrides,
        "image_topic": f"/{namespace}/camera/image_raw",
        "qos_reliability": "best_effort",
        "use_sim_time": True,
    }
    arbiter = {"use_sim_time": True, "diagnostics_period_s": ARBITER_DIAGNOSTICS_PERIOD_S}
    vm, op = scenario.vehicle, scenario.operator
    cruise = nominal_speed_mps if vm.cruise_speed_mps is None else vm.cruise_speed_mps
    start = nominal_speed_mps if vm.start_speed_mps is None else vm.start_speed_mps
    camera = SimCamera(scenario, scenario.duration_s * max(cruise, start, 1.0) + 60.0)
    preroll_s = policy.recovery_time_s + nominal_speed_mps / policy.ramp_up_mps2 + 2.0
    run = SimRun(scenario, policy, tick_hz)
    wall0 = time.perf_counter()
    context = Context()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="sim_ros_") as tmp:
        overrides = _params_file(Path(tmp) / "overrides.yaml", namespace, monitor, arbiter)
        common = ["--ros-args", "-r", f"__ns:=/{namespace}", "--params-file", str(params_file)]
        common += ["--params-file", str(overrides)]
        monitor_proc = stack.enter_context(node_process("robust_monitor.ros.monitor_node", common))
        arbiter_proc = stack.enter_context(node_process("robust_monitor.ros.arbiter_node", common))
        rclpy.init(context=context)
        stack.callback(rclpy.try_shutdown, context=context)
        probe = _Probe(context, namespace)
        stack.callback(probe.close)

        def alive() -> None:
            for proc, name in ((monitor_proc, "monitor"), (arbiter_proc, "arbiter")):
                if (exited := exit_report(proc, name)) is not None:
                    raise SimRosError(exited)

        say(f"sim --ros: starting the nodes in /{namespace} ...")
        deadline = time.monotonic() + 90.0
        probe.set_clock(CLOCK_BASE_S - preroll_s - 1.0)
        while not (probe.ready and probe.reports):
            alive()
            if time.monotonic() > deadline:
                raise SimRosError("the nodes did not come up within 90 s")
            probe.set_clock(CLOCK_BASE_S - preroll_s - 1.0)
            with probe.cond:
                probe.cond.wait(0.1)
        certified = 0

        def step(
            t_s: float, image: np.ndarray | None
        ) -> tuple[Decision, FrameResult | None, float]:
            """Advance the clock to ``t_s`` (scenario seconds), deliver ``image``, read back."""
            nonlocal certified
            ros_t = CLOCK_BASE_S + t_s
            probe.set_clock(ros_t)
            result: FrameResult | None = None
            latency_ms = 0.0
            if image is not None:
                stamp_ns = probe.publish_frame(image, ros_t)
                msg = _wait_republishing(
                    probe, lambda: probe.certificates.pop(stamp_ns, None), ros_t, alive,
                    f"the certificate of the frame at t={t_s:.3f} s",
                )  # fmt: skip
                _, certificate, verdict, problems = diagnostics_to_evidence(msg)
                if certificate is None:
                    raise SimRosError(f"unreadable certificate at t={t_s:.3f}: {problems}")
                certified += 1
                latency_ms = certificate.latency_ms
                result = FrameResult(t_s, certificate, verdict, np.zeros(0, np.float32), None)  # type: ignore[arg-type]
            want = certified
            # Without a frame, wait for the second report after the clock moved: the arbiter's
            # tick (same period) has then run at this time at least once.
            after = probe.seq + (1 if image is None else 0)

            def report() -> dict[str, str] | None:
                for seq, stamp, values in reversed(probe.reports):
                    if seq <= after:
                        break
                    if stamp >= ros_t - 1e-6 and int(values.get("evidence_received", -1)) >= want:
                        return values
                return None

            values = _wait_republishing(
                probe, report, ros_t, alive, f"the arbiter's report at t={t_s:.3f} s"
            )
            return _decision(t_s, values), result, latency_ms

        # --- pre-roll: clean frames at the start position until released and at nominal ----------
        say(f"sim --ros: pre-roll of {preroll_s:.1f} s (release, ramp to nominal)")
        n_pre = math.ceil(preroll_s * PREROLL_HZ)
        released = False
        for i in range(n_pre):
            t = -preroll_s + i / PREROLL_HZ
            still = _read_noise(
                camera.scene.render_at(0.0, 0.0).image, scenario, PREROLL_FRAME_OFFSET + i
            )
            decision, _, _ = step(t, still)
            if not released and decision.state is ArbiterState.MINIMAL_RISK and i % 2 == 0:
                released, _ = probe.call("release")
        if decision.state is not ArbiterState.NOMINAL or decision.speed_limit_mps < min(
            cruise, nominal_speed_mps
        ):
            raise SimRosError(
                f"pre-roll ended in {decision.state.value} at {decision.speed_limit_mps:.2f} m/s "
                f"(released: {released}); the scenario needs NOMINAL at the nominal limit"
            )
        # --- the scenario, as in-process --------------------------------------------------------
        camera = SimCamera(scenario, scenario.duration_s * max(cruise, start, 1.0) + 60.0)
        vehicle = Vehicle(start, vm.max_accel_mps2, vm.max_decel_mps2)
        target = min(cruise, nominal_speed_mps)
        state = ArbiterState.NOMINAL
        asked_since: float | None = None
        t_prev = 0.0
        last_frame_t = 0.0
        frame_period = 1.0 / scenario.frame_rate_hz

        def record(decision: Decision) -> None:
            nonlocal target, state
            run.steps.append(decision)
            run.samples.append(
                SimSample(
                    decision.stamp_s, decision.state, decision.speed_limit_mps,
                    vehicle.speed_mps, vehicle.odometer_m,
                )
            )  # fmt: skip
            state = decision.state
            gated = decision.gated
            target = min(cruise, decision.speed_limit_mps) if gated else op.manual_speed_mps

        n_steps = 0
        for t, index in _times(scenario, tick_hz):
            image: np.ndarray | None = None  # a tick delivers no frame
            if index is None and t - last_frame_t < frame_period + 1e-9:
                continue  # frames are flowing: the arbiter's own ticks suffice
            travelled = vehicle.advance(t - t_prev, target)
            run.distance_m += travelled
            if state in _DEGRADED:
                run.distance_degraded_m += travelled
            t_prev = t
            if index is not None:
                image = camera.frame(index, t, vehicle.odometer_m)
                if image is None:
                    run.dropped_frames += 1
                    continue
                last_frame_t = t
            decision, result, latency_ms = step(t, image)
            record(decision)
            n_steps += 1
            if n_steps % 20 == 0:
                say(f"sim --ros: t = {t:.1f}/{scenario.duration_s:g} s, {decision.state.value}")
            # --- the operator (same rules as in-process) ----------------------------------------
            if decision.handover_requested:
                asked_since = t if asked_since is None else asked_since
            else:
                asked_since = None
            if takeover_due(op, asked_since, decision, t):
                probe.call("takeover")
                run.takeovers_s.append(t)
                asked_since = None
                record(step(t, None)[0])
            if result is not None and release_due(scenario, run.steps[-1].state, t):
                run.release_requests += 1
                accepted, _ = probe.call("release")
                if accepted:
                    run.releases_s.append(t)
                    record(step(t, None)[0])
            if result is not None and index is not None:
                run.frames.append(
                    SimFrame(index, t, vehicle.odometer_m, result, run.steps[-1], latency_ms)
                )
        travelled = vehicle.advance(scenario.duration_s - t_prev, target)
        run.distance_m += travelled
        if state in _DEGRADED:
            run.distance_degraded_m += travelled
    run.wall_s = time.perf_counter() - wall0
    return run


_DEGRADED = frozenset(
    {ArbiterState.DEGRADED, ArbiterState.HANDOVER_REQUESTED, ArbiterState.MINIMAL_RISK}
)


def _read_noise(image: np.ndarray, scenario: Scenario, index: int) -> np.ndarray:
    if scenario.read_noise_dn <= 0:
        return image
    rng = np.random.default_rng(np.random.SeedSequence([scenario.seed, 2, index]))
    noisy = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(
        scenario.read_noise_dn
    )
    out: np.ndarray = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out


def _wait_republishing(
    probe: _Probe,
    predicate: Callable[[], Any],
    ros_t: float,
    alive: Callable[[], None],
    what: str,
) -> Any:
    """Wait for ``predicate``, re-sending the clock (a best-effort topic) while waiting."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        try:
            return probe.wait(predicate, 0.2, what)
        except SimRosError:
            alive()
            if time.monotonic() > deadline:
                raise SimRosError(
                    f"timed out after {STEP_TIMEOUT_S:.0f} s waiting for {what}"
                ) from None
            probe.set_clock(ros_t)
