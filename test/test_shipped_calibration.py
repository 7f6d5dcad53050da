"""The committed OOD calibration files: made for the shipped models, and still right for them.

Each ``<model>.calibration.yaml`` must load for its model (matching SHA-256), cover the default
detectors (``calibrate_cmd.DEFAULT_DETECTORS``, the input-statistics one included), record how
it was made (``robust-monitor calibrate --render``, at least 2000 renders of a seed the model
never trained or was selected on), and hold its false-alarm rate on fresh
in-distribution renders of ``FRESH_SEED``, a data set seed used nowhere else.

The false-alarm check is statistical. The calibration guarantees (split-conformal, method
``fused``) that the fused model verdict flags a fresh in-distribution frame with probability at
most the target (1 %); given one calibration draw the rate scatters around that by about
``sqrt(target / n_conformal)`` (0.3 % for 1334 conformal frames). A test fails only when the
number of false alarms would have probability below 1e-3 at ``target + 3 * that scatter``:

- the detectors that need no certification (``msp`` and ``energy`` from one batched clean
  inference, ``input_stats`` from the pixels) on ``CHEAP_FRAMES`` renders: they are a subset
  of the fused rule, so their joint rate is bounded by the same target;
- the whole fused verdict, certification included (with the calibration's ``n0`` and ``n``), on
  ``CERTIFIED_FRAMES`` renders per model.

Both are one-sided: the guarantee is an upper bound, and on a few hundred frames a rate of 1 %
cannot be told from 0.5 %.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from scipy.stats import binom

from robust_monitor.assets import ASSETS_DIR
from robust_monitor.core.certify.engine import SmoothingEngine
from robust_monitor.core.certify.model import sha256_file
from robust_monitor.core.ood.calibration import Calibration
from robust_monitor.core.ood.fusion import OodFusion
from robust_monitor.core.ood.input_stats import FEATURES, input_features
from robust_monitor.core.ood.scores import energy, msp_score
from robust_monitor.core.pipeline import default_calibration_path
from robust_monitor.synth.roadsigns import render_dataset
from robust_monitor.tools.calibrate_cmd import DEFAULT_DETECTORS, read_provenance

MODELS_DIR = ASSETS_DIR / "models"
STEMS = ("roadsigns_s025", "roadsigns_s050")
FRESH_SEED = 777_004
"""Never rendered anywhere else (training 101/202, tests 303, calibration 777000, eval 777001)."""
CHEAP_FRAMES = 800
CERTIFIED_FRAMES = 40
P_FAIL = 1e-3


def _model(stem: str) -> Path:
    return MODELS_DIR / f"{stem}.onnx"


@pytest.fixture(scope="module")
def fresh() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    images, labels = render_dataset(CHEAP_FRAMES, FRESH_SEED)
    return images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0), labels


def _calibration(stem: str) -> tuple[Calibration, dict[str, Any]]:
    path = default_calibration_path(_model(stem))
    calibration = Calibration.load(path, model_sha256=sha256_file(_model(stem)))
    provenance = read_provenance(path)
    assert provenance is not None, f"{path.name} has no provenance block"
    return calibration, provenance


def _max_alarms(frames: int, calibration: Calibration, provenance: dict[str, Any]) -> int:
    """Most false alarms that are not implausible (probability >= P_FAIL) at a rate of
    target + 3 x the calibration-draw scatter."""
    target = calibration.target_false_alarm_rate
    conformal = provenance["split"]["conformal"]
    rate = target + 3.0 * math.sqrt(target * (1.0 - target) / conformal)
    return int(binom.ppf(1.0 - P_FAIL, frames, rate))


@pytest.mark.parametrize("stem", STEMS)
def test_calibration_belongs_to_the_shipped_model(stem: str) -> None:
    calibration, provenance = _calibration(stem)
    meta = json.loads(_model(stem).with_suffix(".json").read_text(encoding="utf-8"))
    assert calibration.model_sha256 == meta["sha256"] == sha256_file(_model(stem))
    assert set(calibration.thresholds) == set(DEFAULT_DETECTORS)
    assert calibration.input_stats is not None and calibration.input_stats.features == FEATURES
    assert calibration.input_stats.num_samples == provenance["split"]["model_fit"] >= 2000 // 3
    assert calibration.target_false_alarm_rate == 0.01
    assert provenance["method"] == "fused"
    assert provenance["source"]["kind"] == "render"
    assert provenance["source"]["count"] >= 2000
    recipe = json.loads(_model(stem).with_suffix(".train.json").read_text(encoding="utf-8"))
    used = {recipe["config"]["train_data_seed"], recipe["config"]["eval_data_seed"]}
    used.add(recipe["data"]["reserved_test_data_seed"])
    assert provenance["source"]["seed"] not in used | {FRESH_SEED}
    assert provenance["certification"]["sigma"] == meta["sigma"]
    for threshold in calibration.thresholds.values():
        assert threshold.num_samples >= 2000 * 2 // 3


@pytest.mark.parametrize("stem", STEMS)
def test_clean_pass_detectors_keep_the_false_alarm_rate(
    stem: str, fresh: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    calibration, provenance = _calibration(stem)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(_model(stem)), options, providers=["CPUExecutionProvider"])
    images, _labels = fresh
    (logits,) = session.run(["logits"], {"image": images})
    assert calibration.input_stats is not None
    scores = {
        "msp": msp_score(logits),
        "energy": energy(logits),
        "input_stats": calibration.input_stats.score_features(
            np.stack([input_features(x) for x in images])
        ),
    }
    alarms = np.zeros(len(images), bool)
    for name, values in scores.items():
        alarms |= values > calibration.thresholds[name].warn
    limit = _max_alarms(len(images), calibration, provenance)
    assert int(alarms.sum()) <= limit, f"{alarms.sum()} of {len(images)} fresh renders flagged"


@pytest.mark.parametrize("stem", STEMS)
def test_fused_verdict_keeps_the_false_alarm_rate(
    stem: str, fresh: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    calibration, provenance = _calibration(stem)
    cert = provenance["certification"]
    engine = SmoothingEngine(_model(stem), providers="cpu", seed=FRESH_SEED)
    fusion = OodFusion(calibration)
    images, _labels = fresh
    levels = []
    for x in images[:CERTIFIED_FRAMES]:
        out = engine.certify(x, n0=cert["n0"], n=cert["n"], alpha=cert["alpha"])
        scores = calibration.scores(
            logits=out.clean_logits,
            features=out.clean_features,
            abstained=out.certificate.abstained,
            p_lower=out.certificate.p_lower,
            model_input=x,
        )
        levels.append(int(fusion.fuse(scores).level))
    alarms = sum(level > 0 for level in levels)
    assert alarms <= _max_alarms(CERTIFIED_FRAMES, calibration, provenance), levels
