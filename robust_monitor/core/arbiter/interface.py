"""What goes into the arbiter and what comes out of it: evidence, operator requests, decisions.

All plain frozen data; the logic is in ``state_machine.py``. Times are seconds on the clock the
caller steps the arbiter with (ROS time in the node, simulated time in a replay), speeds are m/s.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from robust_monitor.core.certify.certificate import Certificate
from robust_monitor.core.ood.verdict import OodVerdict


class ArbiterState(enum.Enum):
    """The arbiter's states (see ``state_machine.py`` for the transitions)."""

    NOMINAL = "NOMINAL"
    """Full speed: evidence is healthy."""
    DEGRADED = "DEGRADED"
    """Speed limited as a function of the certified radius (the policy's curve)."""
    HANDOVER_REQUESTED = "HANDOVER_REQUESTED"
    """The operator is asked to take over; speed brought down to a crawl."""
    MINIMAL_RISK = "MINIMAL_RISK"
    """Controlled stop at bounded deceleration; leaving it needs an operator release."""
    MANUAL = "MANUAL"
    """The operator drives; commands are not gated; the arbiter watches for recovery."""


AUTONOMOUS_STATES = frozenset(
    {ArbiterState.NOMINAL, ArbiterState.DEGRADED, ArbiterState.HANDOVER_REQUESTED}
)
"""States in which autonomy drives and the arbiter adapts the limit to the evidence."""


def requests_handover(state: ArbiterState) -> bool:
    """Whether the operator is asked to take over in ``state`` (HANDOVER_REQUESTED, MINIMAL_RISK).

    The request stands during the controlled stop too: somebody still has to take the vehicle.
    """
    return state in (ArbiterState.HANDOVER_REQUESTED, ArbiterState.MINIMAL_RISK)


def gates_commands(state: ArbiterState) -> bool:
    """Whether the speed limit applies to the velocity commands (every state but MANUAL)."""
    return state is not ArbiterState.MANUAL


@dataclass(frozen=True, slots=True)
class Evidence:
    """What one camera frame says: its certificate and its OOD verdict, at the frame's stamp.

    Either part may be missing (the certifier or the OOD checks had nothing for this frame); a
    frame missing a part can make the arbiter more cautious but never less (see the state
    machine). ``verdict.stamp_s`` must equal ``stamp_s`` when a verdict is given: both parts
    belong to one frame, so callers pair them before stepping the arbiter.
    """

    stamp_s: float
    certificate: Certificate | None = None
    verdict: OodVerdict | None = None


class OperatorRequest(enum.Enum):
    """What an operator can ask for."""

    TAKEOVER = "TAKEOVER"
    """The operator drives now (always accepted)."""
    RELEASE = "RELEASE"
    """Hand driving back to autonomy (accepted after healthy evidence for the recovery time)."""


@dataclass(frozen=True, slots=True)
class OperatorResponse:
    """The answer to one operator request; ``reason`` is what the ROS service returns."""

    request: OperatorRequest
    accepted: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The arbiter's output for one step.

    ``speed_limit_mps`` is the most speed autonomy may command (finite, in [0, nominal]); it is
    applied to the velocity commands exactly when ``gated`` (every state but MANUAL, where it is
    0: autonomy gets nothing while the operator drives). ``reasons`` are short human-readable
    strings saying why (never empty). ``evidence_accepted`` is None when the step carried no
    evidence, else whether the evidence passed validation. ``evidence_age_s`` is the age of the
    newest complete evidence (None before any). ``operator_response`` answers the step's
    operator request, if any.
    """

    stamp_s: float
    state: ArbiterState
    speed_limit_mps: float
    gated: bool
    handover_requested: bool
    reasons: tuple[str, ...]
    evidence_accepted: bool | None = None
    evidence_age_s: float | None = None
    operator_response: OperatorResponse | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form (non-finite numbers become None)."""
        response = self.operator_response
        return {
            "stamp_s": self.stamp_s if math.isfinite(self.stamp_s) else None,
            "state": self.state.value,
            "speed_limit_mps": self.speed_limit_mps,
            "gated": self.gated,
            "handover_requested": self.handover_requested,
            "reasons": list(self.reasons),
            "evidence_accepted": self.evidence_accepted,
            "evidence_age_s": self.evidence_age_s,
            "operator_response": None
            if response is None
            else {
                "request": response.request.value,
                "accepted": response.accepted,
                "reason": response.reason,
            },
        }
