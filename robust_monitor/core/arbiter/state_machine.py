"""The arbiter: a pure, deterministic state machine from evidence to a speed limit.

``advance(policy, memory, now_s, evidence, operator)`` is a pure function: it reads no clock,
draws no random number and mutates nothing; the same inputs always give the same
``(memory, decision)``. ``Arbiter`` is a thin stateful wrapper over it for callers that step one
arbiter (the ROS node, a replay); tests and simulations can use ``advance`` directly to branch.

States and transitions (thresholds, counts and times are ``ArbiterPolicy`` keys)::

    | from                         | to                 | when                                     |
    |------------------------------|--------------------|------------------------------------------|
    | (start)                      | MINIMAL_RISK       | construction: limit 0, not yet released  |
    | NOMINAL                      | DEGRADED           | trigger_frames frames at DEGRADED level  |
    |                              |                    | or worse                                 |
    | NOMINAL, DEGRADED            | HANDOVER_REQUESTED | trigger_frames frames at HANDOVER level  |
    | HANDOVER_REQUESTED           | DEGRADED           | release_frames complete frames better    |
    |                              |                    | than HANDOVER, handover_min_dwell_s in   |
    |                              |                    | state                                    |
    | DEGRADED                     | NOMINAL            | release_frames complete HEALTHY frames,  |
    |                              |                    | degraded_min_dwell_s in state            |
    | HANDOVER_REQUESTED           | MINIMAL_RISK       | handover_timeout_s without a takeover    |
    | NOMINAL, DEGRADED, HANDOVER_ | MINIMAL_RISK       | newest complete evidence older than      |
    | REQUESTED                    |                    | stale_after_s (or none); clock fault     |
    | any                          | MANUAL             | operator TAKEOVER (always accepted)      |
    | MINIMAL_RISK, MANUAL         | NOMINAL            | operator RELEASE, accepted only when     |
    |                              |                    | complete, fresh frames have been HEALTHY |
    |                              |                    | (strict thresholds) for recovery_time_s  |

    | state              | speed limit                                  | gated | handover asked |
    |--------------------|----------------------------------------------|-------|----------------|
    | NOMINAL            | nominal_speed_mps                            | yes   | no             |
    | DEGRADED           | degraded curve at the newest radius          | yes   | no             |
    | HANDOVER_REQUESTED | crawl_speed_mps                              | yes   | yes            |
    | MINIMAL_RISK       | ramp to 0 at max_decel_mps2 from entry speed | yes   | yes            |
    | MANUAL             | 0 (autonomy gets nothing; operator drives)   | no    | no             |

Evidence levels (``EvidenceLevel``): a frame is HANDOVER level when its radius is below the
handover threshold (an abstained certificate counts as radius 0) or its OOD verdict maps to
``handover`` (default: ERROR); DEGRADED when its radius is below the degraded threshold or its
verdict maps to ``degraded`` (default: WARN); HEALTHY otherwise. Thresholds have hysteresis: in
NOMINAL the ``_enter_`` values apply, in DEGRADED the degraded ``_exit_`` value, in every other
state both ``_exit_`` values. A frame is *complete* when it has a certificate and (if
``require_ood_verdict``) a verdict; a missing part is filled from the previous frame, so an
incomplete frame can escalate but never counts as healthy.

Guarantees (each checked by ``test/test_arbiter_properties.py`` over random input sequences):

- The limit is finite and within [0, nominal_speed_mps].
- In NOMINAL, DEGRADED and HANDOVER_REQUESTED the limit is at most what the newest accepted
  frame allows (``ArbiterPolicy.speed_cap_mps``) *at once*, without waiting for the debounce;
  the debounce delays only the state and the handover request.
- The limit rises only on a step that accepts a complete frame below HANDOVER level, by at most
  ``ramp_up_mps2`` times the time since the previous step. So missing, late, invalid, partial or
  abstained evidence, and a step whose clock did not advance, never raise it.
- Invalid evidence (non-finite or negative radius, non-finite stamp, stamp in the future beyond
  ``future_tolerance_s``, not newer than the last accepted, older than ``stale_after_s`` on
  arrival, a verdict of another frame) is rejected: treated like missing evidence and, more
  cautious still, it breaks the healthy run that a release and a de-escalation need.
- If the newest complete evidence is older than ``stale_after_s`` at a step, the state after
  that step is MINIMAL_RISK (or MANUAL, where the operator already drives).
- In MINIMAL_RISK the limit is ``max(0, v0 - max_decel_mps2 * (t - t0))`` (never above the
  previous limit), with ``v0`` the limit when the stop began at ``t0``: a controlled stop.
- Autonomy resumes from MINIMAL_RISK or MANUAL only by an accepted operator RELEASE.
- Time going backwards by more than ``clock_tolerance_s`` (or a non-finite time) is a clock
  fault: the step's evidence is rejected, the limit does not rise, autonomy goes to
  MINIMAL_RISK, and the arbiter re-bases its clock on the new time (stored times shift with it,
  so ages are kept). Smaller steps back are held at the last time (jitter between callbacks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from robust_monitor.core.arbiter.interface import (
    AUTONOMOUS_STATES,
    ArbiterState,
    Decision,
    Evidence,
    OperatorRequest,
    OperatorResponse,
    gates_commands,
    requests_handover,
)
from robust_monitor.core.arbiter.policy import ArbiterPolicy, EvidenceLevel
from robust_monitor.core.certify.certificate import ABSTAIN
from robust_monitor.core.ood.verdict import OodLevel

STAMP_MATCH_TOLERANCE_S = 1e-6
"""How far a verdict's stamp may be from its frame's stamp (float round-off, not latency)."""

_HYSTERESIS_LEVEL = {
    ArbiterState.NOMINAL: EvidenceLevel.HEALTHY,
    ArbiterState.DEGRADED: EvidenceLevel.DEGRADED,
}
"""Which thresholds a state classifies radii with; every other state uses the strictest."""


@dataclass(frozen=True, slots=True)
class ArbiterMemory:
    """Everything the arbiter remembers between steps (times on the arbiter's clock, in s).

    The initial value is MINIMAL_RISK at limit 0 with no evidence: autonomy starts only after
    an operator release that finds healthy evidence for the recovery time.
    """

    state: ArbiterState = ArbiterState.MINIMAL_RISK
    clock_s: float | None = None
    """Time of the latest step (None before the first finite one); never goes backwards except
    by an explicit re-base on a clock fault."""
    state_since_s: float = 0.0
    limit_mps: float = 0.0
    stop_from_mps: float = 0.0
    """MINIMAL_RISK: the limit when the controlled stop began (at ``state_since_s``)."""
    last_stamp_s: float | None = None
    """Stamp of the newest accepted evidence, complete or not."""
    fresh_stamp_s: float | None = None
    """Stamp of the newest accepted complete evidence (what staleness is measured from)."""
    radius_l2: float = 0.0
    """Effective radius of the newest accepted certificate (0 when it abstained)."""
    ood_level: OodLevel = OodLevel.OK
    frame_level: EvidenceLevel = EvidenceLevel.HANDOVER
    """Level of the newest accepted frame (for diagnostics)."""
    frame_cap_mps: float = 0.0
    """The most speed the newest accepted frame allows."""
    speed_radius_l2: float = 0.0
    """Radius the DEGRADED curve is read at (capped when an OOD verdict degrades the frame)."""
    frame_reasons: tuple[str, ...] = ()
    at_least_degraded: int = 0
    """Consecutive accepted frames at DEGRADED level or worse (escalation debounce)."""
    at_least_handover: int = 0
    """Consecutive accepted frames at HANDOVER level."""
    below_degraded: int = 0
    """Consecutive complete frames at HEALTHY level (de-escalation debounce)."""
    below_handover: int = 0
    """Consecutive complete frames better than HANDOVER level."""
    healthy_since_s: float | None = None
    """Stamp of the first frame of the current unbroken run of strictly healthy frames."""
    evidence_clock_s: float | None = None
    """Time of the latest step that accepted evidence (clock, not stamp): a rise of the limit
    is measured from there, so the evidence-free steps between frames (the node's tick) do not
    use up the ramp."""


@dataclass(frozen=True, slots=True)
class _Frame:
    """How one accepted frame was classified (what the rest of the step needs of it)."""

    level: EvidenceLevel
    complete: bool


def advance(
    policy: ArbiterPolicy,
    memory: ArbiterMemory,
    now_s: float,
    evidence: Evidence | None = None,
    operator: OperatorRequest | None = None,
) -> tuple[ArbiterMemory, Decision]:
    """One step of the arbiter at time ``now_s``: the new memory and the step's decision.

    Pure and deterministic. Order within a step: clock check, evidence validation and
    classification, staleness, handover timeout, evidence-driven transitions, the operator
    request, the speed limit. Never raises for any input values (malformed evidence and time
    are faults reported in ``Decision.reasons``).
    """
    events: list[str] = []
    prev_limit = memory.limit_mps
    m, t, dt, clock_fault = _check_clock(policy, memory, now_s, events)

    accepted: bool | None = None
    frame: _Frame | None = None
    previous_evidence_s = m.evidence_clock_s
    if evidence is not None:
        problem = "clock fault" if clock_fault else _validate(policy, m, t, evidence)
        if problem is None:
            accepted = True
            m, frame = _accept(policy, m, t, evidence)
            m = replace(m, evidence_clock_s=t)
        else:
            accepted = False
            events.append(f"evidence rejected: {problem}")
            m = replace(m, below_degraded=0, below_handover=0, healthy_since_s=None)

    age_s = None if m.fresh_stamp_s is None else t - m.fresh_stamp_s
    if age_s is None or age_s > policy.stale_after_s:
        why = "no evidence yet" if age_s is None else _stale_text(policy, age_s)
        events.append(why)
        m = replace(m, healthy_since_s=None)
        if m.state in AUTONOMOUS_STATES:
            m = _enter(m, ArbiterState.MINIMAL_RISK, t, why, events)

    if (
        m.state is ArbiterState.HANDOVER_REQUESTED
        and t - m.state_since_s >= policy.handover_timeout_s
    ):
        why = f"nobody took over within {policy.handover_timeout_s:g} s"
        m = _enter(m, ArbiterState.MINIMAL_RISK, t, why, events)

    if m.state in AUTONOMOUS_STATES:
        m = _transition(policy, m, t, frame is not None and frame.complete, events)

    response = None
    if operator is not None:
        m, response = _operator(policy, m, t, operator, clock_fault, events)

    may_rise = frame is not None and frame.complete and frame.level < EvidenceLevel.HANDOVER
    # Only evidence raises the limit, by ramp_up_mps2 times the time since the previous step
    # that had evidence (at most stale_after_s): ticks in between hold the limit but must not
    # shorten the ramp, or a 20 Hz tick beside a 15 Hz camera would halve the ramp rate.
    rise_dt = dt
    if previous_evidence_s is not None:
        rise_dt = min(max(0.0, t - previous_evidence_s), policy.stale_after_s)
    limit, limit_reason = _limit(policy, m, t, rise_dt, prev_limit, may_rise and not clock_fault)
    m = replace(m, limit_mps=limit)

    reasons = [*events, *m.frame_reasons]
    if limit_reason:
        reasons.append(limit_reason)
    decision = Decision(
        stamp_s=t if m.clock_s is not None else now_s,
        state=m.state,
        speed_limit_mps=limit,
        gated=gates_commands(m.state),
        handover_requested=requests_handover(m.state),
        reasons=tuple(reasons) or (f"{m.state.value} at {limit:.3g} m/s",),
        evidence_accepted=accepted,
        evidence_age_s=None if age_s is None else max(0.0, age_s),
        operator_response=response,
    )
    return m, decision


class Arbiter:
    """Stateful wrapper over ``advance`` for one vehicle: ``step`` it at every tick and frame."""

    def __init__(self, policy: ArbiterPolicy, memory: ArbiterMemory | None = None) -> None:
        self._policy = policy
        self._memory = memory if memory is not None else ArbiterMemory()

    @property
    def policy(self) -> ArbiterPolicy:
        return self._policy

    @property
    def memory(self) -> ArbiterMemory:
        """The current memory (immutable; pass it to ``advance`` to branch)."""
        return self._memory

    @property
    def state(self) -> ArbiterState:
        return self._memory.state

    def step(
        self,
        now_s: float,
        evidence: Evidence | None = None,
        operator: OperatorRequest | None = None,
    ) -> Decision:
        """Advance to ``now_s`` with this step's evidence and operator request, if any."""
        self._memory, decision = advance(self._policy, self._memory, now_s, evidence, operator)
        return decision

    def request(self, now_s: float, request: OperatorRequest) -> tuple[OperatorResponse, Decision]:
        """Answer an operator request at ``now_s`` (a step with no evidence).

        RELEASE is refused, with the reason, while evidence is not healthy for the whole
        recovery time; TAKEOVER is always accepted.
        """
        decision = self.step(now_s, operator=request)
        assert decision.operator_response is not None
        return decision.operator_response, decision


# --- the step's parts ---------------------------------------------------------------------------
def _check_clock(
    policy: ArbiterPolicy, m: ArbiterMemory, now_s: float, events: list[str]
) -> tuple[ArbiterMemory, float, float, bool]:
    """Returns (memory, effective time, elapsed time, clock fault)."""
    finite = isinstance(now_s, int | float) and math.isfinite(now_s)
    if m.clock_s is None:
        if finite:
            return replace(m, clock_s=float(now_s), state_since_s=float(now_s)), now_s, 0.0, False
        events.append(f"clock fault: time {now_s!r} is not a finite number")
        return _fault(m, 0.0, 0.0, events), 0.0, 0.0, True
    if not finite:
        events.append(f"clock fault: time {now_s!r} is not a finite number")
        return _fault(m, m.clock_s, 0.0, events), m.clock_s, 0.0, True
    if now_s >= m.clock_s:
        return replace(m, clock_s=float(now_s)), now_s, now_s - m.clock_s, False
    behind_s = m.clock_s - now_s
    if behind_s <= policy.clock_tolerance_s:
        events.append(f"clock {behind_s:.3g} s behind (within tolerance): held at last time")
        return m, m.clock_s, 0.0, False
    events.append(
        f"clock fault: time went backwards {behind_s:.3g} s ({m.clock_s:.6g} -> {now_s:.6g})"
    )
    return _fault(m, now_s, -behind_s, events), now_s, 0.0, True


def _fault(m: ArbiterMemory, t: float, shift_s: float, events: list[str]) -> ArbiterMemory:
    """A clock fault: re-base stored times by ``shift_s``, break the healthy run, stop autonomy."""

    def shifted(x: float | None) -> float | None:
        return None if x is None else x + shift_s

    m = replace(
        m,
        clock_s=t if m.clock_s is not None else None,
        state_since_s=m.state_since_s + shift_s,
        last_stamp_s=shifted(m.last_stamp_s),
        fresh_stamp_s=shifted(m.fresh_stamp_s),
        healthy_since_s=None,
        evidence_clock_s=None,  # the next rise is measured from the next step, not across a jump
        below_degraded=0,
        below_handover=0,
    )
    if m.state in AUTONOMOUS_STATES:
        m = _enter(m, ArbiterState.MINIMAL_RISK, t, "clock fault", events)
    return m


def _validate(policy: ArbiterPolicy, m: ArbiterMemory, t: float, ev: Evidence) -> str | None:
    """Why ``ev`` cannot be used at time ``t``, or None when it is valid."""
    if not isinstance(ev, Evidence):
        return f"not an Evidence: {type(ev).__name__}"
    stamp = ev.stamp_s
    if not _finite(stamp):
        return f"stamp {stamp!r} is not a finite number"
    if ev.certificate is None and ev.verdict is None:
        return "empty (no certificate, no verdict)"
    if stamp > t + policy.future_tolerance_s:
        return (
            f"stamp {stamp - t:.3g} s in the future (> {policy.future_tolerance_s:g} s tolerance)"
        )
    if t - stamp > policy.stale_after_s:
        return f"late: {_stale_text(policy, t - stamp)}"
    if m.last_stamp_s is not None and stamp <= m.last_stamp_s:
        return f"stamp {stamp:.6g} not newer than the last accepted {m.last_stamp_s:.6g}"
    cert = ev.certificate
    if cert is not None and not (_finite(cert.radius) and cert.radius >= 0.0):
        return f"radius {cert.radius!r} is not a finite number >= 0"
    verdict = ev.verdict
    if verdict is not None:
        try:
            OodLevel(verdict.level)
        except (ValueError, TypeError):
            return f"unknown OOD level {verdict.level!r}"
        if not _finite(verdict.stamp_s) or abs(verdict.stamp_s - stamp) > STAMP_MATCH_TOLERANCE_S:
            return f"verdict stamp {verdict.stamp_s!r} is not the frame stamp {stamp:.6g}"
    return None


def _accept(
    policy: ArbiterPolicy, m: ArbiterMemory, t: float, ev: Evidence
) -> tuple[ArbiterMemory, _Frame]:
    """Classify a valid frame and fold it into the memory (streaks, freshness, healthy run)."""
    cert, verdict = ev.certificate, ev.verdict
    complete = cert is not None and (verdict is not None or not policy.require_ood_verdict)
    reasons: list[str] = []

    if cert is not None:
        abstained = cert.abstained or cert.label == ABSTAIN
        radius = 0.0 if abstained else float(cert.radius)
        if abstained:
            reasons.append("abstained: radius taken as 0")
    else:
        radius = m.radius_l2
        reasons.append(f"no certificate: radius {radius:.3g} kept from the last frame")
    if verdict is not None:
        ood = OodLevel(verdict.level)
    elif policy.require_ood_verdict:
        ood = m.ood_level
        reasons.append(f"no OOD verdict: {ood.name} kept from the last frame")
    else:
        ood = OodLevel.OK

    current = _HYSTERESIS_LEVEL.get(m.state, EvidenceLevel.HANDOVER)
    radius_level = policy.radius_level(radius, current)
    ood_level = policy.ood_evidence_level(ood)
    level = max(radius_level, ood_level)
    reasons.append(_radius_text(policy, radius, radius_level, current))
    if ood is not OodLevel.OK:
        fired = ", ".join(verdict.reasons) if verdict is not None and verdict.reasons else "-"
        reasons.append(f"OOD {ood.name} ({fired}) -> {ood_level.name.lower()}")

    speed_radius = radius
    if ood_level >= EvidenceLevel.DEGRADED:
        speed_radius = min(radius, policy.degraded_enter_radius_l2)
    cap = policy.speed_cap_mps(level, speed_radius)
    if not complete:  # a partial frame may lower what the last frame allowed, never raise it
        cap = min(cap, m.frame_cap_mps)
        speed_radius = min(speed_radius, m.speed_radius_l2)
    strict = max(policy.radius_level(radius, EvidenceLevel.HANDOVER), ood_level)
    healthy = complete and strict is EvidenceLevel.HEALTHY

    stamp = float(ev.stamp_s)
    healthy_since = None
    if healthy:
        unbroken = (
            m.healthy_since_s is not None
            and m.fresh_stamp_s is not None
            and stamp - m.fresh_stamp_s <= policy.stale_after_s
        )
        healthy_since = m.healthy_since_s if unbroken else stamp
    m = replace(
        m,
        last_stamp_s=stamp,
        fresh_stamp_s=stamp if complete else m.fresh_stamp_s,
        radius_l2=radius,
        ood_level=ood,
        frame_level=level,
        frame_cap_mps=cap,
        speed_radius_l2=speed_radius,
        frame_reasons=tuple(reasons),
        at_least_degraded=m.at_least_degraded + 1 if level >= EvidenceLevel.DEGRADED else 0,
        at_least_handover=m.at_least_handover + 1 if level >= EvidenceLevel.HANDOVER else 0,
        below_degraded=m.below_degraded + 1 if complete and level < EvidenceLevel.DEGRADED else 0,
        below_handover=m.below_handover + 1 if complete and level < EvidenceLevel.HANDOVER else 0,
        healthy_since_s=healthy_since,
    )
    return m, _Frame(level, complete)


def _transition(
    policy: ArbiterPolicy, m: ArbiterMemory, t: float, complete_frame: bool, events: list[str]
) -> ArbiterMemory:
    """Evidence-driven moves between NOMINAL, DEGRADED and HANDOVER_REQUESTED.

    Escalation needs only the debounce; de-escalation also needs the dwell time and happens only
    on a step that accepted a complete frame (so only fresh evidence improves anything).
    """
    state, dwell_s = m.state, t - m.state_since_s
    trigger, release = policy.trigger_frames, policy.release_frames
    if state is not ArbiterState.HANDOVER_REQUESTED and m.at_least_handover >= trigger:
        why = f"{m.at_least_handover} frames at handover level"
        return _enter(m, ArbiterState.HANDOVER_REQUESTED, t, why, events)
    if state is ArbiterState.NOMINAL and m.at_least_degraded >= trigger:
        why = f"{m.at_least_degraded} frames at degraded level"
        return _enter(m, ArbiterState.DEGRADED, t, why, events)
    if not complete_frame:
        return m
    if (
        state is ArbiterState.HANDOVER_REQUESTED
        and m.below_handover >= release
        and dwell_s >= policy.handover_min_dwell_s
    ):
        why = f"{m.below_handover} frames better than handover level, {dwell_s:.3g} s in state"
        return _enter(m, ArbiterState.DEGRADED, t, why, events)
    if (
        state is ArbiterState.DEGRADED
        and m.below_degraded >= release
        and dwell_s >= policy.degraded_min_dwell_s
    ):
        why = f"{m.below_degraded} healthy frames, {dwell_s:.3g} s in state"
        return _enter(m, ArbiterState.NOMINAL, t, why, events)
    return m


def _operator(
    policy: ArbiterPolicy,
    m: ArbiterMemory,
    t: float,
    request: OperatorRequest,
    clock_fault: bool,
    events: list[str],
) -> tuple[ArbiterMemory, OperatorResponse]:
    if request is OperatorRequest.TAKEOVER:
        if m.state is ArbiterState.MANUAL:
            reason = "operator takeover: already MANUAL"
        else:
            reason = "operator takeover"
            m = _enter(m, ArbiterState.MANUAL, t, reason, events)
        events.append(reason)
        return m, OperatorResponse(request, True, reason)
    if request is not OperatorRequest.RELEASE:
        reason = f"unknown operator request {request!r}"
        events.append(reason)
        return m, OperatorResponse(request, False, reason)
    problem = None
    if m.state not in (ArbiterState.MINIMAL_RISK, ArbiterState.MANUAL):
        problem = f"nothing to release: state is {m.state.value}"
    elif clock_fault:
        problem = "clock fault at this step"
    else:
        problem = _recovery_problem(policy, m, t)
    if problem is not None:
        reason = f"release refused: {problem}"
        events.append(reason)
        return m, OperatorResponse(request, False, reason)
    assert m.healthy_since_s is not None
    reason = (
        f"release accepted: evidence healthy for {t - m.healthy_since_s:.3g} s "
        f">= {policy.recovery_time_s:g} s"
    )
    m = _enter(m, ArbiterState.NOMINAL, t, "operator release", events)
    events.append(reason)
    return m, OperatorResponse(request, True, reason)


def _recovery_problem(policy: ArbiterPolicy, m: ArbiterMemory, t: float) -> str | None:
    """Why autonomy may not resume now, or None when evidence has been healthy long enough."""
    if m.fresh_stamp_s is None:
        return "no evidence yet"
    age_s = t - m.fresh_stamp_s
    if age_s > policy.stale_after_s:
        return _stale_text(policy, age_s)
    if m.healthy_since_s is None:
        detail = "; ".join(m.frame_reasons) or "newest frame not healthy"
        return f"evidence not healthy ({detail}); needs radius >= {policy.r_recover:g}, OOD OK"
    healthy_s = t - m.healthy_since_s
    if healthy_s < policy.recovery_time_s:
        return (
            f"evidence healthy for {max(0.0, healthy_s):.3g} s "
            f"< {policy.recovery_time_s:g} s recovery time"
        )
    return None


def _limit(
    policy: ArbiterPolicy,
    m: ArbiterMemory,
    t: float,
    dt: float,
    prev_mps: float,
    may_rise: bool,
) -> tuple[float, str]:
    """The step's speed limit and, when it is not simply the state's, why."""
    if m.state is ArbiterState.MANUAL:
        return 0.0, "MANUAL: operator drives, commands not gated"
    if m.state is ArbiterState.MINIMAL_RISK:
        ramp = m.stop_from_mps - policy.max_decel_mps2 * max(0.0, t - m.state_since_s)
        limit = _clamp(min(prev_mps, ramp), policy.nominal_speed_mps)
        if limit <= 0.0:
            return 0.0, "stopped"
        return limit, (
            f"controlled stop at {policy.max_decel_mps2:g} m/s^2 from {m.stop_from_mps:.3g} m/s"
        )
    if m.state is ArbiterState.NOMINAL:
        state_cap = policy.nominal_speed_mps
    elif m.state is ArbiterState.DEGRADED:
        state_cap = policy.degraded_speed_mps(m.speed_radius_l2)
    else:
        state_cap = policy.crawl_speed_mps
    target = min(state_cap, m.frame_cap_mps)
    if target <= prev_mps:
        return _clamp(target, policy.nominal_speed_mps), ""
    if may_rise and dt > 0.0:
        limit = _clamp(min(target, prev_mps + policy.ramp_up_mps2 * dt), policy.nominal_speed_mps)
        return limit, "" if limit >= target else (
            f"ramping up to {target:.3g} m/s at {policy.ramp_up_mps2:g} m/s^2"
        )
    return prev_mps, f"holding {prev_mps:.3g} m/s < {target:.3g} m/s until fresh healthy evidence"


# --- helpers ------------------------------------------------------------------------------------
def _enter(
    m: ArbiterMemory, state: ArbiterState, t: float, why: str, events: list[str]
) -> ArbiterMemory:
    events.append(f"{m.state.value} -> {state.value}: {why}")
    return replace(m, state=state, state_since_s=t, stop_from_mps=m.limit_mps)


def _radius_text(
    policy: ArbiterPolicy, radius: float, level: EvidenceLevel, current: EvidenceLevel
) -> str:
    if level is EvidenceLevel.HANDOVER:
        exit_ = current >= EvidenceLevel.HANDOVER
        threshold = policy.handover_exit_radius_l2 if exit_ else policy.handover_enter_radius_l2
        return f"radius {radius:.3g} < {threshold:g} (handover {'exit' if exit_ else 'enter'})"
    exit_ = current >= EvidenceLevel.DEGRADED
    threshold = policy.degraded_exit_radius_l2 if exit_ else policy.degraded_enter_radius_l2
    kind = "exit" if exit_ else "enter"
    if level is EvidenceLevel.DEGRADED:
        return f"radius {radius:.3g} < {threshold:g} (degraded {kind})"
    return f"radius {radius:.3g} >= {threshold:g} (healthy)"


def _stale_text(policy: ArbiterPolicy, age_s: float) -> str:
    return f"evidence stale {age_s:.3g} s > {policy.stale_after_s:g} s"


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _clamp(value: float, high: float) -> float:
    if not math.isfinite(value):
        return 0.0
    return min(max(value, 0.0), high)
