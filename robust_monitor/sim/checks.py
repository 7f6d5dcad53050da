"""Judging a simulation against its scenario's expectations (definitions: ``scenario.py``).

Each check returns an ``ExpectationResult`` with what was observed, so a failure says by how
much (the latency that was too long, the lowest limit and when, the distance).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from robust_monitor.core.arbiter import ArbiterPolicy, ArbiterState
from robust_monitor.sim.engine import SimRun, SimSample
from robust_monitor.sim.scenario import STATE_ORDER, Expectation, reference_time

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class ExpectationResult:
    """The verdict on one expectation."""

    index: int
    type: str
    description: str
    passed: bool
    observed: str


def _matches(state: str, or_worse: bool) -> Callable[[SimSample], bool]:
    wanted = ArbiterState(state)
    if not or_worse:
        return lambda s: s.state is wanted
    rank = STATE_ORDER.index(wanted)
    allowed = frozenset(STATE_ORDER[rank:])
    return lambda s: s.state in allowed


def _window(samples: Sequence[SimSample], start: float, end: float) -> list[SimSample]:
    """Samples that hold at some time in ``[start, end]`` (zero-order hold)."""
    held = [s for s in samples if s.t_s <= start]
    inside = [s for s in samples if start < s.t_s <= end]
    return ([held[-1]] if held else []) + inside


def _first(
    samples: Sequence[SimSample], ref: float, pred: Callable[[SimSample], bool]
) -> float | None:
    for s in _window(samples, ref, math.inf):
        if pred(s):
            return max(0.0, s.t_s - ref)
    return None


def evaluate(run: SimRun, policy: ArbiterPolicy) -> list[ExpectationResult]:
    """Every expectation of ``run.scenario``, in file order."""
    events = {"takeover": run.takeovers_s, "release": run.releases_s}
    out = []
    for i, exp in enumerate(run.scenario.expectations):
        passed, observed = _check(run, policy, exp, events)
        out.append(ExpectationResult(i, exp.type, exp.describe(), passed, observed))
    return out


def _check(
    run: SimRun,
    policy: ArbiterPolicy,
    exp: Expectation,
    events: dict[str, list[float]],
) -> tuple[bool, str]:
    p, samples = exp.params, run.samples
    if exp.type in ("reach_state", "stop_within"):
        ref = reference_time(p["after"], run.scenario, events)
        if ref is None:
            return False, f"no {p['after']} happened"
        if exp.type == "reach_state":
            pred = _matches(p["state"], p["or_worse"])
        else:
            tol = float(p["tolerance_mps"])

            def pred(s: SimSample) -> bool:
                return s.vehicle_speed_mps <= tol + _EPS

        latency = _first(samples, ref, pred)
        if latency is None:
            return False, f"never after {ref:g} s"
        return latency <= p["within_s"] + _EPS, f"after {latency:.2f} s (at {ref + latency:.2f} s)"
    if exp.type == "never_state":
        pred = _matches(p["state"], p["or_worse"])
        hits = [s for s in _window(samples, p["from_s"], p["to_s"]) if pred(s)]
        if hits:
            return False, f"{hits[0].state.value} at {hits[0].t_s:.2f} s"
        return True, "never"
    if exp.type == "min_limit":
        floor = policy.nominal_speed_mps if p["min_mps"] is None else p["min_mps"]
        window = _window(samples, p["from_s"], p["to_s"])
        low = min(window, key=lambda s: s.speed_limit_mps)
        return (
            low.speed_limit_mps >= floor - 1e-6,
            f"lowest limit {low.speed_limit_mps:.2f} m/s at {low.t_s:.2f} s ({low.state.value})",
        )
    # max_distance_degraded
    d = run.distance_degraded_m
    return d <= p["max_m"] + _EPS, f"{d:.1f} m"
