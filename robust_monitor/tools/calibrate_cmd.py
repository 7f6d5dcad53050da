"""``robust-monitor calibrate``: OOD detector thresholds for one model, from in-distribution frames.

Usage::

    robust-monitor calibrate --model M.onnx (--images DIR | --bag BAG [--topic T] | --render N)
                             --out FILE.yaml [--target-fpr 0.01] [--error-fpr R]
                             [--method fused | per-detector] [--detectors D ...]
                             [--roi auto | model | none] [--limit N] [--stride K]
                             [--render-seed 777000] [--n0 32] [--n 200] [--alpha 0.001] ...

The file it writes is a ``core.ood.calibration.Calibration`` (load it with
``Calibration.load(path, model_sha256=...)``; it holds the model file's SHA-256 and is refused
for any other model), preceded by YAML comment lines that record how it was made (source,
certification parameters, split sizes): ``read_provenance`` reads them back.

Sources of in-distribution frames (every frame becomes one model input in [0, 1]):

- ``--images DIR``: every image file (``core.imaging.decode.IMAGE_SUFFIXES``) under ``DIR``,
  subfolders included, in sorted path order. ``--roi auto`` (default) decides per image: an
  image larger than the model input in either side is a whole camera frame and gets the model's
  region of interest (metadata ``roi``) before resizing; an image no larger than the model input
  is taken as an already-cropped model input and only resized. ``--roi model`` / ``--roi none``
  force one reading for every image.
- ``--bag BAG [--topic T]``: the frames of one camera topic of a rosbag2 / ROS 1 recording
  (``tools.recordings.iter_frames``), always through the model's region of interest;
  ``--stride K`` keeps every K-th frame (consecutive frames are nearly identical), ``--limit N``
  stops after N kept frames.
- ``--render N``: N procedural road-sign renders (``synth.roadsigns``) of data set
  ``--render-seed`` (default 777000; the seeds of the model's training recipe, read from
  ``<model stem>.train.json`` when it exists, and the project's reserved seeds 101, 202 and 303
  are refused). This is how the shipped calibration files are made.

Detectors (``--detectors``; default ``DEFAULT_DETECTORS``: msp, energy, abstain, p_lower,
input_stats): ``mahalanobis`` is calibrated only on request. On the shipped road-sign models the
penultimate features of unfamiliar inputs shrink towards the origin (low activations) and so lie
*closer* to the class means than in-distribution features do: the committed evaluation measured
its AUROC at 0.24 on far-OOD and 0.41 on severity-5 corruptions, below chance, so under the
``any`` rule it only spends the false-alarm budget. (The feature norm's information is in
``energy`` already.)

Mahalanobis needs a class per frame: the render's label with ``--render``, the model's own clean
prediction (a pseudo-label) for images and recordings. ``input_stats`` (``core.ood.input_stats``)
needs no label: it fits a Gaussian to low-level statistics of the model inputs.

Split: a random ``--fit-fraction`` of the frames (default 1/3; none when neither Mahalanobis nor
input_stats is calibrated) only fits the Mahalanobis and input-statistics models (a clean forward
pass each, cheap); every other frame
is certified (``--n0``, ``--n``, ``--alpha``: the ``abstain`` and ``p_lower`` scores depend on
them, so run the monitor with the same or larger ``n``, which only lowers the false-alarm rate).

Methods (``--method``):

- ``fused`` (default): ``--target-fpr`` is the false-alarm rate of the *fused* model verdict
  (``core.ood.fusion``, rule ``any``: the frame is flagged when any detector fires). The certified
  frames are halved. On the *normalisation* half, each detector gets a fixed non-decreasing map
  ``L_d`` from its score to a quantile level (``Normaliser``: the interpolated empirical
  distribution, with an exponential tail beyond its largest score). On the *conformal* half,
  ``T = max_d L_d(s_d)`` gets the split-conformal threshold ``t`` at the target rate
  (``core.ood.calibration.conformal_threshold``), and each detector's threshold is
  ``L_d``'s inverse at ``t``, so that "some detector fires" is exactly ``T > t``. Guarantee:
  for a new frame exchangeable with the conformal frames, ``P(any detector fires) <= target``
  (and, for continuous scores, ``>= target - 1 / (n_conformal + 1)``); the same holds at
  ``--error-fpr`` (default a tenth of the target) for the ERROR thresholds. All detectors sit
  at the same quantile level of their own scores, so correlated detectors do not use up the
  false-alarm budget twice (unlike a Bonferroni split). A detector whose in-distribution rate
  of its largest value is above that level never fires (written as its largest possible score,
  e.g. ``abstain`` at 1.0 when more than about 1 % of in-distribution frames abstain).
- ``per-detector``: each detector's thresholds are conformal at ``--target-fpr`` /
  ``--error-fpr`` on their own (``core.ood.calibration.calibrate``); the fused ``any`` verdict
  then raises false alarms at up to the number of detectors times the target.

Progress goes to stderr (one line, ``--quiet`` silences it). Bad input (a missing or empty
folder, an unknown topic, too few frames for the rates) exits with status 2 and one line that
says what to change.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np
import numpy.typing as npt
import yaml

from robust_monitor.core.certify.engine import SmoothingEngine, check_params
from robust_monitor.core.certify.model import ModelSpec
from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.core.imaging.decode import IMAGE_SUFFIXES, load_image_file
from robust_monitor.core.imaging.preprocess import (
    FULL_FRAME,
    Roi,
    roi_from_metadata,
    to_model_input,
)
from robust_monitor.core.ood.calibration import (
    Calibration,
    DetectorThreshold,
    calibrate,
    conformal_threshold,
    min_samples,
)
from robust_monitor.core.ood.input_stats import InputStatsModel, input_features
from robust_monitor.core.ood.scores import DETECTORS, MahalanobisModel, energy, msp_score
from robust_monitor.synth.roadsigns import (
    EVAL_DATA_SEED,
    TEST_DATA_SEED,
    TRAIN_DATA_SEED,
    render_dataset,
)
from robust_monitor.tools.certify_cmd import add_certification_args

CALIBRATION_RENDER_SEED: Final[int] = 777_000
"""Data set seed of the calibration renders (disjoint from training, model selection and tests)."""
RESERVED_SEEDS: Final[frozenset[int]] = frozenset({TRAIN_DATA_SEED, EVAL_DATA_SEED, TEST_DATA_SEED})
METHODS: Final[tuple[str, ...]] = ("fused", "per-detector")
DEFAULT_DETECTORS: Final[tuple[str, ...]] = ("msp", "energy", "abstain", "p_lower", "input_stats")
"""Detectors calibrated when ``--detectors`` is not given (see the module docstring for why
``mahalanobis`` is not among them)."""
ROI_MODES: Final[tuple[str, ...]] = ("auto", "model", "none")
PROVENANCE_MARKER: Final[str] = "# provenance"
_PROVENANCE_PREFIX: Final[str] = "#   "

U8Array = npt.NDArray[np.uint8]
F64Array = npt.NDArray[np.float64]


# --- frames ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CalibrationFrames:
    """In-distribution model inputs: ``images`` uint8 (N, C, H, W) = input * 255, exactly.

    ``labels`` are the true classes when known (renders), else None (pseudo-labels are used).
    ``source`` describes where the frames came from (recorded in the file's provenance).
    """

    images: U8Array
    labels: npt.NDArray[np.int64] | None
    source: dict[str, Any]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def model_input(self, index: int) -> npt.NDArray[np.float32]:
        """Frame ``index`` as the float32 (C, H, W) tensor ``to_model_input`` would give."""
        x: npt.NDArray[np.float32] = self.images[index].astype(np.float32) * np.float32(1 / 255)
        return x


def model_input_u8(image: U8Array, spec: ModelSpec, roi: Roi) -> U8Array:
    """``to_model_input`` stored compactly as uint8 (C, H, W) (the [0, 1] values times 255)."""
    x = to_model_input(image, spec, roi)
    return np.asarray(np.rint(x * np.float32(255.0)), np.uint8)


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (subfolders too), sorted; ``InputError`` when there are none."""
    if not folder.exists():
        raise InputError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise InputError(f"--images needs a folder of image files, got a file: {folder}")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise InputError(
            f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder} or its subfolders"
        )
    return files


def frames_from_images(
    folder: Path, spec: ModelSpec, roi_mode: str = "auto", limit: int | None = None
) -> CalibrationFrames:
    """Model inputs from the image files under ``folder`` (see the module docstring for ROI)."""
    if roi_mode not in ROI_MODES:
        raise ConfigError(f"roi mode must be one of {list(ROI_MODES)}, got {roi_mode!r}")
    files = image_files(folder)[:limit]
    roi = roi_from_metadata(spec)
    _c, h, w = spec.input_shape
    images: list[U8Array] = []
    cropped = 0
    for path in files:
        image = load_image_file(path)
        larger = image.shape[0] > h or image.shape[1] > w
        use_roi = roi_mode == "model" or (roi_mode == "auto" and larger)
        cropped += int(use_roi)
        images.append(model_input_u8(image, spec, roi if use_roi else FULL_FRAME))
    source = {
        "kind": "images",
        "folder": str(folder),
        "files": len(files),
        "roi_mode": roi_mode,
        "roi_applied_to": cropped,
    }
    return CalibrationFrames(np.stack(images), None, source)


def frames_from_bag(
    bag: Path,
    topic: str | None,
    spec: ModelSpec,
    stride: int = 1,
    limit: int | None = None,
) -> CalibrationFrames:
    """Model inputs from every ``stride``-th frame of a camera topic, through the model's ROI."""
    from robust_monitor.tools.recordings import iter_frames

    if stride < 1:
        raise ConfigError(f"--stride must be >= 1 (keep every K-th frame), got {stride}")
    roi = roi_from_metadata(spec)
    images: list[U8Array] = []
    for frame in iter_frames(bag, topic):
        if frame.index % stride:
            continue
        images.append(model_input_u8(frame.image, spec, roi))
        if limit is not None and len(images) >= limit:
            break
    if not images:
        raise InputError(f"{bag}: the camera topic holds no frames")
    source = {
        "kind": "bag",
        "bag": str(bag),
        "topic": topic,
        "stride": stride,
        "frames": len(images),
    }
    return CalibrationFrames(np.stack(images), None, source)


def forbidden_render_seeds(model_path: Path) -> set[int]:
    """Data set seeds a calibration must not render: reserved ones and the model's recipe's."""
    seeds = set(RESERVED_SEEDS)
    recipe = model_path.with_name(model_path.stem + ".train.json")
    if recipe.is_file():
        try:
            data = json.loads(recipe.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{recipe}: unreadable training recipe: {exc}") from exc
        for section in ("config", "data"):
            entries = data.get(section, {}) if isinstance(data, dict) else {}
            if isinstance(entries, dict):
                seeds.update(
                    int(v)
                    for k, v in entries.items()
                    if "data_seed" in str(k) and isinstance(v, int) and not isinstance(v, bool)
                )
    return seeds


def frames_from_renders(
    count: int, seed: int, spec: ModelSpec, model_path: Path | None = None
) -> CalibrationFrames:
    """``count`` road-sign renders of data set ``seed`` at the model's input size, with labels."""
    if count < 1:
        raise ConfigError(f"--render needs a number of renders >= 1, got {count}")
    forbidden = forbidden_render_seeds(model_path) if model_path is not None else RESERVED_SEEDS
    if seed in forbidden:
        raise ConfigError(
            f"render seed {seed} is used for training, model selection or tests "
            f"({sorted(forbidden)}); calibrate on other renders (default {CALIBRATION_RENDER_SEED})"
        )
    _c, h, w = spec.input_shape
    renders, labels = render_dataset(count, seed, size=max(h, w))
    images = np.stack([model_input_u8(r, spec, FULL_FRAME) for r in renders])
    source = {"kind": "render", "count": count, "seed": seed, "size_px": max(h, w)}
    return CalibrationFrames(images, labels, source)


# --- running the model -------------------------------------------------------------------------
class Progress:
    """One progress line on a stream (stderr): rewritten in place on a terminal, else every 10 s."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, quiet: bool = False):
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last = -math.inf

    def update(self, done: int, what: str = "frames") -> None:
        now = time.perf_counter()
        final = done >= self.total
        if self.quiet or (not final and now - self._last < (0.5 if self.tty else 10.0)):
            return
        self._last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else math.inf
        eta = f", about {_duration(left)} left" if not final and math.isfinite(left) else ""
        line = (
            f"[{self.label}] {done}/{self.total} {what} ({100.0 * done / max(self.total, 1):.0f}%)"
            f", {rate:.1f}/s{eta}"
        )
        if self.tty:
            self.stream.write("\r" + line.ljust(78) + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


@dataclass(slots=True)
class ModelOutputs:
    """Per-frame outputs: clean logits (N, K), features (N, D) or None, and the certificates'
    ``abstained`` (N,) and ``p_lower`` (N,) (NaN / False for frames that were not certified)."""

    logits: F64Array
    features: F64Array | None
    abstained: npt.NDArray[np.bool_]
    p_lower: F64Array
    labels: npt.NDArray[np.int64]
    """Certified label per frame (-1: abstained or not certified)."""
    input_features: F64Array | None = None
    """(N, len(input_stats.FEATURES)) statistics of each model input, or None."""


def run_model(
    engine: SmoothingEngine,
    inputs: Callable[[int], npt.NDArray[np.float32]],
    count: int,
    certify: npt.NDArray[np.bool_],
    n0: int,
    n: int,
    alpha: float,
    progress: Progress | None = None,
) -> ModelOutputs:
    """Clean outputs of every frame; a certificate for the frames with ``certify[i]`` True."""
    k = engine.spec.num_classes
    logits = np.zeros((count, k))
    features: F64Array | None = None
    abstained = np.zeros(count, bool)
    p_lower = np.full(count, np.nan)
    labels = np.full(count, -1, np.int64)
    done = 0
    for i in range(count):
        x = inputs(i)
        clean_features: npt.NDArray[Any] | None
        if certify[i]:
            result = engine.certify(x, n0=n0, n=n, alpha=alpha)
            cert = result.certificate
            clean_logits = result.clean_logits
            clean_features = result.clean_features
            abstained[i], p_lower[i] = cert.abstained, cert.p_lower
            labels[i] = cert.label
            done += 1
            if progress is not None:
                progress.update(done, "frames certified")
        else:
            samples = engine.sample(x, 1)
            if samples.clean_logits is None:  # the engine always runs the clean pass here
                raise InputError("the engine returned no clean outputs for a frame")
            clean_logits = samples.clean_logits
            clean_features = samples.clean_features
        logits[i] = clean_logits
        if clean_features is not None:
            if features is None:
                features = np.zeros((count, clean_features.shape[0]))
            features[i] = clean_features
    return ModelOutputs(logits, features, abstained, p_lower, labels)


def detector_scores(
    outputs: ModelOutputs,
    index: npt.NDArray[np.intp],
    detectors: Sequence[str],
    mahalanobis: MahalanobisModel | None,
    input_stats: InputStatsModel | None = None,
) -> dict[str, F64Array]:
    """Scores (higher = more OOD) of ``detectors`` for the frames ``index``."""
    out: dict[str, F64Array] = {}
    for name in detectors:
        if name == "msp":
            out[name] = msp_score(outputs.logits[index])
        elif name == "energy":
            out[name] = energy(outputs.logits[index])
        elif name == "mahalanobis":
            if mahalanobis is None or outputs.features is None:
                raise ConfigError("mahalanobis needs a model with a features output")
            out[name] = np.asarray(mahalanobis.score(outputs.features[index]), np.float64)
        elif name == "abstain":
            out[name] = outputs.abstained[index].astype(np.float64)
        elif name == "p_lower":
            p = outputs.p_lower[index]
            if not np.all(np.isfinite(p)):
                raise InputError("p_lower is missing for a frame that was not certified")
            out[name] = 1.0 - p
        elif name == "input_stats":
            if input_stats is None or outputs.input_features is None:
                raise ConfigError("input_stats needs the fitted model and the inputs' statistics")
            out[name] = input_stats.score_features(outputs.input_features[index])
        else:
            raise ConfigError(f"unknown detector {name!r}; allowed: {list(DETECTORS)}")
    return out


# --- the fused method --------------------------------------------------------------------------
_NEVER: Final[float] = float(np.finfo(np.float64).max)
"""Threshold of a detector that must never fire (scores are finite, so none exceeds it)."""
SCORE_BOUNDS: Final[Mapping[str, float]] = {"msp": 1.0, "abstain": 1.0, "p_lower": 1.0}
"""Largest value these detectors' scores can take: a threshold there never fires, and is
written instead of a larger one (same decisions, a readable file)."""
TAIL_QUANTILE: Final[float] = 0.9
"""Quantile above which the mean excess sets a normaliser's exponential tail scale."""


@dataclass(frozen=True, slots=True)
class Normaliser:
    """One detector's score -> level ``L(s)``, a fixed non-decreasing map fitted on the ``m``
    normalisation scores (their distinct values ``u_0 < ... < u_top`` with mid-ranks ``r_i``).

    ``L`` interpolates linearly between the points ``(u_i, r_i)`` (the empirical distribution,
    smoothed so that continuous scores get continuous levels); below ``u_0`` it is ``r_0``;
    above ``u_top`` it is ``r_top + 1 - exp(-(s - u_top) / beta)``, so frames beyond every
    normalisation score are still ranked; ``beta`` is the mean excess over the 90th percentile
    (the exponential tail's maximum-likelihood scale). Any fixed non-decreasing map keeps the
    conformal guarantee of the fused method; this one only decides how the detectors share the
    false-alarm budget (equally, by quantile level).
    """

    values: F64Array
    """Distinct normalisation scores, increasing."""
    ranks: F64Array
    """Mid-rank (0-based) of each distinct score among the ``m`` scores."""
    beta: float
    size: int
    """``m``: the number of normalisation scores (levels lie in ``[0, m)``)."""

    @classmethod
    def fit(cls, scores: npt.ArrayLike) -> Normaliser:
        c = np.sort(np.asarray(scores, np.float64).ravel())
        if c.size == 0 or not np.all(np.isfinite(c)):
            raise InputError("a normaliser needs finite scores of at least one frame")
        values, first, counts = np.unique(c, return_index=True, return_counts=True)
        ranks = first + (counts - 1) / 2.0
        q = c[min(int(TAIL_QUANTILE * c.size), c.size - 1)]
        excess = c[c > q] - q
        floor = 1e-12 * max(1.0, abs(float(c[-1])))
        beta = max(float(excess.mean()) if excess.size else 0.0, floor)
        return cls(values, ranks.astype(np.float64), beta, int(c.size))

    def level(self, scores: npt.ArrayLike) -> F64Array:
        s = np.asarray(scores, np.float64)
        out = np.asarray(np.interp(s, self.values, self.ranks), np.float64)
        # Interpolated levels lie between the end ranks; clipping guards against the rounding of
        # subnormal score differences.
        np.clip(out, self.ranks[0], self.ranks[-1], out=out)
        top = float(self.values[-1])
        tail = s > top
        out[tail] = self.ranks[-1] + 1.0 - np.exp(-(s[tail] - top) / self.beta)
        return out

    def threshold(self, level: float) -> float:
        """The score threshold ``h`` with ``s > h`` exactly when ``level(s) > level``."""
        u, r = self.values, self.ranks
        if level < r[0]:
            return -_NEVER  # every score is above the level
        if level < r[-1]:
            i = int(np.searchsorted(r, level, side="right")) - 1  # r[i] <= level < r[i + 1]
            return float(u[i] + (level - r[i]) / (r[i + 1] - r[i]) * (u[i + 1] - u[i]))
        room = r[-1] + 1.0 - level
        if room <= 0.0:
            return _NEVER
        return float(u[-1]) + self.beta * math.log(1.0 / room)


def fused_thresholds(
    normalise: Mapping[str, npt.ArrayLike],
    conformal: Mapping[str, npt.ArrayLike],
    warn_rate: float,
    error_rate: float,
) -> dict[str, DetectorThreshold]:
    """Per-detector thresholds whose ``any`` rule has a conformal false-alarm rate.

    ``normalise`` and ``conformal``: detector -> in-distribution scores of two disjoint frame
    sets (each detector scored on the same frames). Each detector's ``Normaliser`` is fitted on
    ``normalise``; the statistic ``T = max_d L_d(s_d)`` of the ``conformal`` frames gets the
    split-conformal threshold ``t`` at each rate, and detector ``d``'s threshold is
    ``L_d``'s inverse at ``t``. So "any detector fires" is "``T > t``", and for a new frame
    exchangeable with the conformal frames ``P(T > t) <= rate``. Raises ``ConfigError`` when
    the conformal set is too small for a rate.
    """
    if set(normalise) != set(conformal) or not normalise:
        raise ConfigError("normalise and conformal scores must cover the same detectors")
    norms = {d: Normaliser.fit(v) for d, v in normalise.items()}
    conf = {d: np.asarray(v, np.float64).ravel() for d, v in conformal.items()}
    sizes = {np.asarray(v).size for v in normalise.values()}
    if len(sizes) != 1 or len({v.size for v in conf.values()}) != 1:
        raise ConfigError("every detector needs scores of the same frames")
    statistic = np.max(np.stack([norms[d].level(conf[d]) for d in norms]), axis=0)
    levels: dict[str, float] = {}
    for key, rate in (("warn", warn_rate), ("error", error_rate)):
        try:
            levels[key] = conformal_threshold(statistic, rate)
        except ConfigError as exc:
            raise ConfigError(f"{key} false-alarm rate {rate:g}: {exc}") from exc
    count = sizes.pop() + int(statistic.size)
    bound = {d: SCORE_BOUNDS.get(d, _NEVER) for d in norms}
    return {
        d: DetectorThreshold(
            warn=min(norm.threshold(levels["warn"]), bound[d]),
            error=min(norm.threshold(levels["error"]), bound[d]),
            num_samples=count,
        )
        for d, norm in norms.items()
    }


# --- calibrating -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CalibrationSettings:
    """How ``calibrate_frames`` calibrates (see the module docstring)."""

    target_fpr: float = 0.01
    error_fpr: float | None = None
    """None: a tenth of ``target_fpr``."""
    method: str = "fused"
    detectors: tuple[str, ...] = ()
    """Empty: ``DEFAULT_DETECTORS``."""
    fit_fraction: float = 1.0 / 3.0
    split_seed: int = 0
    n0: int = 32
    n: int = 200
    alpha: float = 0.001

    @property
    def error_rate(self) -> float:
        return self.target_fpr / 10.0 if self.error_fpr is None else self.error_fpr

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid setting and what is allowed."""
        for name, value in (("target-fpr", self.target_fpr), ("error-fpr", self.error_rate)):
            if not (isinstance(value, int | float) and 0.0 < value < 1.0):
                raise ConfigError(f"--{name} must be a rate in (0, 1), got {value!r}")
        if self.error_rate > self.target_fpr:
            raise ConfigError(
                f"--error-fpr ({self.error_rate:g}) must be <= --target-fpr ({self.target_fpr:g})"
            )
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {list(METHODS)}, got {self.method!r}")
        if not 0.0 < self.fit_fraction < 1.0:
            raise ConfigError(f"--fit-fraction must be in (0, 1), got {self.fit_fraction!r}")
        bad = [d for d in self.detectors if d not in DETECTORS]
        if bad:
            raise ConfigError(f"unknown detector(s) {bad}; allowed: {list(DETECTORS)}")


@dataclass(frozen=True, slots=True)
class Split:
    """Frame indices: Mahalanobis fit, normalisation and conformal parts (method ``fused``), or
    fit and calibration (``per-detector``: ``normalise`` holds them all, ``conformal`` is empty)."""

    fit: npt.NDArray[np.intp]
    normalise: npt.NDArray[np.intp]
    conformal: npt.NDArray[np.intp]

    @property
    def certified(self) -> npt.NDArray[np.intp]:
        return np.sort(np.concatenate([self.normalise, self.conformal]))


def split_frames(count: int, fit_fraction: float, method: str, seed: int) -> Split:
    """A seeded random split of ``count`` frames (``fit_fraction`` 0: no Mahalanobis part)."""
    order = np.random.default_rng(seed).permutation(count)
    n_fit = round(count * fit_fraction)
    rest = order[n_fit:]
    if method == "fused":
        half = rest.size // 2
        norm, conf = np.sort(rest[:half]), np.sort(rest[half:])
    else:
        norm, conf = np.sort(rest), np.zeros(0, np.intp)
    return Split(np.sort(order[:n_fit]), norm, conf)


def required_frames(settings: CalibrationSettings, fit_fraction: float) -> int:
    """Fewest frames for which ``settings``' rates have enough calibration samples."""
    need = min_samples(settings.error_rate)
    for count in range(need, 100 * need + 10):
        split = split_frames(count, fit_fraction, settings.method, 0)
        part = split.conformal if settings.method == "fused" else split.normalise
        if part.size >= need and split.normalise.size >= 1:
            return count
    return 100 * need + 10


@dataclass(frozen=True)
class CalibrationRun:
    """A calibration and what it was made from."""

    calibration: Calibration
    provenance: dict[str, Any]
    outputs: ModelOutputs
    split: Split
    in_sample: dict[str, float] = field(default_factory=dict)


def calibrate_frames(
    engine: SmoothingEngine,
    frames: CalibrationFrames,
    settings: CalibrationSettings,
    progress: Progress | None = None,
) -> CalibrationRun:
    """Certify ``frames``, fit Mahalanobis on its split, and set the thresholds (module doc)."""
    settings.validate()
    check_params(engine.sigma, settings.n0, settings.n, settings.alpha, engine.batch_size)
    has_features = engine.spec.features_name is not None
    detectors = settings.detectors or DEFAULT_DETECTORS
    if "mahalanobis" in detectors and not has_features:
        raise ConfigError(f"{engine.spec.path.name} has no features output: drop mahalanobis")
    fitted = {"mahalanobis", "input_stats"} & set(detectors)
    fit_fraction = settings.fit_fraction if fitted else 0.0
    count = len(frames)
    need = required_frames(settings, fit_fraction)
    if count < need:
        raise ConfigError(
            f"{count} frames are too few for an error false-alarm rate of "
            f"{settings.error_rate:g} (method {settings.method}): give at least {need} frames, "
            "or raise --error-fpr / --target-fpr"
        )
    split = split_frames(count, fit_fraction, settings.method, settings.split_seed)
    certify = np.zeros(count, bool)
    certify[split.certified] = True
    if progress is not None:
        progress.total = int(certify.sum())
    outputs = run_model(
        engine,
        frames.model_input,
        count,
        certify,
        settings.n0,
        settings.n,
        settings.alpha,
        progress,
    )
    if "input_stats" in detectors:
        outputs.input_features = np.stack(
            [input_features(frames.model_input(i)) for i in range(count)]
        )
    labels = frames.labels
    pseudo = labels is None
    if labels is None:
        labels = outputs.logits.argmax(axis=1).astype(np.int64)
    maha: MahalanobisModel | None = None
    if "mahalanobis" in detectors:
        assert outputs.features is not None
        maha = MahalanobisModel.fit(outputs.features[split.fit], labels[split.fit])
    stats: InputStatsModel | None = None
    if "input_stats" in detectors:
        assert outputs.input_features is not None
        stats = InputStatsModel.fit(outputs.input_features[split.fit])
    rate, error = settings.target_fpr, settings.error_rate
    if settings.method == "fused":
        norm = detector_scores(outputs, split.normalise, detectors, maha, stats)
        conf = detector_scores(outputs, split.conformal, detectors, maha, stats)
        calibration = Calibration(
            model_sha256=engine.spec.sha256,
            target_false_alarm_rate=rate,
            error_false_alarm_rate=error,
            thresholds=fused_thresholds(norm, conf, rate, error),
            mahalanobis=maha,
            input_stats=stats,
        )
        check = conf
    else:
        scores = detector_scores(outputs, split.normalise, detectors, maha, stats)
        calibration = calibrate(
            scores,
            model_sha256=engine.spec.sha256,
            target_false_alarm_rate=rate,
            error_false_alarm_rate=error,
            mahalanobis=maha,
            input_stats=stats,
        )
        check = scores
    in_sample = in_sample_alarm_rates(calibration, check)
    provenance: dict[str, Any] = {
        "model": engine.spec.path.name,
        "model_sha256": engine.spec.sha256,
        "source": frames.source,
        "labels": "model predictions (pseudo-labels)" if pseudo else "render labels",
        "certification": {
            "n0": settings.n0,
            "n": settings.n,
            "alpha": settings.alpha,
            "sigma": engine.sigma,
            "provider": engine.provider,
        },
        "method": settings.method,
        "fused_rule": "any",
        "detectors": list(detectors),
        "split": {
            "seed": settings.split_seed,
            "model_fit": int(split.fit.size),
            "normalise" if settings.method == "fused" else "calibrate": int(split.normalise.size),
            **({"conformal": int(split.conformal.size)} if settings.method == "fused" else {}),
        },
        "in_sample_fused_alarm_rate": in_sample,
    }
    return CalibrationRun(calibration, provenance, outputs, split, in_sample)


def in_sample_alarm_rates(
    calibration: Calibration, scores: Mapping[str, npt.ArrayLike]
) -> dict[str, float]:
    """Fraction of the given frames on which the ``any`` rule reaches WARN / ERROR."""
    warn = np.zeros(0, bool)
    error = np.zeros(0, bool)
    for name, sample in scores.items():
        s = np.asarray(sample, np.float64)
        t = calibration.thresholds[name]
        warn = (s > t.warn) if warn.size == 0 else warn | (s > t.warn)
        error = (s > t.error) if error.size == 0 else error | (s > t.error)
    return {"warn": round(float(warn.mean()), 6), "error": round(float(error.mean()), 6)}


# --- the file ----------------------------------------------------------------------------------
def write_calibration(calibration: Calibration, path: Path, provenance: Mapping[str, Any]) -> Path:
    """``Calibration.save`` plus the provenance as YAML comment lines after its header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    calibration.save(path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    header = 0
    while header < len(lines) and lines[header].startswith("#"):
        header += 1
    dumped = yaml.safe_dump(dict(provenance), sort_keys=False, default_flow_style=None, width=96)
    block = [f"{PROVENANCE_MARKER} (comments; the loader ignores them):\n"]
    block += [f"{_PROVENANCE_PREFIX}{line}\n" for line in dumped.splitlines()]
    path.write_text("".join(lines[:header] + block + lines[header:]), encoding="utf-8")
    return path


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance block ``write_calibration`` put in a calibration file, or None."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    start = next((i for i, ln in enumerate(lines) if ln.startswith(PROVENANCE_MARKER)), None)
    if start is None:
        return None
    body: list[str] = []
    for line in lines[start + 1 :]:
        if not line.startswith(_PROVENANCE_PREFIX):
            break
        body.append(line[len(_PROVENANCE_PREFIX) :])
    try:
        data = yaml.safe_load("\n".join(body))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


# --- command line ------------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "calibrate",
        help="set OOD thresholds for a model from in-distribution frames",
        description="Fit OOD detector thresholds for one model (see the module docstring).",
    )
    add_certification_args(parser)
    parser.set_defaults(n0=32, n=200, run=run)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of in-distribution image files")
    source.add_argument("--bag", type=Path, help="rosbag2 / ROS 1 recording")
    source.add_argument("--render", type=int, metavar="N", help="N procedural road-sign renders")
    parser.add_argument("--topic", default=None, help="camera topic of --bag (needed if several)")
    parser.add_argument(
        "--render-seed",
        type=int,
        default=CALIBRATION_RENDER_SEED,
        help=f"data set seed of --render (default {CALIBRATION_RENDER_SEED})",
    )
    parser.add_argument(
        "--roi",
        choices=ROI_MODES,
        default="auto",
        help="--images: model ROI on images larger than the model input (auto), always, never",
    )
    parser.add_argument("--limit", type=int, default=None, help="use at most N frames")
    parser.add_argument("--stride", type=int, default=1, help="--bag: keep every K-th frame")
    parser.add_argument("--out", type=Path, required=True, help="calibration YAML to write")
    parser.add_argument(
        "--target-fpr",
        type=float,
        default=0.01,
        help="in-distribution false-alarm rate of WARN (fused verdict for --method fused)",
    )
    parser.add_argument(
        "--error-fpr", type=float, default=None, help="false-alarm rate of ERROR (default: /10)"
    )
    parser.add_argument("--method", choices=METHODS, default="fused", help="threshold rule")
    parser.add_argument(
        "--detectors",
        nargs="+",
        choices=DETECTORS,
        default=None,
        help=f"default: {' '.join(DEFAULT_DETECTORS)}",
    )
    parser.add_argument(
        "--fit-fraction", type=float, default=1.0 / 3.0, help="frames that fit Mahalanobis"
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the random split")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")


def load_frames(args: argparse.Namespace, spec: ModelSpec) -> CalibrationFrames:
    """The frames of the source the arguments name."""
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.images is not None:
        return frames_from_images(args.images, spec, args.roi, args.limit)
    if args.bag is not None:
        return frames_from_bag(args.bag, args.topic, spec, args.stride, args.limit)
    count = args.render if args.limit is None else min(args.render, args.limit)
    return frames_from_renders(count, args.render_seed, spec, args.model)


def _summary(run: CalibrationRun, out: Path, seconds: float) -> dict[str, Any]:
    cal = run.calibration
    return {
        "out": str(out),
        "model_sha256": cal.model_sha256,
        "method": run.provenance["method"],
        "target_false_alarm_rate": cal.target_false_alarm_rate,
        "error_false_alarm_rate": cal.error_false_alarm_rate,
        "thresholds": {name: t.as_dict() for name, t in cal.thresholds.items()},
        "split": run.provenance["split"],
        "in_sample_fused_alarm_rate": run.in_sample,
        "seconds": round(seconds, 1),
    }


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    settings = CalibrationSettings(
        target_fpr=args.target_fpr,
        error_fpr=args.error_fpr,
        method=args.method,
        detectors=tuple(args.detectors or ()),
        fit_fraction=args.fit_fraction,
        split_seed=args.split_seed,
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
    )
    settings.validate()
    check_params(1.0 if args.sigma is None else args.sigma, args.n0, args.n, args.alpha, args.batch)
    engine = SmoothingEngine(
        args.model, args.sigma, batch_size=args.batch, providers=args.provider, seed=args.seed
    )
    if engine.fallback and not args.quiet:
        print(f"robust-monitor calibrate: note: {engine.fallback}", file=sys.stderr)
    frames = load_frames(args, engine.spec)
    progress = Progress("calibrate", len(frames), quiet=args.quiet)
    result = calibrate_frames(engine, frames, settings, progress)
    provenance = {
        "command": _command(args),
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **result.provenance,
    }
    write_calibration(result.calibration, args.out, provenance)
    summary = _summary(result, args.out, time.perf_counter() - start)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        cal = result.calibration
        print(
            f"wrote {args.out}: {len(cal.thresholds)} detectors, method {settings.method}, "
            f"target false-alarm rate {cal.target_false_alarm_rate:g} (error "
            f"{cal.error_false_alarm_rate:g}), in-sample {result.in_sample}, "
            f"{summary['seconds']} s"
        )
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that makes this file again (paths as given)."""
    if args.images is not None:
        source = f"--images {args.images} --roi {args.roi}"
    elif args.bag is not None:
        topic = f" --topic {args.topic}" if args.topic else ""
        source = f"--bag {args.bag}{topic} --stride {args.stride}"
    else:
        source = f"--render {args.render} --render-seed {args.render_seed}"
    limit = f" --limit {args.limit}" if args.limit is not None else ""
    error = f" --error-fpr {args.error_fpr:g}" if args.error_fpr is not None else ""
    detectors = f" --detectors {' '.join(args.detectors)}" if args.detectors else ""
    return (
        f"robust-monitor calibrate --model {args.model} {source}{limit} --out {args.out} "
        f"--method {args.method} --target-fpr {args.target_fpr:g}{error}{detectors} "
        f"--n0 {args.n0} --n {args.n} --alpha {args.alpha:g}"
    )
