"""The arbiter node with real rclpy over loopback DDS: certificates and commands in, a speed
limit and gated commands out.

Each test starts an ArbiterNode in its own namespace and a probe node that stands in for the
monitor (synthetic certificates from ``bench_arbiter.evidence_message``, stamped with the wall
clock the node's clock also reads) and for the planner. Small times (``FAST``) keep it quick.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Twist, TwistStamped
from hypothesis import given
from hypothesis import strategies as st
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosutil import (
    RosHarness,
    TimedInbox,
    call_trigger,
    ros_harness,
    set_parameters,
    unique_name,
    wait_until,
)
from std_msgs.msg import Bool, Float64, String

from robust_monitor.core.arbiter import ArbiterPolicy
from robust_monitor.core.ood.verdict import OodLevel
from robust_monitor.ros.arbiter_node import (
    POLICY_KEYS,
    SPECS,
    ArbiterNode,
    command_qos,
    limit_twist,
)
from robust_monitor.ros.contract import diagnostics_to_evidence
from robust_monitor.ros.qos import evidence_qos, latched_qos
from robust_monitor.tools.bench_arbiter import (
    ABSTAIN_COUNT,
    DEGRADED_COUNT,
    HEALTHY_COUNT,
    bench_reaction,
    evidence_message,
)

pytestmark = pytest.mark.ros

TICK_HZ = 50.0
FAST: dict[str, Any] = {
    "publish_rate_hz": TICK_HZ,
    "stale_after_s": 0.3,
    "recovery_time_s": 0.3,
    "ramp_up_mps2": 1000.0,
    "max_decel_mps2": 100.0,
    "cmd_timeout_s": 0.3,
    "diagnostics_period_s": 0.2,
}
SLACK_S = 0.3
"""Scheduling allowance on a loaded 2-core machine, on top of the times the policy promises."""


class Feeder:
    """Stands in for the monitor and the planner: certificates and commands at 30 Hz."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.count: int | None = HEALTHY_COUNT
        """Votes of each certificate (None: publish none, the monitor is dead)."""
        self.ood: OodLevel | None = OodLevel.OK
        self.command: tuple[float, float] | None = None
        """(linear.x, angular.z) of each command (None: the planner is silent)."""
        self.last_certificate_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            count, command = self.count, self.command
            if count is not None:
                self.rig.certificates.publish(evidence_message(time.time(), count, self.ood))
                self.last_certificate_s = time.monotonic()
            if command is not None:
                self.rig.send_command(*command)
            self._stop.wait(1 / 30)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


@dataclass
class Rig:
    """An arbiter under test and a probe node wired to every topic and service."""

    harness: RosHarness
    arbiter: ArbiterNode
    probe: Node
    namespace: str
    stamped: bool
    certificates: Any
    commands: Any
    cmd_out: TimedInbox
    limits: TimedInbox
    states: TimedInbox
    handover: TimedInbox
    override: TimedInbox
    diagnostics: TimedInbox

    @property
    def fqn(self) -> str:
        return str(self.arbiter.get_fully_qualified_name())

    def send_command(self, linear_x: float, angular_z: float) -> None:
        twist = Twist()
        twist.linear.x, twist.angular.z = linear_x, angular_z
        if self.stamped:
            msg = TwistStamped()
            msg.header.frame_id = "base_link"
            msg.twist = twist
            self.commands.publish(msg)
        else:
            self.commands.publish(twist)

    def call(self, service: str) -> tuple[bool, str]:
        return call_trigger(self.probe, f"{self.fqn}/{service}")

    def wait_state(self, state: str, timeout_s: float = 5.0, since: float = -math.inf) -> float:
        found = self.states.wait_for(lambda m: m.data == state, timeout_s, since)
        assert found is not None, (state, [m.data for _, m in self.states.items()])
        return found[0]

    def status(self, predicate: Callable[[DiagnosticStatus], bool], timeout_s: float = 5.0) -> Any:
        name = f"{self.fqn}: arbiter"

        def matches(msg: DiagnosticArray) -> bool:
            return any(s.name == name and predicate(s) for s in msg.status)

        found = self.diagnostics.wait_for(matches, timeout_s)
        assert found is not None, f"no /diagnostics status {name!r} matching"
        return next(s for s in found[1].status if s.name == name)

    def release_when_healthy(self, timeout_s: float = 5.0) -> str:
        """Call ~/operator_release until accepted (evidence needs recovery_time_s)."""
        deadline = time.monotonic() + timeout_s
        message = ""
        while time.monotonic() < deadline:
            accepted, message = self.call("operator_release")
            if accepted:
                return message
            time.sleep(0.1)
        raise AssertionError(f"release never accepted: {message}")


def twist_of(msg: Any) -> Twist:
    return msg.twist if isinstance(msg, TwistStamped) else msg


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def start(harness: RosHarness, stamped: bool = True, **params: Any) -> Rig:
    ns = unique_name()
    settings = {
        "certificate_topic": f"/{ns}/robust_monitor/certificate",
        "stamped_cmd_vel": stamped,
        "manual_override_topic": f"/{ns}/manual_override",
        **FAST,
        **params,
    }
    overrides = [Parameter(k, value=v) for k, v in settings.items()]
    arbiter = harness.add(
        ArbiterNode(context=harness.context, namespace=f"/{ns}", parameter_overrides=overrides)
    )
    probe = harness.node("probe", ns)
    msg_type = TwistStamped if stamped else Twist
    fqn = arbiter.get_fully_qualified_name()
    inboxes = [TimedInbox() for _ in range(6)]
    cmd_out, limits, states, handover, override, diagnostics = inboxes
    probe.create_subscription(msg_type, f"/{ns}/cmd_vel_out", cmd_out, command_qos())
    probe.create_subscription(Float64, f"{fqn}/speed_limit", limits, evidence_qos())
    probe.create_subscription(String, f"{fqn}/state", states, latched_qos())
    probe.create_subscription(Bool, f"{fqn}/handover_request", handover, latched_qos())
    probe.create_subscription(Bool, f"/{ns}/manual_override", override, latched_qos())
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, evidence_qos())
    subscribed = "certificate_topic" not in arbiter.config_error
    certificate_topic = str(settings["certificate_topic"]) if subscribed else f"/{ns}/certificate"
    certificates = probe.create_publisher(DiagnosticArray, certificate_topic, evidence_qos())
    commands = probe.create_publisher(msg_type, f"/{ns}/cmd_vel_in", command_qos())
    if subscribed:
        assert wait_until(lambda: certificates.get_subscription_count() > 0, 10.0)
    assert wait_until(lambda: commands.get_subscription_count() > 0, 10.0)
    rig = Rig(
        harness,
        arbiter,
        probe,
        ns,
        stamped,
        certificates,
        commands,
        *inboxes,
    )
    rig.wait_state("MINIMAL_RISK")
    return rig


@pytest.fixture
def harness() -> Iterator[RosHarness]:
    with ros_harness() as h:
        yield h


@pytest.fixture
def rig(harness: RosHarness) -> Iterator[Rig]:
    yield start(harness)


@pytest.fixture
def feeder(rig: Rig) -> Iterator[Feeder]:
    f = Feeder(rig)
    yield f
    f.stop()


def drive_to_nominal(rig: Rig, feeder: Feeder) -> None:
    feeder.count = HEALTHY_COUNT
    message = rig.release_when_healthy()
    assert "release accepted" in message
    rig.wait_state("NOMINAL")
    nominal = rig.arbiter.policy.nominal_speed_mps
    assert rig.limits.wait_for(lambda m: m.data == nominal, 3.0) is not None


# --- evidence -> limit -> gated commands ----------------------------------------------------------
def test_degraded_certificate_lowers_the_limit_and_scales_commands_keeping_curvature(
    rig: Rig, feeder: Feeder
) -> None:
    feeder.command = (8.0, 0.4)
    drive_to_nominal(rig, feeder)
    passed = rig.cmd_out.wait_for(lambda m: twist_of(m).linear.x == 8.0, 3.0)
    assert passed is not None and twist_of(passed[1]).angular.z == 0.4  # under the limit: as is
    assert passed[1].header.frame_id == "base_link"

    _, cert, _, _ = diagnostics_to_evidence(evidence_message(time.time(), DEGRADED_COUNT))
    assert cert is not None
    expected = rig.arbiter.policy.degraded_speed_mps(cert.radius)
    assert 3.0 <= expected < 8.0
    switched = time.monotonic()
    feeder.count = DEGRADED_COUNT
    lowered = rig.limits.wait_for(lambda m: m.data < 8.0, 3.0, since=switched)
    assert lowered is not None and lowered[1].data == pytest.approx(expected)
    scaled = rig.cmd_out.wait_for(lambda m: twist_of(m).linear.x < 8.0, 3.0, since=switched)
    assert scaled is not None
    twist = twist_of(scaled[1])
    assert twist.linear.x == pytest.approx(expected)
    assert twist.angular.z / twist.linear.x == pytest.approx(0.4 / 8.0)  # curvature kept
    rig.wait_state("DEGRADED", since=switched)
    status = rig.status(lambda s: values(s)["state"] == "DEGRADED")
    assert status.level == DiagnosticStatus.WARN


def test_a_dead_monitor_stops_the_vehicle_within_stale_after_plus_one_tick(
    rig: Rig, feeder: Feeder
) -> None:
    feeder.command = (5.0, 0.0)
    drive_to_nominal(rig, feeder)
    assert rig.cmd_out.wait_for(lambda m: twist_of(m).linear.x == 5.0, 3.0) is not None
    feeder.count = None  # the monitor dies; the planner keeps commanding
    time.sleep(0.05)
    last = feeder.last_certificate_s
    policy = rig.arbiter.policy
    entered = rig.wait_state("MINIMAL_RISK", since=last)
    assert entered - last <= policy.stale_after_s + 1 / TICK_HZ + SLACK_S
    # Zeros are looked for from the entry into MINIMAL_RISK: one can also go out between the
    # last certificate and the 5.0 seen above, while the release still held the limit at 0.
    stopped = rig.cmd_out.wait_for(lambda m: twist_of(m).linear.x == 0.0, 3.0, since=entered)
    assert stopped is not None
    stop_time_s = policy.nominal_speed_mps / policy.max_decel_mps2  # the controlled stop: 0.1 s
    assert stopped[0] - last <= policy.stale_after_s + 1 / TICK_HZ + stop_time_s + SLACK_S
    # In MINIMAL_RISK the limit only falls (a controlled stop) and then stays 0.
    falling = [m.data for t, m in rig.limits.items(since=entered) if t <= stopped[0] + 0.1]
    assert all(a >= b for a, b in itertools.pairwise(falling)), falling
    time.sleep(0.2)
    assert all(twist_of(m).linear.x == 0.0 for _, m in rig.cmd_out.items(since=stopped[0]))
    assert rig.handover.wait_for(lambda m: m.data is True, 2.0, since=last) is not None
    status = rig.status(lambda s: "certificate timeout" in s.message)
    assert status.level == DiagnosticStatus.ERROR


def test_a_silent_planner_yields_zero_commands_on_the_tick(rig: Rig, feeder: Feeder) -> None:
    feeder.command = (2.0, 0.1)
    drive_to_nominal(rig, feeder)
    assert rig.cmd_out.wait_for(lambda m: twist_of(m).linear.x == 2.0, 3.0) is not None
    feeder.command = None
    silent = time.monotonic()
    zero = rig.cmd_out.wait_for(lambda m: twist_of(m).linear.x == 0.0, 3.0, since=silent)
    assert zero is not None
    assert zero[0] - silent <= FAST["cmd_timeout_s"] + 1 / TICK_HZ + SLACK_S
    time.sleep(0.5)
    later = rig.cmd_out.items(since=zero[0] + 0.05)
    assert len(later) >= 0.45 * TICK_HZ * 0.5  # zeros keep coming at the tick rate
    assert all(twist_of(m).linear.x == 0.0 and twist_of(m).angular.z == 0.0 for _, m in later)
    assert rig.arbiter.counters["commands_timed_out"] >= 1


# --- the operator ---------------------------------------------------------------------------------
def test_takeover_release_refused_until_evidence_is_healthy(rig: Rig, feeder: Feeder) -> None:
    feeder.count = None
    time.sleep(FAST["stale_after_s"] + 0.1)
    accepted, message = rig.call("operator_release")
    assert not accepted and "evidence stale" in message
    feeder.count = ABSTAIN_COUNT  # fresh, but abstained: handover level
    time.sleep(0.4)
    accepted, message = rig.call("operator_release")
    assert not accepted and "evidence not healthy" in message and "abstained" in message

    feeder.command = (3.0, 0.2)
    accepted, message = rig.call("operator_takeover")
    assert accepted and "takeover" in message
    took_over = rig.wait_state("MANUAL")
    last_word = rig.cmd_out.items(since=took_over - 0.2)  # one zero, published with the state
    assert last_word and twist_of(last_word[-1][1]).linear.x == 0.0
    assert rig.override.wait_for(lambda m: m.data is True, 2.0) is not None
    assert rig.handover.wait_for(lambda m: m.data is False, 2.0) is not None
    time.sleep(0.3)  # MANUAL: the operator drives; the arbiter publishes nothing
    assert rig.cmd_out.items(since=took_over + 0.05) == []
    status = rig.status(lambda s: values(s)["state"] == "MANUAL")
    assert "MANUAL" in status.message and "not published" in status.message

    feeder.count = HEALTHY_COUNT
    time.sleep(0.05)
    accepted, message = rig.call("operator_release")
    assert not accepted and "recovery time" in message  # healthy, but not for long enough
    message = rig.release_when_healthy()
    assert "release accepted" in message
    released = rig.wait_state("NOMINAL")
    assert rig.override.wait_for(lambda m: m.data is False, 2.0, since=took_over) is not None
    first = rig.limits.wait_for(lambda m: True, 2.0, since=released - 0.05)
    assert first is not None and first[1].data < rig.arbiter.policy.nominal_speed_mps
    assert rig.cmd_out.wait_for(lambda m: twist_of(m).linear.x == 3.0, 3.0) is not None


def test_late_joiners_receive_the_latched_state(rig: Rig, feeder: Feeder) -> None:
    accepted, _ = rig.call("operator_takeover")
    assert accepted
    rig.wait_state("MANUAL")
    late = rig.harness.node("late", rig.namespace)
    states, handover = TimedInbox(), TimedInbox()
    late.create_subscription(String, f"{rig.fqn}/state", states, latched_qos())
    late.create_subscription(Bool, f"{rig.fqn}/handover_request", handover, latched_qos())
    assert states.wait_for(lambda m: m.data == "MANUAL", 5.0) is not None
    assert handover.wait_for(lambda m: m.data is False, 5.0) is not None
    assert [m.data for _, m in states.items()] == ["MANUAL"]  # the current state, not history


# --- bad input ------------------------------------------------------------------------------------
def test_non_finite_commands_are_dropped_and_counted(rig: Rig, feeder: Feeder) -> None:
    feeder.command = (1.0, 0.0)
    drive_to_nominal(rig, feeder)
    assert rig.cmd_out.wait_for(lambda m: twist_of(m).linear.x == 1.0, 3.0) is not None
    sent = time.monotonic()
    feeder.command = (math.nan, 0.0)
    assert wait_until(lambda: rig.arbiter.counters["commands_dropped_nonfinite"] >= 3, 3.0)
    feeder.command = (1.0, math.inf)
    assert wait_until(lambda: rig.arbiter.counters["commands_dropped_nonfinite"] >= 6, 3.0)
    after = rig.cmd_out.items(since=sent + 0.1)
    assert after, "the tick keeps publishing"
    for _, msg in after:
        twist = twist_of(msg)
        values_ = (twist.linear.x, twist.linear.y, twist.angular.z)
        assert all(math.isfinite(v) for v in values_)
        assert twist.linear.x == 0.0  # the plan is lost: stop, do not replay the last command
    feeder.command = (1.0, 0.0)
    assert rig.cmd_out.wait_for(lambda m: twist_of(m).linear.x == 1.0, 3.0) is not None
    status = rig.status(lambda s: int(values(s)["commands_dropped_nonfinite"]) >= 6)
    assert int(values(status)["commands_received"]) > 6


def test_malformed_and_late_certificates_are_rejected_and_counted(rig: Rig) -> None:
    rig.certificates.publish(DiagnosticArray())  # no status at all
    rig.certificates.publish(evidence_message(time.time() - 5.0))  # older than stale_after_s
    rig.certificates.publish(evidence_message(time.time() + 5.0))  # from the future
    assert wait_until(lambda: rig.arbiter.counters["evidence_rejected"] >= 3, 3.0)
    counters = rig.arbiter.counters
    assert counters["evidence_with_problems"] >= 1
    assert "future" in str(counters["last_evidence_problem"])
    accepted, message = rig.call("operator_release")
    assert not accepted and "no evidence yet" in message  # nothing valid ever arrived
    status = rig.status(lambda s: int(values(s)["evidence_rejected"]) >= 3)
    assert status.level == DiagnosticStatus.ERROR and "no valid certificate" in status.message


def test_unstamped_twist_in_and_out(harness: RosHarness) -> None:
    rig = start(harness, stamped=False)
    assert rig.arbiter.describe_parameter("stamped_cmd_vel").read_only
    sent = time.monotonic()
    rig.send_command(1.0, 0.5)  # MINIMAL_RISK at 0 m/s: everything zeroed, rotation too
    out = rig.cmd_out.wait_for(lambda m: True, 3.0, since=sent)
    assert out is not None and isinstance(out[1], Twist)
    assert (out[1].linear.x, out[1].angular.z) == (0.0, 0.0)


# --- configuration --------------------------------------------------------------------------------
def _set(rig: Rig, **params: Any) -> Any:
    results = set_parameters(rig.probe, rig.fqn, [Parameter(k, value=v) for k, v in params.items()])
    return next((r for r in results if not r.successful), results[-1])


def test_every_policy_key_is_a_described_guarded_parameter(rig: Rig) -> None:
    policy_fields = set(ArbiterPolicy().as_dict())
    assert policy_fields == set(POLICY_KEYS)
    for name in SPECS:
        descriptor = rig.arbiter.describe_parameter(name)
        assert descriptor.description, name
    for name in POLICY_KEYS:
        assert rig.arbiter.describe_parameter(name).read_only, name
    assert "m/s" in rig.arbiter.describe_parameter("nominal_speed_mps").description
    assert "seconds" in rig.arbiter.describe_parameter("stale_after_s").description
    assert rig.arbiter.describe_parameter("trigger_frames").integer_range[0].from_value == 1
    assert rig.arbiter.policy == ArbiterPolicy.from_mapping(
        {k: v for k, v in FAST.items() if k in POLICY_KEYS}
    )
    for name, value in (("nominal_speed_mps", 5.0), ("stale_after_s", 1.0)):
        refused = _set(rig, **{name: value})
        assert not refused.successful and "read-only" in refused.reason, refused
    refused = _set(rig, certificate_topic="/other")
    assert not refused.successful and "read-only" in refused.reason
    assert _set(rig, diagnostics_period_s=0.5).successful
    assert not _set(rig, diagnostics_period_s=0.0).successful


def test_runtime_tuning_validates_the_whole_policy(harness: RosHarness) -> None:
    rig = start(harness, allow_runtime_tuning=True)
    assert not rig.arbiter.describe_parameter("nominal_speed_mps").read_only
    refusals = {
        "crawl_speed_mps": (20.0, "crawl_speed_mps"),  # above nominal
        "degraded_exit_radius_l2": (0.2, "degraded_exit_radius_l2"),  # below enter
        "ood_error_as": ("ignore", "ood_error_as"),
        "degraded_curve_speed_mps": ([3.0, 5.0], "as many points"),
        "stale_after_s": (0.0, "stale_after_s"),
        "publish_rate_hz": (0.0, "publish_rate_hz"),
        "certificate_topic": ("/other", "read-only"),
    }
    for name, (value, reason) in refusals.items():
        refused = _set(rig, **{name: value})
        assert not refused.successful and reason in refused.reason, (name, refused)
    assert rig.arbiter.policy.crawl_speed_mps == 1.0
    assert _set(rig, nominal_speed_mps=12.0, crawl_speed_mps=0.5).successful
    assert rig.arbiter.policy.nominal_speed_mps == 12.0
    assert rig.arbiter.policy.crawl_speed_mps == 0.5
    assert _set(rig, publish_rate_hz=10.0, cmd_timeout_s=1.0).successful
    assert rig.arbiter.config_error == ""


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"crawl_speed_mps": 5.0}, "crawl_speed_mps"),  # above the curve's first speed
        ({"nominal_speed_mps": 10}, "nominal_speed_mps"),  # an integer for a double
        ({"certificate_topic": "not a topic!"}, "certificate_topic"),
    ],
    ids=["policy", "type", "topic"],
)
def test_an_invalid_configuration_holds_the_vehicle_stopped_and_says_why(
    harness: RosHarness, params: dict[str, Any], expected: str
) -> None:
    rig = start(harness, **params)
    assert expected in rig.arbiter.config_error
    status = rig.status(lambda s: s.level == DiagnosticStatus.ERROR)
    assert "invalid configuration" in status.message and expected in status.message
    rig.certificates.publish(evidence_message(time.time()))
    accepted, message = rig.call("operator_release")
    assert not accepted and "invalid configuration" in message and expected in message
    sent = time.monotonic()
    rig.send_command(2.0, 0.0)
    out = rig.cmd_out.wait_for(lambda m: True, 3.0, since=sent)
    assert out is not None and twist_of(out[1]).linear.x == 0.0
    accepted, _ = rig.call("operator_takeover")  # the operator can always take over
    assert accepted


# --- the gate, pure -------------------------------------------------------------------------------
finite = st.floats(-50.0, 50.0, allow_nan=False)
vectors = st.tuples(finite, finite, finite)


@given(vectors, vectors, st.floats(0.0, 20.0))
def test_limit_twist_keeps_curvature_and_respects_the_limit(
    linear: tuple[float, float, float], angular: tuple[float, float, float], limit: float
) -> None:
    gated = limit_twist(linear, angular, limit)
    speed = math.sqrt(sum(v * v for v in linear))
    out_speed = math.sqrt(sum(v * v for v in gated.linear))
    assert out_speed <= limit + 1e-9
    assert 0.0 <= gated.ratio <= 1.0
    if limit > 0.0:
        # One ratio for everything: the path's curvature (angular / linear) is unchanged.
        for before, after in zip((*linear, *angular), (*gated.linear, *gated.angular), strict=True):
            assert after == pytest.approx(before * gated.ratio, abs=1e-12)
        if speed <= limit:
            assert (gated.linear, gated.angular) == (linear, angular)
    else:
        assert gated.linear == gated.angular == (0.0, 0.0, 0.0)


def test_limit_twist_edge_cases() -> None:
    turn_in_place = ((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    assert limit_twist(*turn_in_place, 0.0).angular == (0.0, 0.0, 0.0)  # stop: no turning
    assert limit_twist(*turn_in_place, 1.0).angular == (0.0, 0.0, 1.0)
    assert limit_twist((3.0, 4.0, 0.0), (0.0, 0.0, 1.0), 2.5).linear == (1.5, 2.0, 0.0)
    assert limit_twist((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), math.nan).ratio == 0.0


# --- the reaction-time bench ----------------------------------------------------------------------
def test_bench_reaction_reports_percentiles() -> None:
    report = bench_reaction(samples=10, in_process=True)
    assert report["samples"] == 10 and report["lost"] == 0
    assert 0.0 < report["p50_ms"] <= report["p99_ms"] <= report["max_ms"] < 2000.0
    assert report["target_p99_ms"] == 20.0 and isinstance(report["meets_target"], bool)
