"""``robust-monitor eval-ood``: how well the OOD monitor separates in-distribution from OOD input.

Usage::

    robust-monitor eval-ood [--model M.onnx] [--calibration auto | fit | FILE.yaml] [--quick]
                            [--n-id 500] [--n-far 100] [--n-corrupt 50] [--severities 3 5]
                            [--camera frame | off] [--json] [--out REPORT.json] [--plot ROC.png]

Sets (every frame is certified like the monitor does it, ``--n0`` / ``--n`` / ``--alpha``):

- in-distribution (ID): ``--n-id`` held-out road-sign renders (data set seed ``ID_SEED``, never
  used for training, model selection, tests or calibration);
- far-OOD: ``--n-far`` frames of each set of ``ood_sets.FAR_OOD_SETS`` (noise, procedural
  textures, natural photos, tunnel frames);
- corruptions: each of the 15 ImageNet-C corruptions (``synth.corruptions.CORRUPTIONS``) at each
  of ``--severities`` applied to ``--n-corrupt`` of the ID renders (the same renders at every
  severity of a corruption, other renders for each corruption).

Camera-health checks (``--camera frame``, the default) run on whole 320x240 frames, as in the
monitor, never on the 64x64 model input: on such a small crop the blur and contrast checks fire on
a third of the clean renders. For an ID or corrupted render the camera sees a road-scene frame
(``ood_sets.scene_frames``) whose region of interest shows the clean render, with the same
corruption at the same severity applied to the whole frame (fog, noise or blur affect the
whole picture); the model sees the render with the corruption applied at the render's own size.
A far-OOD frame is what the camera sees, and the model gets its region of interest. Each frame is
checked on its own (the frozen-frame and stamp checks need a stream and never fire here).
``--camera off`` leaves the camera out of the verdict.

Scores, all higher = more OOD:

- each calibrated model detector (by default ``msp``, ``energy``, ``abstain``, ``p_lower``
  and ``input_stats``, the statistics of the model input; ``mahalanobis`` when the calibration
  has it);
- ``camera``: the camera-health level (0 OK, 1 WARN, 2 ERROR);
- ``fused``: the verdict level (0 OK, 1 WARN, 2 ERROR; camera and model detectors fused by
  ``core.ood.fusion.OodFusion``) plus a tie-breaker in (0, 1): ``T = max_d L_d(s_d)``, the
  largest quantile level of a model detector's score among ``--n-norm`` further ID renders
  (seed ``NORM_SEED``; ``calibrate_cmd.Normaliser``, the statistic the fused calibration
  thresholds), scaled by ``m + 3/2``. Thresholding ``fused`` at 1 and 2 gives exactly the
  monitor's WARN and ERROR decisions; within a level, frames are ranked by how unusual their
  most unusual detector score is. (The normalisers are fitted on renders of their own, so the
  ID set's scores are not used to rank themselves.)
- ``model_fused``: the same without the camera checks.

Metrics: AUROC (the Mann-Whitney probability that an OOD frame scores above an ID frame, ties
counted half) and the false-positive rate at 95 % true-positive rate (``fpr_at_tpr``) for every
score and set; alarm rates at the deployed thresholds; and, for labelled sets (ID and
corruptions), the smoothed classifier's accuracy, wrong rate (a class that is not the true one,
abstentions not counted), abstention rate and **dangerous-miss rate**: the fraction of frames on
which the smoothed classifier returns a wrong class (not an abstention) *and* the fused verdict is
OK. Pooled sets (``far_ood/all``, ``corruption/all@S``) compare all their frames with the ID set.

Without a calibration file beside the model (or with ``--calibration fit``), the thresholds are
fitted first on ``--calib-renders`` renders of seed ``CALIBRATION_RENDER_SEED`` with
``calibrate_cmd.calibrate_frames`` (method ``fused``). ``--quick`` makes a CI-sized run (a few
frames per set, smaller ``n`` when it fits its own calibration). The report is JSON (``--json``
prints it, ``--out`` writes it); ``--plot`` draws ROC curves and per-corruption bars (PNG).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from robust_monitor.core.certify.certificate import ABSTAIN
from robust_monitor.core.certify.engine import SmoothingEngine, check_params
from robust_monitor.core.certify.stats import clopper_pearson_upper
from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.core.imaging.preprocess import (
    FULL_FRAME,
    Roi,
    roi_from_metadata,
    to_model_input,
)
from robust_monitor.core.ood.calibration import Calibration
from robust_monitor.core.ood.camera_health import CameraHealthMonitor
from robust_monitor.core.ood.fusion import OodFusion
from robust_monitor.core.ood.scores import model_scores
from robust_monitor.core.pipeline import default_calibration_path
from robust_monitor.synth.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from robust_monitor.synth.roadsigns import render_dataset
from robust_monitor.tools import ood_sets
from robust_monitor.tools.calibrate_cmd import (
    CALIBRATION_RENDER_SEED,
    CalibrationSettings,
    Normaliser,
    Progress,
    calibrate_frames,
    frames_from_renders,
    read_provenance,
)
from robust_monitor.tools.certify_cmd import add_certification_args

FORMAT: Final[str] = "robust_monitor.ood_eval/1"
ID_SEED: Final[int] = 777_001
"""Data set seed of the held-out in-distribution renders."""
NORM_SEED: Final[int] = 777_006
"""Data set seed of the renders that fit the fused score's normalisers."""
FAR_OOD_SEED: Final[int] = 777_002
CORRUPTION_SEED: Final[int] = 777_003
SCENE_SEED: Final[int] = 777_005
SCENE_POOL: Final[int] = 24
"""Road-scene frames the ID and corrupted renders are shown in (for the camera checks)."""
TPR_LEVEL: Final[float] = 0.95
TARGETS: Final[Mapping[str, float]] = {
    "far_ood_fused_auroc_min": 0.95,
    "corruption_sev5_fused_auroc_min": 0.90,
    "dangerous_miss_rate_sev5_max": 0.02,
}
FULL: Final[Mapping[str, int]] = {
    "n_id": 500,
    "n_norm": 250,
    "n_far": 100,
    "n_corrupt": 50,
    "calib": 1500,
}
QUICK: Final[Mapping[str, int]] = {
    "n_id": 40,
    "n_norm": 20,
    "n_far": 8,
    "n_corrupt": 6,
    "calib": 150,
}

F64Array = npt.NDArray[np.float64]
U8Image = npt.NDArray[np.uint8]


# --- metrics -----------------------------------------------------------------------------------
def _scores(values: npt.ArrayLike, name: str) -> F64Array:
    s = np.asarray(values, np.float64).ravel()
    if s.size == 0:
        raise InputError(f"{name} scores are empty")
    if not np.all(np.isfinite(s) | (s == np.inf)):
        raise InputError(f"{name} scores must not be NaN or -inf")
    return s


def auroc(id_scores: npt.ArrayLike, ood_scores: npt.ArrayLike) -> float:
    """Area under the ROC curve of "OOD when score is high": ``P(ood > id) + P(ood == id) / 2``.

    Computed exactly from average ranks (the Mann-Whitney U statistic): 1.0 when every OOD score
    is above every ID score, 0.5 for identical samples, 0.0 when all are below.
    """
    a = _scores(id_scores, "ID")
    b = _scores(ood_scores, "OOD")
    ranks = rankdata(np.concatenate([a, b]), method="average")
    u = float(ranks[a.size :].sum()) - b.size * (b.size + 1) / 2.0
    return u / (a.size * b.size)


def fpr_at_tpr(
    id_scores: npt.ArrayLike, ood_scores: npt.ArrayLike, tpr: float = TPR_LEVEL
) -> float:
    """False-positive rate when the alarm threshold is set so that a fraction ``tpr`` of OOD
    frames alarm: alarm when ``score >= h`` with ``h`` the ``ceil(tpr * m)``-th largest of the
    ``m`` OOD scores (the highest threshold that reaches the true-positive rate); the result is
    the fraction of ID scores ``>= h``.
    """
    if not 0.0 < tpr <= 1.0:
        raise ConfigError(f"tpr must be in (0, 1], got {tpr!r}")
    a = _scores(id_scores, "ID")
    b = np.sort(_scores(ood_scores, "OOD"))[::-1]
    k = math.ceil(tpr * b.size - 1e-9)
    h = b[k - 1]
    return float(np.mean(a >= h))


def roc_curve(id_scores: npt.ArrayLike, ood_scores: npt.ArrayLike) -> tuple[F64Array, F64Array]:
    """(false-positive rates, true-positive rates) of "alarm when score >= h" for every distinct
    score ``h`` from the highest down, starting at (0, 0) and ending at (1, 1)."""
    a = _scores(id_scores, "ID")
    b = _scores(ood_scores, "OOD")
    thresholds = np.unique(np.concatenate([a, b]))[::-1]
    a_sorted, b_sorted = np.sort(a), np.sort(b)
    fpr = 1.0 - np.searchsorted(a_sorted, thresholds, side="left") / a.size
    tpr = 1.0 - np.searchsorted(b_sorted, thresholds, side="left") / b.size
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


def fused_score(level: int, fraction: float) -> float:
    """The fused score: verdict ``level`` plus a tie-breaker ``fraction`` in (0, 1)."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"the tie-breaker must be in (0, 1), got {fraction!r}")
    return float(level) + fraction


def model_statistic(
    normalisers: Mapping[str, Normaliser], scores: Mapping[str, F64Array]
) -> F64Array:
    """``T = max_d L_d(s_d)`` per frame, scaled into (0, 1): ``(T + 1/2) / (m + 3/2)``.

    ``L_d`` is detector ``d``'s quantile level among ``m`` in-distribution normalisation frames
    (``calibrate_cmd.Normaliser``, the statistic the fused calibration thresholds).
    """
    levels = [normalisers[d].level(scores[d]) for d in normalisers]
    m = _norm_size(normalisers)
    out: F64Array = (np.max(np.stack(levels), axis=0) + 0.5) / (m + 1.5)
    return out


def _norm_size(normalisers: Mapping[str, Normaliser]) -> int:
    sizes = {int(n.size) for n in normalisers.values()}
    if len(sizes) != 1:
        raise ConfigError("every normaliser must be fitted on the same frames")
    return sizes.pop()


# --- one frame ---------------------------------------------------------------------------------
@dataclass
class SetResult:
    """Per-frame results of one set (parallel lists)."""

    name: str
    kind: str
    scores: dict[str, list[float]] = field(default_factory=dict)
    labels: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    level: list[int] = field(default_factory=list)
    model_level: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.level)

    def add(self, name: str, value: float) -> None:
        self.scores.setdefault(name, []).append(float(value))

    def array(self, name: str) -> F64Array:
        return np.asarray(self.scores[name], np.float64)


class Evaluator:
    """Certifies frames and judges them like ``FramePipeline`` (one frame at a time)."""

    def __init__(
        self,
        engine: SmoothingEngine,
        calibration: Calibration,
        n0: int,
        n: int,
        alpha: float,
        camera: bool,
    ) -> None:
        self.engine = engine
        self.calibration = calibration
        self.fusion = OodFusion(calibration)
        self.monitor = CameraHealthMonitor() if camera else None
        self.roi: Roi = roi_from_metadata(engine.spec)
        self.n0, self.n, self.alpha = n0, n, alpha

    def judge(
        self,
        result: SetResult,
        model_image: U8Image,
        camera_frame: U8Image,
        label: int,
        roi: Roi,
    ) -> None:
        """Certify ``model_image`` (through ``roi``), check ``camera_frame``, record the verdict."""
        x = to_model_input(model_image, self.engine.spec, roi)
        out = self.engine.certify(x, n0=self.n0, n=self.n, alpha=self.alpha)
        cert = out.certificate
        scores = model_scores(
            logits=out.clean_logits,
            features=out.clean_features,
            mahalanobis=self.calibration.mahalanobis,
            abstained=cert.abstained,
            p_lower=cert.p_lower,
            model_input=x,
            input_stats=self.calibration.input_stats,
        )
        scores = {d: scores[d] for d in self.fusion.detectors}
        camera = None
        if self.monitor is not None:
            self.monitor.reset()
            camera = self.monitor.check(camera_frame, 0.0)
        verdict = self.fusion.fuse(scores, camera=camera, stamp_s=0.0)
        model_level = int(self.fusion.fuse(scores, stamp_s=0.0).level)
        for name, value in scores.items():
            result.add(name, value)
        if camera is not None:
            result.add("camera", float(camera.level))
        result.labels.append(int(label))
        result.predicted.append(int(cert.label))
        result.level.append(int(verdict.level))
        result.model_level.append(model_level)


# --- the sets ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EvalPlan:
    """What to evaluate (counts per set, certification parameters, seeds)."""

    n_id: int
    n_far: int
    n_corrupt: int
    n_norm: int
    severities: tuple[int, ...]
    corruptions: tuple[str, ...]
    far_sets: tuple[str, ...]
    camera: bool

    def validate(self) -> None:
        if self.n_id < 1:
            raise ConfigError(f"--n-id must be >= 1, got {self.n_id}")
        if self.n_norm < 2:
            raise ConfigError(f"--n-norm must be >= 2, got {self.n_norm}")
        if self.n_far < 1 or self.n_corrupt < 1:
            raise ConfigError(
                f"--n-far and --n-corrupt must be >= 1, got {self.n_far}, {self.n_corrupt}"
            )
        bad = [s for s in self.severities if s not in SEVERITIES]
        if bad or not self.severities:
            raise ConfigError(f"--severities must be among {list(SEVERITIES)}, got {bad}")
        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown:
            raise ConfigError(f"unknown corruption(s) {unknown}; allowed: {list(CORRUPTIONS)}")

    @property
    def total_frames(self) -> int:
        far = self.n_far * len(self.far_sets)
        return (
            self.n_norm
            + self.n_id
            + far
            + self.n_corrupt * len(self.corruptions) * len(self.severities)
        )


def run_sets(
    evaluator: Evaluator, plan: EvalPlan, progress: Progress | None = None
) -> list[SetResult]:
    """Certify and judge every frame of every set of ``plan``."""
    spec = evaluator.engine.spec
    _c, h, w = spec.input_shape
    renders, labels = render_dataset(plan.n_id, ID_SEED, size=max(h, w))
    scenes = ood_sets.scene_frames(min(SCENE_POOL, plan.n_id), SCENE_SEED)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress.update(done, "frames")

    results: list[SetResult] = []
    norm_renders, norm_labels = render_dataset(plan.n_norm, NORM_SEED, size=max(h, w))
    normalise = SetResult("normalise", "normalise")
    for i in range(plan.n_norm):
        camera_frame = ood_sets.paste_into_roi(scenes[i % len(scenes)], norm_renders[i])
        evaluator.judge(normalise, norm_renders[i], camera_frame, int(norm_labels[i]), FULL_FRAME)
        tick()
    results.append(normalise)
    in_dist = SetResult("in_distribution", "id")
    for i in range(plan.n_id):
        camera_frame = ood_sets.paste_into_roi(scenes[i % len(scenes)], renders[i])
        evaluator.judge(in_dist, renders[i], camera_frame, int(labels[i]), FULL_FRAME)
        tick()
    results.append(in_dist)

    for name in plan.far_sets:
        far = SetResult(f"far_ood/{name}", "far_ood", meta={"source": name})
        for frame in ood_sets.far_ood_frames(name, plan.n_far, FAR_OOD_SEED):
            evaluator.judge(far, frame, frame, -1, evaluator.roi)
            tick()
        results.append(far)

    for k, corruption in enumerate(plan.corruptions):
        c_index = CORRUPTIONS.index(corruption)
        for severity in plan.severities:
            res = SetResult(
                f"corruption/{corruption}@{severity}",
                "corruption",
                meta={"corruption": corruption, "severity": severity},
            )
            for j in range(plan.n_corrupt):
                base = (k * plan.n_corrupt + j) % plan.n_id
                seq = np.random.SeedSequence([CORRUPTION_SEED, c_index, severity, j])
                rng_model, rng_camera = (np.random.default_rng(s) for s in seq.spawn(2))
                image = corrupt(renders[base], corruption, severity, rng_model)
                scene = ood_sets.paste_into_roi(scenes[base % len(scenes)], renders[base])
                camera_frame = corrupt(scene, corruption, severity, rng_camera)
                evaluator.judge(res, image, camera_frame, int(labels[base]), FULL_FRAME)
                tick()
            results.append(res)
    return results


# --- the report --------------------------------------------------------------------------------
def _r(value: float | np.floating[Any]) -> float:
    return round(float(value), 6)


def add_fused_scores(normalise: SetResult, results: Sequence[SetResult]) -> None:
    """Add ``fused`` and ``model_fused`` to every set: the verdict level (with / without the
    camera) plus ``model_statistic`` with normalisers fitted on the ``normalise`` set."""
    detectors = [d for d in normalise.scores if d != "camera"]
    normalisers = {d: Normaliser.fit(normalise.array(d)) for d in detectors}
    for res in results:
        if not len(res):
            continue
        t = model_statistic(normalisers, {d: res.array(d) for d in detectors})
        res.scores["fused"] = [fused_score(lv, f) for lv, f in zip(res.level, t, strict=True)]
        res.scores["model_fused"] = [
            fused_score(lv, f) for lv, f in zip(res.model_level, t, strict=True)
        ]


WHAT_IF_RATES: Final[tuple[float, ...]] = (0.01, 0.02, 0.05, 0.1)


def what_if(in_dist: SetResult, sets: Mapping[str, SetResult]) -> dict[str, dict[str, float]]:
    """Other operating points of the fused score: alarm when ``fused >= h``, with ``h`` set so
    that a fraction ``r`` of the ID frames alarm (``r`` in ``WHAT_IF_RATES``; ``h`` read off
    this ID set, so a what-if, not a calibration): the pooled sets' alarm and dangerous-miss
    rates there."""
    fused_id = np.sort(in_dist.array("fused"))[::-1]
    out: dict[str, dict[str, float]] = {}
    for rate in WHAT_IF_RATES:
        k = max(1, math.floor(rate * fused_id.size))
        h = float(fused_id[k - 1])
        point: dict[str, float] = {"id_alarm_rate": _r(np.mean(fused_id >= h))}
        for name, res in sets.items():
            if not res.kind.endswith("_pooled"):
                continue
            alarm = res.array("fused") >= h
            point[f"{name}|alarm_rate"] = _r(alarm.mean())
            if res.kind == "corruption_pooled":
                predicted, labels = np.asarray(res.predicted), np.asarray(res.labels)
                wrong = (predicted != ABSTAIN) & (predicted != labels)
                point[f"{name}|dangerous_miss_rate"] = _r(np.mean(wrong & ~alarm))
        out[f"{rate:g}"] = point
    return out


def save_scores(path: Path, sets: Mapping[str, SetResult]) -> Path:
    """Every per-frame score, label, prediction and level as ``SET|NAME`` arrays (``.npz``)."""
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name, res in sets.items():
        if res.kind.endswith("_pooled"):
            continue
        for key, values in res.scores.items():
            arrays[f"{name}|{key}"] = np.asarray(values, np.float64)
        arrays[f"{name}|label"] = np.asarray(res.labels, np.int64)
        arrays[f"{name}|predicted"] = np.asarray(res.predicted, np.int64)
        arrays[f"{name}|level"] = np.asarray(res.level, np.int64)
        arrays[f"{name}|model_level"] = np.asarray(res.model_level, np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
    return path


def labelled_stats(res: SetResult) -> dict[str, Any]:
    """Accuracy, wrong, abstention and dangerous-miss rates of a labelled set."""
    labels = np.asarray(res.labels)
    predicted = np.asarray(res.predicted)
    ok = np.asarray(res.level) == 0
    abstained = predicted == ABSTAIN
    wrong = ~abstained & (predicted != labels)
    dangerous = wrong & ok
    n = labels.size
    count = int(dangerous.sum())
    return {
        "accuracy": _r(np.mean(predicted == labels)),
        "wrong_rate": _r(wrong.mean()),
        "abstain_rate": _r(abstained.mean()),
        "dangerous_misses": count,
        "dangerous_miss_rate": _r(count / n),
        "dangerous_miss_rate_upper95": _r(clopper_pearson_upper(count, n, 0.05)),
        "wrong_frames_flagged": _r(float(np.mean(~ok[wrong]))) if wrong.any() else None,
    }


def alarm_stats(res: SetResult) -> dict[str, float]:
    level = np.asarray(res.level)
    model_level = np.asarray(res.model_level)
    out = {
        "warn_or_error": _r(np.mean(level >= 1)),
        "error": _r(np.mean(level >= 2)),
        "model_warn_or_error": _r(np.mean(model_level >= 1)),
    }
    if "camera" in res.scores:
        out["camera_warn_or_error"] = _r(np.mean(res.array("camera") >= 1))
    return out


def compare(in_dist: SetResult, ood: SetResult) -> dict[str, Any]:
    """AUROC and FPR at 95 % TPR of every score, ID vs ``ood``."""
    names = [s for s in in_dist.scores if s in ood.scores]
    return {
        "auroc": {s: _r(auroc(in_dist.array(s), ood.array(s))) for s in names},
        "fpr_at_95_tpr": {s: _r(fpr_at_tpr(in_dist.array(s), ood.array(s))) for s in names},
    }


def pooled(name: str, kind: str, parts: Sequence[SetResult]) -> SetResult:
    """One set holding the frames of ``parts``."""
    out = SetResult(name, kind, meta={"pooled": [p.name for p in parts]})
    for p in parts:
        for key, values in p.scores.items():
            out.scores.setdefault(key, []).extend(values)
        out.labels += p.labels
        out.predicted += p.predicted
        out.level += p.level
        out.model_level += p.model_level
    return out


def build_report(
    results: Sequence[SetResult], plan: EvalPlan
) -> tuple[dict[str, Any], dict[str, SetResult]]:
    """The ``sets`` and ``summary`` sections, and every set (pooled ones too) by name.

    ``results[0]`` is the normalisation set, ``results[1]`` the ID set.
    """
    add_fused_scores(results[0], results[1:])
    in_dist = results[1]
    far = [r for r in results if r.kind == "far_ood"]
    sets: dict[str, SetResult] = {r.name: r for r in results[2:]}
    if far:
        sets["far_ood/all"] = pooled("far_ood/all", "far_ood_pooled", far)
    for severity in plan.severities:
        parts = [r for r in results if r.kind == "corruption" and r.meta["severity"] == severity]
        if parts:
            name = f"corruption/all@{severity}"
            sets[name] = pooled(name, "corruption_pooled", parts)
            sets[name].meta["severity"] = severity
    entries: dict[str, Any] = {}
    for name, res in sets.items():
        entry: dict[str, Any] = {"kind": res.kind, "n": len(res), **res.meta}
        entry.update(compare(in_dist, res))
        entry["alarm_rate"] = alarm_stats(res)
        if res.kind in ("corruption", "corruption_pooled"):
            entry.update(labelled_stats(res))
        entries[name] = entry
    id_entry: dict[str, Any] = {
        "n": len(in_dist),
        "seed": ID_SEED,
        "false_alarm_rate": alarm_stats(in_dist),
        **labelled_stats(in_dist),
    }
    report_sets = {"in_distribution": id_entry, **entries}
    summary = summarise(report_sets, plan)
    summary["what_if_id_alarm_rate"] = what_if(in_dist, sets)
    named = {"normalise": results[0], "in_distribution": in_dist, **sets}
    return {"sets": report_sets, "summary": summary}, named


def summarise(entries: Mapping[str, Any], plan: EvalPlan) -> dict[str, Any]:
    """Headline figures and whether the targets (``TARGETS``) are met."""
    out: dict[str, Any] = {}
    far = entries.get("far_ood/all")
    if far is not None:
        per_set = {
            k.split("/", 1)[1]: v["auroc"]["fused"]
            for k, v in entries.items()
            if v.get("kind") == "far_ood" and k != "far_ood/all"
        }
        out["far_ood_fused_auroc"] = far["auroc"]["fused"]
        out["far_ood_fused_auroc_per_set"] = per_set
        out["far_ood_fused_fpr_at_95_tpr"] = far["fpr_at_95_tpr"]["fused"]
    for severity in plan.severities:
        pool = entries.get(f"corruption/all@{severity}")
        if pool is None:
            continue
        out[f"corruption_sev{severity}_fused_auroc"] = pool["auroc"]["fused"]
        out[f"corruption_sev{severity}_fused_fpr_at_95_tpr"] = pool["fpr_at_95_tpr"]["fused"]
        out[f"dangerous_miss_rate_sev{severity}"] = pool["dangerous_miss_rate"]
        out[f"dangerous_miss_rate_sev{severity}_upper95"] = pool["dangerous_miss_rate_upper95"]
        out[f"wrong_rate_sev{severity}"] = pool["wrong_rate"]
        out[f"corruption_sev{severity}_fused_auroc_per_corruption"] = {
            v["corruption"]: v["auroc"]["fused"]
            for v in entries.values()
            if v.get("kind") == "corruption" and v.get("severity") == severity
        }
    id_entry = entries["in_distribution"]
    out["id_false_alarm_rate"] = id_entry["false_alarm_rate"]["warn_or_error"]
    out["id_model_false_alarm_rate"] = id_entry["false_alarm_rate"]["model_warn_or_error"]
    out["id_dangerous_miss_rate"] = id_entry["dangerous_miss_rate"]
    met: dict[str, bool | None] = {
        "far_ood_fused_auroc_min": None,
        "corruption_sev5_fused_auroc_min": None,
        "dangerous_miss_rate_sev5_max": None,
    }
    if "far_ood_fused_auroc" in out:
        met["far_ood_fused_auroc_min"] = (
            out["far_ood_fused_auroc"] >= TARGETS["far_ood_fused_auroc_min"]
        )
    if "corruption_sev5_fused_auroc" in out:
        met["corruption_sev5_fused_auroc_min"] = (
            out["corruption_sev5_fused_auroc"] >= TARGETS["corruption_sev5_fused_auroc_min"]
        )
        met["dangerous_miss_rate_sev5_max"] = (
            out["dangerous_miss_rate_sev5"] <= TARGETS["dangerous_miss_rate_sev5_max"]
        )
    out["targets"] = dict(TARGETS)
    out["targets_met"] = met
    return out


# --- plot --------------------------------------------------------------------------------------
def plot_report(path: Path, report: Mapping[str, Any], sets: Mapping[str, SetResult]) -> Path:
    """ROC curves of the fused score and per-corruption AUROC / dangerous-miss bars (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    in_dist = sets["in_distribution"]
    entries = report["sets"]
    severities = sorted({v["severity"] for v in entries.values() if v.get("kind") == "corruption"})
    corruptions = list(
        dict.fromkeys(v["corruption"] for v in entries.values() if "corruption" in v)
    )
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    ax = axes[0]
    for name, res in sets.items():
        pooled_set = res.kind.endswith("_pooled")
        if res.kind == "far_ood" or pooled_set:
            fpr, tpr = roc_curve(in_dist.array("fused"), res.array("fused"))
            auc = entries[name]["auroc"]["fused"]
            ax.plot(fpr, tpr, lw=2.5 if pooled_set else 1.2, label=f"{name} ({auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false-positive rate (ID)", ylabel="true-positive rate (OOD)")
    ax.set_title("ROC of the fused score")
    ax.legend(fontsize=7, loc="lower right")
    width = 0.8 / max(len(severities), 1)
    x = np.arange(len(corruptions))
    for i, severity in enumerate(severities):
        aucs = [
            entries[f"corruption/{c}@{severity}"]["auroc"]["fused"]
            if f"corruption/{c}@{severity}" in entries
            else np.nan
            for c in corruptions
        ]
        misses = [
            entries[f"corruption/{c}@{severity}"]["dangerous_miss_rate"]
            if f"corruption/{c}@{severity}" in entries
            else np.nan
            for c in corruptions
        ]
        wrong = [
            entries[f"corruption/{c}@{severity}"]["wrong_rate"]
            if f"corruption/{c}@{severity}" in entries
            else np.nan
            for c in corruptions
        ]
        axes[1].bar(x + i * width, aucs, width, label=f"severity {severity}")
        axes[2].bar(x + i * width, wrong, width, alpha=0.35, label=f"wrong, severity {severity}")
        axes[2].bar(x + i * width, misses, width, label=f"dangerous miss, severity {severity}")
    axes[1].axhline(0.9, color="k", ls="--", lw=0.8)
    axes[1].set(ylim=(0, 1.02), ylabel="AUROC (fused)", title="Corruptions: fused AUROC")
    axes[2].axhline(0.02, color="k", ls="--", lw=0.8)
    axes[2].set(ylabel="fraction of frames", title="Wrong class / dangerous misses")
    for a in axes[1:]:
        a.set_xticks(x + width * (len(severities) - 1) / 2)
        a.set_xticklabels(corruptions, rotation=60, ha="right", fontsize=8)
        a.legend(fontsize=7)
    model = report.get("model", {}).get("name", "")
    fig.suptitle(f"OOD evaluation {model}: fused score = verdict level + max quantile level")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- command line ------------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "eval-ood",
        help="AUROC / FPR@95TPR of the OOD detectors on far-OOD and corrupted frames",
        description="Evaluate the OOD monitor (see the module docstring).",
    )
    add_certification_args(parser)
    parser.set_defaults(n0=None, n=None, run=run)
    parser.add_argument(
        "--calibration",
        default="auto",
        help="calibration YAML, 'auto' (the file beside the model, else fit) or 'fit'",
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized run")
    parser.add_argument("--n-id", type=int, default=None, help=f"ID renders ({FULL['n_id']})")
    parser.add_argument(
        "--n-far", type=int, default=None, help=f"frames per far-OOD set ({FULL['n_far']})"
    )
    parser.add_argument(
        "--n-corrupt",
        type=int,
        default=None,
        help=f"renders per corruption and severity ({FULL['n_corrupt']})",
    )
    parser.add_argument(
        "--n-norm",
        type=int,
        default=None,
        help=f"renders that normalise the fused score ({FULL['n_norm']})",
    )
    parser.add_argument(
        "--calib-renders",
        type=int,
        default=None,
        help=f"renders to fit a calibration when there is none ({FULL['calib']})",
    )
    parser.add_argument(
        "--target-fpr",
        type=float,
        default=None,
        help="fused false-alarm rate of a fitted calibration (0.01; --quick 0.05)",
    )
    parser.add_argument(
        "--error-fpr",
        type=float,
        default=None,
        help="ERROR rate of a fitted calibration (a tenth of the target; --quick 0.4 of it)",
    )
    parser.add_argument("--severities", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--corruptions", nargs="+", default=None, choices=CORRUPTIONS)
    parser.add_argument("--far-sets", nargs="+", default=None, choices=ood_sets.FAR_OOD_SETS)
    parser.add_argument("--camera", choices=("frame", "off"), default="frame")
    parser.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of the results")
    parser.add_argument(
        "--scores", type=Path, default=None, help="write every per-frame score here (.npz)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")


def _note(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(f"robust-monitor eval-ood: {message}", file=sys.stderr, flush=True)


def load_or_fit_calibration(
    args: argparse.Namespace, engine: SmoothingEngine, sizes: Mapping[str, int]
) -> tuple[Calibration, dict[str, Any], tuple[int, int, float]]:
    """The calibration, a description of it, and the certification parameters (n0, n, alpha)."""
    choice = str(args.calibration)
    path = default_calibration_path(args.model) if choice == "auto" else Path(choice)
    if choice == "fit" or (choice == "auto" and not path.is_file()):
        n0 = args.n0 if args.n0 is not None else (16 if args.quick else 32)
        n = args.n if args.n is not None else (48 if args.quick else 200)
        target = args.target_fpr or (0.05 if args.quick else 0.01)
        error = args.error_fpr or (0.4 * target if args.quick else 0.1 * target)
        settings = CalibrationSettings(
            target_fpr=target,
            error_fpr=error,
            n0=n0,
            n=n,
            alpha=args.alpha,
        )
        count = args.calib_renders or sizes["calib"]
        _note(args, f"no calibration file: fitting one on {count} renders")
        frames = frames_from_renders(count, CALIBRATION_RENDER_SEED, engine.spec, args.model)
        progress = Progress("eval-ood calibrate", count, quiet=args.quiet)
        fitted = calibrate_frames(engine, frames, settings, progress)
        return (
            fitted.calibration,
            {"origin": "fitted in this run", **fitted.provenance},
            (
                n0,
                n,
                args.alpha,
            ),
        )
    if not path.is_file():
        raise ConfigError(f"calibration file not found: {path}")
    calibration = Calibration.load(path, model_sha256=engine.spec.sha256)
    provenance = read_provenance(path) or {}
    cert = provenance.get("certification", {})
    n0 = args.n0 if args.n0 is not None else int(cert.get("n0", 32))
    n = args.n if args.n is not None else int(cert.get("n", 200))
    made = (cert.get("n0"), cert.get("n"), cert.get("alpha"))
    if made != (None, None, None) and made != (n0, n, args.alpha):
        _note(
            args,
            f"warning: the calibration was made with n0, n, alpha = {made}, this run uses "
            f"{(n0, n, args.alpha)}; the abstain and p_lower thresholds assume the former",
        )
    return calibration, {"origin": str(path), **provenance}, (n0, n, args.alpha)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    plan = EvalPlan(
        n_id=args.n_id or sizes["n_id"],
        n_far=args.n_far or sizes["n_far"],
        n_corrupt=args.n_corrupt or sizes["n_corrupt"],
        n_norm=args.n_norm or sizes["n_norm"],
        severities=tuple(dict.fromkeys(args.severities)),
        corruptions=tuple(args.corruptions or CORRUPTIONS),
        far_sets=ood_sets.set_names(args.far_sets),
        camera=args.camera == "frame",
    )
    plan.validate()
    sigma = 1.0 if args.sigma is None else args.sigma
    check_params(sigma, args.n0 or 1, args.n or 1, args.alpha, args.batch)
    engine = SmoothingEngine(
        args.model, args.sigma, batch_size=args.batch, providers=args.provider, seed=args.seed
    )
    if engine.fallback:
        _note(args, f"note: {engine.fallback}")
    calibration, cal_info, (n0, n, alpha) = load_or_fit_calibration(args, engine, sizes)
    check_params(engine.sigma, n0, n, alpha, args.batch)
    calibrated_s = time.perf_counter() - start
    evaluator = Evaluator(engine, calibration, n0, n, alpha, plan.camera)
    progress = Progress("eval-ood", plan.total_frames, quiet=args.quiet)
    results = run_sets(evaluator, plan, progress)
    body, sets = build_report(results, plan)
    elapsed = time.perf_counter() - start
    report: dict[str, Any] = {
        "format": FORMAT,
        "model": {
            "path": str(args.model),
            "name": engine.spec.name,
            "sha256": engine.spec.sha256,
            "sigma": engine.sigma,
        },
        "calibration": {
            **cal_info,
            "target_false_alarm_rate": calibration.target_false_alarm_rate,
            "error_false_alarm_rate": calibration.error_false_alarm_rate,
            "thresholds": {k: t.as_dict() for k, t in calibration.thresholds.items()},
        },
        "certification": {
            "n0": n0,
            "n": n,
            "alpha": alpha,
            "sigma": engine.sigma,
            "provider": engine.provider,
        },
        "plan": {
            "quick": bool(args.quick),
            "n_id": plan.n_id,
            "n_norm": plan.n_norm,
            "n_far_per_set": plan.n_far,
            "n_corrupt_per_set": plan.n_corrupt,
            "severities": list(plan.severities),
            "corruptions": list(plan.corruptions),
            "far_ood_sets": list(plan.far_sets),
            "photo_sources": [name for name, _ in ood_sets.photo_sources()]
            if "photos" in plan.far_sets
            else [],
            "seeds": {
                "id_renders": ID_SEED,
                "far_ood": FAR_OOD_SEED,
                "corruptions": CORRUPTION_SEED,
                "scenes": SCENE_SEED,
                "normalisation_renders": NORM_SEED,
                "calibration_renders": CALIBRATION_RENDER_SEED,
            },
        },
        "camera_checks": (
            "whole 320x240 frames (road scene with the render in the ROI, corrupted like the "
            "render; far-OOD frames as generated), one frame at a time"
            if plan.camera
            else "off"
        ),
        "fused_score": (
            "verdict level (0 OK, 1 WARN, 2 ERROR; camera + model detectors, rule any) + "
            "(T + 1/2) / (m + 3/2), T = max over the model detectors of the score's quantile "
            "level among m normalisation renders (calibrate_cmd.Normaliser); model_fused: the "
            "same with the model-only verdict level"
        ),
        "dangerous_miss": (
            "the smoothed classifier returns a wrong class (not an abstention) and the fused "
            "verdict is OK"
        ),
        **body,
        "timing_s": {
            "calibration_and_setup": round(calibrated_s, 1),
            "evaluation": round(elapsed - calibrated_s, 1),
            "total": round(elapsed, 1),
            "frames_certified": plan.total_frames,
        },
    }
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.plot is not None:
        plot_report(args.plot, report, sets)
    if args.scores is not None:
        save_scores(args.scores, sets)
    if args.json:
        print(text)
    else:
        print(_headline(report))
    return 0


def _headline(report: Mapping[str, Any]) -> str:
    s = report["summary"]
    parts = [f"{k} {v}" for k, v in s.items() if isinstance(v, float)]
    return "eval-ood: " + ", ".join(parts)
