"""Scenario metrics: hand-computed timelines, an arbiter run end to end, and invariances."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robust_monitor.core.arbiter import (
    Arbiter,
    ArbiterPolicy,
    ArbiterState,
    Evidence,
    OperatorRequest,
    TimelineSample,
    scenario_metrics,
    timeline_from_decisions,
)
from robust_monitor.core.certify.certificate import Certificate
from robust_monitor.core.errors import ConfigError
from robust_monitor.core.ood.verdict import OodLevel, OodVerdict

N, D, H, MR, MAN = (
    ArbiterState.NOMINAL,
    ArbiterState.DEGRADED,
    ArbiterState.HANDOVER_REQUESTED,
    ArbiterState.MINIMAL_RISK,
    ArbiterState.MANUAL,
)


@pytest.fixture
def story() -> list[TimelineSample]:
    """Nominal, a hazard at 1.5-5 s: slow, degrade, hand over, stop; MANUAL; release at 7.9 s."""
    rows: list[tuple[float, ArbiterState, float]] = [
        (0.0, N, 10.0),
        (1.0, N, 10.0),
        (2.0, N, 6.0),
        (2.2, D, 6.0),
        (3.0, H, 1.0),
        (4.0, MR, 1.0),
        (4.5, MR, 0.0),
        (6.0, MAN, 0.0),
        (8.0, N, 0.0),
        (9.0, N, 5.0),
        (10.0, N, 10.0),
        (12.0, N, 10.0),
    ]
    return [TimelineSample(*row) for row in rows]


def test_latencies_follow_their_definitions(story: list[TimelineSample]) -> None:
    m = scenario_metrics(story, [(1.5, 5.0)], nominal_speed_mps=10.0, release_times_s=[7.9])
    (h,) = m.hazards
    assert (h.onset_s, h.end_s) == (1.5, 5.0)
    assert h.time_to_slow_s == pytest.approx(0.5)
    assert h.time_to_degrade_s == pytest.approx(0.7)
    assert h.time_to_request_handover_s == pytest.approx(1.5)
    assert h.time_to_stop_s == pytest.approx(2.5)  # MINIMAL_RISK begins
    assert h.time_to_standstill_s == pytest.approx(3.0)  # the limit reaches 0
    assert h.time_to_resume_s == pytest.approx(0.1)  # from the release at 7.9 s


def test_resume_is_measured_from_the_hazard_end_without_a_release(
    story: list[TimelineSample],
) -> None:
    m = scenario_metrics(story, [(1.5, 5.0)], nominal_speed_mps=10.0)
    assert m.hazards[0].time_to_resume_s == pytest.approx(3.0)  # NOMINAL again at 8 s


def test_false_stop_shares_leave_out_hazards_manual_and_grace(
    story: list[TimelineSample],
) -> None:
    m = scenario_metrics(story, [(1.5, 5.0)], nominal_speed_mps=10.0)
    # counted: [0, 1.5) + [5, 6) + [8, 12) = 6.5 s; stopped [5, 6) + [8, 9); limited + [9, 10)
    assert m.counted_s == pytest.approx(6.5)
    assert m.false_stop_pct == pytest.approx(100 * 2.0 / 6.5)
    assert m.false_limit_pct == pytest.approx(100 * 3.0 / 6.5)
    graced = scenario_metrics(story, [(1.5, 5.0)], nominal_speed_mps=10.0, grace_s=1.0)
    assert graced.counted_s == pytest.approx(5.5)
    assert graced.false_stop_pct == pytest.approx(100 * 1.0 / 5.5)


def test_standstill_uses_vehicle_speed_when_given(story: list[TimelineSample]) -> None:
    speeds = [10, 10, 9, 7, 2, 1.5, 0.8, 0.0, 0.0, 3, 8, 10]
    timeline = [
        (s.t_s, s.state.value, s.speed_limit_mps, v) for s, v in zip(story, speeds, strict=True)
    ]
    m = scenario_metrics(timeline, [(1.5, 5.0)], nominal_speed_mps=10.0)
    assert m.hazards[0].time_to_standstill_s == pytest.approx(4.5)  # speed 0 at 6 s
    assert m.hazards[0].time_to_stop_s == pytest.approx(2.5)


def test_a_response_after_the_next_onset_does_not_count(story: list[TimelineSample]) -> None:
    m = scenario_metrics(story, [(0.2, 0.5), (1.5, 5.0)], nominal_speed_mps=10.0)
    first, second = m.hazards
    assert first.time_to_slow_s is None and first.time_to_stop_s is None
    assert second.time_to_slow_s == pytest.approx(0.5)
    assert m.worst("time_to_stop_s") == math.inf
    assert m.worst("time_to_request_handover_s") == math.inf
    with pytest.raises(ConfigError, match="unknown metric"):
        m.worst("time_to_panic_s")


def test_no_hazards_and_all_manual(story: list[TimelineSample]) -> None:
    m = scenario_metrics(story, [], nominal_speed_mps=10.0)
    assert m.hazards == () and m.worst("time_to_stop_s") is None
    assert m.counted_s == pytest.approx(10.0)  # 12 s minus 2 s of MANUAL
    manual = scenario_metrics([(0.0, "MANUAL", 0.0), (5.0, "MANUAL", 0.0)], [], nominal_speed_mps=1)
    assert manual.false_stop_pct is None and manual.false_limit_pct is None


def test_an_operator_takeover_is_not_an_arbiter_reaction() -> None:
    timeline = [(0.0, N, 10.0), (1.0, MAN, 0.0), (3.0, MAN, 0.0)]
    (h,) = scenario_metrics(timeline, [(0.5, 2.0)], nominal_speed_mps=10.0).hazards
    assert h.time_to_degrade_s is None and h.time_to_request_handover_s is None
    assert h.time_to_slow_s is None and h.time_to_stop_s is None  # MANUAL is not gated


def test_hazard_outside_the_timeline_has_no_latencies(story: list[TimelineSample]) -> None:
    (h,) = scenario_metrics(story, [(20.0, 21.0)], nominal_speed_mps=10.0).hazards
    assert h.time_to_slow_s is None and h.time_to_resume_s is None


@pytest.mark.parametrize(
    ("timeline", "hazards", "match"),
    [
        ([], [], "at least one sample"),
        ([(1.0, "NOMINAL", 1.0), (0.5, "NOMINAL", 1.0)], [], "goes back in time"),
        ([(0.0, "CRUISING", 1.0)], [], "unknown state 'CRUISING'"),
        ([(0.0, "NOMINAL", -1.0)], [], "negative speed limit"),
        ([(math.nan, "NOMINAL", 1.0)], [], "finite time"),
        ([(0.0, "NOMINAL", 1.0, 1.0), (1.0, "NOMINAL", 1.0)], [], "every timeline sample"),
        ([(0.0, "NOMINAL")], [], "must be a TimelineSample"),
        ([(0.0, "NOMINAL", 1.0)], [(2.0, 1.0)], "onset <= end"),
        ([(0.0, "NOMINAL", 1.0)], [(0.0, 2.0), (1.0, 3.0)], "overlap"),
    ],
)
def test_bad_scenarios_raise_config_error(timeline: Any, hazards: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        scenario_metrics(timeline, hazards, nominal_speed_mps=1.0)


# --- end to end with the arbiter -----------------------------------------------------------------
def _frame(t: float, radius: float) -> Evidence:
    cert = Certificate(3, 0.9, radius, 100, 1000, 0.001, 0.25, False, "cpu", 4.0)
    return Evidence(t, cert, OodVerdict(OodLevel.OK, stamp_s=t))


def test_metrics_of_an_arbiter_run() -> None:
    policy = ArbiterPolicy(recovery_time_s=1.0)
    arbiter, decisions, tick = Arbiter(policy), [], 0.1
    for i in range(300):  # 30 s at 10 Hz; hazard (radius 0.05) from 15 s to 17 s
        t = round(i * tick, 6)
        radius = 0.05 if 15.0 <= t < 17.0 else 0.6
        release = OperatorRequest.RELEASE if t == 1.5 else None
        decisions.append(arbiter.step(t, _frame(t, radius), release))
    m = scenario_metrics(timeline_from_decisions(decisions), [(15.0, 17.0)], nominal_speed_mps=10)
    (h,) = m.hazards
    assert h.time_to_slow_s == 0.0  # the limit drops with the first bad frame
    assert h.time_to_request_handover_s == pytest.approx(tick)  # trigger_frames = 2
    assert h.time_to_degrade_s == pytest.approx(tick)
    assert h.time_to_stop_s is None  # the hazard ended before the handover time-out
    # 5 better frames (and 2 s dwell) -> DEGRADED at 17.4 s; 1 s dwell there -> NOMINAL at 18.4 s
    assert h.time_to_resume_s == pytest.approx(1.4, abs=1e-6)
    # before the hazard the only limited time is start-up and the ramp after the release
    assert m.false_stop_pct is not None and m.false_stop_pct > 0.0
    assert m.false_limit_pct is not None and m.false_limit_pct > m.false_stop_pct


def test_timeline_from_decisions_checks_vehicle_speeds() -> None:
    decision = Arbiter(ArbiterPolicy()).step(0.0)
    (sample,) = timeline_from_decisions([decision], [0.0])
    assert sample == TimelineSample(0.0, MR, 0.0, 0.0)
    with pytest.raises(ConfigError, match="one vehicle speed per decision"):
        timeline_from_decisions([decision], [])


# --- invariance ----------------------------------------------------------------------------------
samples = st.lists(
    st.tuples(
        st.floats(0.0, 2.0),
        st.sampled_from(list(ArbiterState)),
        st.sampled_from([0.0, 0.5, 5.0, 10.0]),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(samples, st.floats(0.0, 20.0), st.floats(0.0, 5.0), st.data())
def test_refining_a_timeline_with_held_values_changes_no_metric(
    rows: list[tuple[float, ArbiterState, float]], onset: float, length: float, data: st.DataObject
) -> None:
    t, timeline = 0.0, []
    for dt, state, limit in rows:
        t += dt
        timeline.append(TimelineSample(t, state, limit))
    i = data.draw(st.integers(0, len(timeline) - 1))
    extra_t = timeline[i].t_s + data.draw(st.floats(0.0, 1.0)) * (
        (timeline[i + 1].t_s if i + 1 < len(timeline) else timeline[i].t_s) - timeline[i].t_s
    )
    refined = [
        *timeline[: i + 1],
        TimelineSample(extra_t, timeline[i].state, timeline[i].speed_limit_mps),
        *timeline[i + 1 :],
    ]
    hazards = [(onset, onset + length)]
    a = scenario_metrics(
        timeline, hazards, nominal_speed_mps=10.0, release_times_s=[onset + length]
    )
    b = scenario_metrics(refined, hazards, nominal_speed_mps=10.0, release_times_s=[onset + length])
    assert a.hazards == b.hazards
    assert a.counted_s == pytest.approx(b.counted_s)
    for x, y in ((a.false_stop_pct, b.false_stop_pct), (a.false_limit_pct, b.false_limit_pct)):
        assert (x is None) == (y is None) and (x is None or x == pytest.approx(y))
        assert x is None or 0.0 <= x <= 100.0
    for h in a.hazards:
        for name in ("time_to_slow_s", "time_to_stop_s", "time_to_resume_s"):
            value = getattr(h, name)
            assert value is None or value >= 0.0
