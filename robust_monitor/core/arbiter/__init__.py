"""The arbiter: from certificates and OOD verdicts to a state, a speed limit and a handover request.

- ``policy.py``: ``ArbiterPolicy``, every threshold and time, validated.
- ``interface.py``: the data in and out (``Evidence``, ``OperatorRequest``, ``Decision``).
- ``state_machine.py``: the pure, deterministic state machine (``advance``, ``Arbiter``).
- ``metrics.py``: scenario metrics over a timeline (time to stop, false stops, time to resume).

Nothing here imports rclpy; the ROS node wires topics and services to ``Arbiter.step``.
"""

from robust_monitor.core.arbiter.interface import (
    ArbiterState,
    Decision,
    Evidence,
    OperatorRequest,
    OperatorResponse,
)
from robust_monitor.core.arbiter.metrics import (
    HazardMetrics,
    ScenarioMetrics,
    TimelineSample,
    scenario_metrics,
    timeline_from_decisions,
)
from robust_monitor.core.arbiter.policy import ArbiterPolicy, EvidenceLevel
from robust_monitor.core.arbiter.state_machine import Arbiter, ArbiterMemory, advance

__all__ = [
    "Arbiter",
    "ArbiterMemory",
    "ArbiterPolicy",
    "ArbiterState",
    "Decision",
    "Evidence",
    "EvidenceLevel",
    "HazardMetrics",
    "OperatorRequest",
    "OperatorResponse",
    "ScenarioMetrics",
    "TimelineSample",
    "advance",
    "scenario_metrics",
    "timeline_from_decisions",
]
