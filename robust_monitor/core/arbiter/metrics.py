"""Scenario metrics for the arbiter, in the style of Nav2 collision monitor's bag tests.

A *timeline* is what the arbiter did: samples ``(t_s, state, speed_limit_mps[,
vehicle_speed_mps])`` in time order (``timeline_from_decisions`` makes one from decisions). A
*scenario* says when a hazard was present (intervals ``[onset_s, end_s)``) and, optionally, when
the operator released. ``scenario_metrics`` compares the two; pure, no I/O, used by tests, the
replay tools and the simulation.

Definitions (all times in seconds):

- The timeline is a zero-order hold: sample ``i`` holds over ``[t_i, t_(i+1))``; the last sample
  holds only at its own instant. "The first time at or after ``ref`` that P holds" is ``ref``
  itself when the sample holding at ``ref`` satisfies P, else the time of the first later
  sample that does; searches stop at the *window end* (below). A metric is None when P never
  holds in its window.
- For hazard ``k`` the window is ``[onset_k, onset_(k+1))`` (the next hazard's onset, exclusive,
  or the end of the timeline, inclusive).
- ``time_to_slow_s``: onset -> the limit is below nominal (by more than the tolerance) while
  commands are gated.
- ``time_to_degrade_s``: onset -> the state is DEGRADED, HANDOVER_REQUESTED or MINIMAL_RISK.
- ``time_to_request_handover_s``: onset -> the arbiter asks for a takeover (HANDOVER_REQUESTED
  or MINIMAL_RISK, as ``Decision.handover_requested``).
- ``time_to_stop_s``: onset -> the arbiter commands a stop: MINIMAL_RISK, or a limit within the
  tolerance of 0 while gated.
- ``time_to_standstill_s``: onset -> the vehicle speed is within the tolerance of 0 (when the
  timeline carries vehicle speeds; otherwise a limit within the tolerance of 0 while gated).
- ``time_to_resume_s``: reference -> the state is NOMINAL, where the reference is the first
  operator release in ``[end_k, onset_(k+1))`` if there is one, else ``end_k``; the window is
  ``[reference, onset_(k+1))``. 0 when the arbiter is NOMINAL at the reference.
- ``false_stop_pct`` / ``false_limit_pct``: the share, in percent, of the *counted* time that the
  arbiter commanded a stop (as for ``time_to_stop_s``) / a limit below nominal (as for
  ``time_to_slow_s``). Counted time is the timeline's span minus every ``[onset, end + grace_s)``
  and minus the time spent in MANUAL (the arbiter gates nothing then). None when no time counts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from robust_monitor.core.arbiter.interface import (
    ArbiterState,
    Decision,
    gates_commands,
    requests_handover,
)
from robust_monitor.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TimelineSample:
    """What the arbiter said at time ``t_s`` (and, if known, how fast the vehicle went)."""

    t_s: float
    state: ArbiterState
    speed_limit_mps: float
    vehicle_speed_mps: float | None = None


SampleLike = (
    TimelineSample
    | tuple[float, ArbiterState | str, float]
    | tuple[float, ArbiterState | str, float, float | None]
)
"""A sample, or a plain tuple ``(t_s, state or state name, speed_limit_mps[, vehicle_mps])``."""


@dataclass(frozen=True, slots=True)
class HazardMetrics:
    """Latencies of the arbiter's response to one hazard (None: never in the window)."""

    onset_s: float
    end_s: float
    time_to_slow_s: float | None
    time_to_degrade_s: float | None
    time_to_request_handover_s: float | None
    time_to_stop_s: float | None
    time_to_standstill_s: float | None
    time_to_resume_s: float | None


@dataclass(frozen=True, slots=True)
class ScenarioMetrics:
    """All metrics of one scenario (see the module docstring for exact definitions)."""

    hazards: tuple[HazardMetrics, ...]
    counted_s: float
    """Hazard-free, non-MANUAL time the false-stop shares are taken over."""
    false_stop_pct: float | None
    false_limit_pct: float | None

    def worst(self, metric: str) -> float | None:
        """Largest value of a ``HazardMetrics`` latency over all hazards.

        ``math.inf`` when some hazard never got the response; None when there is no hazard.
        """
        if metric not in _LATENCIES:
            raise ConfigError(f"unknown metric {metric!r}; allowed: {list(_LATENCIES)}")
        if not self.hazards:
            return None
        values = [getattr(h, metric) for h in self.hazards]
        return max(math.inf if v is None else float(v) for v in values)


_LATENCIES = (
    "time_to_slow_s",
    "time_to_degrade_s",
    "time_to_request_handover_s",
    "time_to_stop_s",
    "time_to_standstill_s",
    "time_to_resume_s",
)
_REACTING = frozenset(
    {ArbiterState.DEGRADED, ArbiterState.HANDOVER_REQUESTED, ArbiterState.MINIMAL_RISK}
)


def timeline_from_decisions(
    decisions: Iterable[Decision], vehicle_speeds_mps: Sequence[float] | None = None
) -> tuple[TimelineSample, ...]:
    """A timeline from the arbiter's decisions (``Decision.stamp_s`` is the sample time)."""
    decided = list(decisions)
    if vehicle_speeds_mps is not None and len(vehicle_speeds_mps) != len(decided):
        raise ConfigError(
            f"need one vehicle speed per decision: {len(vehicle_speeds_mps)} for {len(decided)}"
        )
    return tuple(
        TimelineSample(
            d.stamp_s,
            d.state,
            d.speed_limit_mps,
            None if vehicle_speeds_mps is None else float(vehicle_speeds_mps[i]),
        )
        for i, d in enumerate(decided)
    )


def scenario_metrics(
    timeline: Sequence[SampleLike],
    hazards: Sequence[tuple[float, float]],
    *,
    nominal_speed_mps: float,
    release_times_s: Sequence[float] = (),
    stop_tolerance_mps: float = 1e-3,
    grace_s: float = 0.0,
) -> ScenarioMetrics:
    """Metrics of one scenario: per-hazard latencies and false-stop shares.

    ``hazards`` are ``(onset_s, end_s)`` intervals, ``onset <= end``, not overlapping (any
    order). ``stop_tolerance_mps`` is how close to 0 a limit or speed counts as stopped (and how
    far below nominal a limit must be to count as limited). ``grace_s`` after each hazard's end
    is left out of the false-stop shares (recovery needs an operator release and time). Raises
    ``ConfigError`` for an empty or unordered timeline, non-finite values, bad intervals or
    negative tolerances.
    """
    samples = _normalise(timeline)
    intervals = _check_intervals(hazards)
    releases = sorted(_finite_list(release_times_s, "release_times_s"))
    for name, value in (
        ("nominal_speed_mps", nominal_speed_mps),
        ("stop_tolerance_mps", stop_tolerance_mps),
        ("grace_s", grace_s),
    ):
        if not (math.isfinite(value) and value >= 0.0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    has_speed = samples[0].vehicle_speed_mps is not None
    tol = stop_tolerance_mps

    def slowed(s: TimelineSample) -> bool:
        return gates_commands(s.state) and s.speed_limit_mps < nominal_speed_mps - tol

    def stopping(s: TimelineSample) -> bool:
        return s.state is ArbiterState.MINIMAL_RISK or (
            gates_commands(s.state) and s.speed_limit_mps <= tol
        )

    def standstill(s: TimelineSample) -> bool:
        if has_speed:
            return abs(s.vehicle_speed_mps or 0.0) <= tol
        return gates_commands(s.state) and s.speed_limit_mps <= tol

    per_hazard = []
    for k, (onset, end) in enumerate(intervals):
        window_end = intervals[k + 1][0] if k + 1 < len(intervals) else math.inf
        reference = next((r for r in releases if end <= r < window_end), end)

        def first(
            ref: float, predicate: Callable[[TimelineSample], bool], until: float = window_end
        ) -> float | None:
            return _first_time(samples, ref, until, predicate)

        per_hazard.append(
            HazardMetrics(
                onset_s=onset,
                end_s=end,
                time_to_slow_s=first(onset, slowed),
                time_to_degrade_s=first(onset, lambda s: s.state in _REACTING),
                time_to_request_handover_s=first(onset, lambda s: requests_handover(s.state)),
                time_to_stop_s=first(onset, stopping),
                time_to_standstill_s=first(onset, standstill),
                time_to_resume_s=first(reference, lambda s: s.state is ArbiterState.NOMINAL),
            )
        )

    excluded = [(onset, end + grace_s) for onset, end in intervals]
    counted = stopped = limited = 0.0
    for here, nxt in itertools.pairwise(samples):
        if here.state is ArbiterState.MANUAL:
            continue
        free = _free_length(here.t_s, nxt.t_s, excluded)
        counted += free
        stopped += free if stopping(here) else 0.0
        limited += free if slowed(here) else 0.0
    return ScenarioMetrics(
        hazards=tuple(per_hazard),
        counted_s=counted,
        false_stop_pct=100.0 * (stopped / counted) if counted > 0.0 else None,
        false_limit_pct=100.0 * (limited / counted) if counted > 0.0 else None,
    )


# --- helpers ------------------------------------------------------------------------------------
def _first_time(
    samples: Sequence[TimelineSample],
    ref: float,
    window_end: float,
    predicate: Callable[[TimelineSample], bool],
) -> float | None:
    """Latency from ``ref`` to the first time in ``[ref, window_end)`` at which P holds."""
    if ref > samples[-1].t_s:
        return None  # beyond the timeline: nothing is known
    held = [s for s in samples if s.t_s <= ref]
    if held and predicate(held[-1]):
        return 0.0
    for s in samples:
        if ref < s.t_s < window_end and predicate(s):
            return s.t_s - ref
    return None


def _free_length(a: float, b: float, excluded: Sequence[tuple[float, float]]) -> float:
    """Length of ``[a, b)`` outside every excluded interval (intervals do not overlap)."""
    length = b - a
    for lo, hi in excluded:
        length -= max(0.0, min(b, hi) - max(a, lo))
    return max(0.0, length)


def _normalise(timeline: Sequence[SampleLike]) -> list[TimelineSample]:
    if len(timeline) == 0:
        raise ConfigError("timeline must hold at least one sample")
    samples: list[TimelineSample] = []
    for i, item in enumerate(timeline):
        if isinstance(item, TimelineSample):
            sample = item
        else:
            if not isinstance(item, tuple) or len(item) not in (3, 4):
                raise ConfigError(
                    f"timeline[{i}] must be a TimelineSample or (t_s, state, limit_mps[, speed]),"
                    f" got {item!r}"
                )
            state = item[1]
            if isinstance(state, str):
                try:
                    state = ArbiterState[state]
                except KeyError:
                    raise ConfigError(
                        f"timeline[{i}]: unknown state {state!r}; allowed: "
                        f"{[s.value for s in ArbiterState]}"
                    ) from None
            speed = item[3] if len(item) == 4 else None
            sample = TimelineSample(float(item[0]), state, float(item[2]), speed)
        if not (math.isfinite(sample.t_s) and math.isfinite(sample.speed_limit_mps)):
            raise ConfigError(f"timeline[{i}] must have a finite time and limit, got {sample}")
        if sample.speed_limit_mps < 0.0:
            raise ConfigError(f"timeline[{i}] has a negative speed limit: {sample}")
        if samples and sample.t_s < samples[-1].t_s:
            raise ConfigError(
                f"timeline[{i}] goes back in time ({samples[-1].t_s} -> {sample.t_s})"
            )
        speed = sample.vehicle_speed_mps
        if speed is not None and not math.isfinite(speed):
            raise ConfigError(f"timeline[{i}] has a non-finite vehicle speed: {sample}")
        samples.append(sample)
    if len({s.vehicle_speed_mps is None for s in samples}) > 1:
        raise ConfigError("either every timeline sample has a vehicle speed or none has")
    return samples


def _check_intervals(hazards: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    intervals: list[tuple[float, float]] = []
    for i, item in enumerate(hazards):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ConfigError(f"hazards[{i}] must be (onset_s, end_s), got {item!r}")
        onset, end = float(item[0]), float(item[1])
        if not (math.isfinite(onset) and math.isfinite(end) and onset <= end):
            raise ConfigError(f"hazards[{i}] must be finite with onset <= end, got {item!r}")
        intervals.append((onset, end))
    intervals.sort()
    for (_, end), (onset, _) in itertools.pairwise(intervals):
        if onset < end:
            raise ConfigError(
                f"hazard intervals overlap: one ends at {end}, the next begins {onset}"
            )
    return intervals


def _finite_list(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{name} must be finite numbers, got {list(values)!r}")
    return out
