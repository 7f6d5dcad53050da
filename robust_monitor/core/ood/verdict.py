"""The per-frame out-of-distribution verdict the arbiter consumes."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class OodLevel(enum.IntEnum):
    """Severity of a verdict; ordered so ``max()`` fuses verdicts the cautious way."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True, slots=True)
class OodVerdict:
    """What the OOD and camera-health checks say about one frame.

    ``reasons`` names every check that fired (for example ``"blur"``, ``"energy"``); ``scores``
    holds the raw score of every check that ran, fired or not, keyed by check name.
    ``stamp_s`` is the frame's time (header stamp) in seconds.
    """

    level: OodLevel
    reasons: tuple[str, ...] = ()
    scores: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    stamp_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.level is OodLevel.OK
