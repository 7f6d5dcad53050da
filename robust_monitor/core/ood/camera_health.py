"""Per-frame camera-health checks: is the picture itself usable, whatever the model thinks?

Every frame is reduced to a small grey analysis image (``analysis_width_px`` x
``analysis_height_px``, 160x120 by default, area interpolation), so the scores and thresholds
mean the same at any camera resolution. Intensities are in DN on a 0..255 scale (8-bit grey;
16-bit frames are scaled down, float frames are read as 0..1).

The analysis image is split into a grid of blocks (in the spirit of Autoware's
``image_diagnostics``); a block is *dark* when most of its pixels are at or below
``dark_pixel_max_dn``, *saturated* when many are at or above ``saturated_pixel_min_dn``, and
*flat* when its standard deviation is at most ``flat_block_max_std_dn`` (no visible detail).

Checks, with the score ``CameraHealthResult.scores`` holds under the check's name and when the
check fires (``thr`` is its configured threshold):

- ``nonfinite``: count of NaN / Inf values in a float frame; fires (ERROR) when > 0.
- ``black``: fraction of dark pixels, a dead sensor or a capped lens; ERROR when >= thr.
- ``blocked``: fraction of blocks both dark and flat, an opaque out-of-focus object on or just
  in front of the lens (mud, a leaf, a hand; a deep, featureless shadow reads the same);
  >= thr.
- ``underexposed``: fraction of dark blocks; >= thr.
- ``overexposed``: fraction of saturated blocks (glare, sun, exposure control lost); >= thr.
- ``low_visibility``: fraction of flat blocks that are neither dark nor saturated (fog, a
  smeared or frosted lens); >= thr.
- ``low_contrast``: standard deviation of the analysis image, DN; <= thr.
- ``dim``: mean of the analysis image, DN; <= thr. The defaults are photographic: WARN one stop
  below mid-grey (18% grey is about 118 DN in sRGB; one stop under, 9%, is 93 DN), ERROR three
  stops below (41 DN). A daylight-trained model sees a tunnel, dusk or night through a dim
  frame; the check says so whether or not the model's scores notice (they did not, for the
  sample drive's tunnel).
- ``blur``: variance of its Laplacian (3x3 kernel), DN^2; <= thr.
- ``frozen``: header-stamp seconds the picture has not changed (consecutive frames whose mean
  absolute difference is at most ``frozen_max_diff_dn``); >= thr.
- ``frame_gap``: seconds since the previous frame's stamp; > thr.
- ``time_backwards``: seconds the stamp went back; WARN when > 0 (the frozen timer restarts).

Checks with a WARN and an ERROR threshold fire at the more severe level they pass. When
``black`` fires, the content checks it explains (``blocked``, ``underexposed``,
``low_visibility``, ``low_contrast``, ``dim``, ``blur``) are not reported as fired; their scores
still are. A perfectly static, noise-free scene (a simulator paused, a test pattern) is
indistinguishable from a frozen driver and is reported as frozen; a real sensor's noise keeps
consecutive frames apart. Frames smaller than the analysis size are upsampled and read blurrier.

All time is header-stamp time, never the wall clock, so a replayed recording gets the same
results as the live run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.core.ood.verdict import OodLevel, OodVerdict

CHECKS: Final[tuple[str, ...]] = (
    "nonfinite",
    "black",
    "blocked",
    "underexposed",
    "overexposed",
    "low_visibility",
    "low_contrast",
    "dim",
    "blur",
    "frozen",
    "frame_gap",
    "time_backwards",
)
"""Every check, in reporting order; also the keys of ``CameraHealthResult.scores``."""

_EXPLAINED_BY_BLACK: Final = frozenset(
    {"blocked", "underexposed", "low_visibility", "low_contrast", "dim", "blur"}
)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class CameraHealthConfig:
    """Thresholds of the camera-health checks (see the module docstring for each check).

    Units: ``_px`` pixels of the analysis image, ``_dn`` grey levels on a 0..255 scale,
    ``_fraction`` a fraction in [0, 1], ``_s`` seconds of header-stamp time, ``laplacian_var``
    DN^2. ``warn`` and ``error`` pairs must be ordered so that ERROR is the worse condition.
    """

    analysis_width_px: int = 160
    analysis_height_px: int = 120
    grid_cols: int = 8
    grid_rows: int = 6
    dark_pixel_max_dn: float = 25.0
    saturated_pixel_min_dn: float = 250.0
    dark_block_min_fraction: float = 0.8
    """A block is dark when at least this fraction of its pixels are dark."""
    saturated_block_min_fraction: float = 0.5
    """A block is saturated when at least this fraction of its pixels are saturated."""
    flat_block_max_std_dn: float = 2.5
    """A block is flat when its grey standard deviation is at most this."""
    black_min_dark_fraction: float = 0.95
    """``black`` (ERROR) fires when at least this fraction of all pixels are dark."""
    blocked_warn_block_fraction: float = 0.1
    blocked_error_block_fraction: float = 0.3
    underexposed_warn_block_fraction: float = 0.5
    underexposed_error_block_fraction: float = 0.85
    overexposed_warn_block_fraction: float = 0.25
    overexposed_error_block_fraction: float = 0.6
    low_visibility_warn_block_fraction: float = 0.5
    low_visibility_error_block_fraction: float = 0.85
    low_contrast_warn_std_dn: float = 12.0
    low_contrast_error_std_dn: float = 5.0
    dim_warn_mean_dn: float = 93.0
    dim_error_mean_dn: float = 41.0
    blur_warn_laplacian_var: float = 100.0
    blur_error_laplacian_var: float = 20.0
    frozen_max_diff_dn: float = 0.5
    frozen_warn_after_s: float = 0.5
    frozen_error_after_s: float = 2.0
    frame_gap_warn_s: float = 0.25
    frame_gap_error_s: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ConfigError(f"{f.name} must be an integer, got {value!r}")
            elif not (_is_number(value) and math.isfinite(value)):
                raise ConfigError(f"{f.name} must be a finite number, got {value!r}")
        for name in ("analysis_width_px", "analysis_height_px"):
            _require(16 <= getattr(self, name) <= 4096, name, "in [16, 4096] (px)", self)
        for name in ("grid_cols", "grid_rows"):
            _require(1 <= getattr(self, name) <= 64, name, "in [1, 64] (blocks)", self)
        _require(
            self.analysis_width_px % self.grid_cols == 0,
            "grid_cols",
            f"a divisor of analysis_width_px ({self.analysis_width_px})",
            self,
        )
        _require(
            self.analysis_height_px % self.grid_rows == 0,
            "grid_rows",
            f"a divisor of analysis_height_px ({self.analysis_height_px})",
            self,
        )
        _require(0.0 <= self.dark_pixel_max_dn < 255.0, "dark_pixel_max_dn", "in [0, 255)", self)
        _require(
            self.dark_pixel_max_dn < self.saturated_pixel_min_dn <= 255.0,
            "saturated_pixel_min_dn",
            f"in (dark_pixel_max_dn = {self.dark_pixel_max_dn:g}, 255]",
            self,
        )
        for f in fields(self):
            if f.name.endswith("_fraction"):
                _require(0.0 < getattr(self, f.name) <= 1.0, f.name, "in (0, 1]", self)
        _require(self.flat_block_max_std_dn >= 0.0, "flat_block_max_std_dn", ">= 0 (DN)", self)
        _require(self.frozen_max_diff_dn >= 0.0, "frozen_max_diff_dn", ">= 0 (DN)", self)
        for check in ("blocked", "underexposed", "overexposed", "low_visibility"):
            warn = getattr(self, f"{check}_warn_block_fraction")
            _require(
                getattr(self, f"{check}_error_block_fraction") >= warn,
                f"{check}_error_block_fraction",
                f">= {check}_warn_block_fraction ({warn:g})",
                self,
            )
        # Lower-is-worse scores: the ERROR threshold is the lower one.
        for warn_name, error_name, unit in (
            ("low_contrast_warn_std_dn", "low_contrast_error_std_dn", "DN"),
            ("dim_warn_mean_dn", "dim_error_mean_dn", "DN"),
            ("blur_warn_laplacian_var", "blur_error_laplacian_var", "DN^2"),
        ):
            warn = getattr(self, warn_name)
            _require(warn >= 0.0, warn_name, f">= 0 ({unit})", self)
            _require(
                0.0 <= getattr(self, error_name) <= warn,
                error_name,
                f"in [0, {warn_name} = {warn:g}] ({unit})",
                self,
            )
        for warn_name, error_name in (
            ("frozen_warn_after_s", "frozen_error_after_s"),
            ("frame_gap_warn_s", "frame_gap_error_s"),
        ):
            warn = getattr(self, warn_name)
            _require(warn > 0.0, warn_name, "> 0 (s)", self)
            _require(
                getattr(self, error_name) >= warn, error_name, f">= {warn_name} ({warn:g} s)", self
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> CameraHealthConfig:
        """Config from a (possibly partial) mapping of key -> value; missing keys keep defaults.

        Raises ``ConfigError`` for an unknown key (naming the allowed keys), a value of the wrong
        type (booleans are not numbers; integers are accepted where a float is expected) or a
        value out of range.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"camera health config must be a mapping, got {mapping!r}")
        kinds = {f.name: f.type for f in fields(cls)}
        unknown = sorted(str(k) for k in mapping if k not in kinds)
        if unknown:
            raise ConfigError(f"unknown camera health key(s) {unknown}; allowed: {sorted(kinds)}")
        values: dict[str, Any] = {}
        for key, value in mapping.items():
            if kinds[key] == "float" and _is_number(value):
                values[key] = float(value)
            else:  # checked in __post_init__
                values[key] = value
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Plain form; ``from_mapping(c.as_dict()) == c``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _require(ok: bool, key: str, allowed: str, config: CameraHealthConfig) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, got {getattr(config, key)!r}")


@dataclass(frozen=True, slots=True)
class CameraHealthResult:
    """What the camera-health checks say about one frame.

    ``scores`` holds the score of every check (keyed by check name, see ``CHECKS``; 0 for
    ``frame_gap`` and ``frozen`` on the first frame); ``fired`` the level of each check that
    fired, in ``CHECKS`` order; ``level`` the most severe of them (OK when none fired).
    ``details`` holds frame statistics behind the scores (``mean_dn``,
    ``dark_pixel_fraction``, ``saturated_pixel_fraction``, ``flat_block_fraction``,
    ``frame_diff_dn``: NaN on the first frame).
    """

    stamp_s: float
    level: OodLevel
    fired: Mapping[str, OodLevel]
    scores: Mapping[str, float]
    details: Mapping[str, float]

    @property
    def reasons(self) -> tuple[str, ...]:
        """Names of the checks that fired, in ``CHECKS`` order."""
        return tuple(self.fired)

    def to_verdict(self) -> OodVerdict:
        """This result alone as an ``OodVerdict`` (no model-based scores)."""
        return OodVerdict(
            level=self.level, reasons=self.reasons, scores=self.scores, stamp_s=self.stamp_s
        )


GreyU8 = npt.NDArray[np.uint8]


class CameraHealthMonitor:
    """Stateful per-frame camera-health checker for one camera stream.

    ``check(image, stamp_s)`` judges one frame; the state (previous analysis image, previous
    stamp, start of the current run of unchanged frames) makes ``frozen``, ``frame_gap`` and
    ``time_backwards`` possible. Not thread-safe: one monitor per stream, frames in order.
    """

    def __init__(self, config: CameraHealthConfig | None = None) -> None:
        self.config = config if config is not None else CameraHealthConfig()
        self.reset()

    def reset(self) -> None:
        """Forget the previous frames (after a stream restart or a seek in a recording)."""
        self._previous: GreyU8 | None = None
        self._previous_stamp_s: float | None = None
        self._unchanged_since_s: float | None = None

    def check(self, image: npt.NDArray[Any], stamp_s: float) -> CameraHealthResult:
        """Judge one frame with header stamp ``stamp_s`` (seconds).

        ``image``: (H, W), (H, W, 1) or RGB (H, W, 3); uint8, uint16, or float32 / float64 with
        values in [0, 1] (non-finite values are counted, then read as 0 or 1 for the other
        checks). Raises ``InputError`` for another shape or dtype, or a non-finite stamp.
        """
        if not (_is_number(stamp_s) and math.isfinite(stamp_s)):
            raise InputError(f"stamp_s must be a finite number of seconds, got {stamp_s!r}")
        cfg = self.config
        grey, nonfinite = self._analysis_image(image)
        scores: dict[str, float] = dict.fromkeys(CHECKS, 0.0)
        scores["nonfinite"] = float(nonfinite)

        # --- pixel and block statistics -----------------------------------------------------
        dark = grey <= cfg.dark_pixel_max_dn
        saturated = grey >= cfg.saturated_pixel_min_dn
        shape = (cfg.grid_rows, cfg.analysis_height_px // cfg.grid_rows, cfg.grid_cols, -1)
        dark_blocks = dark.reshape(shape).mean(axis=(1, 3)) >= cfg.dark_block_min_fraction
        sat_blocks = saturated.reshape(shape).mean(axis=(1, 3)) >= cfg.saturated_block_min_fraction
        blocks = grey.reshape(shape).astype(np.float32)
        block_std = np.sqrt(np.maximum(blocks.var(axis=(1, 3)), 0.0))
        flat_blocks = block_std <= cfg.flat_block_max_std_dn
        mean, std = cv2.meanStdDev(grey)
        laplacian = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
        _, lap_std = cv2.meanStdDev(laplacian)

        scores["black"] = float(dark.mean())
        scores["blocked"] = float((dark_blocks & flat_blocks).mean())
        scores["underexposed"] = float(dark_blocks.mean())
        scores["overexposed"] = float(sat_blocks.mean())
        scores["low_visibility"] = float((flat_blocks & ~dark_blocks & ~sat_blocks).mean())
        scores["low_contrast"] = float(std[0, 0])
        scores["dim"] = float(mean[0, 0])
        scores["blur"] = float(lap_std[0, 0]) ** 2

        # --- time: gaps, time going backwards, frozen picture -------------------------------
        diff_dn = math.nan
        previous, previous_stamp = self._previous, self._previous_stamp_s
        if previous_stamp is not None and stamp_s < previous_stamp:
            scores["time_backwards"] = previous_stamp - stamp_s
            self._unchanged_since_s = None
        elif previous is not None and previous_stamp is not None:
            scores["frame_gap"] = stamp_s - previous_stamp
            diff_dn = float(cv2.norm(grey, previous, cv2.NORM_L1)) / grey.size
            if diff_dn <= cfg.frozen_max_diff_dn:
                if self._unchanged_since_s is None:
                    self._unchanged_since_s = previous_stamp
                scores["frozen"] = stamp_s - self._unchanged_since_s
            else:
                self._unchanged_since_s = None
        self._previous, self._previous_stamp_s = grey, stamp_s

        fired = self._fired(scores)
        level = max(fired.values(), default=OodLevel.OK)
        details = {
            "mean_dn": float(mean[0, 0]),
            "dark_pixel_fraction": scores["black"],
            "saturated_pixel_fraction": float(saturated.mean()),
            "flat_block_fraction": float(flat_blocks.mean()),
            "frame_diff_dn": diff_dn,
        }
        return CameraHealthResult(
            stamp_s=float(stamp_s),
            level=level,
            fired=MappingProxyType(fired),
            scores=MappingProxyType(scores),
            details=MappingProxyType(details),
        )

    # --- internals ------------------------------------------------------------------------------
    def _fired(self, scores: Mapping[str, float]) -> dict[str, OodLevel]:
        cfg = self.config

        def at_least(score: float, warn: float, error: float) -> OodLevel:
            if score >= error:
                return OodLevel.ERROR
            return OodLevel.WARN if score >= warn else OodLevel.OK

        def at_most(score: float, warn: float, error: float) -> OodLevel:
            if score <= error:
                return OodLevel.ERROR
            return OodLevel.WARN if score <= warn else OodLevel.OK

        levels = {
            "nonfinite": OodLevel.ERROR if scores["nonfinite"] > 0 else OodLevel.OK,
            "black": OodLevel.ERROR
            if scores["black"] >= cfg.black_min_dark_fraction
            else OodLevel.OK,
            "blocked": at_least(
                scores["blocked"],
                cfg.blocked_warn_block_fraction,
                cfg.blocked_error_block_fraction,
            ),
            "underexposed": at_least(
                scores["underexposed"],
                cfg.underexposed_warn_block_fraction,
                cfg.underexposed_error_block_fraction,
            ),
            "overexposed": at_least(
                scores["overexposed"],
                cfg.overexposed_warn_block_fraction,
                cfg.overexposed_error_block_fraction,
            ),
            "low_visibility": at_least(
                scores["low_visibility"],
                cfg.low_visibility_warn_block_fraction,
                cfg.low_visibility_error_block_fraction,
            ),
            "low_contrast": at_most(
                scores["low_contrast"], cfg.low_contrast_warn_std_dn, cfg.low_contrast_error_std_dn
            ),
            "dim": at_most(scores["dim"], cfg.dim_warn_mean_dn, cfg.dim_error_mean_dn),
            "blur": at_most(
                scores["blur"], cfg.blur_warn_laplacian_var, cfg.blur_error_laplacian_var
            ),
            "frozen": at_least(scores["frozen"], cfg.frozen_warn_after_s, cfg.frozen_error_after_s),
            "time_backwards": OodLevel.WARN if scores["time_backwards"] > 0 else OodLevel.OK,
        }
        gap = scores["frame_gap"]
        if gap > cfg.frame_gap_error_s:
            levels["frame_gap"] = OodLevel.ERROR
        elif gap > cfg.frame_gap_warn_s:
            levels["frame_gap"] = OodLevel.WARN
        if levels["black"] is OodLevel.ERROR:
            for name in _EXPLAINED_BY_BLACK:
                levels[name] = OodLevel.OK
        return {name: levels[name] for name in CHECKS if levels.get(name, OodLevel.OK) > 0}

    def _analysis_image(self, image: npt.NDArray[Any]) -> tuple[GreyU8, int]:
        """Grey uint8 analysis image and the count of non-finite values of a float frame."""
        if not isinstance(image, np.ndarray):
            raise InputError(f"image must be a numpy array, got {type(image).__name__}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise InputError(
                f"image must be (H, W), (H, W, 1) or RGB (H, W, 3), got shape {image.shape}"
            )
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise InputError(f"image is empty: shape {image.shape}")
        nonfinite = 0
        work: npt.NDArray[Any]
        if image.dtype in (np.float32, np.float64):
            nonfinite = int(image.size - np.count_nonzero(np.isfinite(image)))
            work = image.astype(np.float32, copy=nonfinite > 0)
            if nonfinite:
                np.nan_to_num(work, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        elif image.dtype in (np.uint8, np.uint16):
            work = image
        else:
            raise InputError(
                f"image dtype must be uint8, uint16, float32 or float64, got {image.dtype}"
            )
        work = np.ascontiguousarray(work)
        if work.ndim == 3:
            work = np.asarray(cv2.cvtColor(work, cv2.COLOR_RGB2GRAY))
        cfg = self.config
        size = (cfg.analysis_width_px, cfg.analysis_height_px)
        small: npt.NDArray[Any] = np.asarray(cv2.resize(work, size, interpolation=cv2.INTER_AREA))
        if small.dtype == np.uint16:
            grey = (small >> 8).astype(np.uint8)
        elif small.dtype != np.uint8:
            grey = np.clip(small * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
        else:
            grey = small
        return np.ascontiguousarray(grey, dtype=np.uint8), nonfinite
