"""The closed loop: camera -> ``FramePipeline`` -> ``Arbiter`` -> vehicle -> camera, on sim time.

Clock: simulated seconds from 0. Frames at ``k / frame_rate_hz``; between frames the arbiter is
stepped without evidence at ``tick_hz`` (half a tick period out of phase, as the replay does),
so staleness and the limit's ramps behave as on the vehicle. Certification takes no simulated
time (evidence is stepped at its frame's stamp).

Start: the scenario begins mid-drive with autonomy engaged: the arbiter's memory is NOMINAL at
the nominal limit (as after an accepted release and the ramp-up; a fresh arbiter would start in
MINIMAL_RISK and need ``recovery_time_s`` of frames plus the ramp), and the first step carries
frame 0's evidence. Everything after that is the unmodified state machine.

Vehicle: while commands are gated it follows ``min(cruise_speed_mps, speed limit)``; in MANUAL
the operator drives at ``manual_speed_mps``. Frames are rendered at the vehicle's odometer, so
a stop stops the scene.

Operator (``OperatorModel``), acting only through ``Arbiter.request``: TAKEOVER once the arbiter
has asked for a handover continuously for ``takeover_after_s``; RELEASE at every frame, while
MANUAL or MINIMAL_RISK, once no effect has been active for ``release_after_clean_s`` (the
arbiter accepts it after ``recovery_time_s`` of healthy evidence).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from robust_monitor.core.arbiter import (
    Arbiter,
    ArbiterMemory,
    ArbiterPolicy,
    ArbiterState,
    Decision,
    Evidence,
    OperatorRequest,
)
from robust_monitor.core.arbiter.policy import EvidenceLevel
from robust_monitor.core.pipeline import FramePipeline, FrameResult
from robust_monitor.sim.camera import SimCamera
from robust_monitor.sim.scenario import OperatorModel, Scenario
from robust_monitor.sim.vehicle import Vehicle

_DEGRADED_DRIVING = frozenset(
    {ArbiterState.DEGRADED, ArbiterState.HANDOVER_REQUESTED, ArbiterState.MINIMAL_RISK}
)


@dataclass(frozen=True, slots=True)
class SimFrame:
    """One certified frame: when, from where, what the pipeline and the arbiter said."""

    index: int
    t_s: float
    odometer_m: float
    result: FrameResult
    decision: Decision
    pipeline_ms: float


@dataclass(frozen=True, slots=True)
class SimSample:
    """The loop after one arbiter step (times of states are a zero-order hold of these)."""

    t_s: float
    state: ArbiterState
    speed_limit_mps: float
    vehicle_speed_mps: float
    odometer_m: float


@dataclass
class SimRun:
    """Everything one simulation produced."""

    scenario: Scenario
    policy: ArbiterPolicy
    tick_hz: float
    frames: list[SimFrame] = field(default_factory=list)
    steps: list[Decision] = field(default_factory=list)
    samples: list[SimSample] = field(default_factory=list)
    """One per entry of ``steps``: the vehicle at that decision."""
    takeovers_s: list[float] = field(default_factory=list)
    releases_s: list[float] = field(default_factory=list)
    release_requests: int = 0
    dropped_frames: int = 0
    distance_m: float = 0.0
    distance_degraded_m: float = 0.0
    wall_s: float = 0.0


def engaged_memory(policy: ArbiterPolicy) -> ArbiterMemory:
    """Arbiter memory of autonomy driving at the nominal limit on healthy evidence."""
    return ArbiterMemory(
        state=ArbiterState.NOMINAL,
        limit_mps=policy.nominal_speed_mps,
        frame_level=EvidenceLevel.HEALTHY,
        frame_cap_mps=policy.nominal_speed_mps,
        radius_l2=policy.degraded_exit_radius_l2,
        speed_radius_l2=policy.degraded_exit_radius_l2,
    )


def _times(scenario: Scenario, tick_hz: float) -> list[tuple[float, int | None]]:
    """Step times in order: (t, frame index) for frames, (t, None) for ticks."""
    frames = math.floor(scenario.duration_s * scenario.frame_rate_hz + 1e-9)
    out: list[tuple[float, int | None]] = [(k / scenario.frame_rate_hz, k) for k in range(frames)]
    ticks = math.floor(scenario.duration_s * tick_hz - 0.5 + 1e-9)
    out += [((j + 0.5) / tick_hz, None) for j in range(ticks + 1)]
    out = [(t, k) for t, k in out if t < scenario.duration_s]
    return sorted(out, key=lambda item: (item[0], item[1] is None))


def simulate(
    scenario: Scenario, pipeline: FramePipeline, policy: ArbiterPolicy, tick_hz: float
) -> SimRun:
    """Run ``scenario`` once (see the module docstring); ``pipeline`` must be fresh."""
    vm, op = scenario.vehicle, scenario.operator
    nominal = policy.nominal_speed_mps
    cruise = nominal if vm.cruise_speed_mps is None else vm.cruise_speed_mps
    start = nominal if vm.start_speed_mps is None else vm.start_speed_mps
    vehicle = Vehicle(start, vm.max_accel_mps2, vm.max_decel_mps2)
    camera = SimCamera(scenario, scenario.duration_s * max(cruise, start, 1.0) + 60.0)
    arbiter = Arbiter(policy, engaged_memory(policy))
    run = SimRun(scenario, policy, tick_hz)
    asked_since: float | None = None
    t_prev = 0.0
    target = min(cruise, nominal)
    state = ArbiterState.NOMINAL
    wall0 = time.perf_counter()

    def record(decision: Decision) -> None:
        nonlocal target, state
        run.steps.append(decision)
        run.samples.append(
            SimSample(
                decision.stamp_s,
                decision.state,
                decision.speed_limit_mps,
                vehicle.speed_mps,
                vehicle.odometer_m,
            )
        )
        state = decision.state
        gated = decision.gated
        target = min(cruise, decision.speed_limit_mps) if gated else op.manual_speed_mps

    for t, index in _times(scenario, tick_hz):
        travelled = vehicle.advance(t - t_prev, target)
        run.distance_m += travelled
        if state in _DEGRADED_DRIVING:
            run.distance_degraded_m += travelled
        t_prev = t
        frame = None
        if index is not None:
            image = camera.frame(index, t, vehicle.odometer_m)
            if image is None:
                run.dropped_frames += 1
            else:
                began = time.perf_counter()
                result = pipeline.process(image, t)
                ms = (time.perf_counter() - began) * 1e3
                decision = arbiter.step(t, Evidence(t, result.certificate, result.verdict))
                frame = (index, result, ms)
                record(decision)
        if frame is None:
            record(arbiter.step(t))
        # --- the operator --------------------------------------------------------------------
        decision = run.steps[-1]
        if decision.handover_requested:
            asked_since = t if asked_since is None else asked_since
        else:
            asked_since = None
        if takeover_due(op, asked_since, decision, t):
            _, after = arbiter.request(t, OperatorRequest.TAKEOVER)
            run.takeovers_s.append(t)
            asked_since = None
            record(after)
        if frame is not None and release_due(scenario, run.steps[-1].state, t):
            run.release_requests += 1
            answer, after = arbiter.request(t, OperatorRequest.RELEASE)
            if answer.accepted:
                run.releases_s.append(t)
                record(after)
        if frame is not None:
            k, result, ms = frame
            run.frames.append(SimFrame(k, t, vehicle.odometer_m, result, run.steps[-1], ms))
    # Drive on to the end of the scenario with the last target.
    travelled = vehicle.advance(scenario.duration_s - t_prev, target)
    run.distance_m += travelled
    if state in _DEGRADED_DRIVING:
        run.distance_degraded_m += travelled
    run.wall_s = time.perf_counter() - wall0
    return run


def takeover_due(
    op: OperatorModel, asked_since_s: float | None, decision: Decision, t_s: float
) -> bool:
    """The operator model takes over at ``t_s``: a handover asked for continuously since
    ``asked_since_s`` for at least ``takeover_after_s`` (and not already MANUAL)."""
    return (
        op.takeover_after_s is not None
        and asked_since_s is not None
        and decision.state is not ArbiterState.MANUAL
        and t_s - asked_since_s >= op.takeover_after_s - 1e-9
    )


def release_due(scenario: Scenario, state: ArbiterState, t_s: float) -> bool:
    """The operator model asks for a release at a frame at ``t_s``: MANUAL or MINIMAL_RISK, and
    no effect active for ``release_after_clean_s``."""
    op = scenario.operator
    return (
        op.release_after_clean_s is not None
        and state in (ArbiterState.MANUAL, ArbiterState.MINIMAL_RISK)
        and _clean_for(scenario, t_s) >= op.release_after_clean_s - 1e-9
    )


def _clean_for(scenario: Scenario, t_s: float) -> float:
    """Seconds since the last effect ended (0 while one is active; t_s when none has been)."""
    if any(e.active(t_s) for e in scenario.effects):
        return 0.0
    ended = [e.end_s for e in scenario.effects if e.end_s <= t_s]
    return t_s - max(ended) if ended else t_s
