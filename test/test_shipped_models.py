"""The shipped road-sign models: loadable, described by their metadata, and still accurate.

Accuracy is measured on fresh renders of ``TEST_DATA_SEED``, a data set seed never used for
training or model selection, so a broken, swapped or retrained-and-worse model fails here. The
minimums sit about 4 standard errors under what was measured at release (with 400 images the
standard error is about 0.01 for the clean and 0.015 for the noisy accuracy), so only a real
regression fails, not a different BLAS or CPU.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest

from robust_monitor.assets import ASSETS_DIR
from robust_monitor.synth.roadsigns import CLASSES, TEST_DATA_SEED, render_dataset
from robust_monitor.synth.scene import DEFAULT_ROI, RoadScene, SignPlacement, crop_roi

MODELS_DIR = ASSETS_DIR / "models"
SIGMA = {"roadsigns_s025": 0.25, "roadsigns_s050": 0.5}
# (clean, under N(0, sigma^2)) minimum accuracies on TEST_DATA_SEED renders; see the docstring.
# Measured at release: s025 0.9775 clean / 0.945 noisy, s050 0.98 / 0.895 (this test set);
# held-out renders in .train.json: s025 0.9746 / 0.9546, s050 0.9721 / 0.9075. (The s050 of
# before, trained on noisy images only, measured 0.955 / 0.8875 here.)
MIN_ACCURACY = {
    "roadsigns_s025": (0.93, 0.90),
    "roadsigns_s050": (0.94, 0.84),
}
TEST_IMAGES = 400
MAX_ONNX_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def test_set() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    images, labels = render_dataset(TEST_IMAGES, TEST_DATA_SEED)
    return images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, labels


def _metadata(stem: str) -> dict[str, Any]:
    data = json.loads((MODELS_DIR / f"{stem}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _session(stem: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    path = MODELS_DIR / f"{stem}.onnx"
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _predict(session: ort.InferenceSession, x: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    logits = session.run(["logits"], {"image": x})[0]
    return np.asarray(logits.argmax(axis=1), np.int64)


@pytest.mark.parametrize("stem", sorted(SIGMA))
def test_metadata_describes_the_model(stem: str) -> None:
    meta = _metadata(stem)
    path = MODELS_DIR / f"{stem}.onnx"
    assert meta["format"] == "robust_monitor.model/1"
    assert meta["name"] == stem
    assert meta["classes"] == list(CLASSES)
    assert meta["input"] == {
        "name": "image",
        "shape": [3, 64, 64],
        "channel_order": "rgb",
        "value_range": [0.0, 1.0],
    }
    assert meta["outputs"] == {"logits": "logits", "features": "features"}
    assert meta["sigma"] == SIGMA[stem]
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["roi"]["normalized_xywh"] == DEFAULT_ROI.as_metadata()["normalized_xywh"]
    recipe = json.loads((MODELS_DIR / f"{stem}.train.json").read_text(encoding="utf-8"))
    assert recipe["config"]["sigma"] == SIGMA[stem]
    assert recipe["data"]["reserved_test_data_seed"] == TEST_DATA_SEED
    assert TEST_DATA_SEED not in (
        recipe["data"]["train_data_seed"],
        recipe["data"]["eval_data_seed"],
    )


@pytest.mark.parametrize("stem", sorted(SIGMA))
def test_graph_is_small_valid_opset17_ir10(stem: str) -> None:
    path = MODELS_DIR / f"{stem}.onnx"
    assert path.stat().st_size <= MAX_ONNX_BYTES
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.ir_version == 10
    assert {o.domain: o.version for o in model.opset_import}.get("") == 17


@pytest.mark.parametrize("stem", sorted(SIGMA))
def test_session_has_the_named_input_and_outputs(stem: str) -> None:
    meta = _metadata(stem)
    session = _session(stem)
    (inp,) = session.get_inputs()
    assert inp.name == meta["input"]["name"]
    assert inp.shape[1:] == meta["input"]["shape"] and not isinstance(inp.shape[0], int)
    names = [o.name for o in session.get_outputs()]
    assert names == [meta["outputs"]["logits"], meta["outputs"]["features"]]
    for batch in (1, 5):
        x = np.random.default_rng(batch).random((batch, 3, 64, 64), dtype=np.float32)
        logits, features = session.run(None, {"image": x})
        assert logits.shape == (batch, len(CLASSES)) and logits.dtype == np.float32
        assert features.shape[0] == batch and 64 <= features.shape[1] <= 128
        assert np.isfinite(logits).all() and np.isfinite(features).all()


@pytest.mark.parametrize("stem", sorted(SIGMA))
def test_accuracy_on_unseen_renders(
    stem: str, test_set: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    x, labels = test_set
    session = _session(stem)
    clean = float((_predict(session, x) == labels).mean())
    noise = np.random.default_rng(TEST_DATA_SEED).standard_normal(x.shape, np.float32)
    noisy = float((_predict(session, x + SIGMA[stem] * noise) == labels).mean())
    min_clean, min_noisy = MIN_ACCURACY[stem]
    assert clean >= min_clean, f"{stem}: clean accuracy {clean:.3f} < {min_clean}"
    assert noisy >= min_noisy, f"{stem}: accuracy under noise {noisy:.3f} < {min_noisy}"


@pytest.mark.parametrize("stem", sorted(SIGMA))
def test_model_reads_signs_in_the_scene_roi(stem: str) -> None:
    """End to end on the scene: ROI crops of approaching signs get their class."""
    signs = tuple(
        SignPlacement(class_id=k, position_m=20.0 + 25.0 * k) for k in range(len(CLASSES) - 1)
    )
    scene = RoadScene(seed=TEST_DATA_SEED, speed_mps=6.0, signs=signs)
    crops, labels = [], []
    for sign in signs:
        # Two frames with the sign well inside the ROI (7.5 m and 6.5 m ahead).
        for ahead in (7.5, 6.5):
            frame = scene.render_at(sign.position_m - ahead)
            assert frame.sign_in_roi is not None
            crops.append(crop_roi(frame.image))
            labels.append(sign.class_id)
    x = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    accuracy = float((_predict(_session(stem), x) == np.array(labels)).mean())
    assert accuracy >= 0.85, f"{stem}: scene ROI accuracy {accuracy:.2f}"


# --- the model cards --------------------------------------------------------------------------
CARD_CLEAN_IMAGES = 400
CARD_SMOOTHED_IMAGES = 60


def _card(stem: str) -> dict[str, Any]:
    data = json.loads((MODELS_DIR / f"{stem}.card.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _tolerance(p: float, images: int) -> float:
    """Four standard errors of a fresh measurement on ``images`` images (plus 1 point)."""
    return 4.0 * float(np.sqrt(max(p * (1.0 - p), 0.01) / images)) + 0.01


@pytest.mark.parametrize("stem", sorted(SIGMA))
def test_card_describes_this_very_model(stem: str) -> None:
    card = _card(stem)
    path = MODELS_DIR / f"{stem}.onnx"
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["sigma"] == SIGMA[stem] and card["classes"] == list(CLASSES)
    for name in (f"{stem}.card.md", f"{stem}.card.png"):
        assert (MODELS_DIR / name).is_file()
    assert card["sha256"] in (MODELS_DIR / f"{stem}.card.md").read_text(encoding="utf-8")
    values = card["certified_accuracy"]["values"]
    assert list(values) == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    assert all(a >= b for a, b in zip(values.values(), list(values.values())[1:], strict=False))


@pytest.mark.parametrize("stem", sorted(SIGMA))
def test_fresh_renders_reproduce_the_cards_accuracy(stem: str) -> None:
    """Clean accuracy on fresh renders, and the smoothed classifier's certified accuracy at
    r = 0 on a fresh subsample (n = 1000 instead of the card's 10,000: at r = 0 only the sign of
    p_lower - 1/2 matters), each within four standard errors of the card."""
    from robust_monitor.core.certify.engine import SmoothingEngine

    card = _card(stem)
    images, labels = render_dataset(CARD_CLEAN_IMAGES, TEST_DATA_SEED + 1)
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    clean = float((_predict(_session(stem), x) == labels).mean())
    expected_clean = card["clean_accuracy"]["value"]
    assert abs(clean - expected_clean) <= _tolerance(expected_clean, CARD_CLEAN_IMAGES), clean

    engine = SmoothingEngine(MODELS_DIR / f"{stem}.onnx", None, providers="cpu", seed=7)
    hits = 0
    for frame, label in zip(x[:CARD_SMOOTHED_IMAGES], labels[:CARD_SMOOTHED_IMAGES], strict=True):
        cert = engine.certify(frame, n0=100, n=1000, alpha=0.001).certificate
        hits += int(not cert.abstained and cert.label == int(label))
    smoothed = hits / CARD_SMOOTHED_IMAGES
    expected = card["certified_accuracy"]["values"]["0.00"]
    assert abs(smoothed - expected) <= _tolerance(expected, CARD_SMOOTHED_IMAGES), smoothed
