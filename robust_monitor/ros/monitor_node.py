"""The monitor node: camera frames in, one certificate per certified frame out.

``ros2 run robust_monitor monitor_node --ros-args -p model_path:=... -p image_topic:=...``

Topics:

- subscribes ``image_topic`` (``sensor_msgs/Image``, or ``sensor_msgs/CompressedImage`` when
  ``compressed`` is true; QoS from ``qos_reliability``/``qos_depth``, sensor-data by default).
  Compressed convention: the node subscribes exactly ``image_topic``; image_transport publishes
  the compressed stream of ``/camera/image_raw`` on ``/camera/image_raw/compressed``, so pass
  that name together with ``compressed:=true``.
- publishes ``~/certificate`` (``diagnostic_msgs/DiagnosticArray``, the contract of
  ``contract.py``; header stamp = the image's stamp), ``~/radius`` (``std_msgs/Float32``, the
  certified L2 radius in model-input units, 0 when abstained; for plots), ``~/ready``
  (``std_msgs/Bool``, latched: true once the model is loaded and warmed up) and ``/diagnostics``
  (every ``diagnostics_period_s``: model, provider, rates, drops, latency percentiles, errors).

Parameters (every one declared with a descriptor: description with unit, range, read-only):

========================  ======  ===================  ======================================
name                      type    default              notes
========================  ======  ===================  ======================================
``model_path``            str     shipped model        guarded
``image_topic``           str     /camera/image_raw    start-up only
``compressed``            bool    false                start-up only
``qos_reliability``       str     best_effort          best_effort | reliable; start-up only
``qos_depth``             int     5                    [1, 100] messages; start-up only
``sigma``                 double  0.0                  [0, 4] model-input units, 0 = metadata;
                                                       guarded
``n0``                    int     0                    [0, 1e6] samples, 0 = clean; guarded
``n``                     int     500                  [1, 1e7] samples; guarded
``alpha``                 double  0.001                [1e-12, 0.5]; guarded
``batch_size``            int     500                  [1, 1e5] samples; guarded
``provider``              str     auto                 auto | cpu,cuda,tensorrt; guarded
``certify_mode``          str     sequential           fixed | sequential; guarded
``r_required``            double  0.0                  [0, 10] L2 radius, sequential; 0 = the
                                                       arbiter policy's r_recover; guarded
``budget_ms``             double  100.0                [0, 60000] ms per frame, sequential;
                                                       0 = no deadline; guarded
``max_n``                 int     300                  [1, 1e7] samples, sequential; guarded
``bands_l2``              double  unset                L2 radii, sequential; unset/empty = the
                          array                        arbiter policy's thresholds; guarded
``roi``                   double  unset                [x, y, w, h] fractions; unset/empty =
                          array                        metadata; guarded
``diagnostics_period_s``  double  1.0                  [0.05, 60] s; changeable at run time
``allow_runtime_tuning``  bool    false                start-up only
========================  ======  ===================  ======================================

"Guarded" parameters are read-only unless the node starts with ``allow_runtime_tuning:=true``;
then a valid update reloads the pipeline on the worker (no certificates while it reloads) and
an invalid one is refused with the reason.

Sequential mode (the default, ``certify_mode:=sequential``; ``core/certify/sequential.py``):
each frame's estimation samples come in looks, and sampling stops as soon as ``radius >=
r_required`` is certified (anytime-valid bounds), shown unreachable (once the arbiter's other
thresholds are decided too), ``budget_ms`` is spent or ``max_n`` samples are drawn; ``n`` is not
used. ``r_required`` 0 takes the arbiter policy's ``r_recover`` (``degraded_exit_radius_l2``,
0.3 by default: a frame certified for it counts as healthy in every arbiter state; set
``r_required`` to the arbiter's value if you change it). An ``r_required`` that ``max_n``
unanimous samples cannot certify is an invalid configuration
(ERROR at load, or the update is refused). With a budget below the camera period the node keeps
the camera rate: it certifies the newest frame and drops the ones that arrived meanwhile. A
frame whose budget runs out during selection is published as an abstention with ``n`` 0. The
certificate carries ``certify_mode``, ``decision``, ``looks`` and ``r_required``
(``contract.py``); /diagnostics adds the decision counts and the samples per frame.

/diagnostics (status ``<node>: monitor``): ERROR when the model or the configuration is
unusable (the message says why), when the worker thread has died, or when frames fail and none
was certified for ``max(2 * diagnostics_period_s, 1 s)``; WARN while loading, when no frame
arrived for that long, or when some frames failed; OK otherwise.

Threading: the camera callback (executor thread) only puts the message into a one-slot mailbox
(``FrameMailbox``): a frame that was not taken yet is replaced and counted as dropped, so nothing
queues and the newest frame is always the one certified next. A dedicated worker thread (not an
executor thread) loads and warms up the model, then takes the newest frame, decodes it, certifies
it (``FramePipeline``) and publishes. Certification therefore never blocks the executor, which
keeps serving parameters, services and the diagnostics timer.

Failure behaviour: a missing or corrupt model, or invalid parameters, never end the process: the
node stays up, publishes ERROR on ``/diagnostics`` saying why and publishes no certificates (a
consumer sees missing evidence). A bad frame (unknown encoding, truncated data, corrupt JPEG) is
dropped with a throttled warning and counted.

Time: certificate stamps are always the image header's stamp. ``use_sim_time`` (the standard
parameter) sets the clock of the ``/diagnostics`` header; the diagnostics timer itself runs on
the steady clock so health reports continue when a simulated clock stalls.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.exceptions import InvalidTopicNameException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.validate_topic_name import validate_topic_name
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, Float32

from robust_monitor.assets import DEFAULT_MODEL
from robust_monitor.core.certify.engine import PROVIDER_ALIASES, SmoothingEngine
from robust_monitor.core.certify.model import sha256_file
from robust_monitor.core.certify.sequential import check_frame_samples
from robust_monitor.core.errors import ConfigError, InputError, ModelError, RobustMonitorError
from robust_monitor.core.imaging.preprocess import Roi
from robust_monitor.core.pipeline import (
    MODES,
    SHIPPED,
    CertifyConfig,
    FramePipeline,
    check_reachable,
    default_bands,
    default_r_required,
)
from robust_monitor.ros import contract
from robust_monitor.ros.image_conversion import compressed_image_to_rgb, image_to_rgb
from robust_monitor.ros.monitor_settings import MonitorSettings, build_settings
from robust_monitor.ros.parameters import (
    ParamSpec,
    Tuning,
    by_name,
    check_value,
    declare_all,
    float_range,
    int_range,
    read_value,
)
from robust_monitor.ros.qos import (
    DEFAULT_CAMERA_DEPTH,
    MAX_CAMERA_DEPTH,
    RELIABILITY_CHOICES,
    camera_qos,
    evidence_qos,
    latched_qos,
)
from robust_monitor.ros.spin import run_nodes

NODE_NAME = "robust_monitor"
WARN_THROTTLE_S = 5.0
LATENCY_WINDOW = 200
"""Frames in the rolling window of the latency percentiles."""
STOP_TIMEOUT_S = 10.0
_DEFAULTS = SHIPPED
OK, WARN, ERROR = (
    bytes(DiagnosticStatus.OK),
    bytes(DiagnosticStatus.WARN),
    bytes(DiagnosticStatus.ERROR),
)


# --- parameters ----------------------------------------------------------------------------------
def _check_topic(value: str) -> str | None:
    try:
        validate_topic_name(value)
    except InvalidTopicNameException as exc:
        return f"image_topic {value!r} is not a valid topic name: {exc}"
    return None


def _check_choice(name: str, choices: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"{name} must be one of {choices}, got {value!r}"

    return check


def _check_provider(value: str) -> str | None:
    names = [p.strip().lower() for p in value.split(",")]
    if value.strip() == "auto" or all(p in PROVIDER_ALIASES for p in names):
        return None
    return (
        f"provider must be auto or a comma-separated list of {list(PROVIDER_ALIASES)}, "
        f"got {value!r}"
    )


def _check_roi(value: list[float]) -> str | None:
    if len(value) == 0:
        return None
    if len(value) != 4:
        return f"roi must be empty or [x, y, width, height], got {len(value)} values"
    try:
        Roi(*(float(v) for v in value))
    except ConfigError as exc:
        return str(exc)
    return None


def _check_bands(value: list[float]) -> str | None:
    bad = [v for v in value if not (isinstance(v, float) and math.isfinite(v) and 0.0 < v <= 10.0)]
    if bad:
        return f"bands_l2 must hold L2 radii in (0, 10], got {bad}"
    return None


def _check_model_path(value: str) -> str | None:
    return None if value.strip() else "model_path must not be empty"


def _check_sha256(value: str) -> str | None:
    text = value.strip().lower()
    if text == "" or (len(text) == 64 and all(c in "0123456789abcdef" for c in text)):
        return None
    return f"model_sha256 must be empty or 64 hexadecimal digits, got {value!r}"


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "model_path",
        str(DEFAULT_MODEL),
        "Path of the ONNX classifier (a model.json beside it gives classes, sigma, ROI).",
        Tuning.GUARDED,
        constraints="an existing .onnx file",
        check=_check_model_path,
    ),
    ParamSpec(
        "model_sha256",
        "",
        "Pinned sha256 of the model file: a model whose hash differs is not loaded (ERROR on "
        "/diagnostics, no certificates, so the arbiter sees missing evidence); empty: not pinned.",
        Tuning.GUARDED,
        constraints="empty or 64 hexadecimal digits",
        check=_check_sha256,
    ),
    ParamSpec(
        "image_topic",
        "/camera/image_raw",
        "Camera topic. With compressed:=true pass the compressed stream's name, "
        "e.g. /camera/image_raw/compressed.",
        Tuning.STARTUP,
        constraints="a valid topic name",
        check=_check_topic,
    ),
    ParamSpec(
        "compressed",
        False,
        "Subscribe sensor_msgs/CompressedImage (JPEG or PNG) instead of sensor_msgs/Image.",
        Tuning.STARTUP,
    ),
    ParamSpec(
        "qos_reliability",
        "best_effort",
        "Reliability of the camera subscription (best_effort matches every publisher).",
        Tuning.STARTUP,
        constraints=" or ".join(RELIABILITY_CHOICES),
        check=_check_choice("qos_reliability", RELIABILITY_CHOICES),
    ),
    ParamSpec(
        "qos_depth",
        DEFAULT_CAMERA_DEPTH,
        "Depth of the camera subscription's DDS queue, in messages (the node keeps one frame).",
        Tuning.STARTUP,
        int_range(1, MAX_CAMERA_DEPTH),
    ),
    ParamSpec(
        "sigma",
        0.0,
        "Std of the smoothing noise, in model-input units (pixels scaled to [0, 1]); "
        "0 takes the model metadata's sigma.",
        Tuning.GUARDED,
        float_range(0.0, 4.0),
    ),
    ParamSpec(
        "n0",
        _DEFAULTS.n0,
        "Noisy samples that select the class, per frame (samples); 0: the clean frame's "
        "prediction selects it (no samples, same guarantee).",
        Tuning.GUARDED,
        int_range(0, 1_000_000),
    ),
    ParamSpec(
        "n",
        _DEFAULTS.n,
        "Fixed mode: noisy samples that estimate p_lower, per frame (samples).",
        Tuning.GUARDED,
        int_range(1, 10_000_000),
    ),
    ParamSpec(
        "alpha",
        _DEFAULTS.alpha,
        "Failure probability of each certificate (dimensionless, 0 < alpha <= 0.5).",
        Tuning.GUARDED,
        float_range(1e-12, 0.5),
        constraints="0 < alpha <= 0.5",
    ),
    ParamSpec(
        "batch_size",
        _DEFAULTS.batch_size,
        "Noisy copies per inference batch (samples); trades memory for speed.",
        Tuning.GUARDED,
        int_range(1, 100_000),
    ),
    ParamSpec(
        "provider",
        _DEFAULTS.providers,
        "onnxruntime execution provider: auto (CUDA when present, else CPU) or a "
        "comma-separated list of cpu, cuda, tensorrt.",
        Tuning.GUARDED,
        constraints="auto | cpu | cuda | tensorrt (comma-separated)",
        check=_check_provider,
    ),
    ParamSpec(
        "certify_mode",
        _DEFAULTS.mode,
        "Certification mode: sequential (estimation samples in looks; stops once the radius is "
        "decided against r_required and the arbiter's other thresholds, budget_ms is spent or "
        "max_n samples are drawn; n is not used) or fixed (n0 + n samples per frame, Cohen's "
        "CERTIFY).",
        Tuning.GUARDED,
        constraints=" | ".join(MODES),
        check=_check_choice("certify_mode", MODES),
    ),
    ParamSpec(
        "r_required",
        0.0,
        "Sequential mode: the certified L2 radius each frame is decided against, in model-input "
        "units; 0 takes the arbiter policy's r_recover (degraded_exit_radius_l2, "
        f"{default_r_required():g} by default), the radius that counts as healthy in every "
        "arbiter state. A value max_n samples cannot certify is refused.",
        Tuning.GUARDED,
        float_range(0.0, 10.0),
        constraints="0 = the arbiter policy's r_recover",
    ),
    ParamSpec(
        "budget_ms",
        float(_DEFAULTS.budget_ms or 0.0),
        "Sequential mode: certification time budget per frame, in milliseconds (selection "
        "included; overrun by at most one batch); 0: no deadline. Keep it below the camera "
        "period: the node certifies the newest frame and drops those that arrive meanwhile.",
        Tuning.GUARDED,
        float_range(0.0, 60_000.0),
        constraints="0 = no deadline",
    ),
    ParamSpec(
        "max_n",
        _DEFAULTS.max_n,
        "Sequential mode: most estimation samples per frame (samples); it caps the radius that "
        "can be certified.",
        Tuning.GUARDED,
        int_range(1, 10_000_000),
    ),
    ParamSpec(
        "bands_l2",
        Parameter.Type.DOUBLE_ARRAY,
        "Sequential mode: further certified L2 radii (model-input units) a frame that cannot "
        "reach r_required is decided against before it stops, so the arbiter gets its level "
        "at each of its thresholds; unset or empty takes the shipped arbiter policy's "
        f"thresholds {list(default_bands())}; set them to the arbiter's if you change those.",
        Tuning.GUARDED,
        constraints="empty, or radii in (0, 10]",
        check=_check_bands,
    ),
    ParamSpec(
        "roi",
        Parameter.Type.DOUBLE_ARRAY,
        "Region of interest [x, y, width, height] as fractions of the frame (unitless, "
        "0..1); unset or empty takes the model metadata's ROI (else the full frame).",
        Tuning.GUARDED,
        constraints="empty, or 4 values with x, y >= 0, width, height > 0, x+width, y+height <= 1",
        check=_check_roi,
    ),
    ParamSpec(
        "diagnostics_period_s",
        1.0,
        "Period of the /diagnostics report (seconds).",
        Tuning.RUNTIME,
        float_range(0.05, 60.0),
    ),
)
ALLOW_RUNTIME_TUNING = ParamSpec(
    "allow_runtime_tuning",
    False,
    "Allow the safety parameters (model_path, model_sha256, sigma, n0, n, alpha, batch_size, "
    "provider, certify_mode, r_required, budget_ms, max_n, bands_l2, roi) to change while "
    "running.",
    Tuning.STARTUP,
)
SPECS = by_name((ALLOW_RUNTIME_TUNING, *PARAMETERS))


def settings_from_values(values: Mapping[str, Any]) -> MonitorSettings:
    """Parameter values -> MonitorSettings; raises ConfigError saying what is wrong."""
    for spec in PARAMETERS:
        value = values.get(spec.name)
        reason = None if value is None else check_value(spec, value)
        if reason is not None:
            raise ConfigError(reason)
    return build_settings(values)


# --- the one-slot mailbox and the statistics -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class Delivery:
    """A frame message as it arrived (monotonic seconds)."""

    msg: Any
    received_s: float


class FrameMailbox:
    """Holds only the newest frame; putting a frame over one not yet taken drops the older.

    ``put`` never blocks (it runs on the executor); ``take`` blocks the worker until a frame is
    there, the timeout passes, or the mailbox is closed.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Delivery | None = None
        self._closed = False

    def put(self, item: Delivery) -> bool:
        """Store ``item``; True when it replaced a frame nobody took (a drop)."""
        with self._cond:
            dropped = self._item is not None
            self._item = item
            self._cond.notify()
            return dropped

    def take(self, timeout_s: float) -> Delivery | None:
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout_s)
            item, self._item = self._item, None
            return item

    @property
    def pending(self) -> int:
        """Frames waiting: 0 or 1, by construction."""
        with self._cond:
            return int(self._item is not None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """Counters since start and latency percentiles over the rolling window (milliseconds)."""

    at_s: float
    received: int = 0
    dropped: int = 0
    certified: int = 0
    not_certified: int = 0
    """Frames taken while no model was loaded."""
    decode_errors: int = 0
    certify_errors: int = 0
    last_frame_s: float | None = None
    last_certified_s: float | None = None
    last_error: str = ""
    last_error_s: float | None = None
    latency_ms: tuple[float, float, float] | None = None
    """End to end (frame received -> certificate published): p50, p95, p99."""
    certify_ms: tuple[float, float, float] | None = None
    """Certification alone (the certificate's latency_ms): p50, p95, p99."""
    samples: tuple[float, float, float] | None = None
    """Estimation samples per certified frame (the certificate's n): p50, p95, p99."""
    decisions: Mapping[str, int] = field(default_factory=dict)
    """Sequential mode: certified frames by decision since start (certified, unreachable, ...)."""


Counter = Literal["dropped", "not_certified", "decode_errors", "certify_errors"]
"""Counters besides ``received`` and ``certified`` (which carry more than a count)."""


class MonitorStats:
    """Thread-safe counters, fed by the subscription callback and the worker."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._latency: deque[float] = deque(maxlen=window)
        self._certify: deque[float] = deque(maxlen=window)
        self._samples: deque[float] = deque(maxlen=window)
        self._decisions: dict[str, int] = {}
        self._last_frame_s: float | None = None
        self._last_certified_s: float | None = None
        self._last_error = ""
        self._last_error_s: float | None = None

    def received(self, now_s: float) -> None:
        with self._lock:
            self._counts["received"] = self._counts.get("received", 0) + 1
            self._last_frame_s = now_s

    def count(self, name: Counter) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1

    def error(self, name: Counter, message: str) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
            self._last_error = message
            self._last_error_s = time.monotonic()

    def certified(
        self, latency_ms: float, certify_ms: float, samples: int = 0, decision: str | None = None
    ) -> None:
        with self._lock:
            self._counts["certified"] = self._counts.get("certified", 0) + 1
            self._last_certified_s = time.monotonic()
            self._latency.append(latency_ms)
            self._certify.append(certify_ms)
            self._samples.append(float(samples))
            if decision is not None:
                self._decisions[decision] = self._decisions.get(decision, 0) + 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            counts = dict(self._counts)
            latency, certify = list(self._latency), list(self._certify)
            samples, decisions = list(self._samples), dict(self._decisions)
            last_frame_s, last_certified_s = self._last_frame_s, self._last_certified_s
            last_error, last_error_s = self._last_error, self._last_error_s
        return StatsSnapshot(
            at_s=time.monotonic(),
            received=counts.get("received", 0),
            dropped=counts.get("dropped", 0),
            certified=counts.get("certified", 0),
            not_certified=counts.get("not_certified", 0),
            decode_errors=counts.get("decode_errors", 0),
            certify_errors=counts.get("certify_errors", 0),
            last_frame_s=last_frame_s,
            last_certified_s=last_certified_s,
            last_error=last_error,
            last_error_s=last_error_s,
            latency_ms=_percentiles(latency),
            certify_ms=_percentiles(certify),
            samples=_percentiles(samples),
            decisions=decisions,
        )


def _percentiles(values: list[float]) -> tuple[float, float, float] | None:
    if not values:
        return None
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=float), [50, 95, 99])
    return float(p50), float(p95), float(p99)


@dataclass(frozen=True, slots=True)
class ModelState:
    """What the worker reports about the loaded model (or why there is none)."""

    ready: bool = False
    error: str = ""
    name: str = ""
    sha256: str = ""
    provider: str = ""
    fallback: str = ""
    settings: MonitorSettings | None = None
    sigma: float | None = None
    """The loaded engine's sigma (the model metadata's when the sigma parameter is 0)."""


# --- the node ------------------------------------------------------------------------------------
class MonitorNode(Node):
    """Certifies the newest camera frame on a worker thread and publishes the evidence."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        flag, problems = declare_all(self, (ALLOW_RUNTIME_TUNING,), False)
        self.allow_runtime_tuning = bool(flag[ALLOW_RUNTIME_TUNING.name])
        values, declare_problems = declare_all(self, PARAMETERS, self.allow_runtime_tuning)
        problems += declare_problems
        self._stats = MonitorStats()
        self._mailbox = FrameMailbox()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._state_lock = threading.Lock()
        self._state = ModelState()
        self._pending: MonitorSettings | None = None
        self._pipeline: FramePipeline | None = None
        """Touched by the worker thread only."""
        self._loaded_engine: tuple[str, SmoothingEngine] | None = None
        """The providers setting and engine of the last model that loaded (kept while a reload
        is under way, for checking parameter updates against)."""
        self._previous = self._stats.snapshot()

        self._certificate_pub = self.create_publisher(
            DiagnosticArray, "~/certificate", evidence_qos()
        )
        self._radius_pub = self.create_publisher(Float32, "~/radius", evidence_qos())
        self._diagnostics_pub = self.create_publisher(
            DiagnosticArray, "/diagnostics", evidence_qos()
        )
        self._ready_pub = self.create_publisher(Bool, "~/ready", latched_qos())
        self._ready_pub.publish(Bool(data=False))

        self.image_topic = str(values["image_topic"])
        self.compressed = bool(values["compressed"])
        self._decode: Callable[[Any], tuple[np.ndarray, float]] = (
            compressed_image_to_rgb if self.compressed else image_to_rgb
        )
        self._subscription = self._subscribe(values, problems)

        settings: MonitorSettings | None = None
        try:
            settings = settings_from_values(values)
        except ConfigError as exc:
            problems.append(str(exc))
        if problems:
            reason = "; ".join(dict.fromkeys(problems))
            self._set_state(ModelState(error=reason))
            self.get_logger().error(f"not certifying, invalid configuration: {reason}")
        else:
            self._pending = settings

        period = float(values["diagnostics_period_s"])
        self._timer = self.create_timer(
            period, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        self.add_on_set_parameters_callback(self._check_update)
        self.add_post_set_parameters_callback(self._apply_update)
        self._worker = threading.Thread(
            target=self._work, name="robust_monitor.certify", daemon=True
        )
        self._worker.start()

    # -- public ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once the model is loaded and warmed up (and no reload is under way)."""
        return self._ready.is_set()

    def wait_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    @property
    def state(self) -> ModelState:
        with self._state_lock:
            return self._state

    @property
    def stats(self) -> StatsSnapshot:
        return self._stats.snapshot()

    @property
    def pending_frames(self) -> int:
        return self._mailbox.pending

    def destroy_node(self) -> None:
        """Stop the worker (it finishes the frame in hand), then destroy the node."""
        self._stop.set()
        self._mailbox.close()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(STOP_TIMEOUT_S)
        super().destroy_node()

    # -- camera ---------------------------------------------------------------------------
    def _subscribe(self, values: Mapping[str, Any], problems: list[str]) -> Any:
        try:
            qos = camera_qos(str(values["qos_reliability"]), int(values["qos_depth"]))
        except ConfigError as exc:
            problems.append(str(exc))
            qos = camera_qos()
        if self.compressed and not self.image_topic.rstrip("/").endswith("/compressed"):
            self.get_logger().warning(
                f"compressed:=true but image_topic {self.image_topic!r} does not end in "
                "/compressed; image_transport publishes JPEG/PNG frames on <image>/compressed"
            )
        msg_type = CompressedImage if self.compressed else Image
        try:
            # Its own callback group: frames are stored even while the executor serves a
            # parameter request or the diagnostics timer.
            return self.create_subscription(
                msg_type,
                self.image_topic,
                self._on_frame,
                qos,
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
        except InvalidTopicNameException as exc:
            problems.append(f"image_topic {self.image_topic!r}: {exc}")
            return None

    def _on_frame(self, msg: Image | CompressedImage) -> None:
        """Executor thread: store the newest frame and return at once."""
        now = time.monotonic()
        self._stats.received(now)
        if self._mailbox.put(Delivery(msg, now)):
            self._stats.count("dropped")

    # -- worker ---------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            settings = self._take_pending()
            if settings is not None:
                self._load(settings)
                continue
            delivery = self._mailbox.take(timeout_s=0.1)
            if delivery is None or self._stop.is_set():
                continue
            try:
                self._certify(delivery)
            except Exception as exc:  # the certifier must outlive whatever one frame does
                self._stats.error("certify_errors", f"unexpected {type(exc).__name__}: {exc}")
                if not self._stop.is_set():
                    self.get_logger().error(
                        f"frame not certified: {type(exc).__name__}: {exc}",
                        throttle_duration_sec=WARN_THROTTLE_S,
                    )

    def _take_pending(self) -> MonitorSettings | None:
        with self._state_lock:
            settings, self._pending = self._pending, None
            return settings

    def _set_state(self, state: ModelState) -> None:
        with self._state_lock:
            self._state = state

    def _load(self, settings: MonitorSettings) -> None:
        self._ready.clear()
        self._pipeline = None
        self._publish_ready(False)
        self._set_state(ModelState(settings=settings))
        self.get_logger().info(f"loading model {settings.model_path}")
        try:
            if settings.model_sha256:
                # Hash the file before onnxruntime parses it: a swapped model never runs.
                actual = sha256_file(settings.model_path)
                if actual != settings.model_sha256:
                    raise ModelError(
                        f"{settings.model_path}: sha256 {actual} does not match the pinned "
                        f"model_sha256 {settings.model_sha256}; refusing to certify with it"
                    )
            pipeline = FramePipeline(settings.model_path, settings.certify, settings.roi)
            pipeline.warmup()
        except RobustMonitorError as exc:
            self._fail(settings, str(exc))
            return
        except Exception as exc:  # onnxruntime raises its own types; the node must stay up
            self._fail(settings, f"{type(exc).__name__}: {exc}")
            return
        engine = pipeline.engine
        self._pipeline = pipeline
        self._loaded_engine = (settings.certify.providers, engine)
        self._set_state(
            ModelState(
                ready=True,
                name=engine.spec.name,
                sha256=engine.spec.sha256,
                provider=engine.provider,
                fallback=engine.fallback or "",
                settings=settings,
                sigma=engine.sigma,
            )
        )
        self._ready.set()
        self._publish_ready(True)
        self.get_logger().info(
            f"ready: model {engine.spec.name} (sha256 {engine.spec.sha256[:12]}) on "
            f"{engine.provider}, sigma {engine.sigma:g}, n0 {settings.certify.n0}, "
            f"n {settings.certify.n}, alpha {settings.certify.alpha:g}"
            + (_sequential_text(pipeline) if pipeline.sequential else "")
            + (f"; {engine.fallback}" if engine.fallback else "")
        )
        warning = budget_warning(pipeline)
        if warning:
            self.get_logger().warning(warning)

    def _fail(self, settings: MonitorSettings, reason: str) -> None:
        self._set_state(ModelState(error=f"model not loaded: {reason}", settings=settings))
        self.get_logger().error(f"model not loaded, publishing no certificates: {reason}")

    def _publish_ready(self, ready: bool) -> None:
        if not self._stop.is_set() and self.context.ok():
            self._ready_pub.publish(Bool(data=ready))

    def _certify(self, delivery: Delivery) -> None:
        pipeline = self._pipeline
        if pipeline is None:
            self._stats.count("not_certified")
            return
        msg = delivery.msg
        try:
            rgb, stamp_s = self._decode(msg)
        except InputError as exc:
            self._stats.error("decode_errors", str(exc))
            self.get_logger().warning(
                f"dropped a bad frame: {exc}", throttle_duration_sec=WARN_THROTTLE_S
            )
            return
        try:
            result = pipeline.process(rgb, stamp_s)
        except RobustMonitorError as exc:
            self._stats.error("certify_errors", str(exc))
            self.get_logger().warning(
                f"frame not certified: {exc}", throttle_duration_sec=WARN_THROTTLE_S
            )
            return
        if self._stop.is_set() or not self.context.ok():
            return
        state = self.state
        self._certificate_pub.publish(
            contract.certificate_to_diagnostics(
                result, msg.header.stamp, state.name, state.sha256, msg.header.frame_id
            )
        )
        self._radius_pub.publish(Float32(data=float(result.certificate.radius)))
        self._stats.certified(
            (time.monotonic() - delivery.received_s) * 1e3,
            result.certificate.latency_ms,
            result.certificate.n,
            result.decision,
        )

    # -- parameters -----------------------------------------------------------------------
    def _check_update(self, params: list[Parameter[Any]]) -> SetParametersResult:
        """Refuse an update that is not allowed or not valid, saying why."""
        values = {name: read_value(self, name) for name in SPECS}
        for param in params:
            spec = SPECS.get(param.name)
            if spec is None:
                continue  # rclpy's own parameters (use_sim_time, ...)
            guarded = spec.tuning is Tuning.GUARDED and not self.allow_runtime_tuning
            if spec.tuning is Tuning.STARTUP or guarded:
                hint = " (start with allow_runtime_tuning:=true)" if guarded else ""
                return _refuse(f"{param.name} is read-only{hint}")
            value = param.value
            if value is not None and not isinstance(value, (bool, int, float, str)):
                value = list(value)
            reason = check_value(spec, value)
            if reason is not None:
                return _refuse(reason)
            if param.name == "model_path" and not Path(value).is_file():
                return _refuse(f"model_path {value!r} is not a file")
            values[param.name] = value
        try:
            settings = settings_from_values(values)
            self._check_reachable(settings)
        except ConfigError as exc:
            return _refuse(str(exc))
        return SetParametersResult(successful=True)

    def _check_reachable(self, settings: MonitorSettings) -> None:
        """ConfigError when the sequential r_required cannot be certified with the loaded model's
        sigma, or when a frame's samples would outrun the loaded engine's noise generator
        (``SmoothingEngine.max_samples_per_frame``); checked when the model stays the same, a
        new model is checked when it loads."""
        cfg = settings.certify
        state = self.state
        if state.settings is None:
            return
        same_model = settings.model_path == state.settings.model_path
        # The engine last loaded, also while a reload is under way: it knows the generator's
        # limit for this model and provider.
        loaded = self._loaded_engine
        if loaded is not None:
            providers, engine = loaded
            same_engine = (
                Path(settings.model_path).resolve() == engine.spec.path.resolve()
                and cfg.providers == providers
            )
            if same_engine and cfg.sequential:
                check_frame_samples(engine, cfg.sequential_config())
            elif same_engine:
                engine.check_certify_samples(cfg.n0, cfg.n, cfg.batch_size)
        if not cfg.sequential:
            return
        sigma = cfg.sigma
        if sigma is None and same_model:
            sigma = state.sigma
        if sigma is not None:
            check_reachable(cfg.sequential_config(), sigma)

    def _apply_update(self, params: list[Parameter[Any]]) -> None:
        names = {p.name for p in params}
        if "diagnostics_period_s" in names:
            period = float(self.get_parameter("diagnostics_period_s").value)
            self._timer.timer_period_ns = int(period * 1e9)
        if any(SPECS[n].tuning is Tuning.GUARDED for n in names if n in SPECS):
            values = {name: read_value(self, name) for name in SPECS}
            try:
                settings = settings_from_values(values)
            except ConfigError as exc:  # cannot happen: _check_update checked the same values
                self.get_logger().error(f"parameter update not applied: {exc}")
                return
            with self._state_lock:
                self._pending = settings
            self._ready.clear()
            self.get_logger().info(f"certification parameters changed ({sorted(names)}): reloading")

    # -- diagnostics ----------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = self._stats.snapshot()
        before, self._previous = self._previous, now
        state = self.state
        level, message = self._health(state, now, before)
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: monitor",
            message=message,
            hardware_id=state.name,
            values=[KeyValue(key=k, value=v) for k, v in self._report(state, now, before)],
        )
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self._diagnostics_pub.publish(msg)

    def _stale_after_s(self) -> float:
        return max(2.0 * self._timer.timer_period_ns * 1e-9, 1.0)

    def _health(
        self, state: ModelState, now: StatsSnapshot, before: StatsSnapshot
    ) -> tuple[bytes, str]:
        """(level, message) of the monitor as a whole."""
        if state.error:
            return ERROR, state.error
        if not self._worker.is_alive():
            return ERROR, "the certification thread has stopped"
        if not state.ready:
            return WARN, "loading the model"
        stale_s = self._stale_after_s()
        errors = (now.decode_errors + now.certify_errors) - (
            before.decode_errors + before.certify_errors
        )
        if errors:
            last = now.last_certified_s
            if last is None or now.at_s - last > stale_s:
                return ERROR, f"frames arrive but none is certified: {now.last_error}"
            return WARN, f"{errors} frames failed since the last report: {now.last_error}"
        if now.last_frame_s is None:
            return WARN, f"no frames received yet on {self.image_topic}"
        age = now.at_s - now.last_frame_s
        if age > stale_s:
            return WARN, f"no frames on {self.image_topic} for {age:.1f} s"
        return OK, "certifying"

    def _report(
        self, state: ModelState, now: StatsSnapshot, before: StatsSnapshot
    ) -> list[tuple[str, str]]:
        dt = max(now.at_s - before.at_s, 1e-9)
        received = now.received - before.received
        dropped = now.dropped - before.dropped

        def rate(delta: int) -> str:
            return f"{delta / dt:.3f}"

        def ms(values: tuple[float, float, float] | None, index: int) -> str:
            return "" if values is None else f"{values[index]:.3f}"

        settings = state.settings
        pairs = [
            ("ready", str(state.ready).lower()),
            ("model_name", state.name),
            ("model_sha256", state.sha256),
            ("model_path", settings.model_path if settings else ""),
            ("provider", state.provider),
            ("provider_fallback", state.fallback),
            ("image_topic", self.image_topic),
            ("compressed", str(self.compressed).lower()),
            ("frame_rate_in_hz", rate(received)),
            ("certification_rate_hz", rate(now.certified - before.certified)),
            ("drop_rate_hz", rate(dropped)),
            ("drop_fraction", f"{dropped / received:.3f}" if received else "0.000"),
            ("latency_p50_ms", ms(now.latency_ms, 0)),
            ("latency_p95_ms", ms(now.latency_ms, 1)),
            ("latency_p99_ms", ms(now.latency_ms, 2)),
            ("certify_latency_p50_ms", ms(now.certify_ms, 0)),
            ("certify_latency_p95_ms", ms(now.certify_ms, 1)),
            ("certify_latency_p99_ms", ms(now.certify_ms, 2)),
            ("frames_received", str(now.received)),
            ("frames_certified", str(now.certified)),
            ("frames_dropped", str(now.dropped)),
            ("frames_not_certified", str(now.not_certified)),
            ("decode_errors", str(now.decode_errors)),
            ("certify_errors", str(now.certify_errors)),
            ("pending_frames", str(self._mailbox.pending)),
            (
                "last_frame_age_s",
                "" if now.last_frame_s is None else f"{now.at_s - now.last_frame_s:.3f}",
            ),
            ("last_error", now.last_error),
            (
                "last_error_age_s",
                "" if now.last_error_s is None else f"{now.at_s - now.last_error_s:.3f}",
            ),
        ]
        if settings is not None:
            cfg = settings.certify
            pairs += [
                ("sigma", "metadata" if cfg.sigma is None else repr(cfg.sigma)),
                ("n0", str(cfg.n0)),
                ("n", str(cfg.n)),
                ("alpha", repr(cfg.alpha)),
                ("certify_mode", cfg.mode),
            ]
            if cfg.sequential:
                pairs += _sequential_report(cfg, now)
        return pairs


def budget_warning(pipeline: FramePipeline) -> str:
    """A warning when the sequential budget is below the quickest certification measured at
    warm-up (frames would then stop on the budget), else ''."""
    seq, quickest = pipeline.sequential, pipeline.quickest_certify_ms
    if seq is None or seq.budget_ms is None or quickest is None or seq.budget_ms >= quickest:
        return ""
    return (
        f"budget_ms {seq.budget_ms:g} is below the {quickest:.1f} ms that certifying "
        f"r_required {seq.r_required:g} takes here even when every vote agrees (n0 "
        f"{seq.n0} plus one look): most frames will stop on the budget with a small radius "
        "or an abstention; raise budget_ms, lower n0 or use a faster provider"
    )


def _sequential_text(pipeline: FramePipeline) -> str:
    seq = pipeline.sequential
    if seq is None:
        return ""
    budget = "no budget" if seq.budget_ms is None else f"budget {seq.budget_ms:g} ms"
    return f"; sequential: r_required {seq.r_required:g}, {budget}, max_n {seq.max_n}"


def _sequential_report(cfg: CertifyConfig, now: StatsSnapshot) -> list[tuple[str, str]]:
    """The /diagnostics pairs of sequential mode: settings, decisions, samples per frame."""
    r_required = cfg.r_required if cfg.r_required is not None else default_r_required()
    pairs = [
        ("r_required", repr(float(r_required))),
        ("budget_ms", "" if cfg.budget_ms is None else repr(float(cfg.budget_ms))),
        ("max_n", str(cfg.max_n)),
    ]
    pairs += [
        (f"decisions_{name}", str(now.decisions.get(name, 0)))
        for name in ("certified", "unreachable", "budget", "max_n")
    ]
    for index, name in enumerate(("p50", "p95", "p99")):
        pairs.append(
            (f"samples_{name}", "" if now.samples is None else f"{now.samples[index]:.1f}")
        )
    return pairs


def _refuse(reason: str) -> SetParametersResult:
    return SetParametersResult(successful=False, reason=reason)


def main(args: list[str] | None = None) -> int:
    """Entry point: spin the monitor until SIGINT (Ctrl-C) or a ROS shutdown; returns 0."""
    # Certification runs on the node's own worker thread, so every executor callback is short
    # and one thread serves them (spin.py says why not the MultiThreadedExecutor).
    return run_nodes(lambda: [MonitorNode()], args)


if __name__ == "__main__":
    raise SystemExit(main())
