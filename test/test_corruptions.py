"""ImageNet-C corruptions and camera faults: shapes, determinism, severity, scaling, errors."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.synth import corruptions as C

ImageU8 = npt.NDArray[np.uint8]
ALL_NAMES = C.CORRUPTIONS + C.CAMERA_FAULTS
SIZES = [(64, 64), (240, 320)]
# Types whose result does not depend on the generator at all.
DETERMINISTIC = {
    "defocus_blur",
    "zoom_blur",
    "brightness",
    "contrast",
    "pixelate",
    "jpeg_compression",
}


def textured(h: int, w: int, noise_std: float = 3.0, seed: int = 0) -> ImageU8:
    """Checkerboard, waves and a gradient, defined relative to the short side (same scene at
    any size), plus optional per-pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / min(h, w)
    checker = ((np.floor(xx * 8) + np.floor(yy * 8)) % 2) * 90
    waves = 40 * np.sin(2 * np.pi * 5 * xx + 3 * yy)
    base = np.stack(
        [60 + checker + waves, 80 + checker - 0.5 * waves, 110 + 0.5 * checker + 30 * yy], -1
    )
    if noise_std > 0:
        base = base + rng.normal(0.0, noise_std, base.shape)
    out: ImageU8 = np.clip(np.rint(base), 0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def image(request: pytest.FixtureRequest) -> ImageU8:
    h, w = request.param
    return textured(h, w)


@pytest.fixture(scope="module")
def small() -> ImageU8:
    return textured(64, 64, noise_std=0.0)


def grey(img: ImageU8) -> npt.NDArray[np.float64]:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)


def laplacian_var(img: ImageU8) -> float:
    return float(cv2.Laplacian(grey(img), cv2.CV_64F).var())


def rmse(a: ImageU8, b: ImageU8) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b) ** 2)))


# --- catalogue ----------------------------------------------------------------------------------
def test_the_fifteen_imagenet_c_types_in_four_families() -> None:
    assert len(C.CORRUPTIONS) == 15 == len(set(C.CORRUPTIONS))
    assert set(C.FAMILIES) == {"noise", "blur", "weather", "digital"}
    grouped = [name for names in C.FAMILIES.values() for name in names]
    assert sorted(grouped) == sorted(C.CORRUPTIONS)
    assert C.family_of("frost") == "weather" and C.family_of("jpeg_compression") == "digital"
    assert not set(C.CAMERA_FAULTS) & set(C.CORRUPTIONS)


# --- shape, dtype, purity -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_severity_keeps_shape_and_dtype(image: ImageU8, name: str) -> None:
    before = image.copy()
    for severity in C.SEVERITIES:
        out = C.corrupt(image, name, severity, np.random.default_rng(severity))
        assert out.shape == image.shape, (name, severity)
        assert out.dtype == np.uint8, (name, severity)
        assert out.flags.c_contiguous
    np.testing.assert_array_equal(image, before)  # the input is never modified


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(8, 90),
    w=st.integers(8, 90),
    name=st.sampled_from(ALL_NAMES),
    severity=st.sampled_from(C.SEVERITIES),
    seed=st.integers(0, 2**32 - 1),
)
def test_odd_sizes_work(h: int, w: int, name: str, severity: int, seed: int) -> None:
    img = textured(h, w, seed=seed % 1000)
    out = C.corrupt(img, name, severity, np.random.default_rng(seed))
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


# --- determinism --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_NAMES)
def test_equal_seeds_give_equal_frames(small: ImageU8, name: str) -> None:
    a = C.corrupt(small, name, 3, np.random.default_rng(11))
    b = C.corrupt(small, name, 3, np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    c = C.corrupt(small, name, 3, np.random.default_rng(12))
    if name in DETERMINISTIC:
        np.testing.assert_array_equal(a, c)
    else:
        assert not np.array_equal(a, c), f"{name} ignores the generator"


# --- severity is monotone in a measurable sense -------------------------------------------------
def _mean(img: ImageU8, out: ImageU8) -> float:
    return float(out.mean())


def _std(img: ImageU8, out: ImageU8) -> float:
    return float(grey(out).std())


def _dark_fraction(img: ImageU8, out: ImageU8) -> float:
    return float((grey(out) < 40).mean())


MONOTONE = [
    # name, measure(original, corrupted), +1 increasing / -1 decreasing with severity
    ("gaussian_noise", rmse, +1),
    ("shot_noise", rmse, +1),
    ("impulse_noise", rmse, +1),
    ("defocus_blur", lambda a, b: laplacian_var(b), -1),
    ("glass_blur", lambda a, b: laplacian_var(b), -1),
    ("motion_blur", lambda a, b: laplacian_var(b), -1),
    ("zoom_blur", rmse, +1),
    ("brightness", _mean, +1),
    ("contrast", _std, -1),
    ("jpeg_compression", rmse, +1),
    ("black_frame", _mean, -1),
    ("lens_occlusion", _dark_fraction, +1),
    ("glare", _mean, +1),
]


@pytest.mark.parametrize(("name", "measure", "sign"), MONOTONE, ids=[m[0] for m in MONOTONE])
def test_severity_is_monotone(small: ImageU8, name: str, measure: object, sign: int) -> None:
    assert callable(measure)
    values = []
    for severity in C.SEVERITIES:
        outs = [C.corrupt(small, name, severity, np.random.default_rng(s)) for s in (1, 2)]
        values.append(np.mean([measure(small, out) for out in outs]))
    steps = np.diff(values) * sign
    assert np.all(steps > 0), f"{name}: {np.round(values, 3)} not monotone ({sign:+d})"


def test_gaussian_noise_has_the_paper_standard_deviation() -> None:
    flat = np.full((128, 128, 3), 128, np.uint8)
    z = np.random.default_rng(99).standard_normal(400_000)
    for severity, std in zip(C.SEVERITIES, C.GAUSSIAN_NOISE_STD, strict=True):
        out = C.corrupt(flat, "gaussian_noise", severity, np.random.default_rng(0))
        measured = out.astype(np.float64).std() / 255
        # The frame is clipped to [0, 1]: compare with a clipped normal of the paper's std.
        expected = np.clip(128 / 255 + std * z, 0.0, 1.0).std()
        assert measured == pytest.approx(expected, rel=0.02), severity


def test_lens_occlusion_covers_the_requested_fraction() -> None:
    bright = np.full((120, 160, 3), 200, np.uint8)
    for fraction in (0.1, 0.35, 0.7):
        out = C.lens_occlusion(bright, fraction, np.random.default_rng(3))
        covered = float((grey(out) < 100).mean())  # at least half covered
        assert covered == pytest.approx(fraction, abs=0.01)


def test_black_frame_is_black(small: ImageU8) -> None:
    out = C.black_frame(small, np.random.default_rng(0))
    assert out.mean() < 4 and out.max() < 12


def test_glare_saturates_at_full_strength(small: ImageU8) -> None:
    out = C.glare(small, 1.0, np.random.default_rng(0))
    assert (grey(out) >= 250).mean() > 0.5


# --- resolution independence --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["defocus_blur", "motion_blur", "glass_blur"])
def test_spatial_parameters_scale_with_the_image(name: str) -> None:
    """Corrupting a big frame and reducing it ~ reducing it and corrupting the small one."""
    big = textured(256, 256, noise_std=0.0)
    small_img = np.asarray(cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA), np.uint8)
    big_out = C.corrupt(big, name, 4, np.random.default_rng(5))
    reduced = np.asarray(cv2.resize(big_out, (64, 64), interpolation=cv2.INTER_AREA), np.uint8)
    direct = C.corrupt(small_img, name, 4, np.random.default_rng(5))
    # The corruption itself changes the small frame far more than the two routes differ.
    assert rmse(direct, reduced) < 0.5 * rmse(direct, small_img)


# --- errors -------------------------------------------------------------------------------------
def test_unknown_name_lists_what_is_allowed(small: ImageU8) -> None:
    with pytest.raises(ConfigError, match=r"gaussian_noise.*jpeg_compression.*lens_occlusion"):
        C.corrupt(small, "gausian_noise", 1, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="unknown corruption"):
        C.family_of("glare")


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True, "3", None])
def test_bad_severity_raises_config_error(small: ImageU8, severity: object) -> None:
    with pytest.raises(ConfigError, match=r"severity must be"):
        C.corrupt(small, "fog", severity, np.random.default_rng(0))  # type: ignore[arg-type]


def test_numpy_integer_severity_is_accepted(small: ImageU8) -> None:
    out = C.corrupt(small, "contrast", np.int64(2), np.random.default_rng(0))  # type: ignore[arg-type]
    assert out.shape == small.shape


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((64, 64, 3), np.float32),
        np.zeros((4, 64, 3), np.uint8),
    ],
    ids=["grey", "rgba", "float", "too-small"],
)
def test_bad_image_raises_input_error(bad: npt.NDArray[np.generic]) -> None:
    with pytest.raises(InputError, match="image must"):
        C.corrupt(bad, "fog", 1, np.random.default_rng(0))  # type: ignore[arg-type]


def test_bad_generator_and_fault_parameters(small: ImageU8) -> None:
    with pytest.raises(ConfigError, match="Generator"):
        C.corrupt(small, "fog", 1, 42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="covered_fraction"):
        C.lens_occlusion(small, 0.0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="strength"):
        C.glare(small, 1.5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="residual_gain"):
        C.black_frame(small, np.random.default_rng(0), residual_gain=2.0)
