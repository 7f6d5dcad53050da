"""The arbiter state machine, scenario by scenario: each transition, limit and reason."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import replace

import pytest

from robust_monitor.core.arbiter import (
    Arbiter,
    ArbiterPolicy,
    ArbiterState,
    Decision,
    Evidence,
    OperatorRequest,
    advance,
)
from robust_monitor.core.certify.certificate import ABSTAIN, Certificate
from robust_monitor.core.ood.verdict import OodLevel, OodVerdict

TICK_S = 0.1
FrameFactory = Callable[..., Evidence]


@pytest.fixture
def policy() -> ArbiterPolicy:
    """The shipped defaults, with a shorter handover time-out to keep scenarios short."""
    return ArbiterPolicy(handover_timeout_s=3.0)


@pytest.fixture
def frame() -> FrameFactory:
    """Evidence for one frame: ``frame(t, radius, ood=OK, abstained=False, verdict=True)``."""

    def make(
        stamp_s: float,
        radius: float,
        ood: OodLevel = OodLevel.OK,
        *,
        abstained: bool = False,
        verdict: bool = True,
        certificate: bool = True,
    ) -> Evidence:
        cert = Certificate(
            label=ABSTAIN if abstained else 3,
            p_lower=0.3 if abstained else 0.95,
            radius=0.0 if abstained else radius,
            n0=100,
            n=1000,
            alpha=0.001,
            sigma=0.25,
            abstained=abstained,
            provider="cpu",
            latency_ms=4.0,
        )
        reasons = () if ood is OodLevel.OK else ("blur",)
        return Evidence(
            stamp_s,
            cert if certificate else None,
            OodVerdict(ood, reasons, stamp_s=stamp_s) if verdict else None,
        )

    return make


class Drive:
    """An arbiter and a clock: feed it frames at TICK_S and keep every decision."""

    def __init__(self, arbiter: Arbiter, frame: FrameFactory, t_s: float = 100.0) -> None:
        self.arbiter, self.frame, self.t_s = arbiter, frame, t_s
        self.decisions: list[Decision] = []

    def step(
        self,
        evidence: Evidence | None = None,
        operator: OperatorRequest | None = None,
        dt_s: float = TICK_S,
    ) -> Decision:
        self.t_s += dt_s
        decision = self.arbiter.step(self.t_s, evidence, operator)
        self.decisions.append(decision)
        return decision

    def frames(self, radius: float, n: int, ood: OodLevel = OodLevel.OK) -> Decision:
        """n ticks, each with a fresh frame of this radius; the last decision."""
        for _ in range(n):
            decision = self.step(self.frame(self.t_s + TICK_S, radius, ood))
        return decision

    def release(self) -> Decision:
        return self.step(self.frame(self.t_s + TICK_S, 0.6), OperatorRequest.RELEASE)


@pytest.fixture
def drive(policy: ArbiterPolicy, frame: FrameFactory) -> Drive:
    """A fresh arbiter (MINIMAL_RISK, not yet released)."""
    return Drive(Arbiter(policy), frame)


@pytest.fixture
def nominal(drive: Drive, policy: ArbiterPolicy) -> Drive:
    """An arbiter released into NOMINAL and ramped up to full speed."""
    drive.frames(0.6, round(policy.recovery_time_s / TICK_S) + 1)
    assert drive.release().state is ArbiterState.NOMINAL
    drive.frames(0.6, round(policy.nominal_speed_mps / policy.ramp_up_mps2 / TICK_S) + 2)
    assert drive.decisions[-1].speed_limit_mps == policy.nominal_speed_mps
    return drive


def reasons_of(decision: Decision) -> str:
    return " | ".join(decision.reasons)


# --- start and release ---------------------------------------------------------------------------
def test_starts_stopped_and_waits_for_a_release(drive: Drive) -> None:
    first = drive.step()
    assert first.state is ArbiterState.MINIMAL_RISK
    assert first.speed_limit_mps == 0.0 and first.gated and first.handover_requested
    assert "no evidence yet" in first.reasons
    # healthy evidence alone never starts autonomy
    assert drive.frames(0.6, 60).state is ArbiterState.MINIMAL_RISK


def test_release_is_refused_until_evidence_was_healthy_for_the_recovery_time(
    drive: Drive, policy: ArbiterPolicy
) -> None:
    refused = drive.step(operator=OperatorRequest.RELEASE)
    assert refused.operator_response is not None and not refused.operator_response.accepted
    assert refused.operator_response.reason == "release refused: no evidence yet"

    drive.frames(0.6, 10)  # 1.0 s of healthy frames < 3 s
    response, decision = drive.arbiter.request(drive.t_s, OperatorRequest.RELEASE)
    assert not response.accepted and decision.state is ArbiterState.MINIMAL_RISK
    assert "recovery time" in response.reason and "0.9 s < 3 s" in response.reason

    drive.frames(0.6, 21)
    accepted = drive.release()
    assert accepted.operator_response is not None and accepted.operator_response.accepted
    assert accepted.state is ArbiterState.NOMINAL
    assert accepted.operator_response.reason.startswith("release accepted: evidence healthy for")


def test_release_is_refused_while_evidence_is_not_healthy(drive: Drive) -> None:
    drive.frames(0.6, 40)
    drive.frames(0.28, 1)  # below r_recover = 0.30: breaks the healthy run
    response, _ = drive.arbiter.request(drive.t_s, OperatorRequest.RELEASE)
    assert not response.accepted
    assert "evidence not healthy" in response.reason and "radius 0.28 < 0.3" in response.reason


def test_release_is_refused_when_there_is_nothing_to_release(nominal: Drive) -> None:
    response, decision = nominal.arbiter.request(nominal.t_s + TICK_S, OperatorRequest.RELEASE)
    assert not response.accepted
    assert response.reason == "release refused: nothing to release: state is NOMINAL"
    assert decision.state is ArbiterState.NOMINAL


def test_after_release_the_limit_ramps_up_at_the_ramp_rate(
    drive: Drive, policy: ArbiterPolicy
) -> None:
    drive.frames(0.6, 31)
    assert drive.release().speed_limit_mps == pytest.approx(policy.ramp_up_mps2 * TICK_S)
    limits = [drive.frames(0.6, 1).speed_limit_mps for _ in range(120)]
    steps = [b - a for a, b in itertools.pairwise(limits)]
    assert max(steps) == pytest.approx(policy.ramp_up_mps2 * TICK_S)
    assert limits[-1] == policy.nominal_speed_mps
    # 10 m/s at 1 m/s^2 takes 10 s = 100 ticks
    assert limits.index(policy.nominal_speed_mps) == pytest.approx(98, abs=1)


def test_missing_frames_hold_the_ramp(drive: Drive) -> None:
    drive.frames(0.6, 31)
    start = drive.release().speed_limit_mps
    held = [drive.step().speed_limit_mps for _ in range(3)]
    assert held == [start] * 3
    assert "until fresh healthy evidence" in reasons_of(drive.decisions[-1])


def test_ticks_between_frames_do_not_slow_the_ramp(
    policy: ArbiterPolicy, frame: FrameFactory
) -> None:
    """A 15 Hz camera beside the node's 20 Hz tick: the limit still climbs at ramp_up_mps2
    (it rises on each frame by the time since the previous frame, ticks only hold it)."""
    arbiter, t, period = Arbiter(policy), 100.0, 1 / 15
    for _ in range(60):  # healthy for the recovery time
        t += period
        arbiter.step(t, frame(t, 0.6))
    answer, _ = arbiter.request(t, OperatorRequest.RELEASE)
    assert answer.accepted
    released_s, reached_s = t, None
    frames = [t + period * (k + 1) for k in range(400)]
    ticks = [t + 0.05 * (k + 1) + 0.013 for k in range(530)]
    events = sorted([(s, True) for s in frames] + [(s, False) for s in ticks])
    limits = []
    for stamp_s, is_frame in events:
        decision = arbiter.step(stamp_s, frame(stamp_s, 0.6) if is_frame else None)
        if not is_frame:
            assert not limits or decision.speed_limit_mps <= limits[-1][1]  # ticks never raise
        limits.append((stamp_s, decision.speed_limit_mps))
        if reached_s is None and decision.speed_limit_mps >= policy.nominal_speed_mps:
            reached_s = stamp_s
    assert reached_s is not None
    ramp_s = policy.nominal_speed_mps / policy.ramp_up_mps2
    assert ramp_s <= reached_s - released_s <= ramp_s + 2 * period
    for (t0, v0), (t1, v1) in itertools.combinations(limits, 2):
        assert v1 - v0 <= policy.ramp_up_mps2 * (t1 - t0) + period * policy.ramp_up_mps2 + 1e-9


# --- degraded, handover, hysteresis, debounce ---------------------------------------------------
def test_one_bad_frame_lowers_the_limit_at_once_but_not_the_state(
    nominal: Drive, policy: ArbiterPolicy
) -> None:
    decision = nominal.frames(0.2, 1)
    assert decision.state is ArbiterState.NOMINAL  # debounce: trigger_frames = 2
    assert decision.speed_limit_mps == pytest.approx(policy.degraded_speed_mps(0.2)) == 5.0
    assert "radius 0.2 < 0.25 (degraded enter)" in decision.reasons
    decision = nominal.frames(0.2, 1)
    assert decision.state is ArbiterState.DEGRADED
    assert "NOMINAL -> DEGRADED: 2 frames at degraded level" in decision.reasons


def test_degraded_speed_follows_the_radius_curve(nominal: Drive) -> None:
    nominal.frames(0.2, 2)
    assert nominal.frames(0.15, 1).speed_limit_mps == pytest.approx(4.0)
    assert nominal.frames(0.12, 1).speed_limit_mps == pytest.approx(3.4)
    # rising radius: the limit follows at the ramp rate only
    assert nominal.frames(0.2, 1).speed_limit_mps == pytest.approx(3.5)


def test_hysteresis_and_dwell_keep_degraded_until_clearly_healthy(
    nominal: Drive, policy: ArbiterPolicy
) -> None:
    nominal.frames(0.2, 2)
    # 0.27 is above the enter threshold but below the exit threshold: still degraded
    assert nominal.frames(0.27, 20).state is ArbiterState.DEGRADED
    nominal.frames(0.2, 1)
    states = [nominal.frames(0.35, 1).state for _ in range(12)]
    # release_frames = 5 healthy frames and degraded_min_dwell_s = 1 s in DEGRADED (entered
    # 2.1 s ago, so the dwell is met); the 5th healthy frame de-escalates
    assert states[:4] == [ArbiterState.DEGRADED] * 4
    assert states[4:] == [ArbiterState.NOMINAL] * 8


def test_dwell_time_delays_deescalation(nominal: Drive, policy: ArbiterPolicy) -> None:
    nominal.frames(0.2, 2)  # DEGRADED entered
    states = [nominal.frames(0.6, 1).state for _ in range(12)]
    entered = nominal.decisions[-13].stamp_s
    first_nominal = nominal.decisions[-12 + states.index(ArbiterState.NOMINAL)].stamp_s
    assert first_nominal - entered == pytest.approx(policy.degraded_min_dwell_s, abs=TICK_S)


def test_handover_is_requested_at_crawl_speed_and_times_out_into_a_stop(
    nominal: Drive, policy: ArbiterPolicy
) -> None:
    first = nominal.frames(0.05, 1)
    assert first.speed_limit_mps == policy.crawl_speed_mps
    assert first.state is ArbiterState.NOMINAL and not first.handover_requested
    second = nominal.frames(0.05, 1)
    assert second.state is ArbiterState.HANDOVER_REQUESTED and second.handover_requested
    assert "radius 0.05 < 0.15 (handover exit)" in second.reasons or any(
        "handover level" in r for r in second.reasons
    )
    entered = second.stamp_s
    decision = second
    while decision.state is ArbiterState.HANDOVER_REQUESTED:
        decision = nominal.frames(0.05, 1)
    assert decision.state is ArbiterState.MINIMAL_RISK
    timeout = policy.handover_timeout_s
    assert timeout - 1e-9 <= decision.stamp_s - entered <= timeout + TICK_S + 1e-9
    assert "HANDOVER_REQUESTED -> MINIMAL_RISK: nobody took over within 3 s" in decision.reasons
    # controlled stop from crawl speed at max_decel: 1 m/s / 3 m/s^2 = 0.33 s
    limits = [nominal.frames(0.05, 1).speed_limit_mps for _ in range(5)]
    assert limits[:3] == pytest.approx([0.7, 0.4, 0.1])
    assert limits[3:] == [0.0, 0.0]


def test_handover_request_is_withdrawn_when_evidence_recovers(nominal: Drive) -> None:
    entered = nominal.frames(0.05, 2).stamp_s
    decisions = [nominal.frames(0.6, 1) for _ in range(40)]
    states = [d.state for d in decisions]
    assert states[-1] is ArbiterState.NOMINAL
    # handover_min_dwell_s = 2 s in HANDOVER_REQUESTED, then DEGRADED; degraded_min_dwell_s = 1 s
    # more (the 5 healthy frames are long there), then NOMINAL: one step down at a time
    degraded = decisions[states.index(ArbiterState.DEGRADED)].stamp_s
    back = decisions[states.index(ArbiterState.NOMINAL)].stamp_s
    assert 2.0 - 1e-9 <= degraded - entered <= 2.0 + TICK_S
    assert 1.0 - 1e-9 <= back - degraded <= 1.0 + TICK_S
    assert all(
        s is ArbiterState.DEGRADED
        for s in states
        if s is not ArbiterState.NOMINAL and s is not ArbiterState.HANDOVER_REQUESTED
    )


def test_abstained_certificate_counts_as_radius_zero(
    nominal: Drive, frame: FrameFactory, policy: ArbiterPolicy
) -> None:
    decision = nominal.step(frame(nominal.t_s + TICK_S, 0.9, abstained=True))
    assert decision.speed_limit_mps == policy.crawl_speed_mps
    assert "abstained: radius taken as 0" in decision.reasons
    # a certificate that says it abstained but carries a radius still counts as radius 0
    lying = frame(nominal.t_s + TICK_S, 0.9, abstained=True)
    assert lying.certificate is not None
    lying = replace(lying, certificate=replace(lying.certificate, radius=0.9))
    assert nominal.step(lying).state is ArbiterState.HANDOVER_REQUESTED


@pytest.mark.parametrize(
    ("ood", "warn_as", "expected_state", "expected_limit"),
    [
        (OodLevel.WARN, "degraded", ArbiterState.DEGRADED, 6.5),  # curve at r_required = 0.25
        (OodLevel.WARN, "ignore", ArbiterState.NOMINAL, 10.0),
        (OodLevel.WARN, "handover", ArbiterState.HANDOVER_REQUESTED, 1.0),
        (OodLevel.ERROR, "degraded", ArbiterState.HANDOVER_REQUESTED, 1.0),
    ],
)
def test_ood_verdicts_map_to_evidence_levels(
    frame: FrameFactory,
    ood: OodLevel,
    warn_as: str,
    expected_state: ArbiterState,
    expected_limit: float,
) -> None:
    policy = ArbiterPolicy(ood_warn_as=warn_as, recovery_time_s=0.0)
    drive = Drive(Arbiter(policy), frame)
    drive.frames(0.8, 1)
    drive.release()
    drive.frames(0.8, 120)
    decision = drive.frames(0.8, 2, ood)
    assert decision.state is expected_state
    assert decision.speed_limit_mps == pytest.approx(expected_limit)
    if ood is not OodLevel.OK and warn_as != "ignore":
        assert any(r.startswith(f"OOD {ood.name} (blur) -> ") for r in decision.reasons)


# --- stale, invalid, partial evidence -----------------------------------------------------------
def test_stale_evidence_starts_a_controlled_stop_within_one_tick(
    nominal: Drive, policy: ArbiterPolicy
) -> None:
    last = nominal.decisions[-1].stamp_s
    decisions = [nominal.step() for _ in range(8)]
    i = next(i for i, d in enumerate(decisions) if d.state is ArbiterState.MINIMAL_RISK)
    stale, later = decisions[i], decisions[i + 1]
    assert policy.stale_after_s < stale.stamp_s - last <= policy.stale_after_s + TICK_S + 1e-9
    assert any(r.startswith("evidence stale 0.6 s > 0.5 s") for r in stale.reasons)
    assert stale.speed_limit_mps == policy.nominal_speed_mps  # the stop starts from entry speed
    assert later.speed_limit_mps == pytest.approx(10.0 - policy.max_decel_mps2 * TICK_S)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda e, t: replace(e, certificate=replace(e.certificate, radius=math.nan)), "radius"),
        (lambda e, t: replace(e, certificate=replace(e.certificate, radius=-0.1)), "radius"),
        (lambda e, t: replace(e, certificate=replace(e.certificate, radius=math.inf)), "radius"),
        (lambda e, t: _restamp(e, t + 0.2), "in the future"),
        (lambda e, t: _restamp(e, t - 0.7), "late"),
        (lambda e, t: _restamp(e, t - 0.1), "not newer than the last accepted"),
        (lambda e, t: _restamp(e, math.nan), "not a finite number"),
        (lambda e, t: replace(e, verdict=replace(e.verdict, stamp_s=t - 0.05)), "verdict stamp"),
        (lambda e, t: Evidence(t), "empty"),
    ],
    ids=["nan", "negative", "inf", "future", "late", "old", "nan-stamp", "pairing", "empty"],
)
def test_invalid_evidence_is_rejected_with_a_reason_and_never_helps(
    nominal: Drive,
    frame: FrameFactory,
    mutate: Callable[[Evidence, float], Evidence],
    expected: str,
) -> None:
    nominal.frames(0.2, 1)  # limit 5 m/s, state still NOMINAL
    t = nominal.t_s + TICK_S
    decision = nominal.step(mutate(frame(t, 0.9), t))
    assert decision.evidence_accepted is False
    rejected = [r for r in decision.reasons if r.startswith("evidence rejected: ")]
    assert rejected and expected in rejected[0]
    assert decision.speed_limit_mps == pytest.approx(5.0)
    assert nominal.arbiter.memory.below_degraded == 0


def _restamp(evidence: Evidence, stamp_s: float) -> Evidence:
    assert evidence.verdict is not None
    return replace(evidence, stamp_s=stamp_s, verdict=replace(evidence.verdict, stamp_s=stamp_s))


def test_partial_frames_can_slow_but_never_count_as_healthy(
    nominal: Drive, frame: FrameFactory, policy: ArbiterPolicy
) -> None:
    nominal.frames(0.2, 2)
    before = nominal.decisions[-1].speed_limit_mps
    for _ in range(4):
        d = nominal.step(frame(nominal.t_s + TICK_S, 0.8, verdict=False))
        assert d.state is ArbiterState.DEGRADED and d.speed_limit_mps == before
        assert d.evidence_accepted and "no OOD verdict: OK kept from the last frame" in d.reasons
    # a verdict alone, with ERROR, slows to a crawl at once
    d = nominal.step(frame(nominal.t_s + TICK_S, 0.8, OodLevel.ERROR, certificate=False))
    assert d.speed_limit_mps == policy.crawl_speed_mps
    # ... and partial frames do not keep evidence fresh: a stop after stale_after_s
    d = nominal.step(frame(nominal.t_s + TICK_S, 0.8, verdict=False))
    assert d.state is ArbiterState.MINIMAL_RISK and d.evidence_age_s == pytest.approx(0.6)


def test_partial_frames_are_complete_when_verdicts_are_not_required(frame: FrameFactory) -> None:
    policy = ArbiterPolicy(require_ood_verdict=False, recovery_time_s=0.5)
    drive = Drive(Arbiter(policy), frame)
    for _ in range(8):
        drive.step(frame(drive.t_s + TICK_S, 0.8, verdict=False))
    assert drive.release().state is ArbiterState.NOMINAL
    assert drive.step(frame(drive.t_s + TICK_S, 0.8, verdict=False)).speed_limit_mps > 0.1


# --- operator ----------------------------------------------------------------------------------
def test_takeover_is_always_accepted_and_ungates_commands(
    nominal: Drive, frame: FrameFactory
) -> None:
    d = nominal.step(operator=OperatorRequest.TAKEOVER)
    assert d.state is ArbiterState.MANUAL and not d.gated and d.speed_limit_mps == 0.0
    assert d.operator_response is not None and d.operator_response.accepted
    again = nominal.step(operator=OperatorRequest.TAKEOVER)
    assert again.operator_response is not None
    assert again.operator_response.reason == "operator takeover: already MANUAL"
    # stale or bad evidence does not take the vehicle from the operator
    assert nominal.step(dt_s=2.0).state is ArbiterState.MANUAL
    assert nominal.frames(0.0, 5).state is ArbiterState.MANUAL


def test_manual_returns_to_autonomy_only_by_release_after_recovery(
    nominal: Drive, policy: ArbiterPolicy
) -> None:
    nominal.step(operator=OperatorRequest.TAKEOVER)
    nominal.frames(0.05, 3)  # the arbiter watches: evidence is bad while the operator drives
    nominal.frames(0.6, 10)
    assert nominal.release().state is ArbiterState.MANUAL
    nominal.frames(0.6, 25)
    released = nominal.release()
    assert released.state is ArbiterState.NOMINAL and released.gated
    assert released.speed_limit_mps == pytest.approx(policy.ramp_up_mps2 * TICK_S)


# --- clock ---------------------------------------------------------------------------------------
def test_small_clock_jitter_is_held(nominal: Drive, policy: ArbiterPolicy) -> None:
    d = nominal.step(dt_s=-0.005)
    assert d.state is ArbiterState.NOMINAL and d.speed_limit_mps == policy.nominal_speed_mps
    assert d.stamp_s == pytest.approx(nominal.t_s + 0.005)
    assert any("within tolerance" in r for r in d.reasons)


def test_clock_jumping_back_is_a_fault_that_stops_and_rebases(
    nominal: Drive, policy: ArbiterPolicy
) -> None:
    d = nominal.step(nominal.frame(nominal.t_s - 4.9, 0.6), dt_s=-5.0)
    assert d.state is ArbiterState.MINIMAL_RISK and d.evidence_accepted is False
    assert d.speed_limit_mps == policy.nominal_speed_mps  # stop begins from the current speed
    assert any(r.startswith("clock fault: time went backwards 5 s") for r in d.reasons)
    # ages survive the re-base: new frames on the new clock are accepted and the stop goes on
    d = nominal.frames(0.6, 1)
    assert d.evidence_accepted is True and d.speed_limit_mps == pytest.approx(9.7)


@pytest.mark.parametrize("bad_time", [math.nan, math.inf, -math.inf])
def test_non_finite_time_is_a_fault_not_a_crash(nominal: Drive, bad_time: float) -> None:
    d = nominal.arbiter.step(bad_time, nominal.frame(nominal.t_s, 0.6))
    assert d.state is ArbiterState.MINIMAL_RISK and d.evidence_accepted is False
    assert math.isfinite(d.speed_limit_mps) and d.stamp_s == nominal.t_s
    assert any(r.startswith("clock fault: time") for r in d.reasons)


def test_non_finite_first_time_is_a_fault_not_a_crash(
    policy: ArbiterPolicy, frame: FrameFactory
) -> None:
    arbiter = Arbiter(policy)
    d = arbiter.step(math.nan, frame(0.0, 0.6))
    assert d.state is ArbiterState.MINIMAL_RISK and d.speed_limit_mps == 0.0
    assert arbiter.step(1.0, frame(1.0, 0.6)).evidence_accepted is True


# --- purity, output form --------------------------------------------------------------------------
def test_advance_is_pure_and_branches(nominal: Drive, frame: FrameFactory) -> None:
    memory, t = nominal.arbiter.memory, nominal.t_s + TICK_S
    policy = nominal.arbiter.policy
    bad_memory, bad = advance(policy, memory, t, frame(t, 0.05))
    good_memory, good = advance(policy, memory, t, frame(t, 0.6))
    assert nominal.arbiter.memory is memory  # nothing mutated
    assert bad.speed_limit_mps < good.speed_limit_mps
    assert advance(policy, memory, t, frame(t, 0.05)) == (bad_memory, bad)
    assert good_memory != bad_memory


def test_decision_as_dict_is_plain_json(nominal: Drive) -> None:
    d = nominal.step(operator=OperatorRequest.TAKEOVER)
    data = json.loads(json.dumps(d.as_dict()))
    assert data["state"] == "MANUAL" and data["gated"] is False
    assert data["operator_response"] == {
        "request": "TAKEOVER",
        "accepted": True,
        "reason": "operator takeover",
    }
    assert data["reasons"] == list(d.reasons)
