"""A kinematic vehicle on a straight road: speed follows a target with bounded acceleration.

Exact integration between two arbiter steps: the speed moves toward the target at
``max_accel_mps2`` (up) or ``max_decel_mps2`` (down) until it reaches it, then holds; the
odometer is the integral of the speed. No slip, no lateral motion: enough to close the loop
between the arbiter's limit and what the camera sees.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Vehicle:
    """Speed (m/s) and odometer (m); ``advance`` moves them on by ``dt_s`` toward a target."""

    speed_mps: float
    max_accel_mps2: float
    max_decel_mps2: float
    odometer_m: float = 0.0

    def advance(self, dt_s: float, target_mps: float) -> float:
        """Drive ``dt_s`` seconds toward ``target_mps``; returns the distance travelled (m)."""
        if dt_s <= 0.0:
            return 0.0
        target = max(0.0, target_mps)
        v0 = self.speed_mps
        a = self.max_accel_mps2 if target >= v0 else -self.max_decel_mps2
        t_reach = min(dt_s, abs(target - v0) / abs(a)) if a != 0.0 else 0.0
        v1 = v0 + a * t_reach
        distance = v0 * t_reach + 0.5 * a * t_reach**2 + v1 * (dt_s - t_reach)
        self.speed_mps = target if t_reach < dt_s else v1
        self.odometer_m += distance
        return distance
