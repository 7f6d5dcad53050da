"""The input-statistics detector: Immerkær's noise estimate, the features, the fitted model, and
its thresholds (set from in-distribution data at the requested rate) in a calibration file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.core.ood import calibration as K
from robust_monitor.core.ood.input_stats import (
    FEATURES,
    InputStatsModel,
    immerkaer_sigma,
    input_features,
    input_features_batch,
)
from robust_monitor.synth.corruptions import corrupt
from robust_monitor.synth.roadsigns import render_dataset

SHA = "ab" * 32


def _model_input(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return out


@pytest.fixture(scope="module")
def renders() -> npt.NDArray[np.uint8]:
    images, _ = render_dataset(260, 777_200)
    return images


@pytest.fixture(scope="module")
def fitted(renders: npt.NDArray[np.uint8]) -> InputStatsModel:
    return InputStatsModel.fit(np.stack([input_features(_model_input(r)) for r in renders[:200]]))


# --- Immerkær's estimate ------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.1])
def test_immerkaer_recovers_the_sigma_of_added_gaussian_noise(sigma: float) -> None:
    """On a smooth (planar) image plus N(0, sigma^2) noise, over seeded trials, the estimate
    is within 3 % of sigma on average and within 8 % on every trial (the estimate's own
    spread at 128x128 is about 1 %)."""
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float64)
    base = 0.2 + 0.002 * xx + 0.001 * yy  # planar: the kernel cancels it exactly
    estimates = []
    for seed in range(20):
        noise = np.random.default_rng(seed).normal(0.0, sigma, base.shape)
        estimates.append(immerkaer_sigma(base + noise))
    est = np.asarray(estimates)
    assert abs(est.mean() / sigma - 1.0) < 0.03
    assert np.all(np.abs(est / sigma - 1.0) < 0.08)


def test_immerkaer_is_zero_on_planar_images_and_ignores_an_offset() -> None:
    yy, xx = np.mgrid[0:32, 0:40].astype(np.float64)
    assert immerkaer_sigma(0.5 + 0.01 * xx - 0.003 * yy) == pytest.approx(0.0, abs=1e-5)
    noisy = np.random.default_rng(1).normal(0.0, 0.05, (32, 40))
    assert immerkaer_sigma(noisy + 0.3) == pytest.approx(immerkaer_sigma(noisy), rel=1e-4)


def test_immerkaer_refuses_what_is_not_an_image() -> None:
    with pytest.raises(InputError, match="3x3"):
        immerkaer_sigma(np.zeros((2, 10)))
    with pytest.raises(InputError, match="2-D"):
        immerkaer_sigma(np.zeros((3, 10, 10)))


# --- the features -------------------------------------------------------------------------------
def test_features_have_the_documented_names_and_react_to_what_they_measure(
    renders: npt.NDArray[np.uint8],
) -> None:
    idx = {name: i for i, name in enumerate(FEATURES)}
    clean = renders[0]
    f = input_features(_model_input(clean))
    assert f.shape == (len(FEATURES),) and np.all(np.isfinite(f))
    rng = np.random.default_rng(0)
    noisy = input_features(_model_input(corrupt(clean, "gaussian_noise", 5, rng)))
    assert noisy[idx["log_noise_immerkaer"]] > f[idx["log_noise_immerkaer"]] + 1.0
    pixelated = input_features(_model_input(corrupt(clean, "pixelate", 5, rng)))
    assert pixelated[idx["zero_diff_h"]] > f[idx["zero_diff_h"]] + 0.3
    jpeg = input_features(_model_input(corrupt(clean, "jpeg_compression", 5, rng)))
    assert jpeg[idx["log_blockiness"]] > f[idx["log_blockiness"]] + 0.3
    flat = input_features(np.full((3, 64, 64), 0.5, np.float32))
    assert flat[idx["zero_diff_h"]] == flat[idx["zero_diff_v"]] == 1.0
    assert flat[idx["std_r"]] == 0.0 and flat[idx["colourfulness"]] == pytest.approx(0.0, abs=1e-6)
    white = input_features(np.ones((3, 16, 16), np.float32))
    assert white[idx["saturated"]] == 1.0 and white[idx["dark"]] == 0.0


def test_batch_features_match_single_ones_for_uint8_and_float(
    renders: npt.NDArray[np.uint8],
) -> None:
    batch = renders[:3].transpose(0, 3, 1, 2)
    single = np.stack([input_features(_model_input(r)) for r in renders[:3]])
    np.testing.assert_allclose(input_features_batch(batch), single, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(input_features_batch(batch / 255.0), single, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((1, 64, 64)), r"\(3, H, W\)"),
        (np.zeros((3, 8, 64)), "H, W >= 9"),
        (np.full((3, 16, 16), np.nan), "finite"),
    ],
)
def test_features_refuse_bad_inputs(x: npt.NDArray[np.float64], match: str) -> None:
    with pytest.raises(InputError, match=match):
        input_features(x)


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.uint8, (3, 12, 14)))
def test_features_are_finite_for_any_8_bit_input(image: npt.NDArray[np.uint8]) -> None:
    assert np.all(np.isfinite(input_features(image.astype(np.float32) / 255.0)))


# --- the model ----------------------------------------------------------------------------------
def test_the_model_scores_corrupted_renders_above_clean_ones(
    renders: npt.NDArray[np.uint8], fitted: InputStatsModel
) -> None:
    """Held-out clean renders score lower than the same renders with noise or pixelation."""
    rng = np.random.default_rng(3)
    held_out = renders[200:]
    clean = np.array([fitted.score(_model_input(r)) for r in held_out])
    for name in ("gaussian_noise", "pixelate", "jpeg_compression"):
        bad = np.array([fitted.score(_model_input(corrupt(r, name, 5, rng))) for r in held_out])
        assert np.mean(bad > np.quantile(clean, 0.95)) > 0.6, name


def test_the_mahalanobis_method_is_a_standardised_mahalanobis_distance() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(3.0, 2.0, (4000, len(FEATURES)))
    model = InputStatsModel.fit(x, shrinkage=0.0, method="mahalanobis")
    assert model.reference is None
    np.testing.assert_allclose(model.center, 3.0, atol=0.15)
    np.testing.assert_allclose(model.scale, 2.0, rtol=0.05)
    assert float(model.score_features(model.center)) == pytest.approx(0.0, abs=1e-9)
    # squared distances of fresh draws follow chi^2 with D degrees of freedom (mean D)
    fresh = rng.normal(3.0, 2.0, (4000, len(FEATURES)))
    assert np.mean(model.score_features(fresh) ** 2) == pytest.approx(len(FEATURES), rel=0.05)
    assert model.score_features(fresh[:5]).shape == (5,)


def test_the_knn_method_is_the_mean_distance_to_the_k_nearest_fitted_frames() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(0.0, 1.0, (300, len(FEATURES)))
    model = InputStatsModel.fit(x, k=3)
    assert model.method == "knn" and model.reference is not None
    y = rng.normal(0.0, 1.5, (7, len(FEATURES)))
    z_ref = (x - model.center) / model.scale
    z = (y - model.center) / model.scale
    brute = np.sort(np.linalg.norm(z[:, None, :] - z_ref[None, :, :], axis=2), axis=1)[:, :3]
    np.testing.assert_allclose(model.score_features(y), brute.mean(axis=1), rtol=1e-9, atol=1e-9)
    assert float(model.score_features(y[0])) == pytest.approx(brute[0].mean())
    # a two-cluster distribution: the gap between the clusters is unusual for knn, not for
    # one Gaussian, whose mean sits right there
    two = np.concatenate(
        [rng.normal(-3.0, 0.3, (200, len(FEATURES))), rng.normal(3.0, 0.3, (200, len(FEATURES)))]
    )
    knn = InputStatsModel.fit(two)
    gauss = InputStatsModel.fit(two, method="mahalanobis")
    gap, member = np.zeros(len(FEATURES)), np.full(len(FEATURES), 3.0)
    assert float(knn.score_features(gap)) > 5 * float(knn.score_features(member))
    assert float(gauss.score_features(gap)) < float(gauss.score_features(member))
    with pytest.raises(ConfigError, match="method must be one of"):
        InputStatsModel.fit(x, method="lof")


def test_the_model_round_trips_and_rejects_bad_plain_forms(fitted: InputStatsModel) -> None:
    again = InputStatsModel.from_dict(fitted.as_dict())
    assert again.as_dict() == fitted.as_dict()
    gauss = InputStatsModel.fit(np.asarray(fitted.reference), method="mahalanobis")
    assert InputStatsModel.from_dict(gauss.as_dict()).as_dict() == gauss.as_dict()
    data = fitted.as_dict()
    with pytest.raises(ConfigError, match="needs a"):
        InputStatsModel.from_dict({**data, "reference": None})
    with pytest.raises(ConfigError, match=">= k"):
        InputStatsModel.from_dict({**data, "k": 10_000})
    with pytest.raises(ConfigError, match="missing keys"):
        InputStatsModel.from_dict({k: v for k, v in data.items() if k != "scale"})
    with pytest.raises(ConfigError, match="recalibrate"):
        InputStatsModel.from_dict({**data, "features": data["features"][:-1]})
    with pytest.raises(ConfigError, match="scale must be finite and > 0"):
        InputStatsModel.from_dict({**data, "scale": [0.0] * len(FEATURES)})
    with pytest.raises(InputError, match="N >= 2"):
        InputStatsModel.fit(np.zeros((1, len(FEATURES))))


# --- thresholds from in-distribution data -------------------------------------------------------
@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
def test_thresholds_are_set_from_id_scores_at_the_requested_rate(method: str) -> None:
    """Fit on one in-distribution sample, calibrate on another: over seeded draws, fresh ID
    frames alarm at the target rate. One draw's rate scatters by about
    ``sqrt(0.01 / 2000) = 0.22 %``; the mean of 16 draws by a quarter of that, so the mean must
    lie within 0.01 +- 0.0025 (about 4 standard errors, fresh-sample noise included)."""
    d = len(FEATURES)
    warn_rates, error_rates = [], []
    for seed in range(16):
        rng = np.random.default_rng(seed)
        mix = rng.normal(size=(d, d)) / math.sqrt(d)
        fit = rng.normal(size=(500, d)) @ mix
        calib = rng.normal(size=(2000, d)) @ mix
        fresh = rng.normal(size=(5000, d)) @ mix
        model = InputStatsModel.fit(fit, method=method)
        cal = K.calibrate(
            {"input_stats": model.score_features(calib)},
            model_sha256=SHA,
            target_false_alarm_rate=0.01,
            error_false_alarm_rate=0.002,
            input_stats=model,
        )
        t = cal.thresholds["input_stats"]
        assert t.warn == K.conformal_threshold(model.score_features(calib), 0.01)
        fresh_scores = model.score_features(fresh)
        warn_rates.append(float(np.mean(fresh_scores > t.warn)))
        error_rates.append(float(np.mean(fresh_scores > t.error)))
    assert abs(np.mean(warn_rates) - 0.01) <= 0.0025, warn_rates
    assert abs(np.mean(error_rates) - 0.002) <= 0.0012, error_rates


def test_a_calibration_file_keeps_the_input_stats_model(
    tmp_path: Path, fitted: InputStatsModel, renders: npt.NDArray[np.uint8]
) -> None:
    scores = np.array([fitted.score(_model_input(r)) for r in renders[:200]])
    cal = K.calibrate(
        {"input_stats": scores},
        model_sha256=SHA,
        error_false_alarm_rate=0.01,
        input_stats=fitted,
    )
    loaded = K.Calibration.load(cal.save(tmp_path / "cal.yaml"))
    assert loaded.input_stats is not None
    assert loaded.input_stats.as_dict() == fitted.as_dict()
    x = _model_input(renders[250])
    assert loaded.scores(model_input=x) == {"input_stats": pytest.approx(fitted.score(x))}
    with pytest.raises(ConfigError, match="needs the input_stats model"):
        K.Calibration(SHA, 0.01, 0.001, cal.thresholds)


def test_version_1_files_still_load_without_input_stats(tmp_path: Path) -> None:
    cal = K.calibrate({"energy": np.arange(1000.0)}, model_sha256=SHA)
    data = cal.as_dict()
    data["version"] = 1
    del data["input_stats"]
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    old = K.Calibration.load(path)
    assert old.input_stats is None and old.detectors == ("energy",)


@given(st.integers(min_value=3, max_value=9))
def test_newer_versions_are_refused_with_a_clear_error(version: int) -> None:
    data = K.calibrate({"energy": np.arange(1000.0)}, model_sha256=SHA).as_dict()
    with pytest.raises(ConfigError, match="newer than this robust_monitor"):
        K.Calibration.from_mapping({**data, "version": version})
