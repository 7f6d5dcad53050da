"""Thresholds for the model-based OOD detectors, set on in-distribution data for one model.

Every detector score is oriented higher = more OOD (see ``scores``); a detector *fires* when its
score is strictly greater than its threshold.

Guarantee (split-conformal, Vovk et al. 2005; Angelopoulos & Bates 2021): with ``n``
in-distribution calibration scores and a false-alarm rate ``alpha``, the threshold is the
``k``-th smallest score, ``k = ceil((n + 1) * (1 - alpha))``. If a new in-distribution frame's
score and the ``n`` calibration scores are exchangeable (for example independent draws from the
same distribution), then ``P(new score > threshold) <= alpha``, averaged over the calibration
draw; ties only make alarms rarer. With continuous scores the rate is also at least
``alpha - 1 / (n + 1)``. This needs ``k <= n``, that is ``n >= ceil(1 / alpha) - 1`` samples
(99 for 1 %, 999 for 0.1 %); fewer raise ``ConfigError``. The guarantee holds per detector;
fusing detectors with the "any" rule adds their false-alarm rates at most.

Each detector gets two thresholds: ``warn`` at ``target_false_alarm_rate`` (default 1 %) and
``error`` at the tighter ``error_false_alarm_rate`` (default a tenth of it).

The Mahalanobis and input-statistics models must be fitted on *other* in-distribution samples
than the ones their thresholds are calibrated on (otherwise the calibration scores are
optimistically small and not exchangeable with new frames); ``calibrate_outputs`` and
``tools.calibrate_cmd`` do that split.

A ``Calibration`` belongs to one model file: it stores the file's SHA-256, and ``check_model``
raises ``ModelError`` for any other model. ``save`` and ``load`` use YAML.

File versions: version 2 added the optional ``input_stats`` model (``input_stats.py``) and its
detector; version 1 files (without it) still load, and then that detector is simply absent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import yaml

from robust_monitor.core.errors import ConfigError, InputError, ModelError
from robust_monitor.core.ood.input_stats import InputStatsModel
from robust_monitor.core.ood.scores import (
    DETECTORS,
    MahalanobisModel,
    energy,
    model_scores,
    msp_score,
)
from robust_monitor.core.ood.verdict import OodLevel

FORMAT: Final[str] = "robust_monitor.ood_calibration"
VERSION: Final[int] = 2
READABLE_VERSIONS: Final[tuple[int, ...]] = (1, 2)
"""File versions ``from_mapping`` accepts (1: no ``input_stats``)."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def min_samples(false_alarm_rate: float) -> int:
    """Fewest calibration samples for which ``conformal_threshold`` exists at this rate."""
    _check_rate(false_alarm_rate, "false_alarm_rate")
    rate = Fraction(repr(float(false_alarm_rate)))
    return max(math.ceil(1 / rate) - 1, 1)


def conformal_threshold(scores: npt.ArrayLike, false_alarm_rate: float) -> float:
    """The ``ceil((n + 1)(1 - rate))``-th smallest score (see the module docstring).

    A new exchangeable score exceeds it with probability at most ``false_alarm_rate``. Raises
    ``ConfigError`` when there are too few scores for the rate, ``InputError`` for an empty or
    non-finite sample.
    """
    _check_rate(false_alarm_rate, "false_alarm_rate")
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise InputError("no calibration scores")
    if not np.all(np.isfinite(s)):
        raise InputError("calibration scores must be finite (found NaN or Inf)")
    n = s.size
    # Exact arithmetic on the decimal rate: 0.01 is 1/100, not 0.01000000000000000021.
    k = (n + 1) - math.floor((n + 1) * Fraction(repr(float(false_alarm_rate))))
    if k > n:
        raise ConfigError(
            f"{n} calibration samples cannot guarantee a false-alarm rate of "
            f"{false_alarm_rate:g}; need at least {min_samples(false_alarm_rate)}"
        )
    return float(np.partition(s, k - 1)[k - 1])


def _check_rate(rate: object, name: str) -> None:
    if not (isinstance(rate, int | float) and not isinstance(rate, bool) and 0.0 < rate < 1.0):
        raise ConfigError(f"{name} must be a number in (0, 1), got {rate!r}")


@dataclass(frozen=True, slots=True)
class DetectorThreshold:
    """Thresholds of one detector: it fires WARN above ``warn`` and ERROR above ``error``."""

    warn: float
    error: float
    num_samples: int

    def __post_init__(self) -> None:
        for name in ("warn", "error"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value)):
                raise ConfigError(f"threshold {name} must be a finite number, got {value!r}")
        if self.error < self.warn:
            raise ConfigError(
                f"threshold error ({self.error:g}) must be >= warn ({self.warn:g}): "
                "scores are higher = more OOD"
            )
        if not (_is_int(self.num_samples) and self.num_samples >= 1):
            raise ConfigError(f"num_samples must be an integer >= 1, got {self.num_samples!r}")

    def level(self, score: float) -> OodLevel:
        """Level of a score; a NaN score (a broken model output) is ERROR, the cautious side."""
        if not score <= self.error:
            return OodLevel.ERROR
        return OodLevel.WARN if score > self.warn else OodLevel.OK

    def as_dict(self) -> dict[str, Any]:
        return {"warn": self.warn, "error": self.error, "num_samples": self.num_samples}


@dataclass(frozen=True, slots=True)
class Calibration:
    """Per-detector thresholds for one model (see the module docstring for the guarantee)."""

    model_sha256: str
    target_false_alarm_rate: float
    error_false_alarm_rate: float
    thresholds: Mapping[str, DetectorThreshold]
    mahalanobis: MahalanobisModel | None = None
    input_stats: InputStatsModel | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.model_sha256, str) and _SHA256.match(self.model_sha256.lower())):
            raise ConfigError(
                f"model_sha256 must be 64 hexadecimal digits, got {self.model_sha256!r}"
            )
        object.__setattr__(self, "model_sha256", self.model_sha256.lower())
        _check_rate(self.target_false_alarm_rate, "target_false_alarm_rate")
        _check_rate(self.error_false_alarm_rate, "error_false_alarm_rate")
        if self.error_false_alarm_rate > self.target_false_alarm_rate:
            raise ConfigError(
                f"error_false_alarm_rate ({self.error_false_alarm_rate:g}) must be <= "
                f"target_false_alarm_rate ({self.target_false_alarm_rate:g})"
            )
        if not isinstance(self.thresholds, Mapping) or not self.thresholds:
            raise ConfigError("thresholds must be a non-empty mapping of detector -> thresholds")
        for name, threshold in self.thresholds.items():
            if name not in DETECTORS:
                raise ConfigError(f"unknown detector {name!r}; allowed: {list(DETECTORS)}")
            if not isinstance(threshold, DetectorThreshold):
                raise ConfigError(f"thresholds[{name!r}] must be a DetectorThreshold")
        if "mahalanobis" in self.thresholds and self.mahalanobis is None:
            raise ConfigError("a mahalanobis threshold needs the mahalanobis model it scores")
        if "input_stats" in self.thresholds and self.input_stats is None:
            raise ConfigError("an input_stats threshold needs the input_stats model it scores")
        ordered = {n: self.thresholds[n] for n in DETECTORS if n in self.thresholds}
        object.__setattr__(self, "thresholds", MappingProxyType(ordered))

    @property
    def detectors(self) -> tuple[str, ...]:
        """The calibrated detectors, in ``DETECTORS`` order."""
        return tuple(self.thresholds)

    @property
    def num_samples(self) -> int:
        """Fewest calibration samples behind any detector's thresholds."""
        return min(t.num_samples for t in self.thresholds.values())

    def check_model(self, sha256: str) -> None:
        """Raise ``ModelError`` unless ``sha256`` is the model this calibration was made for."""
        if not isinstance(sha256, str) or sha256.lower() != self.model_sha256:
            raise ModelError(
                f"OOD calibration was made for model sha256 {self.model_sha256[:12]}..., "
                f"but the loaded model has sha256 {str(sha256)[:12]}...; recalibrate the "
                "thresholds for this model (thresholds do not transfer between models)"
            )

    def level(self, detector: str, score: float) -> OodLevel:
        """Level of one detector's score; ``ConfigError`` for a detector not calibrated."""
        try:
            return self.thresholds[detector].level(score)
        except KeyError:
            raise ConfigError(
                f"detector {detector!r} is not calibrated; calibrated: {list(self.thresholds)}"
            ) from None

    def scores(
        self,
        *,
        logits: npt.ArrayLike | None = None,
        features: npt.ArrayLike | None = None,
        abstained: bool | None = None,
        p_lower: float | None = None,
        model_input: npt.ArrayLike | None = None,
    ) -> dict[str, float]:
        """``scores.model_scores`` with this calibration's Mahalanobis and input-stats models."""
        return model_scores(
            logits=logits,
            features=features,
            mahalanobis=self.mahalanobis,
            abstained=abstained,
            p_lower=p_lower,
            model_input=model_input,
            input_stats=self.input_stats,
        )

    # --- plain form and files -------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """Plain YAML / JSON form; ``from_mapping(c.as_dict())`` rebuilds ``c``."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_sha256": self.model_sha256,
            "target_false_alarm_rate": self.target_false_alarm_rate,
            "error_false_alarm_rate": self.error_false_alarm_rate,
            "score_direction": "higher is more out-of-distribution; fires when score > threshold",
            "thresholds": {name: t.as_dict() for name, t in self.thresholds.items()},
            "mahalanobis": None if self.mahalanobis is None else self.mahalanobis.as_dict(),
            "input_stats": None if self.input_stats is None else self.input_stats.as_dict(),
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Calibration:
        """Calibration from its plain form; ``ConfigError`` names a missing, unknown or bad key."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"OOD calibration must be a mapping, got {type(data).__name__}")
        required = {
            "format",
            "version",
            "model_sha256",
            "target_false_alarm_rate",
            "error_false_alarm_rate",
            "thresholds",
        }
        optional = {"score_direction", "mahalanobis", "input_stats"}
        missing = sorted(required - set(data))
        unknown = sorted(str(k) for k in set(data) - required - optional)
        if missing or unknown:
            raise ConfigError(
                f"OOD calibration: missing keys {missing}, unknown keys {unknown}; "
                f"required {sorted(required)}, optional {sorted(optional)}"
            )
        if data["format"] != FORMAT:
            raise ConfigError(f"format must be {FORMAT!r}, got {data['format']!r}")
        version = data["version"]
        if isinstance(version, bool) or version not in READABLE_VERSIONS:
            raise ConfigError(
                f"version must be one of {list(READABLE_VERSIONS)}, got {version!r}"
                + (
                    f"; this file is newer than this robust_monitor (reads up to {VERSION})"
                    if isinstance(version, int) and version > VERSION
                    else ""
                )
            )
        if version == 1 and data.get("input_stats") is not None:
            raise ConfigError("input_stats needs a version 2 file, got version 1")
        raw = data["thresholds"]
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"thresholds must be a mapping of detector -> thresholds, got {raw!r}"
            )
        thresholds: dict[str, DetectorThreshold] = {}
        for name, entry in raw.items():
            keys = {"warn", "error", "num_samples"}
            if not isinstance(entry, Mapping) or set(entry) != keys:
                raise ConfigError(
                    f"thresholds[{name!r}] must be a mapping with exactly the keys "
                    f"{sorted(keys)}, got {entry!r}"
                )
            warn, error = entry["warn"], entry["error"]
            for key, value in (("warn", warn), ("error", error)):
                if not _is_number(value):
                    raise ConfigError(f"thresholds[{name!r}].{key} must be a number, got {value!r}")
            thresholds[str(name)] = DetectorThreshold(
                float(warn), float(error), entry["num_samples"]
            )
        maha = data.get("mahalanobis")
        stats = data.get("input_stats")
        return cls(
            model_sha256=data["model_sha256"],
            target_false_alarm_rate=_number(data, "target_false_alarm_rate"),
            error_false_alarm_rate=_number(data, "error_false_alarm_rate"),
            thresholds=thresholds,
            mahalanobis=None if maha is None else MahalanobisModel.from_dict(maha),
            input_stats=None if stats is None else InputStatsModel.from_dict(stats),
        )

    def save(self, path: str | Path) -> Path:
        """Write the calibration as YAML; returns the path."""
        out = Path(path)
        header = (
            "# OOD detector thresholds for one model (robust_monitor.core.ood.calibration).\n"
            "# Valid only for the model with this sha256; regenerate, do not hand-edit.\n"
        )
        text = yaml.safe_dump(self.as_dict(), sort_keys=False, default_flow_style=None)
        out.write_text(header + text, encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | Path, model_sha256: str | None = None) -> Calibration:
        """Read a calibration YAML file; with ``model_sha256``, also ``check_model`` it."""
        try:
            # libyaml's loader when PyYAML has it: about 6x faster on the 0.5 MB shipped files,
            # and it refuses absurd nesting with a YAMLError instead of recursing.
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=loader)
        except OSError as exc:
            raise ConfigError(f"cannot read OOD calibration file {str(path)!r}: {exc}") from exc
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(
                f"OOD calibration file {str(path)!r} is not valid YAML: {exc}"
            ) from exc
        try:
            calibration = cls.from_mapping(data)
        except ConfigError as exc:
            raise ConfigError(f"OOD calibration file {str(path)!r}: {exc}") from exc
        if model_sha256 is not None:
            calibration.check_model(model_sha256)
        return calibration


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _number(data: Mapping[str, Any], key: str) -> float:
    value = data[key]
    if not _is_number(value):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    return float(value)


# --- building a calibration ---------------------------------------------------------------------
def calibrate(
    scores: Mapping[str, npt.ArrayLike],
    *,
    model_sha256: str,
    target_false_alarm_rate: float = 0.01,
    error_false_alarm_rate: float | None = None,
    mahalanobis: MahalanobisModel | None = None,
    input_stats: InputStatsModel | None = None,
) -> Calibration:
    """Thresholds from in-distribution ``scores`` (detector name -> 1-D sample, higher = OOD).

    ``error_false_alarm_rate`` defaults to ``target_false_alarm_rate / 10``. Raises
    ``ConfigError`` for an unknown detector or too few samples for a rate.
    """
    _check_rate(target_false_alarm_rate, "target_false_alarm_rate")
    error_rate = (
        target_false_alarm_rate / 10.0 if error_false_alarm_rate is None else error_false_alarm_rate
    )
    _check_rate(error_rate, "error_false_alarm_rate")
    thresholds: dict[str, DetectorThreshold] = {}
    for name, sample in scores.items():
        if name not in DETECTORS:
            raise ConfigError(f"unknown detector {name!r}; allowed: {list(DETECTORS)}")
        s = np.asarray(sample, dtype=np.float64).ravel()
        try:
            thresholds[name] = DetectorThreshold(
                warn=conformal_threshold(s, target_false_alarm_rate),
                error=conformal_threshold(s, error_rate),
                num_samples=int(s.size),
            )
        except (ConfigError, InputError) as exc:
            raise type(exc)(f"detector {name!r}: {exc}") from exc
    return Calibration(
        model_sha256=model_sha256,
        target_false_alarm_rate=float(target_false_alarm_rate),
        error_false_alarm_rate=float(error_rate),
        thresholds=thresholds,
        mahalanobis=mahalanobis,
        input_stats=input_stats,
    )


def calibrate_outputs(
    *,
    model_sha256: str,
    logits: npt.ArrayLike,
    features: npt.ArrayLike | None = None,
    labels: npt.ArrayLike | None = None,
    abstained: npt.ArrayLike | None = None,
    p_lower: npt.ArrayLike | None = None,
    target_false_alarm_rate: float = 0.01,
    error_false_alarm_rate: float | None = None,
    fit_fraction: float = 0.5,
    rng: np.random.Generator | None = None,
) -> Calibration:
    """Calibrate every detector the given in-distribution model outputs allow.

    ``logits`` (N, K); optionally ``features`` (N, D) with ``labels`` (N,) for the Mahalanobis
    detector, and the certificates' ``abstained`` (N,) and ``p_lower`` (N,). With features, a
    random ``fit_fraction`` of the frames fits the Mahalanobis model and the remaining frames
    calibrate *every* detector (the same frames for all, so the thresholds are comparable);
    without, all frames calibrate.
    """
    lg = np.asarray(logits, dtype=np.float64)
    if lg.ndim != 2:
        raise InputError(f"logits must be (N, K), got shape {lg.shape}")
    n = lg.shape[0]
    columns: dict[str, npt.NDArray[Any]] = {}
    for name, value in (("abstained", abstained), ("p_lower", p_lower), ("labels", labels)):
        if value is not None:
            arr = np.asarray(value)
            if arr.shape != (n,):
                raise InputError(f"{name} must have shape ({n},) like the logits, got {arr.shape}")
            columns[name] = arr
    calib_idx = np.arange(n)
    maha: MahalanobisModel | None = None
    feats: npt.NDArray[np.float64] | None = None
    if features is not None:
        feats = np.asarray(features, dtype=np.float64)
        if feats.ndim != 2 or feats.shape[0] != n:
            raise InputError(f"features must be ({n}, D) like the logits, got {feats.shape}")
        if "labels" not in columns:
            raise InputError("features need labels (the class of each frame) to fit Mahalanobis")
        if not 0.0 < fit_fraction < 1.0:
            raise ConfigError(f"fit_fraction must be in (0, 1), got {fit_fraction!r}")
        order = (rng if rng is not None else np.random.default_rng(0)).permutation(n)
        n_fit = round(n * fit_fraction)
        fit_idx, calib_idx = order[:n_fit], np.sort(order[n_fit:])
        maha = MahalanobisModel.fit(feats[fit_idx], columns["labels"][fit_idx])
    scores: dict[str, npt.NDArray[np.float64]] = {
        "msp": msp_score(lg[calib_idx]),
        "energy": energy(lg[calib_idx]),
    }
    if maha is not None and feats is not None:
        scores["mahalanobis"] = maha.score(feats[calib_idx])
    if "abstained" in columns:
        scores["abstain"] = columns["abstained"][calib_idx].astype(bool).astype(np.float64)
    if "p_lower" in columns:
        p = columns["p_lower"][calib_idx].astype(np.float64)
        if not np.all((p >= 0.0) & (p <= 1.0)):
            raise InputError("p_lower values must be probabilities in [0, 1]")
        scores["p_lower"] = 1.0 - p
    return calibrate(
        scores,
        model_sha256=model_sha256,
        target_false_alarm_rate=target_false_alarm_rate,
        error_false_alarm_rate=error_false_alarm_rate,
        mahalanobis=maha,
    )
