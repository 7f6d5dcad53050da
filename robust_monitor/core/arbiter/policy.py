"""The arbiter's policy: every threshold, count, time and speed it uses, validated once.

``ArbiterPolicy`` reads like ``config/arbiter_policy.yaml`` (one field per key, units in the
names): ``_mps`` metres per second, ``_mps2`` metres per second squared, ``_s`` seconds,
``_frames`` a count of consecutive frames, ``_l2`` a certified L2 radius in model-input space
(pixel values scaled to [0, 1] after preprocessing, L2 norm over all C*H*W values; the unit of
``Certificate.radius``).

Every instance is valid: ``__post_init__`` checks every field and raises ``ConfigError`` naming
the key, the allowed range and the value it got, so a bad file never reaches the state machine.

Shared definitions live here, not in the state machine, so that other parts of the system ask
the same question the arbiter asks: ``r_required`` is the radius that keeps NOMINAL (a sequential
certifier stops sampling once it has shown ``radius >= r_required``), ``radius_level`` classifies
a radius with hysteresis, and ``speed_cap_mps`` is the speed an evidence level allows.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from robust_monitor.core.errors import ConfigError
from robust_monitor.core.ood.verdict import OodLevel


class EvidenceLevel(enum.IntEnum):
    """How bad one frame's evidence is; ordered so that ``max()`` fuses levels the cautious way.

    HEALTHY allows the nominal speed, DEGRADED the speed-versus-radius curve, HANDOVER the crawl
    speed (and, when it persists, a handover request).
    """

    HEALTHY = 0
    DEGRADED = 1
    HANDOVER = 2


OOD_ACTIONS: Mapping[str, EvidenceLevel] = {
    "ignore": EvidenceLevel.HEALTHY,
    "degraded": EvidenceLevel.DEGRADED,
    "handover": EvidenceLevel.HANDOVER,
}
"""Values allowed for ``ood_warn_as`` / ``ood_error_as`` and the evidence level each means."""

_ROS_PARAMETERS = "ros__parameters"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class ArbiterPolicy:
    """Configuration of the arbiter (defaults equal ``config/arbiter_policy.yaml``).

    Radius thresholds use hysteresis: a level is entered when the radius falls *below* its
    ``_enter_`` value and left only when the radius is back *at or above* its ``_exit_`` value
    (``enter <= exit``). Escalation needs ``trigger_frames`` consecutive frames at the worse
    level; de-escalation needs ``release_frames`` consecutive complete frames at a better level
    and the minimum dwell time in the current state. The speed limit itself never waits for the
    debounce: it drops at once to what the newest frame allows.
    """

    nominal_speed_mps: float = 10.0
    crawl_speed_mps: float = 1.0
    degraded_curve_radius_l2: tuple[float, ...] = (0.10, 0.20, 0.30)
    degraded_curve_speed_mps: tuple[float, ...] = (3.0, 5.0, 8.0)
    degraded_enter_radius_l2: float = 0.25
    degraded_exit_radius_l2: float = 0.30
    handover_enter_radius_l2: float = 0.10
    handover_exit_radius_l2: float = 0.15
    trigger_frames: int = 2
    release_frames: int = 5
    degraded_min_dwell_s: float = 1.0
    handover_min_dwell_s: float = 2.0
    max_decel_mps2: float = 3.0
    ramp_up_mps2: float = 1.0
    handover_timeout_s: float = 10.0
    stale_after_s: float = 0.5
    future_tolerance_s: float = 0.05
    clock_tolerance_s: float = 0.01
    recovery_time_s: float = 3.0
    ood_warn_as: str = "degraded"
    ood_error_as: str = "handover"
    require_ood_verdict: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and not (_is_number(value) and math.isfinite(value)):
                raise ConfigError(f"{f.name} must be a finite number, got {value!r}")
            if f.type == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
                raise ConfigError(f"{f.name} must be an integer, got {value!r}")
            if f.type == "bool" and not isinstance(value, bool):
                raise ConfigError(f"{f.name} must be true or false, got {value!r}")
        self._check_speeds()
        self._check_radii()
        self._check_curve()
        self._check_counts_and_times()
        self._check_ood()

    # --- validation -----------------------------------------------------------------------------
    def _check_speeds(self) -> None:
        _require(
            self.nominal_speed_mps > 0.0, "nominal_speed_mps", "> 0 (m/s)", self.nominal_speed_mps
        )
        _require(
            0.0 <= self.crawl_speed_mps <= self.nominal_speed_mps,
            "crawl_speed_mps",
            f"in [0, nominal_speed_mps = {self.nominal_speed_mps:g}] (m/s)",
            self.crawl_speed_mps,
        )
        _require(self.max_decel_mps2 > 0.0, "max_decel_mps2", "> 0 (m/s^2)", self.max_decel_mps2)
        _require(self.ramp_up_mps2 > 0.0, "ramp_up_mps2", "> 0 (m/s^2)", self.ramp_up_mps2)

    def _check_radii(self) -> None:
        h_in, h_out = self.handover_enter_radius_l2, self.handover_exit_radius_l2
        d_in, d_out = self.degraded_enter_radius_l2, self.degraded_exit_radius_l2
        # > 0 so that an abstained certificate (radius 0) is always handover-level evidence.
        _require(h_in > 0.0, "handover_enter_radius_l2", "> 0 (L2)", h_in)
        _require(h_out >= h_in, "handover_exit_radius_l2", f">= handover_enter ({h_in:g})", h_out)
        _require(d_in >= h_in, "degraded_enter_radius_l2", f">= handover_enter ({h_in:g})", d_in)
        _require(
            d_out >= max(d_in, h_out),
            "degraded_exit_radius_l2",
            f">= degraded_enter ({d_in:g}) and >= handover_exit ({h_out:g})",
            d_out,
        )

    def _check_curve(self) -> None:
        radii, speeds = self.degraded_curve_radius_l2, self.degraded_curve_speed_mps
        for name, values in (
            ("degraded_curve_radius_l2", radii),
            ("degraded_curve_speed_mps", speeds),
        ):
            ok = isinstance(values, tuple) and all(_is_number(v) for v in values)
            _require(ok and len(values) >= 1, name, "a non-empty list of numbers", values)
            _require(all(math.isfinite(v) for v in values), name, "finite numbers", values)
        _require(
            len(radii) == len(speeds),
            "degraded_curve_speed_mps",
            f"as many points as degraded_curve_radius_l2 ({len(radii)})",
            speeds,
        )
        _require(
            radii[0] >= 0.0 and all(a < b for a, b in itertools.pairwise(radii)),
            "degraded_curve_radius_l2",
            ">= 0 and strictly increasing (L2)",
            radii,
        )
        _require(
            all(a <= b for a, b in itertools.pairwise(speeds)),
            "degraded_curve_speed_mps",
            "non-decreasing (more certified radius never means less speed)",
            speeds,
        )
        _require(
            self.crawl_speed_mps <= speeds[0] and speeds[-1] <= self.nominal_speed_mps,
            "degraded_curve_speed_mps",
            f"within [crawl_speed_mps = {self.crawl_speed_mps:g}, "
            f"nominal_speed_mps = {self.nominal_speed_mps:g}] (m/s)",
            speeds,
        )

    def _check_counts_and_times(self) -> None:
        _require(self.trigger_frames >= 1, "trigger_frames", ">= 1 (frames)", self.trigger_frames)
        _require(self.release_frames >= 1, "release_frames", ">= 1 (frames)", self.release_frames)
        for name in (
            "degraded_min_dwell_s",
            "handover_min_dwell_s",
            "future_tolerance_s",
            "clock_tolerance_s",
            "recovery_time_s",
        ):
            _require(getattr(self, name) >= 0.0, name, ">= 0 (s)", getattr(self, name))
        for name in ("handover_timeout_s", "stale_after_s"):
            _require(getattr(self, name) > 0.0, name, "> 0 (s)", getattr(self, name))

    def _check_ood(self) -> None:
        _require(
            isinstance(self.ood_warn_as, str) and self.ood_warn_as in OOD_ACTIONS,
            "ood_warn_as",
            f"one of {sorted(OOD_ACTIONS)}",
            self.ood_warn_as,
        )
        allowed_error = [k for k, v in OOD_ACTIONS.items() if v >= EvidenceLevel.DEGRADED]
        _require(
            isinstance(self.ood_error_as, str) and self.ood_error_as in allowed_error,
            "ood_error_as",
            f"one of {sorted(allowed_error)} (an OOD ERROR may not be ignored)",
            self.ood_error_as,
        )
        _require(
            OOD_ACTIONS[self.ood_error_as] >= OOD_ACTIONS[self.ood_warn_as],
            "ood_error_as",
            f"at least as severe as ood_warn_as ({self.ood_warn_as!r})",
            self.ood_error_as,
        )

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ArbiterPolicy:
        """Policy from a (possibly partial) mapping of key -> value; missing keys keep defaults.

        Raises ``ConfigError`` for an unknown key (naming the allowed keys), a value of the wrong
        type (booleans are not numbers; integers are accepted where a float is expected) or a
        value out of range.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"arbiter policy must be a mapping of key: value, got {mapping!r}")
        types = {f.name: f.type for f in fields(cls)}
        unknown = sorted(str(k) for k in mapping if k not in types)
        if unknown:
            raise ConfigError(f"unknown arbiter policy key(s) {unknown}; allowed: {sorted(types)}")
        values: dict[str, Any] = {}
        for key, value in mapping.items():
            kind = types[key]
            if kind == "float":
                if not _is_number(value):
                    raise ConfigError(f"{key} must be a number, got {value!r}")
                values[key] = float(value)
            elif kind == "tuple[float, ...]":
                # any sequence: YAML gives lists, rclpy gives array.array('d') for double arrays
                sequence = isinstance(value, Sequence) and not isinstance(value, str | bytes)
                if not sequence or not all(_is_number(v) for v in value):
                    raise ConfigError(f"{key} must be a list of numbers, got {value!r}")
                values[key] = tuple(float(v) for v in value)
            elif kind == "str":
                if not isinstance(value, str):
                    raise ConfigError(f"{key} must be a string, got {value!r}")
                values[key] = value.strip().lower()
            else:  # int and bool: exact types are checked in __post_init__
                values[key] = value
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ArbiterPolicy:
        """Policy from a YAML file: a flat mapping, or a ROS 2 parameter file for one node.

        The ROS layout ``<node name or /**>: {ros__parameters: {...}}`` is unwrapped, so the
        same file serves ``--params-file`` and this loader.
        """
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read arbiter policy file {str(path)!r}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"arbiter policy file {str(path)!r} is not valid YAML: {exc}"
            ) from exc
        if data is None:
            data = {}
        if isinstance(data, Mapping) and len(data) == 1:
            (inner,) = data.values()
            if isinstance(inner, Mapping) and _ROS_PARAMETERS in inner:
                data = inner[_ROS_PARAMETERS]
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"arbiter policy file {str(path)!r} must hold a mapping of key: value"
            )
        return cls.from_mapping(data)

    def as_dict(self) -> dict[str, Any]:
        """Plain form (YAML / ROS parameter values); ``from_mapping(p.as_dict()) == p``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    # --- shared definitions ---------------------------------------------------------------------
    @property
    def r_required(self) -> float:
        """The certified radius (L2) that keeps NOMINAL: ``radius >= r_required`` is healthy.

        This is ``degraded_enter_radius_l2``. In any state other than NOMINAL the stricter
        ``r_recover`` applies (hysteresis).
        """
        return self.degraded_enter_radius_l2

    @property
    def r_recover(self) -> float:
        """The certified radius (L2) a frame needs to count as healthy outside NOMINAL."""
        return self.degraded_exit_radius_l2

    @property
    def radius_thresholds(self) -> tuple[float, ...]:
        """Every radius (L2) the arbiter compares a certificate with, ascending: the enter and
        exit values of both levels. A sequential certifier that decides each of them gives the
        arbiter the level it would get from an exact radius, in every state."""
        return tuple(
            sorted(
                {
                    self.handover_enter_radius_l2,
                    self.handover_exit_radius_l2,
                    self.degraded_enter_radius_l2,
                    self.degraded_exit_radius_l2,
                }
            )
        )

    def radius_level(self, radius_l2: float, current: EvidenceLevel) -> EvidenceLevel:
        """Evidence level of a radius, given the level the arbiter is at (hysteresis).

        At level ``current`` the thresholds of every level up to ``current`` are the exit values
        (harder to leave), the others the enter values. Abstained certificates count as radius 0;
        a NaN radius is HANDOVER (it compares false with every threshold).
        """
        h_threshold = (
            self.handover_exit_radius_l2
            if current >= EvidenceLevel.HANDOVER
            else self.handover_enter_radius_l2
        )
        d_threshold = (
            self.degraded_exit_radius_l2
            if current >= EvidenceLevel.DEGRADED
            else self.degraded_enter_radius_l2
        )
        if not radius_l2 >= h_threshold:
            return EvidenceLevel.HANDOVER
        if not radius_l2 >= d_threshold:
            return EvidenceLevel.DEGRADED
        return EvidenceLevel.HEALTHY

    def ood_evidence_level(self, level: OodLevel) -> EvidenceLevel:
        """Evidence level an OOD verdict level means under ``ood_warn_as`` / ``ood_error_as``."""
        if level >= OodLevel.ERROR:
            return OOD_ACTIONS[self.ood_error_as]
        if level >= OodLevel.WARN:
            return OOD_ACTIONS[self.ood_warn_as]
        return EvidenceLevel.HEALTHY

    def degraded_speed_mps(self, radius_l2: float) -> float:
        """The DEGRADED speed curve: piecewise linear in the radius, clamped at both ends.

        Monotone non-decreasing in the radius; always within [crawl, nominal] (validated). A NaN
        radius gets the lowest point of the curve.
        """
        radii, speeds = self.degraded_curve_radius_l2, self.degraded_curve_speed_mps
        if not radius_l2 > radii[0]:
            return speeds[0]
        if radius_l2 >= radii[-1]:
            return speeds[-1]
        i = bisect.bisect_right(radii, radius_l2)
        r0, r1, v0, v1 = radii[i - 1], radii[i], speeds[i - 1], speeds[i]
        return min(v1, v0 + (v1 - v0) * (radius_l2 - r0) / (r1 - r0))

    def speed_cap_mps(self, level: EvidenceLevel, radius_l2: float) -> float:
        """The most speed evidence of ``level`` allows (``radius_l2`` is used for DEGRADED)."""
        if level >= EvidenceLevel.HANDOVER:
            return self.crawl_speed_mps
        if level >= EvidenceLevel.DEGRADED:
            return self.degraded_speed_mps(radius_l2)
        return self.nominal_speed_mps


def _require(ok: bool, key: str, allowed: str, got: object) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, got {got!r}")
