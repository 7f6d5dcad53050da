"""``robust-monitor calibrate``: every source, the file it writes, the model check, bad input.

Runs on the small random-weight CNN (``small_cnn_path``) with tiny sample counts and loose rates
(``--target-fpr 0.25 --error-fpr 0.2`` need only 4 conformal frames), so the whole file takes
seconds. The fused threshold rule is checked on synthetic scores against its guarantee.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robust_monitor.core.certify.model import sha256_file
from robust_monitor.core.errors import ConfigError, ModelError
from robust_monitor.core.ood.calibration import Calibration
from robust_monitor.core.ood.input_stats import FEATURES
from robust_monitor.core.pipeline import CertifyConfig, FramePipeline
from robust_monitor.synth.roadsigns import render_dataset
from robust_monitor.tools import reference_models
from robust_monitor.tools.calibrate_cmd import (
    DEFAULT_DETECTORS,
    Normaliser,
    fused_thresholds,
    load_frames,
    read_provenance,
)
from robust_monitor.tools.cli import build_parser, main

LOOSE = ["--target-fpr", "0.25", "--error-fpr", "0.2", "--n0", "8", "--n", "24"]
TOPIC = "/camera/image_raw/compressed"


def _calibrate(model: Path, out: Path, *source: str, extra: tuple[str, ...] = ()) -> int:
    argv = ["calibrate", "--model", str(model), "--sigma", "0.25", "--out", str(out), *LOOSE]
    return main([*argv, "--seed", "7", "--quiet", *source, *extra])


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def renders() -> np.ndarray:
    images, _labels = render_dataset(16, 777_100)
    return images


@pytest.fixture()
def image_dir(tmp_path: Path, renders: np.ndarray) -> Path:
    """8 model-size crops and 6 whole 160x120 frames (one in a subfolder)."""
    folder = tmp_path / "frames"
    for i in range(8):
        _write_png(folder / f"crop_{i:02d}.png", renders[i])
    for i in range(6):
        frame = cv2.resize(renders[8 + i], (160, 120), interpolation=cv2.INTER_LINEAR)
        _write_png(folder / ("sub" if i == 0 else "") / f"frame_{i:02d}.jpg", frame)
    return folder


def _check_file(path: Path, model: Path) -> dict[str, Any]:
    sha = sha256_file(model)
    cal = Calibration.load(path, model_sha256=sha)
    assert cal.model_sha256 == sha
    assert set(cal.thresholds) == set(DEFAULT_DETECTORS)
    assert cal.mahalanobis is None  # calibrated on request only
    assert cal.input_stats is not None and cal.input_stats.features == FEATURES
    for t in cal.thresholds.values():
        assert t.error >= t.warn
    provenance = read_provenance(path)
    assert provenance is not None and provenance["model_sha256"] == sha
    assert provenance["certification"]["n"] == 24
    return provenance


def test_calibrate_from_an_image_folder(
    small_cnn_path: Path, image_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cal.yaml"
    assert _calibrate(small_cnn_path, out, "--images", str(image_dir)) == 0
    provenance = _check_file(out, small_cnn_path)
    assert provenance["source"]["files"] == 14
    assert provenance["source"]["roi_applied_to"] == 6  # the frames larger than 64x64
    assert provenance["labels"].startswith("model predictions")
    assert provenance["split"] == {
        "seed": 0,
        "model_fit": 5,
        "normalise": 4,
        "conformal": 5,
    }


def test_roi_is_cropped_only_from_images_larger_than_the_model_input(
    small_cnn_path: Path, tmp_path: Path
) -> None:
    model = tmp_path / "roi_model.onnx"
    shutil.copy(small_cnn_path, model)
    meta = {"format": "robust_monitor.model/1", "roi": {"normalized_xywh": [0.5, 0.5, 0.5, 0.5]}}
    model.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    folder = tmp_path / "imgs"
    big = np.zeros((128, 128, 3), np.uint8)
    big[64:, 64:] = 255  # only the ROI (bottom-right quarter) is white
    _write_png(folder / "a_frame.png", big)
    _write_png(folder / "b_crop.png", np.full((64, 64, 3), 40, np.uint8))
    args = build_parser().parse_args(
        ["calibrate", "--model", str(model), "--images", str(folder), "--out", "x.yaml"]
    )
    from robust_monitor.core.certify.model import load_model_spec

    spec = load_model_spec(model)
    frames = load_frames(args, spec)
    assert frames.images.shape == (2, 3, 64, 64)
    assert frames.images[0].min() == 255  # the ROI of the whole frame
    assert np.all(frames.images[1] == 40)  # the crop, untouched
    args.roi = "none"
    assert load_frames(args, spec).images[0].mean() == pytest.approx(255 / 4, abs=2)


def _write_bag(path: Path, images: np.ndarray, topic: str = TOPIC) -> Path:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    types = typestore.types
    image_t, header_t, time_t = (
        types["sensor_msgs/msg/CompressedImage"],
        types["std_msgs/msg/Header"],
        types["builtin_interfaces/msg/Time"],
    )
    with Writer(path, version=9) as writer:
        conn = writer.add_connection(topic, image_t.__msgtype__, typestore=typestore)
        for i, image in enumerate(images):
            frame = cv2.resize(image, (320, 240), interpolation=cv2.INTER_LINEAR)
            ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            assert ok
            ns = 1_000_000_000 + i * 66_666_667
            msg = image_t(
                header=header_t(stamp=time_t(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="cam"),
                format="png",
                data=np.asarray(png, np.uint8).reshape(-1),
            )
            writer.write(conn, ns, typestore.serialize_cdr(msg, image_t.__msgtype__))
    return path


def test_calibrate_from_a_recording(
    small_cnn_path: Path, renders: np.ndarray, tmp_path: Path
) -> None:
    bag = _write_bag(tmp_path / "drive", renders)
    out = tmp_path / "cal.yaml"
    assert _calibrate(small_cnn_path, out, "--bag", str(bag), "--topic", TOPIC) == 0
    provenance = _check_file(out, small_cnn_path)
    assert provenance["source"]["frames"] == 16
    # every second frame is too few for the rates: a clear error, not a traceback
    assert _calibrate(small_cnn_path, out, "--bag", str(bag), extra=("--stride", "3")) == 2


def test_calibrate_from_renders_prints_a_summary(
    small_cnn_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deep" / "cal.yaml"
    assert _calibrate(small_cnn_path, out, "--render", "15", extra=("--json",)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model_sha256"] == sha256_file(small_cnn_path)
    assert set(summary["thresholds"]) == set(DEFAULT_DETECTORS)
    provenance = _check_file(out, small_cnn_path)
    assert provenance["source"] == {"kind": "render", "count": 15, "seed": 777000, "size_px": 64}
    assert provenance["labels"] == "render labels"
    assert provenance["method"] == "fused"


def test_per_detector_method_and_detector_choice(small_cnn_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "cal.yaml"
    extra = ("--method", "per-detector", "--detectors", "msp", "p_lower")
    assert _calibrate(small_cnn_path, out, "--render", "6", extra=extra) == 0
    cal = Calibration.load(out)
    assert set(cal.thresholds) == {"msp", "p_lower"}
    assert cal.mahalanobis is None
    provenance = read_provenance(out)
    assert provenance is not None
    assert provenance["split"] == {"seed": 0, "model_fit": 0, "calibrate": 6}


def test_a_calibration_is_refused_for_another_model(small_cnn_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "cal.yaml"
    assert _calibrate(small_cnn_path, out, "--render", "15") == 0
    other = reference_models.save(reference_models.small_cnn(seed=11), tmp_path / "other.onnx")
    with pytest.raises(ModelError, match="recalibrate"):
        Calibration.load(out, model_sha256=sha256_file(other))
    with pytest.raises(ModelError):
        FramePipeline(other, CertifyConfig(sigma=0.25), calibration=out)
    # ... and accepted for its own model, where the pipeline scores every detector
    pipeline = FramePipeline(small_cnn_path, CertifyConfig(sigma=0.25, n0=8, n=24), calibration=out)
    result = pipeline.process(np.full((64, 64, 3), 128, np.uint8), 0.0)
    assert set(DEFAULT_DETECTORS) <= set(result.verdict.scores)


def test_mahalanobis_and_input_stats_are_fitted_on_frames_they_do_not_calibrate(
    small_cnn_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cal.yaml"
    extra = ("--detectors", "mahalanobis", "input_stats", "energy")
    assert _calibrate(small_cnn_path, out, "--render", "15", extra=extra) == 0
    cal = Calibration.load(out)
    assert set(cal.thresholds) == {"mahalanobis", "input_stats", "energy"}
    assert cal.mahalanobis is not None and cal.input_stats is not None
    provenance = read_provenance(out)
    assert provenance is not None
    split = provenance["split"]
    assert split["model_fit"] == 5 == cal.mahalanobis.num_samples == cal.input_stats.num_samples
    assert {t.num_samples for t in cal.thresholds.values()} == {10}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (("--images", "{tmp}/missing"), "image folder not found"),
        (("--images", "{tmp}/empty"), "no image files"),
        (("--images", "{tmp}/a_file.png"), "needs a folder"),
        (("--bag", "{tmp}/drive", "--topic", "/nope"), "is not a camera topic"),
        (("--bag", "{tmp}/missing_bag"), "recording not found"),
        (("--render", "5"), "too few"),
        (("--render", "50", "--render-seed", "101"), "render seed 101"),
        (("--render", "50", "--target-fpr", "1.5"), "--target-fpr"),
        (("--render", "50", "--error-fpr", "0.3"), "must be <="),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(
    small_cnn_path: Path,
    renders: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    source: tuple[str, ...],
    message: str,
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file.png").write_bytes(b"")
    if "drive" in " ".join(source):
        _write_bag(tmp_path / "drive", renders[:2])
    args = [s.format(tmp=tmp_path) for s in source]
    assert _calibrate(small_cnn_path, tmp_path / "out.yaml", *args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err
    assert err.startswith("robust-monitor calibrate: error:")
    assert not (tmp_path / "out.yaml").exists()


# --- the fused rule on synthetic scores ---------------------------------------------------------
def _draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Scores in each detector's range (msp, p_lower, abstain in [0, 1]), two correlated."""
    shared = rng.standard_normal(n)
    return {
        "msp": rng.beta(1.0, 6.0, n),
        "energy": -10.0 + rng.exponential(size=n),
        "mahalanobis": 10.0 + 0.8 * shared + 0.2 * rng.standard_normal(n),
        "p_lower": 1.0 / (1.0 + np.exp(3.0 - 0.8 * shared - 0.2 * rng.standard_normal(n))),
        "abstain": (rng.random(n) < 0.03).astype(float),
    }


def test_fused_thresholds_hold_the_target_false_alarm_rate() -> None:
    rng = np.random.default_rng(5)
    warn_rates, error_rates = [], []
    for _ in range(60):
        thresholds = fused_thresholds(_draw(rng, 400), _draw(rng, 600), 0.02, 0.005)
        fresh = _draw(rng, 20_000)
        warn = np.zeros(20_000, bool)
        error = np.zeros(20_000, bool)
        for name, scores in fresh.items():
            warn |= scores > thresholds[name].warn
            error |= scores > thresholds[name].error
        warn_rates.append(warn.mean())
        error_rates.append(error.mean())
    # conformal: 0.02 - 1/601 <= E[rate] <= 0.02; the mean of 60 calibrations is within ~0.001
    assert 0.0175 <= np.mean(warn_rates) <= 0.0215
    assert 0.003 <= np.mean(error_rates) <= 0.0058


def test_fused_thresholds_need_enough_conformal_frames() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="error false-alarm rate"):
        fused_thresholds(_draw(rng, 50), _draw(rng, 50), 0.05, 0.01)


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=30),
    probes=st.lists(st.floats(-8, 8, allow_nan=False), min_size=1, max_size=10),
    level=st.floats(-1.0, 32.0, allow_nan=False),
)
def test_normaliser_threshold_inverts_the_level(
    scores: list[float], probes: list[float], level: float
) -> None:
    norm = Normaliser.fit(scores)
    h = norm.threshold(level)
    values = np.asarray(probes + scores)
    levels = norm.level(values)
    assert np.all(np.diff(norm.level(np.sort(values))) >= 0)  # non-decreasing
    for s, lv in zip(values, levels, strict=True):
        if abs(lv - level) > 1e-9:  # exactly at the level: rounding decides
            assert (s > h) == (lv > level)
