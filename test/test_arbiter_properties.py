"""The arbiter's safety rules, checked over random policies and random input sequences.

Each script is a sequence of steps (time, evidence, operator request) drawn in *regimes* (healthy,
degraded, handover-level, OOD, faulty, silent) so that runs reach every state; times mostly move
forward, sometimes stand still, jitter back or jump back. An independent *oracle* (written from
the rules, not from the implementation) says which evidence is valid, when evidence is stale and
when it has been healthy for the recovery time; the properties compare the arbiter with it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robust_monitor.core.arbiter import (
    Arbiter,
    ArbiterMemory,
    ArbiterPolicy,
    ArbiterState,
    Decision,
    Evidence,
    OperatorRequest,
    advance,
)
from robust_monitor.core.arbiter.policy import OOD_ACTIONS, EvidenceLevel
from robust_monitor.core.certify.certificate import ABSTAIN, Certificate
from robust_monitor.core.ood.verdict import OodLevel, OodVerdict

EPS = 1e-9
AUTONOMOUS = {ArbiterState.NOMINAL, ArbiterState.DEGRADED, ArbiterState.HANDOVER_REQUESTED}
NOT_AUTONOMOUS = {ArbiterState.MINIMAL_RISK, ArbiterState.MANUAL}
CAUTION = {
    ArbiterState.NOMINAL: 0,
    ArbiterState.DEGRADED: 1,
    ArbiterState.HANDOVER_REQUESTED: 2,
    ArbiterState.MINIMAL_RISK: 3,
    ArbiterState.MANUAL: 4,  # autonomy gets nothing at all
}

# Short times so that a script of ~100 steps of ~0.1 s sees releases, time-outs and stops.
FAST = ArbiterPolicy(
    nominal_speed_mps=10.0,
    crawl_speed_mps=1.0,
    trigger_frames=2,
    release_frames=3,
    degraded_min_dwell_s=0.3,
    handover_min_dwell_s=0.5,
    max_decel_mps2=3.0,
    ramp_up_mps2=2.0,
    handover_timeout_s=2.0,
    stale_after_s=0.5,
    recovery_time_s=1.0,
)
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- strategies ---------------------------------------------------------------------------------
@st.composite
def policies(draw: st.DrawFn) -> ArbiterPolicy:
    """FAST, or a random valid policy (thresholds, curve, counts, times, OOD mapping)."""
    if draw(st.booleans()):
        return FAST
    unit = st.floats(0.01, 1.0)
    h_in, h_gap, d_gap, d_out_gap = (draw(unit) * s for s in (0.3, 0.1, 0.3, 0.1))
    h_out = h_in + h_gap
    d_in = h_in + d_gap
    d_out = max(d_in, h_out) + d_out_gap
    nominal = draw(st.floats(1.0, 20.0))
    speeds = sorted(draw(st.lists(st.floats(0.0, nominal), min_size=1, max_size=4)))
    radii = np.cumsum(draw(st.lists(st.floats(0.01, 0.3), min_size=len(speeds), max_size=4)))
    warn = draw(st.sampled_from(sorted(OOD_ACTIONS)))
    errors = [k for k, v in OOD_ACTIONS.items() if v >= max(OOD_ACTIONS[warn], 1)]
    return ArbiterPolicy(
        nominal_speed_mps=nominal,
        crawl_speed_mps=draw(st.floats(0.0, 1.0)) * speeds[0],
        degraded_curve_radius_l2=tuple(float(r) for r in radii[: len(speeds)]),
        degraded_curve_speed_mps=tuple(speeds),
        degraded_enter_radius_l2=d_in,
        degraded_exit_radius_l2=d_out,
        handover_enter_radius_l2=h_in,
        handover_exit_radius_l2=h_out,
        trigger_frames=draw(st.integers(1, 3)),
        release_frames=draw(st.integers(1, 4)),
        degraded_min_dwell_s=draw(st.floats(0.0, 0.5)),
        handover_min_dwell_s=draw(st.floats(0.0, 0.5)),
        max_decel_mps2=draw(st.floats(0.5, 10.0)),
        ramp_up_mps2=draw(st.floats(0.1, 5.0)),
        handover_timeout_s=draw(st.floats(0.2, 3.0)),
        stale_after_s=draw(st.floats(0.3, 1.0)),
        future_tolerance_s=draw(st.floats(0.0, 0.1)),
        clock_tolerance_s=draw(st.floats(0.0, 0.05)),
        recovery_time_s=draw(st.floats(0.0, 1.5)),
        ood_warn_as=warn,
        ood_error_as=draw(st.sampled_from(sorted(errors))),
        require_ood_verdict=draw(st.booleans()),
    )


@dataclass(frozen=True)
class Step:
    now_s: float
    evidence: Evidence | None
    operator: OperatorRequest | None


def certificate(radius: float, abstained: bool = False) -> Certificate:
    return Certificate(
        label=ABSTAIN if abstained else 1,
        p_lower=0.4 if abstained else 0.9,
        radius=radius,  # an abstained certificate must count as radius 0 whatever it says
        n0=100,
        n=1000,
        alpha=0.001,
        sigma=0.25,
        abstained=abstained,
        provider="cpu",
        latency_ms=5.0,
    )


REGIMES = ("healthy", "degraded", "handover", "ood", "faulty", "silent", "anything")
FAULTS = (
    "nan_radius",
    "inf_radius",
    "negative_radius",
    "future",
    "late",
    "old",
    "nan_stamp",
    "verdict_of_other_frame",
    "empty",
    "certificate_only",
    "verdict_only",
)


def radius_band(policy: ArbiterPolicy, regime: str) -> tuple[float, float]:
    h_in, h_out = policy.handover_enter_radius_l2, policy.handover_exit_radius_l2
    d_in, d_out = policy.degraded_enter_radius_l2, policy.degraded_exit_radius_l2
    return {
        "healthy": (d_out, d_out + 0.6),
        "arm": (d_out, d_out + 0.6),
        "degraded": (h_in, d_in),
        "handover": (0.0, h_out),
    }.get(regime, (0.0, d_out + 0.6))


def frame(draw: st.DrawFn, policy: ArbiterPolicy, regime: str, now_s: float) -> Evidence | None:
    """One step's evidence in a regime (flat draws: generation dominates the run time)."""
    shape = draw(st.integers(0, 99))
    if regime == "silent" or (shape < 8 and regime != "arm"):
        return None
    latencies = {"arm": [0.02], "faulty": [0.0, 0.05, 0.3], "anything": [0.0, 0.05, 0.3]}
    latency = draw(st.sampled_from(latencies.get(regime, [0.0, 0.01, 0.02, 0.05])))
    stamp = now_s - latency
    low, high = radius_band(policy, regime)
    if shape < 20 and regime != "arm":  # exactly on a threshold
        radius = draw(
            st.sampled_from(
                [
                    0.0,
                    policy.handover_enter_radius_l2,
                    policy.handover_exit_radius_l2,
                    policy.degraded_enter_radius_l2,
                    policy.degraded_exit_radius_l2,
                ]
            )
        )
    else:
        radius = low + (high - low) * draw(st.floats(0.0, 1.0, exclude_max=True))
    abstained = regime in ("handover", "anything") and shape % 4 == 0
    level = OodLevel.OK
    if regime in ("ood", "anything"):
        level = OodLevel(shape % 3)
    cert: Certificate | None = certificate(radius, abstained)
    verdict: OodVerdict | None = OodVerdict(level, ("blur",) if level else (), stamp_s=stamp)
    if regime in ("faulty", "anything") and shape % 2 == 0:
        fault = FAULTS[shape % len(FAULTS)]
        if fault.endswith("radius"):
            bad = {"nan_radius": math.nan, "inf_radius": math.inf, "negative_radius": -0.1}
            cert = replace(certificate(0.5), radius=bad[fault])
        elif fault == "future":
            stamp = now_s + policy.future_tolerance_s + 0.001 + (shape % 7) / 7
        elif fault == "late":
            stamp = now_s - policy.stale_after_s - 0.001 - (shape % 7) / 7
        elif fault == "old":
            stamp -= (shape % 5) * 0.05
        elif fault == "nan_stamp":
            stamp = math.nan
        elif fault == "empty":
            cert, verdict = None, None
        elif fault == "certificate_only":
            verdict = None
        elif fault == "verdict_only":
            cert = None
        if verdict is not None and fault != "verdict_of_other_frame":
            verdict = replace(verdict, stamp_s=stamp)
        elif verdict is not None:
            verdict = replace(verdict, stamp_s=stamp - 0.05)
    return Evidence(stamp, cert, verdict)


@st.composite
def scripts(draw: st.DrawFn) -> tuple[ArbiterPolicy, list[Step]]:
    """A random policy and steps; most scripts first arm the arbiter (healthy frames, release)."""
    policy = draw(policies())
    now = draw(st.floats(0.0, 1000.0))
    steps: list[Step] = []
    if draw(st.integers(0, 4)) > 0:
        for _ in range(math.ceil(policy.recovery_time_s / 0.1) + 2):
            now += 0.1
            steps.append(Step(now, frame(draw, policy, "arm", now), None))
        now += 0.1
        steps.append(Step(now, frame(draw, policy, "arm", now), OperatorRequest.RELEASE))
    segments = draw(
        st.lists(st.tuples(st.sampled_from(REGIMES), st.integers(1, 30)), min_size=1, max_size=6)
    )
    for regime, length in segments:
        for _ in range(length):
            kind = draw(st.integers(0, 99))
            if kind < 3:
                now -= draw(st.floats(0.0, 2.0 * policy.clock_tolerance_s + 0.01))
            elif kind < 4:
                now -= draw(st.floats(0.1, 5.0))
            elif kind >= 8:  # else the clock stands still
                now += draw(st.floats(0.01, 0.15 if regime != "silent" else 0.6))
            op_kind = draw(st.integers(0, 99))
            operator = (
                OperatorRequest.RELEASE
                if op_kind < 8
                else OperatorRequest.TAKEOVER
                if op_kind < 9
                else None
            )
            steps.append(Step(now, frame(draw, policy, regime, now), operator))
    return policy, steps


# --- the oracle ---------------------------------------------------------------------------------
@dataclass
class Facts:
    """What the rules say about one step, independent of the implementation."""

    t_s: float  # the arbiter's effective time
    dt_s: float  # how far its clock advanced
    clock_back: bool  # now_s was behind the arbiter's clock
    clock_fault: bool  # ... by more than the tolerance
    valid: bool | None  # None: no evidence
    complete: bool
    radius_eff: float | None  # abstained -> 0
    ood: OodLevel | None
    stale: bool
    recovered: bool  # healthy, fresh, complete evidence for the whole recovery time


class Oracle:
    """The rules of validity, staleness and recovery, written from the documentation."""

    def __init__(self, policy: ArbiterPolicy) -> None:
        self.p = policy
        self.clock: float | None = None
        self.last: float | None = None
        self.fresh: float | None = None
        self.healthy_since: float | None = None

    def observe(self, step: Step) -> Facts:
        p, t = self.p, step.now_s
        dt, back, fault = 0.0, False, False
        if self.clock is None:
            self.clock = t
        elif t >= self.clock:
            dt, self.clock = t - self.clock, t
        elif self.clock - t <= p.clock_tolerance_s:
            back, t = True, self.clock
        else:
            back = fault = True
            shift = t - self.clock
            self.last = None if self.last is None else self.last + shift
            self.fresh = None if self.fresh is None else self.fresh + shift
            self.clock, self.healthy_since = t, None

        ev, valid, complete, r_eff, ood = step.evidence, None, False, None, None
        if ev is not None:
            valid = not fault and self._valid(ev, t)
            if not valid:
                self.healthy_since = None
            else:
                cert, verdict = ev.certificate, ev.verdict
                complete = cert is not None and (verdict is not None or not p.require_ood_verdict)
                if cert is not None:
                    r_eff = 0.0 if cert.abstained else cert.radius
                if verdict is not None:
                    ood = verdict.level
                healthy = (
                    complete
                    and r_eff is not None
                    and r_eff >= p.degraded_exit_radius_l2
                    and p.ood_evidence_level(ood or OodLevel.OK) == EvidenceLevel.HEALTHY
                )
                unbroken = (
                    self.healthy_since is not None
                    and self.fresh is not None
                    and ev.stamp_s - self.fresh <= p.stale_after_s
                )
                if healthy:
                    self.healthy_since = self.healthy_since if unbroken else ev.stamp_s
                else:
                    self.healthy_since = None
                self.last = ev.stamp_s
                if complete:
                    self.fresh = ev.stamp_s
        stale = self.fresh is None or t - self.fresh > p.stale_after_s
        if stale:
            self.healthy_since = None
        recovered = self.healthy_since is not None and t - self.healthy_since >= p.recovery_time_s
        return Facts(t, dt, back, fault, valid, complete, r_eff, ood, stale, recovered)

    def _valid(self, ev: Evidence, t: float) -> bool:
        p, stamp = self.p, ev.stamp_s
        cert, verdict = ev.certificate, ev.verdict
        return (
            math.isfinite(stamp)
            and (cert is not None or verdict is not None)
            and not stamp > t + p.future_tolerance_s
            and (self.last is None or stamp > self.last)
            and not t - stamp > p.stale_after_s
            and (cert is None or (math.isfinite(cert.radius) and cert.radius >= 0.0))
            and (verdict is None or verdict.stamp_s == stamp)
        )


@dataclass
class Row:
    step: Step
    before: ArbiterMemory
    after: ArbiterMemory
    decision: Decision
    facts: Facts


def run(policy: ArbiterPolicy, steps: list[Step]) -> list[Row]:
    """Drive one arbiter through the script, keeping what each step saw and did."""
    oracle = Oracle(policy)
    memory = ArbiterMemory()
    rows = []
    for step in steps:
        after, decision = advance(policy, memory, step.now_s, step.evidence, step.operator)
        rows.append(Row(step, memory, after, decision, oracle.observe(step)))
        memory = after
    return rows


def pairs(rows: list[Row]) -> list[tuple[Row, Row]]:
    return list(itertools.pairwise(rows))


# --- the properties -----------------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(scripts())
def test_limit_is_finite_bounded_and_every_decision_is_explained(
    script: tuple[ArbiterPolicy, list[Step]],
) -> None:
    policy, steps = script
    for row in run(policy, steps):
        d = row.decision
        assert math.isfinite(d.speed_limit_mps)
        assert 0.0 <= d.speed_limit_mps <= policy.nominal_speed_mps
        assert d.gated == (d.state is not ArbiterState.MANUAL)
        assert d.handover_requested == (
            d.state in (ArbiterState.HANDOVER_REQUESTED, ArbiterState.MINIMAL_RISK)
        )
        if d.state is ArbiterState.MANUAL:
            assert d.speed_limit_mps == 0.0
        assert d.reasons and all(isinstance(r, str) and r for r in d.reasons)
        assert (d.operator_response is None) == (row.step.operator is None)
        if row.step.operator is OperatorRequest.TAKEOVER:  # never refused, whatever the state
            assert d.operator_response is not None and d.operator_response.accepted
            assert d.state is ArbiterState.MANUAL


@PROPERTY_SETTINGS
@given(scripts())
def test_evidence_is_accepted_exactly_when_valid(script: tuple[ArbiterPolicy, list[Step]]) -> None:
    policy, steps = script
    for row in run(policy, steps):
        assert row.decision.evidence_accepted == row.facts.valid, row.step
        if row.facts.valid is False:
            assert any(r.startswith("evidence rejected") for r in row.decision.reasons)


@PROPERTY_SETTINGS
@given(scripts())
def test_missing_late_invalid_partial_or_abstained_evidence_never_raises_the_limit(
    script: tuple[ArbiterPolicy, list[Step]],
) -> None:
    policy, steps = script
    for prev, row in pairs(run(policy, steps)):
        f = row.facts
        handover_level = (
            f.radius_eff is not None and f.radius_eff < policy.handover_enter_radius_l2
        ) or (f.ood is not None and policy.ood_evidence_level(f.ood) is EvidenceLevel.HANDOVER)
        no_good_news = not f.valid or not f.complete or handover_level or f.dt_s == 0.0
        if no_good_news:
            assert row.decision.speed_limit_mps <= prev.decision.speed_limit_mps, row.step


@PROPERTY_SETTINGS
@given(scripts())
def test_invalid_evidence_is_at_least_as_cautious_as_missing_evidence(
    script: tuple[ArbiterPolicy, list[Step]],
) -> None:
    policy, steps = script
    for row in run(policy, steps):
        if row.facts.valid is not False:
            continue
        step = row.step
        _, d_missing = advance(policy, row.before, step.now_s, None, step.operator)
        assert row.decision.speed_limit_mps <= d_missing.speed_limit_mps
        assert CAUTION[row.decision.state] >= CAUTION[d_missing.state]
        assert row.after.healthy_since_s is None  # and it breaks the run a release needs
        assert row.after.below_degraded == row.after.below_handover == 0  # and de-escalation


@PROPERTY_SETTINGS
@given(scripts())
def test_stale_evidence_leads_to_minimal_risk_at_the_first_late_tick(
    script: tuple[ArbiterPolicy, list[Step]],
) -> None:
    policy, steps = script
    for row in run(policy, steps):
        if row.facts.stale:
            assert row.decision.state in NOT_AUTONOMOUS, row.step
            assert any("stale" in r or "no evidence" in r for r in row.decision.reasons)


@PROPERTY_SETTINGS
@given(scripts())
def test_limit_drops_at_once_and_rises_no_faster_than_the_ramp(
    script: tuple[ArbiterPolicy, list[Step]],
) -> None:
    policy, steps = script
    radii, speeds = policy.degraded_curve_radius_l2, policy.degraded_curve_speed_mps
    last_evidence: tuple[float, float] | None = None  # (step time, limit) of the latest evidence
    for prev, row in pairs(run(policy, steps)):
        d, f = row.decision, row.facts
        rise = d.speed_limit_mps - prev.decision.speed_limit_mps
        if any("clock fault" in r for r in d.reasons):
            last_evidence = None
        if d.evidence_accepted is not True:
            assert rise <= EPS, row.step  # only evidence raises the limit
        else:
            # A rise is paid for by the time since the previous evidence (ticks in between hold
            # the limit), so between any two evidence steps the limit rises at most at the ramp.
            if last_evidence is None:
                allowed = prev.decision.speed_limit_mps
                allowed += policy.ramp_up_mps2 * max(0.0, d.stamp_s - prev.decision.stamp_s)
            else:
                gap = min(max(0.0, d.stamp_s - last_evidence[0]), policy.stale_after_s)
                allowed = last_evidence[1] + policy.ramp_up_mps2 * gap
            assert d.speed_limit_mps <= allowed + EPS, row.step
            last_evidence = (d.stamp_s, d.speed_limit_mps)
        if d.state not in AUTONOMOUS:
            continue
        if d.state is ArbiterState.HANDOVER_REQUESTED:
            assert d.speed_limit_mps <= policy.crawl_speed_mps
        if d.state is ArbiterState.DEGRADED:
            assert d.speed_limit_mps <= speeds[-1]
        if not (f.valid and f.complete and f.radius_eff is not None):
            continue
        ood_level = policy.ood_evidence_level(f.ood or OodLevel.OK)
        if f.radius_eff < policy.handover_enter_radius_l2 or ood_level is EvidenceLevel.HANDOVER:
            assert d.speed_limit_mps <= policy.crawl_speed_mps, row.step
        elif ood_level is EvidenceLevel.DEGRADED:
            r_speed = min(f.radius_eff, policy.degraded_enter_radius_l2)
            assert d.speed_limit_mps <= np.interp(r_speed, radii, speeds) + EPS, row.step
        elif f.radius_eff < policy.r_required:
            assert d.speed_limit_mps <= np.interp(f.radius_eff, radii, speeds) + EPS, row.step


@PROPERTY_SETTINGS
@given(scripts())
def test_minimal_risk_is_a_controlled_stop_to_zero(
    script: tuple[ArbiterPolicy, list[Step]],
) -> None:
    policy, steps = script
    episode: tuple[float, float] | None = None  # (t0, v0) of the current stop, while exact
    for prev, row in pairs(run(policy, steps)):
        d, limit, prev_limit = (
            row.decision,
            row.decision.speed_limit_mps,
            prev.decision.speed_limit_mps,
        )
        if d.state is not ArbiterState.MINIMAL_RISK:
            episode = None
            continue
        assert limit <= prev_limit + EPS
        assert limit >= prev_limit - policy.max_decel_mps2 * row.facts.dt_s - EPS
        if prev.decision.state is not ArbiterState.MINIMAL_RISK:
            episode = (row.facts.t_s, prev_limit)
            assert limit == prev_limit  # the stop starts from the speed at entry
        elif row.facts.clock_fault:
            episode = None  # the clock was re-based; the bounds above still hold
        if episode is not None:
            t0, v0 = episode
            expected = max(0.0, v0 - policy.max_decel_mps2 * (row.facts.t_s - t0))
            assert math.isclose(limit, expected, abs_tol=1e-6), (limit, expected)
            if row.facts.t_s - t0 >= v0 / policy.max_decel_mps2 + 1e-6:
                assert limit == 0.0


@PROPERTY_SETTINGS
@given(scripts())
def test_autonomy_resumes_only_by_an_accepted_release_after_the_recovery_time(
    script: tuple[ArbiterPolicy, list[Step]],
) -> None:
    policy, steps = script
    for prev, row in pairs(run(policy, steps)):
        before, d, f = prev.decision.state, row.decision, row.facts
        response = d.operator_response
        if before in NOT_AUTONOMOUS and d.state in AUTONOMOUS:
            assert row.step.operator is OperatorRequest.RELEASE
            assert response is not None and response.accepted, response
            assert f.recovered and not f.stale and not f.clock_fault, (row.step, f)
            assert d.state is ArbiterState.NOMINAL
        if before is ArbiterState.MINIMAL_RISK and d.state is ArbiterState.MANUAL:
            assert row.step.operator is OperatorRequest.TAKEOVER
        if before is ArbiterState.MANUAL and d.state is not ArbiterState.MANUAL:
            assert row.step.operator is OperatorRequest.RELEASE
        # liveness: a release that the rules allow is not refused
        if (
            row.step.operator is OperatorRequest.RELEASE
            and before in NOT_AUTONOMOUS
            and f.recovered
            and not f.clock_fault
        ):
            assert response is not None and response.accepted, (response, f)
        if response is not None and not response.accepted:
            assert response.reason.startswith("release refused")


@PROPERTY_SETTINGS
@given(scripts())
def test_time_going_backwards_never_makes_the_arbiter_less_cautious(
    script: tuple[ArbiterPolicy, list[Step]],
) -> None:
    policy, steps = script
    for prev, row in pairs(run(policy, steps)):
        if not row.facts.clock_back:
            continue
        d = row.decision
        assert d.speed_limit_mps <= prev.decision.speed_limit_mps
        if row.facts.clock_fault:
            assert d.state in NOT_AUTONOMOUS
            assert any(r.startswith("clock fault") for r in d.reasons)
            if row.step.operator is OperatorRequest.RELEASE:
                assert d.operator_response is not None and not d.operator_response.accepted


@PROPERTY_SETTINGS
@given(scripts())
def test_handover_request_times_out_into_minimal_risk(
    script: tuple[ArbiterPolicy, list[Step]],
) -> None:
    policy, steps = script
    since: float | None = None
    for row in run(policy, steps):
        d = row.decision
        if d.state is not ArbiterState.HANDOVER_REQUESTED or row.facts.clock_fault:
            since = None
            continue
        since = row.facts.t_s if since is None else since
        assert row.facts.t_s - since < policy.handover_timeout_s


@settings(PROPERTY_SETTINGS, max_examples=30)
@given(scripts())
def test_same_inputs_give_the_same_outputs(script: tuple[ArbiterPolicy, list[Step]]) -> None:
    policy, steps = script
    first, second = Arbiter(policy), Arbiter(policy)
    decisions = [first.step(s.now_s, s.evidence, s.operator) for s in steps]
    again = [second.step(s.now_s, s.evidence, s.operator) for s in steps]
    assert [d.as_dict() for d in decisions] == [d.as_dict() for d in again]
    assert first.memory == second.memory
