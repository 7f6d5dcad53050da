"""The arbiter's reaction time: degraded certificate published -> lowered speed limit received.

``bench_reaction`` starts an arbiter node (its own process by default, so the measurement crosses
two processes over loopback DDS as in a deployment) and a probe node in this process. The probe
drives the arbiter to NOMINAL with healthy certificates and an operator release, then, for each
sample: publishes one degraded certificate (certified radius in the DEGRADED band, so the limit
drops at once without waiting for the debounce), measures the time until ``~/speed_limit``
arrives with the lowered value, and restores the nominal limit with healthy certificates (the
bench policy's ``ramp_up_mps2`` is large, so one healthy frame restores it).

The time measured is everything between the two probe callbacks: serialisation, DDS over
loopback, the arbiter's callback (contract reader, ``Arbiter.step``), the publication of the
limit and the probe's own executor. ``robust-monitor bench --arbiter`` reports it.

``evidence_message`` builds a valid ``~/certificate`` message with a chosen vote count; tests
and the bench use it to stand in for the monitor.
"""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import numpy as np

from robust_monitor.core.certify.certificate import ABSTAIN, Certificate
from robust_monitor.core.certify.stats import clopper_pearson_lower, radius_from_p_lower
from robust_monitor.core.ood.verdict import OodLevel, OodVerdict
from robust_monitor.tools.node_process import node_process, ros_args

TARGET_P99_MS = 20.0
HEALTHY_COUNT = 500
"""Votes out of 500 (sigma 0.25, alpha 0.001): radius about 0.55, healthy."""
DEGRADED_COUNT = 420
"""Votes out of 500: radius about 0.2, in the DEGRADED band of the default policy."""
ABSTAIN_COUNT = 200
"""Votes out of 500: p_lower < 1/2, the certificate abstains (handover level)."""
BENCH_POLICY: dict[str, float | int] = {
    "ramp_up_mps2": 1000.0,
    "recovery_time_s": 0.2,
    "trigger_frames": 1000,
    "stale_after_s": 1.0,
}
"""Overrides of the default policy: one healthy frame restores the limit, the state stays
NOMINAL (a single degraded frame never reaches trigger_frames), release after 0.2 s."""
START_TIMEOUT_S = 30.0
SAMPLE_TIMEOUT_S = 2.0


# --- synthetic evidence --------------------------------------------------------------------------
def synthetic_certificate(
    count: int, n: int = 500, alpha: float = 0.001, sigma: float = 0.25
) -> Certificate:
    """A certificate consistent with its statistics (the contract reader accepts it as is)."""
    p_lower = clopper_pearson_lower(count, n, alpha)
    abstained = p_lower < 0.5
    return Certificate(
        label=ABSTAIN if abstained else 1,
        p_lower=p_lower,
        radius=0.0 if abstained else radius_from_p_lower(p_lower, sigma),
        n0=64,
        n=n,
        alpha=alpha,
        sigma=sigma,
        abstained=abstained,
        provider="cpu",
        latency_ms=1.0,
        count=count,
        label_name="abstain" if abstained else "stop",
    )


def evidence_message(
    stamp_s: float,
    count: int = HEALTHY_COUNT,
    ood: OodLevel | None = OodLevel.OK,
    n: int = 500,
    model_name: str = "synthetic",
) -> Any:
    """A ``~/certificate`` message (``DiagnosticArray``) for one frame stamped ``stamp_s``.

    ``count`` votes out of ``n`` give the certificate (see ``HEALTHY_COUNT``, ...); ``ood`` is the
    verdict's level (None: no verdict). Both parts carry the same stamp, as the monitor's do.
    """
    from builtin_interfaces.msg import Time

    from robust_monitor.core.pipeline import FrameResult
    from robust_monitor.ros.contract import certificate_to_diagnostics

    sec = math.floor(stamp_s)
    nanosec = min(round((stamp_s - sec) * 1e9), 999_999_999)
    stamp_s = sec + nanosec * 1e-9
    verdict = (
        None
        if ood is None
        else OodVerdict(
            ood, () if ood is OodLevel.OK else ("synthetic",), MappingProxyType({}), stamp_s
        )
    )
    result = FrameResult(
        stamp_s,
        synthetic_certificate(count, n),
        verdict,  # type: ignore[arg-type]  # the contract writes "none" for a missing verdict
        np.zeros(1, np.float32),
        None,
    )
    return certificate_to_diagnostics(
        result, Time(sec=int(sec), nanosec=nanosec), model_name, "0" * 64, "camera"
    )


# --- the benchmark -------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def _arbiter_args(namespace: str, topic: str) -> list[str]:
    return ros_args(namespace, {"certificate_topic": topic, **BENCH_POLICY})


@contextmanager
def _arbiter_process(namespace: str, topic: str) -> Iterator[subprocess.Popen[bytes]]:
    with node_process(
        "robust_monitor.ros.arbiter_node",
        _arbiter_args(namespace, topic),
        stderr=subprocess.DEVNULL,
    ) as process:
        yield process


class _Probe:
    """Publishes certificates, calls the release service, timestamps every limit received."""

    def __init__(self, context: Any, namespace: str, topic: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from std_msgs.msg import Float64
        from std_srvs.srv import Trigger

        from robust_monitor.ros.qos import evidence_qos
        from robust_monitor.ros.spin import BackgroundSpin

        self.node = Node("arbiter_bench_probe", namespace=f"/{namespace}", context=context)
        self.publisher = self.node.create_publisher(DiagnosticArray, topic, evidence_qos())
        self._cond = threading.Condition()
        self._limits: list[tuple[float, float]] = []
        self.node.create_subscription(
            Float64,
            f"/{namespace}/robust_monitor_arbiter/speed_limit",
            self._on_limit,
            evidence_qos(),
        )
        self.release: Any = self.node.create_client(
            Trigger, f"/{namespace}/robust_monitor_arbiter/operator_release"
        )
        self._trigger = Trigger.Request
        self._spinner = BackgroundSpin(self.node, context)
        self._last_stamp = 0.0

    def _on_limit(self, msg: Any) -> None:
        received = time.perf_counter()
        with self._cond:
            self._limits.append((received, float(msg.data)))
            self._cond.notify_all()

    def publish(self, count: int) -> float:
        """Publish a certificate stamped now; returns perf_counter just before publishing."""
        stamp = max(time.time(), self._last_stamp + 1e-6)
        self._last_stamp = stamp
        msg = evidence_message(stamp, count)
        sent = time.perf_counter()
        self.publisher.publish(msg)
        return sent

    def wait_limit(
        self,
        after: float,
        below: float | None,
        at_least: float | None,
        timeout_s: float = SAMPLE_TIMEOUT_S,
    ) -> float | None:
        """perf_counter time of the first limit received after ``after`` meeting the bound."""

        def match() -> float | None:
            for received, value in self._limits:
                if received < after:
                    continue
                if below is not None and value < below:
                    return received
                if at_least is not None and value >= at_least:
                    return received
            return None

        deadline = time.perf_counter() + timeout_s
        with self._cond:
            while (found := match()) is None:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                self._cond.wait(left)
            self._limits = [item for item in self._limits if item[0] >= found]
            return found

    def call_release(self) -> tuple[bool, str]:
        if not self.release.wait_for_service(timeout_sec=5.0):
            return False, "release service not available"
        future = self.release.call_async(self._trigger())
        deadline = time.monotonic() + 5.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.005)
        response = future.result() if future.done() else None
        if response is None:
            return False, "release service did not answer"
        return bool(response.success), str(response.message)

    def close(self) -> None:
        self._spinner.close()


def _reach_nominal(probe: _Probe, nominal: float) -> str:
    """Healthy certificates at 50 Hz and releases until the limit is nominal; '' or why not."""
    deadline = time.monotonic() + START_TIMEOUT_S
    reason = "arbiter did not answer"
    while time.monotonic() < deadline:
        for _ in range(15):
            probe.publish(HEALTHY_COUNT)
            time.sleep(0.02)
        accepted, reason = probe.call_release()
        if accepted or "nothing to release" in reason:
            break
    else:
        return f"no release: {reason}"
    while time.monotonic() < deadline:
        after = probe.publish(HEALTHY_COUNT)
        if probe.wait_limit(after, None, nominal, timeout_s=0.02) is not None:
            return ""
    return "the limit did not reach the nominal speed"


def bench_reaction(samples: int = 200, in_process: bool = False) -> dict[str, Any]:
    """Reaction time of the arbiter to a degraded certificate, in milliseconds.

    Returns ``{"samples", "lost", "p50_ms", "p99_ms", "max_ms", "mean_ms", "target_p99_ms",
    "meets_target", "arbiter", "transport", "cpus", "load_avg_1m"}`` (the machine's load
    matters on a shared computer); ``lost`` counts samples whose lowered limit did
    not arrive within 2 s (left out of the percentiles). ``in_process`` runs the arbiter in
    this process (own rclpy context and executor thread) instead of a subprocess.
    Raises RuntimeError when the arbiter cannot be brought to NOMINAL.
    """
    # Whatever the caller's environment: a benchmark has no business beyond this host.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from rclpy.context import Context

    from robust_monitor.core.arbiter import ArbiterPolicy

    namespace = f"arbiter_bench_{uuid.uuid4().hex[:8]}"
    topic = f"/{namespace}/robust_monitor/certificate"
    policy = ArbiterPolicy.from_mapping(BENCH_POLICY)
    nominal = policy.nominal_speed_mps
    context = Context()
    rclpy.init(context=context)
    latencies: list[float] = []
    lost = 0
    try:
        with _arbiter(namespace, topic, in_process) as where:
            probe = _Probe(context, namespace, topic)
            try:
                deadline = time.monotonic() + START_TIMEOUT_S
                while probe.publisher.get_subscription_count() == 0:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the arbiter never subscribed to the certificates")
                    time.sleep(0.05)
                problem = _reach_nominal(probe, nominal)
                if problem:
                    raise RuntimeError(f"arbiter bench: {problem}")
                for _ in range(samples):
                    sent = probe.publish(DEGRADED_COUNT)
                    received = probe.wait_limit(sent, nominal - 1e-6, None)
                    if received is None:
                        lost += 1
                    else:
                        latencies.append((received - sent) * 1e3)
                    time.sleep(0.005)
                    restored = None
                    for _ in range(50):
                        after = probe.publish(HEALTHY_COUNT)
                        restored = probe.wait_limit(after, None, nominal, timeout_s=0.02)
                        if restored is not None:
                            break
                    if restored is None:
                        raise RuntimeError("arbiter bench: the limit was not restored")
                    time.sleep(0.005)
            finally:
                probe.close()
    finally:
        rclpy.try_shutdown(context=context)
    report: dict[str, Any] = {
        "samples": len(latencies),
        "lost": lost,
        "target_p99_ms": TARGET_P99_MS,
        "arbiter": where,
        "transport": "loopback DDS (rmw " + os.environ.get("RMW_IMPLEMENTATION", "default") + ")",
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if latencies:
        p99 = _percentile(latencies, 99)
        report |= {
            "p50_ms": round(_percentile(latencies, 50), 3),
            "p99_ms": round(p99, 3),
            "max_ms": round(max(latencies), 3),
            "mean_ms": round(float(np.mean(latencies)), 3),
            "meets_target": p99 <= TARGET_P99_MS and lost == 0,
        }
    return report


@contextmanager
def _arbiter(namespace: str, topic: str, in_process: bool) -> Iterator[str]:
    if not in_process:
        with _arbiter_process(namespace, topic):
            yield "subprocess (robust_monitor.ros.arbiter_node main)"
        return
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from robust_monitor.ros.arbiter_node import ArbiterNode
    from robust_monitor.ros.spin import BackgroundSpin

    context = Context()
    rclpy.init(context=context)
    overrides: list[Parameter[Any]] = [Parameter("certificate_topic", value=topic)]
    overrides += [Parameter(k, value=v) for k, v in BENCH_POLICY.items()]
    node = ArbiterNode(context=context, namespace=f"/{namespace}", parameter_overrides=overrides)
    spinner = BackgroundSpin(node, context)
    try:
        yield "in process (own context, SingleThreadedExecutor)"
    finally:
        spinner.close()
        rclpy.try_shutdown(context=context)
