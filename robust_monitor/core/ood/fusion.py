"""Fuse camera-health checks and model-based OOD scores into one ``OodVerdict`` per frame.

Policy (``FusionConfig``, configured from a mapping such as a YAML section):

- Camera health: every check that fired counts at its own level, except those listed in
  ``ignored_camera_checks``.
- Model-based detectors (``model_detectors``; empty means every detector the calibration has
  thresholds for): each detector's score gets a level from its calibrated thresholds (WARN above
  ``warn``, ERROR above ``error``, a NaN score is ERROR). ``model_rule`` combines them:

  - ``any``: the most severe detector level;
  - ``k_of_n``: the most severe level that at least ``model_k`` detectors reach (a detector at
    ERROR also counts as reaching WARN). Fewer false alarms than ``any``, at the price of
    needing agreement.

- The verdict's level is the most severe of the camera level and the model level. Its
  ``reasons`` name the camera checks that fired and, when the model level is above OK, the
  detectors that reached at least WARN. Its ``scores`` hold every camera check score and every
  model score given, fired or not.

Under ``any`` the false-alarm rates of the detectors add up at most (union bound); calibrate
each at ``target / number of detectors`` to bound the fused model false-alarm rate by the target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Final

from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.core.ood.calibration import Calibration
from robust_monitor.core.ood.camera_health import CHECKS, CameraHealthResult
from robust_monitor.core.ood.scores import DETECTORS
from robust_monitor.core.ood.verdict import OodLevel, OodVerdict

MODEL_RULES: Final[tuple[str, ...]] = ("any", "k_of_n")


@dataclass(frozen=True, slots=True)
class FusionConfig:
    """How camera-health and model-based levels combine (see the module docstring)."""

    model_rule: str = "any"
    model_k: int = 2
    """Detectors that must agree under ``k_of_n`` (ignored under ``any``)."""
    model_detectors: tuple[str, ...] = ()
    """Detectors to use; empty: every calibrated detector."""
    ignored_camera_checks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.model_rule, str) or self.model_rule not in MODEL_RULES:
            raise ConfigError(
                f"model_rule must be one of {list(MODEL_RULES)}, got {self.model_rule!r}"
            )
        if not (isinstance(self.model_k, int) and not isinstance(self.model_k, bool)):
            raise ConfigError(f"model_k must be an integer, got {self.model_k!r}")
        if self.model_k < 1:
            raise ConfigError(f"model_k must be >= 1 (detectors), got {self.model_k}")
        for name, allowed, values in (
            ("model_detectors", DETECTORS, self.model_detectors),
            ("ignored_camera_checks", CHECKS, self.ignored_camera_checks),
        ):
            if not isinstance(values, tuple) or not all(isinstance(v, str) for v in values):
                raise ConfigError(f"{name} must be a list of names, got {values!r}")
            bad = sorted(set(values) - set(allowed))
            if bad:
                raise ConfigError(f"{name}: unknown {bad}; allowed: {list(allowed)}")
            if len(set(values)) != len(values):
                raise ConfigError(f"{name} lists a name twice: {list(values)}")
        too_few = self.model_rule == "k_of_n" and 0 < len(self.model_detectors) < self.model_k
        if too_few:
            raise ConfigError(
                f"model_k ({self.model_k}) must be <= the number of model_detectors "
                f"({len(self.model_detectors)})"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> FusionConfig:
        """Config from a (possibly partial) mapping; ``ConfigError`` for unknown keys or values."""
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"OOD fusion config must be a mapping, got {mapping!r}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in mapping if k not in names)
        if unknown:
            raise ConfigError(f"unknown OOD fusion key(s) {unknown}; allowed: {names}")
        values: dict[str, Any] = dict(mapping)
        for key in ("model_detectors", "ignored_camera_checks"):
            if key in values:
                value = values[key]
                if not isinstance(value, Sequence) or isinstance(value, str):
                    raise ConfigError(f"{key} must be a list of names, got {value!r}")
                values[key] = tuple(value)
        if isinstance(values.get("model_rule"), str):
            values["model_rule"] = values["model_rule"].strip().lower()
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Plain form; ``from_mapping(c.as_dict()) == c``."""
        return {
            "model_rule": self.model_rule,
            "model_k": self.model_k,
            "model_detectors": list(self.model_detectors),
            "ignored_camera_checks": list(self.ignored_camera_checks),
        }


def combine_model_levels(levels: Sequence[OodLevel], rule: str, k: int) -> OodLevel:
    """The model-based level from per-detector levels under ``rule`` (``any`` or ``k_of_n``)."""
    if rule == "any":
        return max(levels, default=OodLevel.OK)
    if rule == "k_of_n":
        for level in (OodLevel.ERROR, OodLevel.WARN):
            if sum(1 for lv in levels if lv >= level) >= k:
                return level
        return OodLevel.OK
    raise ConfigError(f"model_rule must be one of {list(MODEL_RULES)}, got {rule!r}")


class OodFusion:
    """Turns one frame's camera-health result and model scores into an ``OodVerdict``.

    ``calibration`` supplies the detector thresholds; every detector the config names must be
    calibrated (``ConfigError`` otherwise). Without a calibration only the camera checks can
    fire (model scores given are still reported).
    """

    def __init__(
        self, calibration: Calibration | None = None, config: FusionConfig | None = None
    ) -> None:
        self.calibration = calibration
        self.config = config if config is not None else FusionConfig()
        calibrated = calibration.detectors if calibration is not None else ()
        detectors = self.config.model_detectors or calibrated
        missing = [d for d in detectors if d not in calibrated]
        if missing:
            raise ConfigError(
                f"model_detectors {missing} are not calibrated; calibrated: {list(calibrated)}"
            )
        if self.config.model_rule == "k_of_n" and self.config.model_k > len(detectors):
            raise ConfigError(
                f"model_k ({self.config.model_k}) must be <= the number of detectors "
                f"({len(detectors)}: {list(detectors)})"
            )
        self.detectors: tuple[str, ...] = tuple(detectors)

    def fuse(
        self,
        model_scores: Mapping[str, float],
        camera: CameraHealthResult | None = None,
        stamp_s: float | None = None,
    ) -> OodVerdict:
        """Verdict of one frame. ``model_scores`` must hold every detector in ``detectors``
        (``InputError`` otherwise); extra scores are reported but do not fire. ``stamp_s``
        defaults to the camera result's stamp, else 0.
        """
        missing = [d for d in self.detectors if d not in model_scores]
        if missing:
            raise InputError(
                f"model scores {missing} are missing; this fusion needs {list(self.detectors)}"
            )
        reasons: list[str] = []
        scores: dict[str, float] = {}
        camera_level = OodLevel.OK
        if camera is not None:
            scores.update(camera.scores)
            for check, level in camera.fired.items():
                if check not in self.config.ignored_camera_checks:
                    reasons.append(check)
                    camera_level = max(camera_level, level)
        for name, value in model_scores.items():
            if name in scores:
                raise InputError(f"model score {name!r} clashes with a camera check of that name")
            scores[name] = float(value)
        levels = {
            d: self.calibration.level(d, float(model_scores[d]))
            for d in self.detectors
            if self.calibration is not None
        }
        model_level = combine_model_levels(
            list(levels.values()), self.config.model_rule, self.config.model_k
        )
        if model_level > OodLevel.OK:
            reasons.extend(d for d, level in levels.items() if level >= OodLevel.WARN)
        if stamp_s is None:
            stamp_s = camera.stamp_s if camera is not None else 0.0
        if not math.isfinite(stamp_s):
            raise InputError(f"stamp_s must be finite, got {stamp_s!r}")
        return OodVerdict(
            level=max(camera_level, model_level),
            reasons=tuple(reasons),
            scores=MappingProxyType(scores),
            stamp_s=float(stamp_s),
        )
