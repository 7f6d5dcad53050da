"""Soak benchmark: a camera at 30 Hz through the monitor and arbiter nodes for minutes, over DDS.

``run_soak`` starts the monitor node and the arbiter node as two processes (as ``robust-monitor
launch`` does) in a namespace of their own, and a probe node in this process that

- publishes ``sensor_msgs/Image`` frames (the shipped sample drive's, cycled) at ``rate_hz``,
  each stamped with the wall clock when it is sent;
- receives every ``~/certificate`` and measures its latency: receive time minus the frame's
  stamp, so it covers transport both ways, the node's queue and certification;
- reads the monitor's ``/diagnostics`` counters (frames received, certified, dropped, the
  pending-frame count of its one-slot mailbox) and the arbiter's ``~/state`` (with the reasons
  its ``/diagnostics`` gives); as the operator, it requests a release once a second while the
  arbiter is in MINIMAL_RISK (at start-up, and after any fall-back on stale evidence);
- samples the resident set size (``VmRSS`` in ``/proc/<pid>/status``) of both node processes.

The report (``robust-monitor bench --soak``, JSON) gives, after a warm-up: RSS growth of each
process (percent, and the slope of a least-squares line in MiB per minute), latency p50/p99 in
windows over the run and the p99 drift (last window minus first), frames published, received,
certified and dropped (the monitor certifies the newest frame and drops the ones it has no
time for, by design), and the largest pending-frame count seen (a bounded queue reads 0 or 1).
``write_soak_plot`` draws RSS and windowed latency over time.

Everything stays on loopback: the caller's environment must carry the DDS settings (the
Makefile and the test suite set them; ``run_soak`` refuses to start without
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``).
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robust_monitor.core.errors import ConfigError
from robust_monitor.tools.node_process import exit_report, node_process, ros_args

RSS_GROWTH_TARGET_PCT = 5.0
START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class SoakConfig:
    """What the soak runs: ``duration_s`` of camera at ``rate_hz``; the first ``warmup_s`` are
    left out of the growth and drift figures; latency percentiles per ``window_s``."""

    duration_s: float = 600.0
    rate_hz: float = 30.0
    warmup_s: float = 60.0
    window_s: float = 60.0
    rss_period_s: float = 2.0
    frames: int = 90
    """Distinct sample-drive frames, cycled (decoded once, before the clock starts)."""
    monitor_params: dict[str, Any] = field(default_factory=dict)
    """Extra ``-p`` parameters for the monitor node (e.g. ``{"n": 200}``)."""
    arbiter_params: dict[str, Any] = field(default_factory=dict)
    """Extra ``-p`` parameters for the arbiter node."""

    def __post_init__(self) -> None:
        for name in ("duration_s", "rate_hz", "window_s", "rss_period_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"soak {name} must be a number > 0, got {value!r}")
        if not (0 <= self.warmup_s < self.duration_s):
            raise ConfigError(
                f"soak warmup_s must be in [0, duration_s={self.duration_s}), got {self.warmup_s}"
            )
        if self.frames < 1:
            raise ConfigError(f"soak frames must be >= 1, got {self.frames}")


# --- processes -----------------------------------------------------------------------------------
def rss_mib(pid: int) -> float | None:
    """Resident set size of process ``pid`` in MiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def _sample_frames(count: int) -> list[np.ndarray]:
    from robust_monitor.assets import SAMPLE_DRIVE
    from robust_monitor.tools.recordings import iter_frames

    frames: list[np.ndarray] = []
    for frame in iter_frames(SAMPLE_DRIVE / "roadside_drive"):
        frames.append(frame.image)
        if len(frames) >= count:
            break
    if not frames:
        raise ConfigError("the sample drive has no camera frames")
    return frames


# --- the probe -----------------------------------------------------------------------------------
class _Probe:
    """Publishes frames, records certificate latencies, diagnostics counters, arbiter states."""

    def __init__(self, context: Any, namespace: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from robust_monitor.ros.qos import camera_qos, evidence_qos, latched_qos
        from robust_monitor.ros.spin import BackgroundSpin

        self._image_cls = Image
        self.namespace = namespace
        self.node = Node("soak_probe", namespace=f"/{namespace}", context=context)
        self.publisher = self.node.create_publisher(
            Image, f"/{namespace}/camera/image_raw", camera_qos()
        )
        self.lock = threading.Lock()
        self.latencies: list[tuple[float, float]] = []  # (receive time, latency ms)
        self.bad_certificates = 0
        self.counters: dict[str, int] = {}
        self.pending_max = 0
        self.states: list[tuple[float, str]] = []
        self.arbiter_reasons: list[tuple[float, str, str]] = []  # from its /diagnostics
        self.node.create_subscription(
            DiagnosticArray,
            f"/{namespace}/robust_monitor/certificate",
            self._on_certificate,
            evidence_qos(),
        )
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics", self._on_diagnostics, evidence_qos()
        )
        self.node.create_subscription(
            String, f"/{namespace}/robust_monitor_arbiter/state", self._on_state, latched_qos()
        )
        self._release: Any = self.node.create_client(
            Trigger, f"/{namespace}/robust_monitor_arbiter/operator_release"
        )
        self._trigger = Trigger.Request
        self._spinner = BackgroundSpin(self.node, context)

    def request_release(self) -> bool:
        """Ask the arbiter for autonomy (the operator's release); True if it was accepted."""
        if not self._release.service_is_ready():
            return False
        future = self._release.call_async(self._trigger())
        deadline = time.monotonic() + 2.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        response = future.result() if future.done() else None
        return bool(response is not None and response.success)

    @property
    def state(self) -> str | None:
        with self.lock:
            return self.states[-1][1] if self.states else None

    def _on_certificate(self, msg: Any) -> None:
        from robust_monitor.ros.contract import diagnostics_to_evidence

        received = time.time()
        stamp_s, certificate, _, problems = diagnostics_to_evidence(msg)
        with self.lock:
            if certificate is None or problems or not math.isfinite(stamp_s):
                self.bad_certificates += 1
                return
            self.latencies.append((received, (received - stamp_s) * 1e3))

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith(f"/{self.namespace}/robust_monitor_arbiter:"):
                values = {kv.key: kv.value for kv in status.values}
                state = values.get("state")
                with self.lock:
                    if state and (not self.arbiter_reasons or self.arbiter_reasons[-1][1] != state):
                        self.arbiter_reasons.append((time.time(), state, values.get("reasons", "")))
                continue
            if not status.name.startswith(f"/{self.namespace}/robust_monitor:"):
                continue
            values = {kv.key: kv.value for kv in status.values}
            with self.lock:
                for key in ("frames_received", "frames_certified", "frames_dropped"):
                    with suppress(KeyError, ValueError):
                        self.counters[key] = int(values[key])
                with suppress(KeyError, ValueError):
                    self.pending_max = max(self.pending_max, int(values["pending_frames"]))

    def _on_state(self, msg: Any) -> None:
        with self.lock:
            self.states.append((time.time(), str(msg.data)))

    def image(self, rgb: np.ndarray) -> Any:
        msg = self._image_cls()
        msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
        msg.encoding = "rgb8"
        msg.step = int(rgb.shape[1]) * 3
        msg.data = np.ascontiguousarray(rgb).tobytes()
        msg.header.frame_id = "camera"
        return msg

    def publish(self, msg: Any) -> None:
        now = time.time()
        sec = math.floor(now)
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(sec), int((now - sec) * 1e9)
        self.publisher.publish(msg)

    def close(self) -> None:
        self._spinner.close()


# --- figures -------------------------------------------------------------------------------------
def _growth(samples: Sequence[tuple[float, float]], warmup_s: float) -> dict[str, Any]:
    """RSS after warm-up, at the end, growth in percent and a least-squares slope (MiB/min)."""
    after = [(t, m) for t, m in samples if t >= warmup_s]
    if len(after) < 2:
        return {"samples": len(samples), "after_warmup_mib": None, "end_mib": None,
                "growth_pct": None, "slope_mib_per_min": None, "max_mib": None}  # fmt: skip
    t = np.array([s[0] for s in after])
    m = np.array([s[1] for s in after])
    slope = float(np.polyfit(t, m, 1)[0]) * 60.0 if np.ptp(t) > 0 else 0.0
    # Median of the first and last few samples, so one allocator hiccup does not set the figure.
    k = max(1, len(after) // 10)
    start, end = float(np.median(m[:k])), float(np.median(m[-k:]))
    return {
        "samples": len(samples),
        "after_warmup_mib": round(start, 2),
        "end_mib": round(end, 2),
        "max_mib": round(float(m.max()), 2),
        "growth_pct": round(100.0 * (end - start) / start, 3),
        "slope_mib_per_min": round(slope, 4),
    }


def _windows(
    latencies: Sequence[tuple[float, float]], t0: float, warmup_s: float, window_s: float
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    rel = [(t - t0, ms) for t, ms in latencies if t - t0 >= warmup_s]
    if not rel:
        return out
    end = max(t for t, _ in rel)
    start = warmup_s
    while start <= end:
        chunk = [ms for t, ms in rel if start <= t < start + window_s]
        if chunk:
            out.append({
                "from_s": round(start, 1),
                "frames": len(chunk),
                "p50_ms": round(float(np.percentile(chunk, 50)), 2),
                "p99_ms": round(float(np.percentile(chunk, 99)), 2),
                "max_ms": round(float(np.max(chunk)), 2),
            })  # fmt: skip
        start += window_s
    return out


def _time_in_state(
    states: Sequence[tuple[float, str]], start: float, end: float
) -> dict[str, float]:
    """Seconds in each arbiter state between ``start`` and ``end`` (state changes, latched)."""
    out: dict[str, float] = {}
    ordered = sorted(states)
    for i, (t, state) in enumerate(ordered):
        t_next = ordered[i + 1][0] if i + 1 < len(ordered) else end
        lo, hi = max(t, start), min(t_next, end)
        if hi > lo:
            out[state] = round(out.get(state, 0.0) + hi - lo, 2)
    return out


def run_soak(config: SoakConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the soak and return its report (see the module docstring)."""
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        raise ConfigError(
            "the soak starts DDS participants: set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a "
            "loopback Fast DDS profile first (the Makefile does)"
        )
    import rclpy
    from rclpy.context import Context

    say = progress or (lambda _msg: None)
    frames = _sample_frames(config.frames)
    namespace = f"soak_{uuid.uuid4().hex[:8]}"
    monitor_params = {
        "image_topic": f"/{namespace}/camera/image_raw",
        "diagnostics_period_s": 0.5,
        **config.monitor_params,
    }
    context = Context()
    rclpy.init(context=context)
    rss: dict[str, list[tuple[float, float]]] = {"monitor": [], "arbiter": []}
    published = 0
    with ExitStack() as stack:
        monitor = stack.enter_context(
            node_process("robust_monitor.ros.monitor_node", ros_args(namespace, monitor_params))
        )
        arbiter = stack.enter_context(
            node_process(
                "robust_monitor.ros.arbiter_node", ros_args(namespace, config.arbiter_params)
            )
        )
        probe = _Probe(context, namespace)
        stack.callback(rclpy.try_shutdown, context=context)
        stack.callback(probe.close)
        messages = [probe.image(f) for f in frames]
        # Start-up: publish until the first certificate comes back (model load, discovery).
        say("soak: starting the nodes ...")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not probe.latencies:
            for process, name in ((monitor, "monitor"), (arbiter, "arbiter")):
                if (exited := exit_report(process, name)) is not None:
                    raise ConfigError(f"at start-up, {exited}")
            if time.monotonic() > deadline:
                raise ConfigError(f"no certificate within {START_TIMEOUT_S:.0f} s of start-up")
            probe.publish(messages[0])
            published += 1
            time.sleep(1.0 / config.rate_hz)
        startup_frames = published
        # Quiet for three diagnostics periods, so the counters at the start are complete and
        # the run's own frames can be told apart from the start-up ones.
        time.sleep(1.6)
        with probe.lock:
            probe.latencies.clear()
            base = dict(probe.counters)
        released = False
        releases = 0
        next_release = 0.0
        period = 1.0 / config.rate_hz
        t0 = time.time()
        next_send = time.perf_counter()
        next_rss = 0.0
        next_note = 10.0
        while True:
            elapsed = time.time() - t0
            if elapsed >= config.duration_s:
                break
            probe.publish(messages[published % len(messages)])
            published += 1
            if elapsed >= next_rss:
                for name, process in (("monitor", monitor), ("arbiter", arbiter)):
                    mib = rss_mib(process.pid)
                    if mib is not None:
                        rss[name].append((elapsed, mib))
                next_rss += config.rss_period_s
            if elapsed >= next_release and probe.state == "MINIMAL_RISK":
                # The arbiter starts stopped until an operator releases it, and falls back to
                # MINIMAL_RISK on stale evidence; the soak's operator asks once a second while
                # it is there (accepted after recovery_time_s of healthy evidence).
                if probe.request_release():
                    released = True
                    releases += 1
                next_release = elapsed + 1.0
            if elapsed >= next_note:
                with probe.lock:
                    got = len(probe.latencies)
                say(f"soak: {elapsed:5.0f}/{config.duration_s:.0f} s, {published} frames sent, "
                    f"{got} certificates")  # fmt: skip
                next_note += 10.0
            next_send += period
            late = time.perf_counter() - next_send
            if late < 0:
                time.sleep(-late)
            elif late > 1.0:  # a stalled machine: do not burst to catch up
                next_send = time.perf_counter()
        end = time.time()
        time.sleep(1.5)  # the last certificates and a diagnostics report that has every frame
        alive = {"monitor": monitor.poll() is None, "arbiter": arbiter.poll() is None}
        with probe.lock:
            latencies = [(t, ms) for t, ms in probe.latencies if t <= end]
            counters = {k: v - base.get(k, 0) for k, v in probe.counters.items()}
            pending_max = probe.pending_max
            bad = probe.bad_certificates
            states = list(probe.states)
            reasons = list(probe.arbiter_reasons)
    values = [ms for t, ms in latencies if t - t0 >= config.warmup_s]
    windows = _windows(latencies, t0, config.warmup_s, config.window_s)
    growth = {name: _growth(samples, config.warmup_s) for name, samples in rss.items()}
    worst = max((g["growth_pct"] or 0.0) for g in growth.values())
    received = counters.get("frames_received")
    dropped = counters.get("frames_dropped")
    measured_s = config.duration_s - config.warmup_s
    report: dict[str, Any] = {
        "config": asdict(config),
        "nodes_alive_at_end": alive,
        "operator_released": released,
        "operator_releases": releases,
        "minimal_risk_entries_after_warmup": sum(
            1 for t, state in states if state == "MINIMAL_RISK" and t0 + config.warmup_s <= t <= end
        ),
        "frames": {
            "published": published - startup_frames,
            "published_at_start_up": startup_frames,
            "monitor_received": received,
            "monitor_certified": counters.get("frames_certified"),
            "monitor_dropped": dropped,
            "drop_fraction": round(dropped / received, 4)
            if received and dropped is not None
            else None,
            "lost_in_transport": None
            if received is None
            else max(0, published - startup_frames - received),
            "certificates_received": len(latencies),
            "bad_certificates": bad,
        },
        "certificate_rate_hz": round(len(values) / measured_s, 3),
        "pending_frames_max": pending_max,
        "latency_ms": {
            "after_warmup_frames": len(values),
            "p50": round(float(np.percentile(values, 50)), 2) if values else None,
            "p99": round(float(np.percentile(values, 99)), 2) if values else None,
            "max": round(float(np.max(values)), 2) if values else None,
            "windows": windows,
            "p99_drift_ms": round(windows[-1]["p99_ms"] - windows[0]["p99_ms"], 2)
            if len(windows) >= 2
            else None,
        },
        "rss": growth,
        "rss_samples": {
            name: [[round(t, 1), round(m, 2)] for t, m in s] for name, s in rss.items()
        },
        "arbiter_states": [[round(t - t0, 2), state] for t, state in states],
        "arbiter_time_in_state_s": _time_in_state(states, t0 + config.warmup_s, end),
        "arbiter_state_reasons": [[round(t - t0, 2), state, why] for t, state, why in reasons],
        "target": {
            "rss_growth_pct_max": RSS_GROWTH_TARGET_PCT,
            "rss_growth_met": worst <= RSS_GROWTH_TARGET_PCT,
            "bounded_queue": pending_max <= 1,
        },
    }
    return report


def write_soak_plot(report: dict[str, Any], path: Path) -> Path:
    """RSS of both nodes and windowed latency (p50, p99) over the run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, samples in report["rss_samples"].items():
        if samples:
            t, m = zip(*samples, strict=True)
            top.plot(t, m, label=f"{name} node")
    warmup = report["config"]["warmup_s"]
    for ax in (top, bottom):
        ax.axvline(warmup, color="grey", linestyle=":", linewidth=1)
    top.set_ylabel("RSS (MiB)")
    top.legend(loc="best")
    top.set_title(
        f"soak: {report['config']['rate_hz']:g} Hz camera for {report['config']['duration_s']:g} s"
        f" (dotted: end of warm-up)"
    )
    windows = report["latency_ms"]["windows"]
    if windows:
        x = [w["from_s"] + report["config"]["window_s"] / 2 for w in windows]
        bottom.plot(x, [w["p50_ms"] for w in windows], marker="o", label="p50")
        bottom.plot(x, [w["p99_ms"] for w in windows], marker="o", label="p99")
        bottom.legend(loc="best")
    bottom.set_ylabel("frame -> certificate (ms)")
    bottom.set_xlabel("time (s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
