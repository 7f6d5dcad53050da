"""The arbiter node: certificates and planner commands in, a speed limit and gated commands out.

    ros2 run robust_monitor arbiter_node --ros-args -r cmd_vel_in:=/cmd_nav -r cmd_vel_out:=/cmd_vel

A safety gate between a planner and the vehicle, in the manner of Nav2's collision monitor: the
node only wires topics, services and parameters to the pure state machine of
``robust_monitor.core.arbiter`` (``Arbiter.step``) and to ``limit_twist`` below; the policy is the
parameter set (``config/robust_monitor.yaml``, section ``robust_monitor_arbiter``).

Topics (``~`` is the node's name, ``/robust_monitor_arbiter`` by default):

=============================  =================================  =============================
topic                          type                               QoS / when
=============================  =================================  =============================
``certificate_topic`` (param)  ``diagnostic_msgs/DiagnosticArray``  in; reliable, depth 10; one
                                                                  frame's evidence (contract.py)
``cmd_vel_in``                 ``geometry_msgs/TwistStamped``     in; reliable, depth 1; relative
                               (``Twist`` if not                  name, remap it
                               ``stamped_cmd_vel``)
``cmd_vel_out``                same type as ``cmd_vel_in``        out; reliable, depth 1; every
                                                                  command and every tick (below)
``~/speed_limit``              ``std_msgs/Float64`` [m/s]         out; reliable, depth 10; every
                                                                  tick and whenever it changes
``~/state``                    ``std_msgs/String``                out; latched (reliable +
                                                                  transient local); on change
``~/handover_request``         ``std_msgs/Bool``                  out; latched; on change
``manual_override_topic``      ``std_msgs/Bool``                  out; latched; true exactly in
(param, empty = off)                                              MANUAL (CARLA's
                                                                  ``vehicle_control_manual_
                                                                  override``)
``/diagnostics``               ``diagnostic_msgs/DiagnosticArray``  out; every
                                                                  ``diagnostics_period_s`` and on
                                                                  every state change
=============================  =================================  =============================

Services (``std_srvs/Trigger``; ``success`` = accepted, ``message`` = the reason):
``~/operator_takeover`` (always accepted: MANUAL) and ``~/operator_release`` (MINIMAL_RISK or
MANUAL -> NOMINAL, refused with the reason unless fresh, complete evidence has been healthy for
``recovery_time_s``, or while the configuration is invalid).

Gating (``limit_twist``): one ratio for the whole twist, as Nav2's collision monitor does, so the
path's curvature is kept: when the linear speed ``|v|`` (norm of ``linear``) exceeds the limit,
linear and angular are both scaled by ``limit / |v|``; a limit of 0 zeroes everything (an
angular-only command too: no turning in place during a stop); below the limit the command passes
unchanged. Commands with a NaN or Inf component are dropped and counted, and the stored command
is cleared, so the output is zero until a finite command arrives. A command older than
``cmd_timeout_s`` (node clock, at arrival) is never republished: the output is zero instead.

Timing: each certificate steps the arbiter with its evidence (certificate and verdict of the same
frame, paired by ``contract.diagnostics_to_evidence``); a lowered limit is applied to the stored
command and published at once. A timer (``publish_rate_hz``) steps the arbiter without evidence,
publishes ``~/speed_limit`` and, unless a command went out since the previous tick, the gated
command: a silent planner or a dead monitor still yields zero commands and a falling limit (unlike
twist_mux, which stops publishing). The timer runs on the steady clock so the output never stops;
every time the arbiter sees (steps, evidence ages, command ages) is the node clock, so
``use_sim_time`` makes staleness follow simulated time.

MANUAL: the operator drives through their own path (a teleop at a higher twist_mux priority,
CARLA's manual control with the override flag). On the takeover the arbiter publishes one zero
command (autonomy's last word is stop, so the base does not coast on the last autonomous
command until the operator's first one), then nothing on ``cmd_vel_out``, so it cannot fight the
operator's commands; ``~/state`` reads ``MANUAL``,
``/diagnostics`` says so, and ``manual_override_topic`` (when set) is true. After a release,
autonomy resumes from 0 m/s and the limit ramps up at ``ramp_up_mps2``.

Parameters: every key of ``ArbiterPolicy`` (see ``config/arbiter_policy.yaml`` for their meaning)
plus:

==========================  ======  ==============================  ==============================
name                        type    default                         notes
==========================  ======  ==============================  ==============================
``certificate_topic``       str     robust_monitor/certificate      start-up only; relative
``stamped_cmd_vel``         bool    true                            start-up only (Nav2 default)
``manual_override_topic``   str     "" (off)                        start-up only
``publish_rate_hz``         double  20.0                            [1, 1000] Hz; guarded
``cmd_timeout_s``           double  0.5                             [0.01, 60] s; guarded
``diagnostics_period_s``    double  1.0                             [0.05, 60] s; run time
``allow_runtime_tuning``    bool    false                           start-up only
==========================  ======  ==============================  ==============================

The policy keys are guarded too: read-only unless the node starts with
``allow_runtime_tuning:=true``; then an update is validated by building a new ``ArbiterPolicy``
(refused with the reason when invalid) and applied without forgetting the arbiter's memory.
Keys that depend on each other (a curve and the speeds bounding it) are changed together with
``set_parameters_atomically`` (``ros2 param load``), since each update must leave a valid policy.

Failure behaviour: an invalid configuration (a policy ``ArbiterPolicy`` refuses, a value of the
wrong type, a bad topic name) never ends the process and never falls back to defaults silently:
the node stays up pinned in MINIMAL_RISK at 0 m/s, publishes zero commands, refuses every
release with the reason and reports ERROR on ``/diagnostics``. Takeover still works. A certificate
timeout (no complete evidence for ``stale_after_s``) is an ERROR on ``/diagnostics``.

Threading: ``main`` spins a SingleThreadedExecutor (every callback is short and never blocks,
and one thread dispatches with the least latency in rclpy; rclpy 9.1's MultiThreadedExecutor
also busy-loops holding the GIL, ros2/rclpy#1452). Should a user spin it in a
MultiThreadedExecutor anyway, the subscriptions, the tick and the services share one mutually
exclusive callback group, and a lock guards the arbiter against the parameter and diagnostics
callbacks.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field, fields
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.exceptions import InvalidTopicNameException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.validate_topic_name import validate_topic_name
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from robust_monitor.core.arbiter import (
    Arbiter,
    ArbiterPolicy,
    ArbiterState,
    Decision,
    Evidence,
    OperatorRequest,
)
from robust_monitor.core.arbiter.policy import OOD_ACTIONS
from robust_monitor.core.errors import ConfigError
from robust_monitor.ros import contract
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
from robust_monitor.ros.qos import evidence_qos, latched_qos
from robust_monitor.ros.spin import run_nodes

NODE_NAME = "robust_monitor_arbiter"
DEFAULT_CERTIFICATE_TOPIC = "robust_monitor/certificate"
"""Relative: the monitor (node ``robust_monitor``, topic ``~/certificate``) in the same namespace
as the arbiter; ``/robust_monitor/certificate`` in the root namespace."""
WARN_THROTTLE_S = 5.0
OK, WARN, ERROR = (
    bytes(DiagnosticStatus.OK),
    bytes(DiagnosticStatus.WARN),
    bytes(DiagnosticStatus.ERROR),
)

Vector3 = tuple[float, float, float]
ZERO: Vector3 = (0.0, 0.0, 0.0)


# --- the gate (pure) -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GatedTwist:
    """A command after the gate: ``ratio`` is what linear and angular were both multiplied by."""

    linear: Vector3
    angular: Vector3
    ratio: float


def limit_twist(linear: Vector3, angular: Vector3, limit_mps: float) -> GatedTwist:
    """Scale a twist to ``limit_mps`` with one ratio for linear and angular (curvature kept).

    ``|v|`` is the Euclidean norm of ``linear`` (m/s). Below or at the limit the command passes
    unchanged (ratio 1, angular-only commands included); above it both parts are multiplied by
    ``limit / |v|``; a limit that is not > 0 (0, negative, NaN) gives the zero twist (ratio 0).
    Inputs are assumed finite (the node drops non-finite commands before they get here).
    """
    if not limit_mps > 0.0:
        return GatedTwist(ZERO, ZERO, 0.0)
    speed = math.sqrt(sum(v * v for v in linear))
    if speed <= limit_mps:
        return GatedTwist(linear, angular, 1.0)
    ratio = limit_mps / speed
    return GatedTwist(
        (linear[0] * ratio, linear[1] * ratio, linear[2] * ratio),
        (angular[0] * ratio, angular[1] * ratio, angular[2] * ratio),
        ratio,
    )


def command_qos() -> QoSProfile:
    """Velocity commands: reliable, keep last 1, volatile (only the newest command matters)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


# --- parameters ----------------------------------------------------------------------------------
def _check_topic(name: str, allow_empty: bool = False) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if allow_empty and value == "":
            return None
        try:
            validate_topic_name(value)
        except InvalidTopicNameException as exc:
            return f"{name} {value!r} is not a valid topic name: {exc}"
        return None

    return check


_SPEED = float_range(0.0, 100.0)
_RADIUS = float_range(0.0, 10.0)
_DURATION = float_range(0.0, 3600.0)
_TOLERANCE = float_range(0.0, 10.0)
_FRAMES = int_range(1, 1000)

_POLICY_DOCS: Mapping[str, tuple[str, Any, str]] = {
    "nominal_speed_mps": ("Speed limit in NOMINAL (full speed), m/s.", _SPEED, "> 0"),
    "crawl_speed_mps": (
        "Speed limit in HANDOVER_REQUESTED, m/s.",
        _SPEED,
        "<= degraded_curve_speed_mps[0]",
    ),
    "degraded_curve_radius_l2": (
        "DEGRADED curve points: certified L2 radius (model-input units, pixels in [0, 1]).",
        None,
        "non-empty, >= 0, strictly increasing",
    ),
    "degraded_curve_speed_mps": (
        "DEGRADED curve points: speed limit at each radius, m/s (piecewise linear, clamped).",
        None,
        "as many points as the radii, non-decreasing, within [crawl, nominal]",
    ),
    "degraded_enter_radius_l2": (
        "NOMINAL -> DEGRADED below this certified radius (L2, = r_required).",
        _RADIUS,
        ">= handover_enter_radius_l2",
    ),
    "degraded_exit_radius_l2": (
        "Healthy again at or above this certified radius (L2, = r_recover).",
        _RADIUS,
        ">= degraded_enter_radius_l2 and >= handover_exit_radius_l2",
    ),
    "handover_enter_radius_l2": (
        "Handover-level evidence below this certified radius (L2).",
        _RADIUS,
        "> 0",
    ),
    "handover_exit_radius_l2": (
        "Better than handover level again at or above this certified radius (L2).",
        _RADIUS,
        ">= handover_enter_radius_l2",
    ),
    "trigger_frames": ("Consecutive frames at a worse level to escalate (frames).", _FRAMES, ""),
    "release_frames": (
        "Consecutive complete frames at a better level to de-escalate (frames).",
        _FRAMES,
        "",
    ),
    "degraded_min_dwell_s": (
        "Least time in DEGRADED before NOMINAL again, seconds.",
        _DURATION,
        "",
    ),
    "handover_min_dwell_s": (
        "Least time in HANDOVER_REQUESTED before DEGRADED again, seconds.",
        _DURATION,
        "",
    ),
    "max_decel_mps2": (
        "MINIMAL_RISK: the limit ramps to 0 at this deceleration, m/s^2.",
        float_range(0.0, 100.0),
        "> 0",
    ),
    "ramp_up_mps2": (
        "Fastest rise of the limit when evidence improves, m/s^2.",
        float_range(0.0, 1000.0),
        "> 0",
    ),
    "handover_timeout_s": (
        "HANDOVER_REQUESTED -> MINIMAL_RISK when nobody takes over for this long, seconds.",
        _DURATION,
        "> 0",
    ),
    "stale_after_s": (
        "Newest complete evidence older than this -> MINIMAL_RISK (certificate timeout); frames "
        "older than this on arrival are rejected, seconds.",
        float_range(0.0, 60.0),
        "> 0",
    ),
    "future_tolerance_s": (
        "Frames stamped further than this in the future are rejected, seconds.",
        _TOLERANCE,
        "",
    ),
    "clock_tolerance_s": (
        "The step time may go back this far (callback jitter); further is a clock fault, seconds.",
        _TOLERANCE,
        "",
    ),
    "recovery_time_s": (
        "A release is accepted only after healthy, fresh, complete evidence for this long, "
        "seconds.",
        _DURATION,
        "",
    ),
    "ood_warn_as": (
        "What an OOD WARN verdict means (evidence level).",
        None,
        " | ".join(OOD_ACTIONS),
    ),
    "ood_error_as": (
        "What an OOD ERROR verdict means (evidence level, at least as severe as ood_warn_as).",
        None,
        "degraded | handover",
    ),
    "require_ood_verdict": (
        "A frame without an OOD verdict is incomplete: it can slow the vehicle, never count as "
        "healthy.",
        None,
        "",
    ),
}


def _policy_specs() -> tuple[ParamSpec, ...]:
    defaults = ArbiterPolicy().as_dict()
    specs = []
    for f in fields(ArbiterPolicy):
        description, value_range, constraints = _POLICY_DOCS[f.name]
        default = defaults[f.name]
        if isinstance(default, list):
            default = [float(v) for v in default]
        specs.append(
            ParamSpec(f.name, default, description, Tuning.GUARDED, value_range, constraints)
        )
    return tuple(specs)


POLICY_PARAMETERS: tuple[ParamSpec, ...] = _policy_specs()
"""One guarded parameter per ``ArbiterPolicy`` key, default = the policy's default."""
POLICY_KEYS = frozenset(spec.name for spec in POLICY_PARAMETERS)

NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "certificate_topic",
        DEFAULT_CERTIFICATE_TOPIC,
        "Topic of the monitor's certificates (diagnostic_msgs/DiagnosticArray, contract.py); "
        "relative names resolve in the arbiter's namespace.",
        Tuning.STARTUP,
        constraints="a valid topic name",
        check=_check_topic("certificate_topic"),
    ),
    ParamSpec(
        "stamped_cmd_vel",
        True,
        "cmd_vel_in and cmd_vel_out are geometry_msgs/TwistStamped (true, as current Nav2) or "
        "geometry_msgs/Twist (false).",
        Tuning.STARTUP,
    ),
    ParamSpec(
        "manual_override_topic",
        "",
        "std_msgs/Bool topic set true while MANUAL (e.g. CARLA's "
        "/carla/<role>/vehicle_control_manual_override); empty: not published.",
        Tuning.STARTUP,
        constraints="empty or a valid topic name",
        check=_check_topic("manual_override_topic", allow_empty=True),
    ),
    ParamSpec(
        "publish_rate_hz",
        20.0,
        "Rate of the tick that steps the arbiter without evidence and publishes the speed "
        "limit and (zero when the planner is silent) commands, Hz.",
        Tuning.GUARDED,
        float_range(1.0, 1000.0),
    ),
    ParamSpec(
        "cmd_timeout_s",
        0.5,
        "A command older than this (node clock, since arrival) is not republished: zero "
        "instead, seconds.",
        Tuning.GUARDED,
        float_range(0.01, 60.0),
    ),
    ParamSpec(
        "diagnostics_period_s",
        1.0,
        "Period of the /diagnostics report, seconds.",
        Tuning.RUNTIME,
        float_range(0.05, 60.0),
    ),
)
ALLOW_RUNTIME_TUNING = ParamSpec(
    "allow_runtime_tuning",
    False,
    "Allow the policy keys, publish_rate_hz and cmd_timeout_s to change while running.",
    Tuning.STARTUP,
)
SPECS = by_name((ALLOW_RUNTIME_TUNING, *NODE_PARAMETERS, *POLICY_PARAMETERS))


def policy_from_values(values: Mapping[str, Any]) -> ArbiterPolicy:
    """The policy keys of ``values`` -> ArbiterPolicy; raises ConfigError saying what is wrong."""
    return ArbiterPolicy.from_mapping({k: v for k, v in values.items() if k in POLICY_KEYS})


# --- the node ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Command:
    """The newest finite planner command, as it arrived (node-clock seconds)."""

    linear: Vector3
    angular: Vector3
    frame_id: str
    received_s: float


@dataclass(slots=True)
class GateCounters:
    """Counts since start (guarded by the node's lock)."""

    evidence_received: int = 0
    evidence_rejected: int = 0
    """Certificate messages the arbiter did not accept (late, future, duplicate, unreadable)."""
    evidence_with_problems: int = 0
    """Messages with a part dropped by the contract reader (malformed, claims too much)."""
    evidence_ignored: int = 0
    """Messages not used because the configuration is invalid."""
    commands_received: int = 0
    commands_dropped_nonfinite: int = 0
    commands_timed_out: int = 0
    commands_published: int = 0
    internal_errors: int = 0
    """Callbacks that raised (a bug): each is logged, and a zero command is published."""
    last_evidence_problem: str = ""
    last_operator_response: str = ""
    last_internal_error: str = ""
    issues: int = 0
    """evidence_rejected + evidence_with_problems + commands_dropped_nonfinite (for WARN)."""

    def snapshot(self) -> dict[str, int | str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class _Report:
    """What the diagnostics need, copied under the lock."""

    decision: Decision
    counters: dict[str, int | str]
    config_error: str
    stale_after_s: float
    nominal_speed_mps: float
    command_age_s: float | None
    cmd_timeout_s: float
    publish_rate_hz: float
    certificate_publishers: int
    cmd_vel_in_publishers: int
    reasons: tuple[str, ...] = field(default=())


class ArbiterNode(Node):
    """Gates velocity commands with the limit the arbiter derives from the monitor's evidence."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._lock = threading.RLock()
        flag, problems = declare_all(self, (ALLOW_RUNTIME_TUNING,), False)
        self.allow_runtime_tuning = bool(flag[ALLOW_RUNTIME_TUNING.name])
        self._problems: dict[str, str] = {}
        """Problems with start-up values, by parameter (cleared when tuning sets it validly)."""
        if problems:
            self._problems[ALLOW_RUNTIME_TUNING.name] = "; ".join(problems)
        values: dict[str, Any] = {}
        for spec in (*NODE_PARAMETERS, *POLICY_PARAMETERS):
            value, spec_problems = declare_all(self, (spec,), self.allow_runtime_tuning)
            values.update(value)
            if spec_problems:
                self._problems[spec.name] = "; ".join(spec_problems)

        self.certificate_topic = str(values["certificate_topic"])
        self.stamped_cmd_vel = bool(values["stamped_cmd_vel"])
        self.manual_override_topic = str(values["manual_override_topic"])
        self._cmd_timeout_s = float(values["cmd_timeout_s"])
        self._publish_rate_hz = float(values["publish_rate_hz"])
        self._policy_error = ""
        try:
            policy = policy_from_values(values)
        except ConfigError as exc:
            self._policy_error = str(exc)
            policy = ArbiterPolicy()  # never used to release: the node stays pinned
        self._arbiter = Arbiter(policy)
        self._counters = GateCounters()
        self._command: Command | None = None
        self._command_expired = False
        self._published_since_tick = False
        self._decision: Decision | None = None
        self._reported_issues = 0
        self._reported_errors = 0

        group = MutuallyExclusiveCallbackGroup()
        self._msg_type: type[Twist] | type[TwistStamped] = (
            TwistStamped if self.stamped_cmd_vel else Twist
        )
        self._cmd_pub = self.create_publisher(self._msg_type, "cmd_vel_out", command_qos())
        self._limit_pub = self.create_publisher(Float64, "~/speed_limit", evidence_qos())
        self._state_pub = self.create_publisher(String, "~/state", latched_qos())
        self._handover_pub = self.create_publisher(Bool, "~/handover_request", latched_qos())
        self._override_pub = None
        if self.manual_override_topic and "manual_override_topic" not in self._problems:
            try:
                self._override_pub = self.create_publisher(
                    Bool, self.manual_override_topic, latched_qos()
                )
            except InvalidTopicNameException as exc:
                self._problems["manual_override_topic"] = f"manual_override_topic: {exc}"
        self._diagnostics_pub = self.create_publisher(
            DiagnosticArray, "/diagnostics", evidence_qos()
        )
        self._certificate_sub = None
        if "certificate_topic" not in self._problems:
            try:
                self._certificate_sub = self.create_subscription(
                    DiagnosticArray,
                    self.certificate_topic,
                    self._guard(self._on_certificate),
                    evidence_qos(),
                    callback_group=group,
                )
            except InvalidTopicNameException as exc:
                self._problems["certificate_topic"] = f"certificate_topic: {exc}"
        self.certificate_topic_resolved = (
            self._certificate_sub.topic_name
            if self._certificate_sub is not None
            else self.certificate_topic
        )
        self._cmd_sub = self.create_subscription(
            self._msg_type,
            "cmd_vel_in",
            self._guard(self._on_command),
            command_qos(),
            callback_group=group,
        )
        self._takeover_srv = self.create_service(
            Trigger, "~/operator_takeover", self._guard(self._on_takeover), callback_group=group
        )
        self._release_srv = self.create_service(
            Trigger, "~/operator_release", self._guard(self._on_release), callback_group=group
        )
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._tick_timer = self.create_timer(
            1.0 / self._publish_rate_hz,
            self._guard(self._on_tick),
            callback_group=group,
            clock=steady,
        )
        self._diagnostics_timer = self.create_timer(
            float(values["diagnostics_period_s"]),
            self._guard(self._publish_diagnostics),
            callback_group=MutuallyExclusiveCallbackGroup(),
            clock=steady,
        )
        self.add_on_set_parameters_callback(self._check_update)
        self.add_post_set_parameters_callback(self._apply_update)

        config_error = self.config_error
        if config_error:
            self.get_logger().error(
                f"invalid configuration, holding the vehicle stopped: {config_error}"
            )
        with self._lock:
            self._apply(self._arbiter.step(self._now_s()))
        self.get_logger().info(
            f"gating {self._cmd_sub.topic_name} -> {self._cmd_pub.topic_name} "
            f"({self._msg_type.__name__}) on certificates from {self.certificate_topic_resolved}; "
            "state MINIMAL_RISK until an operator release"
        )

    # -- public ---------------------------------------------------------------------------
    @property
    def config_error(self) -> str:
        """Why the configuration is invalid ('' when it is valid)."""
        with self._lock:
            parts = [*self._problems.values(), self._policy_error]
            return "; ".join(p for p in dict.fromkeys(parts) if p)

    @property
    def policy(self) -> ArbiterPolicy:
        with self._lock:
            return self._arbiter.policy

    @property
    def decision(self) -> Decision | None:
        """The latest decision (None before the first step)."""
        with self._lock:
            return self._decision

    @property
    def counters(self) -> dict[str, int | str]:
        with self._lock:
            return self._counters.snapshot()

    # -- evidence, commands, tick ----------------------------------------------------------
    def _guard(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        """``callback`` made fail-safe: an exception (a bug) is logged, counted and answered
        with a zero command instead of ending the executor (and with it every output)."""

        def guarded(*args: Any) -> Any:
            try:
                return callback(*args)
            except Exception as exc:
                text = f"{callback.__name__}: {type(exc).__name__}: {exc}"
                with self._lock:
                    self._counters.internal_errors += 1
                    self._counters.last_internal_error = text
                    self._command = None
                    with suppress(Exception):
                        self._publish_command(self._now_s())
                self.get_logger().error(
                    f"internal error, commands zeroed: {text}",
                    throttle_duration_sec=WARN_THROTTLE_S,
                )
                response = args[-1] if args else None
                if isinstance(response, Trigger.Response):
                    response.success = False
                    response.message = f"internal error: {text}"
                    return response
                return None

        return guarded

    def _now_s(self) -> float:
        return float(self.get_clock().now().nanoseconds) * 1e-9

    def _on_certificate(self, msg: DiagnosticArray) -> None:
        stamp_s, certificate, verdict, problems = contract.diagnostics_to_evidence(msg)
        with self._lock:
            counters = self._counters
            counters.evidence_received += 1
            if problems:
                counters.evidence_with_problems += 1
                counters.issues += 1
                counters.last_evidence_problem = "; ".join(problems)
                self.get_logger().warning(
                    f"certificate message with problems: {counters.last_evidence_problem}",
                    throttle_duration_sec=WARN_THROTTLE_S,
                )
            if self.config_error:
                counters.evidence_ignored += 1
                return
            decision = self._arbiter.step(self._now_s(), Evidence(stamp_s, certificate, verdict))
            if decision.evidence_accepted is False:
                counters.evidence_rejected += 1
                counters.issues += 1
                rejected = next((r for r in decision.reasons if "rejected" in r), "rejected")
                counters.last_evidence_problem = rejected
                self.get_logger().warning(
                    f"certificate {rejected}", throttle_duration_sec=WARN_THROTTLE_S
                )
            self._apply(decision)

    def _on_command(self, msg: Twist | TwistStamped) -> None:
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        frame_id = msg.header.frame_id if isinstance(msg, TwistStamped) else ""
        linear = (float(twist.linear.x), float(twist.linear.y), float(twist.linear.z))
        angular = (float(twist.angular.x), float(twist.angular.y), float(twist.angular.z))
        with self._lock:
            now_s = self._now_s()
            self._counters.commands_received += 1
            if not all(math.isfinite(v) for v in (*linear, *angular)):
                self._counters.commands_dropped_nonfinite += 1
                self._counters.issues += 1
                self._command = None  # a planner sending NaN has lost its plan: stop
                self.get_logger().warning(
                    f"dropped a non-finite command on {self._cmd_sub.topic_name}: "
                    f"linear {linear}, angular {angular}",
                    throttle_duration_sec=WARN_THROTTLE_S,
                )
            else:
                self._command = Command(linear, angular, frame_id, now_s)
                self._command_expired = False
            self._publish_command(now_s)

    def _on_tick(self) -> None:
        with self._lock:
            now_s = self._now_s()
            self._apply(self._arbiter.step(now_s), tick=True)
            if not self._published_since_tick:
                self._publish_command(now_s)
            self._published_since_tick = False

    # -- operator -------------------------------------------------------------------------
    def _on_takeover(self, _request: Trigger.Request, response: Trigger.Response) -> Any:
        return self._operator(OperatorRequest.TAKEOVER, response)

    def _on_release(self, _request: Trigger.Request, response: Trigger.Response) -> Any:
        return self._operator(OperatorRequest.RELEASE, response)

    def _operator(self, request: OperatorRequest, response: Trigger.Response) -> Any:
        with self._lock:
            config_error = self.config_error
            if request is OperatorRequest.RELEASE and config_error:
                accepted, reason = False, f"release refused: invalid configuration: {config_error}"
            else:
                answer, decision = self._arbiter.request(self._now_s(), request)
                accepted, reason = answer.accepted, answer.reason
                self._apply(decision)
            self._counters.last_operator_response = reason
        # rclpy forbids one call site logging at two severities: one call per severity.
        if accepted:
            self.get_logger().info(f"operator {request.value.lower()}: {reason}")
        else:
            self.get_logger().warning(f"operator {request.value.lower()}: {reason}")
        response.success = accepted
        response.message = reason
        return response

    # -- outputs --------------------------------------------------------------------------
    def _apply(self, decision: Decision, tick: bool = False) -> None:
        """Publish what changed with ``decision`` (called with the lock held)."""
        previous, self._decision = self._decision, decision
        if not self.context.ok():
            return
        limit = decision.speed_limit_mps
        changed = previous is None or previous.state is not decision.state
        if changed and decision.state is ArbiterState.MANUAL and previous is not None:
            # Autonomy's last word is stop; from here on the operator's commands go unopposed.
            frame_id = self._command.frame_id if self._command is not None else ""
            self._send(GatedTwist(ZERO, ZERO, 0.0), frame_id)
        if changed:
            self._state_pub.publish(String(data=decision.state.value))
            if self._override_pub is not None:
                self._override_pub.publish(Bool(data=decision.state is ArbiterState.MANUAL))
            if previous is not None:
                text = f"{previous.state.value} -> {decision.state.value} at {limit:.3g} m/s"
                text += f": {'; '.join(decision.reasons)}"
                if decision.state in (ArbiterState.NOMINAL, ArbiterState.MANUAL):
                    self.get_logger().info(text)
                else:
                    self.get_logger().warning(text)
        if previous is None or previous.handover_requested != decision.handover_requested:
            self._handover_pub.publish(Bool(data=decision.handover_requested))
        if tick or previous is None or previous.speed_limit_mps != limit:
            self._limit_pub.publish(Float64(data=float(limit)))
        if (
            previous is not None
            and decision.gated
            and limit < previous.speed_limit_mps
            and self._command is not None
        ):
            self._publish_command(self._now_s())  # a lowered limit takes effect at once
        if changed and previous is not None:
            self._publish_diagnostics()

    def _publish_command(self, now_s: float) -> None:
        """Publish the stored command through the gate (lock held); nothing in MANUAL."""
        decision = self._decision
        if decision is None or not decision.gated or not self.context.ok():
            return
        command = self._command
        fresh = command is not None and 0.0 <= now_s - command.received_s <= self._cmd_timeout_s
        if command is None or not fresh:
            if command is not None and not self._command_expired:
                self._command_expired = True
                self._counters.commands_timed_out += 1
            gated = GatedTwist(ZERO, ZERO, 0.0)
        else:
            gated = limit_twist(command.linear, command.angular, decision.speed_limit_mps)
        self._send(gated, command.frame_id if command is not None else "")

    def _send(self, gated: GatedTwist, frame_id: str) -> None:
        twist = Twist()
        twist.linear.x, twist.linear.y, twist.linear.z = gated.linear
        twist.angular.x, twist.angular.y, twist.angular.z = gated.angular
        if self._msg_type is TwistStamped:
            out = TwistStamped()
            out.header.stamp = self.get_clock().now().to_msg()
            out.header.frame_id = frame_id
            out.twist = twist
            self._cmd_pub.publish(out)
        else:
            self._cmd_pub.publish(twist)
        self._counters.commands_published += 1
        self._published_since_tick = True

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
            values[param.name] = value
        if any(p.name in POLICY_KEYS for p in params):
            try:
                policy_from_values(values)
            except ConfigError as exc:
                return _refuse(f"invalid arbiter policy: {exc}")
        return SetParametersResult(successful=True)

    def _apply_update(self, params: list[Parameter[Any]]) -> None:
        names = {p.name for p in params if p.name in SPECS}
        if not names:
            return
        with self._lock:
            for name in names:
                self._problems.pop(name, None)
            if "publish_rate_hz" in names:
                self._publish_rate_hz = float(self.get_parameter("publish_rate_hz").value)
                self._tick_timer.timer_period_ns = int(1e9 / self._publish_rate_hz)
            if "cmd_timeout_s" in names:
                self._cmd_timeout_s = float(self.get_parameter("cmd_timeout_s").value)
            if "diagnostics_period_s" in names:
                period = float(self.get_parameter("diagnostics_period_s").value)
                self._diagnostics_timer.timer_period_ns = int(period * 1e9)
            if names & POLICY_KEYS:
                values = {name: read_value(self, name) for name in POLICY_KEYS}
                try:
                    policy = policy_from_values(values)
                except ConfigError as exc:  # cannot happen: _check_update checked the same
                    self._policy_error = str(exc)
                else:
                    # Same memory, new thresholds: what the arbiter knows is kept.
                    self._arbiter = Arbiter(policy, self._arbiter.memory)
                    self._policy_error = ""
            self.get_logger().info(f"parameters changed: {sorted(names)}")

    # -- diagnostics ----------------------------------------------------------------------
    def _report(self) -> _Report | None:
        with self._lock:
            decision = self._decision
            if decision is None:
                return None
            command = self._command
            policy = self._arbiter.policy
            return _Report(
                decision=decision,
                counters=self._counters.snapshot(),
                config_error=self.config_error,
                stale_after_s=policy.stale_after_s,
                nominal_speed_mps=policy.nominal_speed_mps,
                command_age_s=None if command is None else self._now_s() - command.received_s,
                cmd_timeout_s=self._cmd_timeout_s,
                publish_rate_hz=self._publish_rate_hz,
                certificate_publishers=(
                    self.count_publishers(self._certificate_sub.topic_name)
                    if self._certificate_sub is not None
                    else 0
                ),
                cmd_vel_in_publishers=self.count_publishers(self._cmd_sub.topic_name),
                reasons=decision.reasons,
            )

    def _health(self, report: _Report, new_issues: int, new_errors: int) -> tuple[bytes, str]:
        """(level, message) of the gate as a whole."""
        decision, counters = report.decision, report.counters
        state = decision.state
        summary = f"{state.value} at {decision.speed_limit_mps:.3g} m/s"
        if report.config_error:
            return ERROR, f"invalid configuration, vehicle held stopped: {report.config_error}"
        if new_errors:
            return ERROR, f"internal error (commands zeroed): {counters['last_internal_error']}"
        age = decision.evidence_age_s
        if state is not ArbiterState.MANUAL and (age is None or age > report.stale_after_s):
            if not counters["evidence_received"]:
                why = f"no certificate received on {self.certificate_topic_resolved}"
            elif age is None:
                why = f"no valid certificate on {self.certificate_topic_resolved}"
            else:
                why = f"newest evidence {age:.3g} s old > stale_after_s {report.stale_after_s:g} s"
            return ERROR, f"certificate timeout: {why}; {summary}"
        if state is ArbiterState.MANUAL:
            return WARN, "MANUAL: operator drives; cmd_vel_out not published by the arbiter"
        if state is ArbiterState.MINIMAL_RISK:
            return WARN, f"{summary}: stopped until an operator release ({decision.reasons[0]})"
        if state is not ArbiterState.NOMINAL:
            return WARN, f"{summary}: {decision.reasons[0]}"
        if new_issues:
            return WARN, f"{summary}; {new_issues} dropped commands or rejected certificates"
        return OK, summary

    def _publish_diagnostics(self) -> None:
        with self._lock:  # re-entrant: also called from _apply on a state change
            report = self._report()
            if report is None or not self.context.ok():
                return
            issues = int(report.counters["issues"])
            new_issues, self._reported_issues = issues - self._reported_issues, issues
            errors = int(report.counters["internal_errors"])
            new_errors, self._reported_errors = errors - self._reported_errors, errors
        level, message = self._health(report, new_issues, new_errors)
        decision = report.decision

        def number(value: float | None) -> str:
            return "" if value is None else f"{value:.3f}"

        pairs = [
            ("state", decision.state.value),
            ("speed_limit_mps", f"{decision.speed_limit_mps:.3f}"),
            ("nominal_speed_mps", f"{report.nominal_speed_mps:g}"),
            ("gated", str(decision.gated).lower()),
            ("handover_requested", str(decision.handover_requested).lower()),
            ("reasons", "; ".join(report.reasons)),
            ("evidence_age_s", number(decision.evidence_age_s)),
            ("stale_after_s", f"{report.stale_after_s:g}"),
            ("certificate_topic", self.certificate_topic_resolved),
            ("certificate_publishers", str(report.certificate_publishers)),
            ("cmd_vel_in", self._cmd_sub.topic_name),
            ("cmd_vel_out", self._cmd_pub.topic_name),
            ("cmd_vel_in_publishers", str(report.cmd_vel_in_publishers)),
            ("stamped_cmd_vel", str(self.stamped_cmd_vel).lower()),
            ("command_age_s", number(report.command_age_s)),
            ("cmd_timeout_s", f"{report.cmd_timeout_s:g}"),
            ("publish_rate_hz", f"{report.publish_rate_hz:g}"),
            ("config_error", report.config_error),
        ]
        pairs += [(k, str(v)) for k, v in report.counters.items() if k != "issues"]
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: arbiter",
            message=message,
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=v) for k, v in pairs],
        )
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self._diagnostics_pub.publish(msg)


def _refuse(reason: str) -> SetParametersResult:
    return SetParametersResult(successful=False, reason=reason)


def main(args: list[str] | None = None) -> int:
    """Entry point: spin the arbiter until SIGINT (Ctrl-C) or a ROS shutdown; returns 0."""
    # Every callback is short and never blocks: one thread dispatches with the least latency in
    # rclpy (measured p99 about half the MultiThreadedExecutor's here); see spin.py.
    return run_nodes(lambda: [ArbiterNode()], args)


if __name__ == "__main__":
    raise SystemExit(main())
