"""Camera-health checks: image content, time (frozen, gaps, backwards), encodings, config."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.core.ood.camera_health import (
    CHECKS,
    CameraHealthConfig,
    CameraHealthMonitor,
    CameraHealthResult,
)
from robust_monitor.core.ood.verdict import OodLevel
from robust_monitor.synth import corruptions

ImageU8 = npt.NDArray[np.uint8]
FPS = 15.0


def render_scene(h: int, w: int) -> ImageU8:
    """A road-like test scene: sky gradient, checkered ground, waves, three coloured boards.

    Drawn at 4x the largest size used in the tests and reduced with area interpolation, so the
    same scene can be had at any resolution that divides the drawing size.
    """
    big_h, big_w = 960, 1280
    yy, xx = np.mgrid[0:big_h, 0:big_w] / np.array([big_h, big_w])[:, None, None]
    sky = np.stack([90 + 60 * yy, 140 + 60 * yy, 230 - 20 * yy], -1)
    checker = ((np.floor(xx * 16) + np.floor(yy * 12)) % 2)[..., None] * np.array([60, 60, 50])
    waves = (25 * np.sin(2 * np.pi * (9 * xx + 4 * yy)))[..., None]
    ground = np.array([70.0, 110.0, 60.0]) + checker + waves
    img = np.where((yy < 0.35)[..., None], sky, ground)
    for (x0, y0, x1, y1), colour in (
        ((0.62, 0.20, 0.72, 0.38), (220, 30, 30)),
        ((0.10, 0.45, 0.22, 0.60), (240, 240, 240)),
        ((0.40, 0.70, 0.55, 0.80), (30, 30, 160)),
    ):
        inside = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
        img[inside] = colour
    big = np.clip(img, 0, 255).astype(np.uint8)
    return np.asarray(cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA), dtype=np.uint8)


def noisy(img: ImageU8, seed: int, std: float = 2.0) -> ImageU8:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0.0, std, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def scene() -> ImageU8:
    return render_scene(240, 320)


@pytest.fixture
def monitor() -> CameraHealthMonitor:
    return CameraHealthMonitor()


def check_once(
    image: npt.NDArray[Any], config: CameraHealthConfig | None = None
) -> CameraHealthResult:
    return CameraHealthMonitor(config).check(image, 0.0)


# --- image content ------------------------------------------------------------------------------
def test_a_healthy_frame_is_ok(scene: ImageU8) -> None:
    result = check_once(noisy(scene, 0))
    assert result.level is OodLevel.OK, dict(result.fired)
    assert result.reasons == ()
    assert set(result.scores) == set(CHECKS)
    assert result.to_verdict().ok


@pytest.mark.parametrize("sigma_px", [2.0, 4.0])
def test_blur_is_detected_on_blurred_frames_only(scene: ImageU8, sigma_px: float) -> None:
    sharp = check_once(scene)
    blurred = check_once(cv2.GaussianBlur(scene, (0, 0), sigma_px))
    assert "blur" not in sharp.fired
    assert "blur" in blurred.fired
    assert blurred.scores["blur"] < 0.2 * sharp.scores["blur"]


def test_blur_severity_maps_to_levels(scene: ImageU8) -> None:
    mild = check_once(corruptions.corrupt(scene, "defocus_blur", 1, np.random.default_rng(0)))
    strong = check_once(corruptions.corrupt(scene, "defocus_blur", 5, np.random.default_rng(0)))
    assert mild.fired.get("blur") is OodLevel.WARN
    assert strong.fired.get("blur") is OodLevel.ERROR


def test_a_black_frame_is_an_error_and_explains_the_rest(scene: ImageU8) -> None:
    dark = corruptions.black_frame(scene, np.random.default_rng(0))
    result = check_once(dark)
    assert result.level is OodLevel.ERROR
    assert result.reasons == ("black",)  # blur, low contrast ... are consequences, not reasons
    assert result.scores["black"] > 0.99
    assert result.scores["blur"] < 20  # the scores are still there


def test_saturated_frames_are_flagged(scene: ImageU8) -> None:
    white = np.full_like(scene, 255)
    assert check_once(white).fired.get("overexposed") is OodLevel.ERROR
    half = scene.copy()
    half[:120] = 255  # the upper half of the view blown out
    result = check_once(half)
    assert result.fired.get("overexposed") is OodLevel.WARN
    assert result.scores["overexposed"] == pytest.approx(0.5)


def test_glare_is_overexposure(scene: ImageU8) -> None:
    glared = corruptions.corrupt(scene, "glare", 5, np.random.default_rng(1))
    assert check_once(glared).fired.get("overexposed") is OodLevel.ERROR


def test_dark_frames_are_flagged(scene: ImageU8) -> None:
    dim = (scene.astype(np.float64) * 0.08 + 2).astype(np.uint8)  # night, exposure collapsed
    result = check_once(dim)
    assert result.level is OodLevel.ERROR
    assert set(result.reasons) & {"black", "underexposed"}
    partly = scene.copy()
    partly[:, :200] = noisy(np.full((240, 200, 3), 8, np.uint8), 1, std=4.0)  # textured shade
    result = check_once(partly)
    assert result.fired.get("underexposed") is OodLevel.WARN
    assert "black" not in result.fired


def test_lens_occlusion_is_a_blocked_view(scene: ImageU8) -> None:
    clear = check_once(noisy(scene, 1))
    assert "blocked" not in clear.fired
    covered = corruptions.lens_occlusion(scene, 0.6, np.random.default_rng(4))
    result = check_once(covered)
    assert result.fired.get("blocked") is OodLevel.ERROR
    assert result.scores["blocked"] > 0.3


def test_low_contrast_is_flagged(scene: ImageU8) -> None:
    flat = corruptions.corrupt(scene, "contrast", 5, np.random.default_rng(0))
    result = check_once(flat)
    assert result.fired.get("low_contrast") is OodLevel.ERROR
    assert result.scores["low_contrast"] < 5.0
    assert check_once(scene).scores["low_contrast"] > 30.0


def test_a_dim_frame_is_flagged_by_its_mean_brightness(scene: ImageU8) -> None:
    base = check_once(scene)
    assert "dim" not in base.fired and base.scores["dim"] > 100.0
    for gain, level in ((0.7, OodLevel.WARN), (0.3, OodLevel.ERROR)):
        darker = np.clip(scene.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        result = check_once(darker)
        assert result.fired.get("dim") is level, (gain, result.scores["dim"])
        assert result.scores["dim"] == pytest.approx(base.scores["dim"] * gain, rel=0.03)
    # The mean is the check, not the darkest parts: a bright frame with a dark half is fine.
    half = scene.copy()
    half[:, : scene.shape[1] // 4] //= 4
    assert "dim" not in check_once(half).fired


def test_a_road_tunnel_reads_dim_and_a_black_frame_is_black_not_dim() -> None:
    from robust_monitor.synth.scene import RoadScene, render_tunnel

    tunnel = check_once(render_tunnel(120.0))
    assert tunnel.fired.get("dim") is OodLevel.WARN
    road = check_once(RoadScene(seed=3).render_at(40.0).image)
    assert "dim" not in road.fired and road.scores["dim"] > 105.0
    black = check_once(np.zeros((240, 320, 3), np.uint8))
    assert black.fired.get("black") is OodLevel.ERROR and "dim" not in black.fired


def test_small_frames_and_grey_frames_work(scene: ImageU8) -> None:
    tiny = cv2.resize(scene, (64, 48), interpolation=cv2.INTER_AREA)
    assert check_once(tiny).scores["low_contrast"] > 20.0
    grey = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY)
    a, b = check_once(grey), check_once(grey[..., None])
    assert a.scores == b.scores
    assert a.scores["blur"] == pytest.approx(check_once(scene).scores["blur"], rel=1e-6)


# --- resolution independence --------------------------------------------------------------------
def test_same_scene_at_two_resolutions_gives_close_scores() -> None:
    low, high = check_once(render_scene(240, 320)), check_once(render_scene(480, 640))
    assert low.level is high.level is OodLevel.OK
    assert high.scores["blur"] == pytest.approx(low.scores["blur"], rel=0.1)
    assert high.scores["low_contrast"] == pytest.approx(low.scores["low_contrast"], rel=0.02)
    for name in ("black", "blocked", "underexposed", "overexposed", "low_visibility"):
        assert high.scores[name] == pytest.approx(low.scores[name], abs=0.03), name


# --- encodings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_frames_match_uint8_frames(scene: ImageU8, dtype: type[np.floating[Any]]) -> None:
    as_float = scene.astype(dtype) / 255.0
    a, b = check_once(scene), check_once(as_float)
    assert b.level is a.level
    for name in CHECKS:
        assert b.scores[name] == pytest.approx(a.scores[name], rel=0.05, abs=0.02), name


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_float_frames_are_errors(scene: ImageU8, bad_value: float) -> None:
    frame = scene.astype(np.float32) / 255.0
    frame[10:13, 20:30, 1] = bad_value  # 30 values
    result = check_once(frame)
    assert result.level is OodLevel.ERROR
    assert result.fired["nonfinite"] is OodLevel.ERROR
    assert result.scores["nonfinite"] == 30.0


def test_uint16_frames_are_scaled(scene: ImageU8) -> None:
    wide = scene.astype(np.uint16) * 257
    assert check_once(wide).scores == pytest.approx(dict(check_once(scene).scores), rel=0.02)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((240, 320, 4), np.uint8),
        np.zeros((240, 320, 3), np.int32),
        np.zeros((2, 240, 320, 3), np.uint8),
        np.zeros((0, 320), np.uint8),
        [[1, 2], [3, 4]],
    ],
    ids=["rgba", "int32", "batch", "empty", "list"],
)
def test_malformed_frames_raise_input_error(bad: Any, monitor: CameraHealthMonitor) -> None:
    with pytest.raises(InputError, match="image"):
        monitor.check(bad, 0.0)


@pytest.mark.parametrize("stamp", [float("nan"), float("inf"), "0.1", None])
def test_bad_stamps_raise_input_error(scene: ImageU8, stamp: Any) -> None:
    with pytest.raises(InputError, match="stamp_s"):
        CameraHealthMonitor().check(scene, stamp)


# --- time: frozen frames, gaps, time going backwards --------------------------------------------
def test_frozen_fires_only_after_the_configured_time(
    scene: ImageU8, monitor: CameraHealthMonitor
) -> None:
    cfg = monitor.config
    frame = noisy(scene, 0)
    frozen_levels = []
    for i in range(40):  # 40 identical frames at 15 Hz, stamps 0 .. 2.6 s
        stamp = i / FPS
        result = monitor.check(frame, stamp)
        frozen_levels.append((stamp, result.fired.get("frozen", OodLevel.OK)))
        assert result.scores["frozen"] == pytest.approx(stamp)
    for stamp, level in frozen_levels:
        if stamp < cfg.frozen_warn_after_s - 1e-9:
            assert level is OodLevel.OK, stamp
        elif stamp < cfg.frozen_error_after_s - 1e-9:
            assert level is OodLevel.WARN, stamp
        else:
            assert level is OodLevel.ERROR, stamp
    # The picture moves again: the run ends at once.
    result = monitor.check(noisy(scene, 1), 40 / FPS)
    assert "frozen" not in result.fired and result.scores["frozen"] == 0.0


def test_frozen_is_driven_by_stamps_not_by_the_wall_clock(scene: ImageU8) -> None:
    fast = CameraHealthMonitor(CameraHealthConfig(frame_gap_warn_s=10.0, frame_gap_error_s=10.0))
    frame = noisy(scene, 0)
    fast.check(frame, 100.0)
    # Called within microseconds, but 3 s of stamp time apart: frozen for 3 s.
    result = fast.check(frame, 103.0)
    assert result.fired.get("frozen") is OodLevel.ERROR
    assert result.scores["frozen"] == pytest.approx(3.0)


def test_a_noisy_static_scene_is_not_frozen(scene: ImageU8, monitor: CameraHealthMonitor) -> None:
    for i in range(45):  # 3 s of a parked car: same scene, fresh sensor noise in every frame
        result = monitor.check(noisy(scene, i), i / FPS)
        assert "frozen" not in result.fired
    assert result.details["frame_diff_dn"] > monitor.config.frozen_max_diff_dn


def test_gaps_and_backwards_time_are_reported(scene: ImageU8, monitor: CameraHealthMonitor) -> None:
    frames = [noisy(scene, i) for i in range(5)]
    assert monitor.check(frames[0], 10.0).scores["frame_gap"] == 0.0  # first frame: no gap
    ok = monitor.check(frames[1], 10.1)
    assert "frame_gap" not in ok.fired and ok.scores["frame_gap"] == pytest.approx(0.1)
    warn = monitor.check(frames[2], 10.5)
    assert warn.fired.get("frame_gap") is OodLevel.WARN
    error = monitor.check(frames[3], 12.0)
    assert error.fired.get("frame_gap") is OodLevel.ERROR
    back = monitor.check(frames[4], 11.75)
    assert back.fired.get("time_backwards") is OodLevel.WARN
    assert back.scores["time_backwards"] == pytest.approx(0.25)
    assert "frame_gap" not in back.fired


def test_backwards_time_restarts_the_frozen_timer(
    scene: ImageU8, monitor: CameraHealthMonitor
) -> None:
    frame = noisy(scene, 0)
    for i in range(10):
        monitor.check(frame, i / FPS)
    assert monitor.check(frame, 10 / FPS).scores["frozen"] > 0.6
    assert monitor.check(frame, 0.0).scores["frozen"] == 0.0  # replay looped
    assert monitor.check(frame, 1 / FPS).scores["frozen"] == pytest.approx(1 / FPS)
    monitor.reset()
    assert monitor.check(frame, 5.0).scores["frozen"] == 0.0


# --- configuration ------------------------------------------------------------------------------
def test_config_round_trip_and_defaults() -> None:
    cfg = CameraHealthConfig()
    assert CameraHealthConfig.from_mapping(cfg.as_dict()) == cfg
    assert CameraHealthConfig.from_mapping({}) == cfg
    custom = CameraHealthConfig.from_mapping({"blur_warn_laplacian_var": 50, "grid_cols": 4})
    assert custom.blur_warn_laplacian_var == 50.0 and custom.grid_cols == 4


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"blur_threshold": 3.0}, "unknown camera health key.*allowed"),
        ({"blur_warn_laplacian_var": "high"}, "must be a finite number"),
        ({"blur_warn_laplacian_var": True}, "must be a finite number"),
        ({"frozen_warn_after_s": float("nan")}, "must be a finite number"),
        ({"grid_cols": 2.0}, "must be an integer"),
        ({"grid_cols": 7}, "divisor of analysis_width_px"),
        (
            {"blur_error_laplacian_var": 500.0},
            r"blur_error_laplacian_var must be in \[0, blur_warn",
        ),
        ({"frame_gap_error_s": 0.1}, "frame_gap_error_s must be >= frame_gap_warn_s"),
        ({"frozen_warn_after_s": 0.0}, "frozen_warn_after_s must be > 0"),
        ({"dark_block_min_fraction": 1.5}, r"in \(0, 1\]"),
        ({"saturated_pixel_min_dn": 10.0}, "saturated_pixel_min_dn must be in"),
        ({"overexposed_error_block_fraction": 0.1}, ">= overexposed_warn_block_fraction"),
        ({"analysis_width_px": 8}, "analysis_width_px must be in"),
    ],
)
def test_bad_config_says_what_is_allowed(mapping: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CameraHealthConfig.from_mapping(mapping)


def test_config_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        CameraHealthConfig.from_mapping([("grid_cols", 4)])  # type: ignore[arg-type]


_KEYS = [name for name in CameraHealthConfig().as_dict()]
_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10, 5000),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=4))
def test_any_mapping_gives_a_valid_config_or_a_config_error(mapping: dict[str, Any]) -> None:
    try:
        cfg = CameraHealthConfig.from_mapping(mapping)
    except ConfigError:
        return
    # Whatever got through is usable and keeps its invariants.
    assert cfg.analysis_width_px % cfg.grid_cols == 0
    assert cfg.blur_error_laplacian_var <= cfg.blur_warn_laplacian_var
    assert cfg.frozen_error_after_s >= cfg.frozen_warn_after_s > 0
    assert CameraHealthConfig.from_mapping(cfg.as_dict()) == cfg
    result = CameraHealthMonitor(cfg).check(np.full((24, 32, 3), 128, np.uint8), 0.0)
    assert result.level in tuple(OodLevel)
