"""ImageNet-C corruptions at any image size, and the camera faults the simulation needs.

The 15 corruption types of Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations" (ICLR 2019), at severities 1 (mild) to 5 (severe),
re-implemented with NumPy and OpenCV (vectorised, no per-pixel Python loops), so that they run on
frames of any size and on current library versions (the original is tied to 224x224 px crops,
Wand / ImageMagick and old scikit-image). Per-severity constants are the original ones unless a
constant table below says otherwise.

Resolution independence: every *spatial* parameter of the original (blur radii, pixel-shuffle
distance, motion-blur length, snow-flake size, fog and frost texture scale, elastic displacement)
is in pixels of a 224 px image; here it is multiplied by ``scale = min(H, W) / 224`` (the short
side, as ImageNet crops are taken from the short side), so a 64x64 and a 320x240 frame get a
comparable visible corruption. Intensity parameters (noise levels, contrast and brightness
factors, fog and frost opacity) are per pixel and do not scale. ``pixelate`` and ``zoom_blur`` are
relative to the image size already; ``jpeg_compression`` acts on the codec's fixed 8x8 px blocks
and is the one corruption whose look still depends on the resolution.

Departures from the original, on purpose:

- ``frost`` blends a procedural, seeded frost texture (ridged-noise crystal veins, patchy milky
  haze, a blue-white tint) instead of the six frost photographs the original crops from.
- ``fog`` generates its diamond-square plasma on a periodic map whose sides are the powers of
  two (at least 256) that cover the frame in 224-px units, instead of a fixed 256x256 map.
- ``defocus_blur`` with a disk wider than 6 px convolves a frame reduced by ``radius // 3`` and
  enlarges the result (the disk has removed that detail anyway; under 1 DN RMS difference).
- ``glass_blur`` replaces the sequential per-pixel swaps (a Python double loop) by one random
  local displacement per pixel and iteration (a vectorised gather), same distances. Frames
  smaller than 224 px are shuffled at 224 px and reduced again (a shuffle cannot be shorter
  than a pixel).
- ``motion_blur`` replaces ImageMagick's ``-motion-blur`` by the same one-sided Gaussian-weighted
  line kernel, convolved with OpenCV.
- ``elastic_transform``: severities 3-5 keep the original displacement statistics (an RMS
  displacement of about 0.8, 1.1 and 2.0 px at 224 px, smoothing sigma 2.44 px, affine jitter
  4.9 px); severities 1-2, which the original made large affine warps, are milder versions of
  the same, so that the severity is monotone like every other type.

Camera faults (not part of ImageNet-C), severity 1-5 as well: ``black_frame`` (a dead or capped
sensor: the signal fades to a noisy black), ``lens_occlusion`` (a dark blob such as mud or a
finger covering a set fraction of the view), ``glare`` (a bright bloom and over-exposure from a
light source in or near the view). Each also has a function with a physical parameter.

Every function is deterministic given the state of the ``numpy.random.Generator`` passed in.
Input and output are ``uint8`` RGB arrays of shape (H, W, 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from robust_monitor.core.errors import ConfigError, InputError

ImageU8 = npt.NDArray[np.uint8]
ImageF32 = npt.NDArray[np.float32]

REFERENCE_SIZE_PX: Final[float] = 224.0
"""The image size (short side, px) the original spatial constants are given for."""

MIN_SIZE_PX: Final[int] = 8
"""Smallest height or width accepted."""

SEVERITIES: Final[tuple[int, ...]] = (1, 2, 3, 4, 5)

FAMILIES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
        "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
        "weather": ("snow", "frost", "fog", "brightness"),
        "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    }
)
"""The ImageNet-C families (the paper's grouping; brightness counts as weather)."""

CORRUPTIONS: Final[tuple[str, ...]] = tuple(name for names in FAMILIES.values() for name in names)
"""The 15 ImageNet-C corruption types, in the paper's order."""

CAMERA_FAULTS: Final[tuple[str, ...]] = ("black_frame", "lens_occlusion", "glare")
"""Camera faults ``corrupt`` also accepts (not part of ImageNet-C)."""

# --- per-severity constants (index = severity - 1); lengths in px at 224 px ----------------------
GAUSSIAN_NOISE_STD: Final = (0.08, 0.12, 0.18, 0.26, 0.38)
SHOT_NOISE_PHOTONS: Final = (60.0, 25.0, 12.0, 5.0, 3.0)
"""Photon count of a full-scale pixel; the frame is Poisson(x * photons) / photons."""
IMPULSE_NOISE_AMOUNT: Final = (0.03, 0.06, 0.09, 0.17, 0.27)
"""Fraction of values (per channel) replaced by salt or pepper, half each."""
DEFOCUS_RADIUS_ALIAS_PX: Final = ((3.0, 0.1), (4.0, 0.5), (6.0, 0.5), (8.0, 0.5), (10.0, 0.5))
GLASS_SIGMA_DELTA_ITER: Final = (
    (0.7, 1.0, 2),
    (0.9, 2.0, 1),
    (1.0, 2.0, 3),
    (1.1, 3.0, 2),
    (1.5, 4.0, 2),
)
MOTION_RADIUS_SIGMA_PX: Final = ((10.0, 3.0), (15.0, 5.0), (15.0, 8.0), (15.0, 12.0), (20.0, 15.0))
ZOOM_FACTORS: Final = (
    tuple(1.0 + 0.01 * i for i in range(11)),
    tuple(1.0 + 0.01 * i for i in range(16)),
    tuple(1.0 + 0.02 * i for i in range(11)),
    tuple(1.0 + 0.02 * i for i in range(13)),
    tuple(1.0 + 0.03 * i for i in range(11)),
)
SNOW: Final = (
    # mean, std, flake zoom (px), threshold, motion radius (px), motion sigma (px), blend
    (0.1, 0.3, 3.0, 0.5, 10.0, 4.0, 0.8),
    (0.2, 0.3, 2.0, 0.5, 12.0, 4.0, 0.7),
    (0.55, 0.3, 4.0, 0.9, 12.0, 8.0, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12.0, 8.0, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12.0, 12.0, 0.55),
)
FROST_IMAGE_FROST_WEIGHTS: Final = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
FOG_STRENGTH_DECAY: Final = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))
BRIGHTNESS_DELTA: Final = (0.1, 0.2, 0.3, 0.4, 0.5)
"""Added to the HSV value channel (saturating at 1)."""
CONTRAST_FACTOR: Final = (0.4, 0.3, 0.2, 0.1, 0.05)
ELASTIC_AFFINE_RMS_SIGMA_PX: Final = (
    # affine jitter of the control points, RMS displacement, displacement smoothing sigma
    (2.44, 0.4, 2.44),
    (3.66, 0.6, 2.44),
    (4.88, 0.81, 2.44),
    (4.88, 1.14, 2.44),
    (4.88, 1.95, 2.44),
)
PIXELATE_FACTOR: Final = (0.6, 0.5, 0.4, 0.3, 0.25)
JPEG_QUALITY: Final = (25, 18, 15, 10, 7)

BLACK_FRAME_RESIDUAL_GAIN: Final = (0.2, 0.1, 0.05, 0.02, 0.0)
"""Fraction of the scene signal a failing sensor still passes, per severity."""
OCCLUSION_COVERED_FRACTION: Final = (0.1, 0.2, 0.35, 0.5, 0.7)
GLARE_STRENGTH: Final = (0.2, 0.4, 0.6, 0.8, 1.0)

_ALL_NAMES: Final[tuple[str, ...]] = CORRUPTIONS + CAMERA_FAULTS


# --- public API ---------------------------------------------------------------------------------
def corrupt(image: ImageU8, name: str, severity: int, rng: np.random.Generator) -> ImageU8:
    """Apply corruption ``name`` (one of ``CORRUPTIONS`` or ``CAMERA_FAULTS``) at ``severity``.

    ``image`` is a uint8 RGB array (H, W, 3) with H, W >= 8; the result has the same shape and
    dtype and the input is not modified. Deterministic given the state of ``rng``.

    Raises ``ConfigError`` for an unknown name or a severity outside 1..5, ``InputError`` for an
    image of the wrong shape or dtype.
    """
    if name not in _ALL_NAMES:
        raise ConfigError(
            f"unknown corruption {name!r}; allowed: {', '.join(CORRUPTIONS)} "
            f"or a camera fault: {', '.join(CAMERA_FAULTS)}"
        )
    sev = _check_severity(severity)
    _check_rng(rng)
    _check_image(image)
    if name == "black_frame":
        return black_frame(image, rng, residual_gain=BLACK_FRAME_RESIDUAL_GAIN[sev - 1])
    if name == "lens_occlusion":
        return lens_occlusion(image, OCCLUSION_COVERED_FRACTION[sev - 1], rng)
    if name == "glare":
        return glare(image, GLARE_STRENGTH[sev - 1], rng)
    if name == "jpeg_compression":
        return _jpeg_compression(image, sev)
    if name == "pixelate":
        return _pixelate(image, sev)
    scale = min(image.shape[0], image.shape[1]) / REFERENCE_SIZE_PX
    x = image.astype(np.float32) * np.float32(1.0 / 255.0)
    return _to_u8(_FLOAT_CORRUPTIONS[name](x, sev, rng, scale))


def family_of(name: str) -> str:
    """The ImageNet-C family (``noise``, ``blur``, ``weather``, ``digital``) of a corruption."""
    for family, names in FAMILIES.items():
        if name in names:
            return family
    raise ConfigError(f"unknown corruption {name!r}; allowed: {', '.join(CORRUPTIONS)}")


def black_frame(
    image: ImageU8,
    rng: np.random.Generator,
    *,
    residual_gain: float = 0.0,
    dark_level_dn: float = 2.0,
    read_noise_dn: float = 1.0,
) -> ImageU8:
    """A black frame: ``residual_gain`` of the scene, plus dark level and read noise (0..255 DN).

    ``residual_gain = 0`` is a dead sensor or a capped lens; a small positive value a sensor
    that is failing (or an exposure time collapsed to nearly zero).
    """
    _check_image(image)
    _check_rng(rng)
    for label, value, low, high in (
        ("residual_gain", residual_gain, 0.0, 1.0),
        ("dark_level_dn", dark_level_dn, 0.0, 255.0),
        ("read_noise_dn", read_noise_dn, 0.0, 255.0),
    ):
        if not low <= value <= high:
            raise ConfigError(f"{label} must be in [{low:g}, {high:g}], got {value!r}")
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(read_noise_dn)
    out = image.astype(np.float32) * np.float32(residual_gain) + np.float32(dark_level_dn) + noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def lens_occlusion(image: ImageU8, covered_fraction: float, rng: np.random.Generator) -> ImageU8:
    """A dark blob (mud, a leaf, a finger) on the lens covering ``covered_fraction`` of the view.

    The blob is a random smooth shape around a random centre; its edge is soft (out of focus).
    Exactly ``round(covered_fraction * H * W)`` pixels are at least half covered. The occluder
    is a dark brown-grey, nearly uniform (it sits on the lens, far out of focus) and lets a
    little diffuse light through.
    """
    _check_image(image)
    _check_rng(rng)
    if not 0.0 < covered_fraction <= 1.0:
        raise ConfigError(f"covered_fraction must be in (0, 1], got {covered_fraction!r}")
    h, w = image.shape[:2]
    scale = min(h, w) / REFERENCE_SIZE_PX
    cy, cx = rng.uniform(0.0, h), rng.uniform(0.0, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    diag = math.hypot(h, w)
    # Closeness to the centre, made irregular by smooth noise: the blob is its upper level set.
    field = -np.hypot(yy - cy, xx - cx) / np.float32(diag)
    field += np.float32(0.08) * _smooth_noise(rng, h, w, cell_px=40.0 * scale)
    count = round(covered_fraction * h * w)
    flat = field.ravel()
    level = np.partition(flat, h * w - count)[h * w - count] if count < h * w else flat.min() - 1
    feather = np.float32(3.0 * max(scale, 0.25) / diag)
    alpha = np.clip((field - level) / feather + 0.5, 0.0, 1.0)
    if count == 0:
        alpha[:] = 0.0
    # On the lens, far out of focus: only a faint, smooth unevenness remains.
    texture = 0.04 + 0.01 * _smooth_noise(rng, h, w, cell_px=48.0 * scale)
    occluder = np.clip(texture, 0.0, 1.0)[..., None] * np.array([1.0, 0.9, 0.8], np.float32)
    x = image.astype(np.float32) * np.float32(1.0 / 255.0)
    # A little light still leaks through the blob from the scene behind it.
    small = cv2.resize(x, (max(w // 8, 1), max(h // 8, 1)), interpolation=cv2.INTER_AREA)
    leak = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(0.04)
    a = alpha[..., None]
    return _to_u8(x * (1.0 - a) + (occluder + leak) * a)


def glare(image: ImageU8, strength: float, rng: np.random.Generator) -> ImageU8:
    """Sudden glare: a bright bloom around a light source plus a global over-exposure.

    ``strength`` in (0, 1]: 0.2 a mild flare, 1.0 a sun in the lens that saturates most of the
    frame. The light source is at a random position in the upper two thirds of the view (sun,
    headlights); a faint streak crosses it.
    """
    _check_image(image)
    _check_rng(rng)
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"glare strength must be in (0, 1], got {strength!r}")
    h, w = image.shape[:2]
    diag = math.hypot(h, w)
    cy, cx = rng.uniform(0.0, 2.0 * h / 3.0), rng.uniform(0.0, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = (yy - cy) ** 2 + (xx - cx) ** 2
    radius = (0.12 + 0.38 * strength) * diag
    bloom = np.exp(-r2 / np.float32(2.0 * radius**2))
    angle = rng.uniform(0.0, math.pi)
    across = np.abs((xx - cx) * math.sin(angle) - (yy - cy) * math.cos(angle))
    streak = np.exp(-across / np.float32(0.01 * diag + 1.0)) * np.exp(-np.sqrt(r2) / (0.5 * diag))
    light = np.clip((0.5 + 1.2 * strength) * bloom + 0.4 * strength * streak, 0.0, 1.0).astype(
        np.float32
    )
    tint = np.array([1.0, 0.97, 0.9], np.float32)
    x = image.astype(np.float32) * np.float32((1.0 + 1.5 * strength) / 255.0)
    # Screen blend: the light adds to the exposure and saturates where it is strong.
    return _to_u8(1.0 - (1.0 - np.clip(x, 0.0, 1.0)) * (1.0 - light[..., None] * tint))


# --- validation ---------------------------------------------------------------------------------
def _check_severity(severity: int) -> int:
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer):
        raise ConfigError(f"severity must be an integer in 1..5, got {severity!r}")
    if int(severity) not in SEVERITIES:
        raise ConfigError(f"severity must be one of {list(SEVERITIES)}, got {severity!r}")
    return int(severity)


def _check_rng(rng: object) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {rng!r}"
        )


def _check_image(image: object) -> None:
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"image must be uint8 RGB of shape (H, W, 3), got {image.dtype} {image.shape}"
        )
    if min(image.shape[:2]) < MIN_SIZE_PX:
        raise InputError(
            f"image must be at least {MIN_SIZE_PX}x{MIN_SIZE_PX} px, got {image.shape}"
        )


# --- helpers ------------------------------------------------------------------------------------
def _to_u8(x: npt.NDArray[np.floating]) -> ImageU8:
    out: ImageU8 = np.clip(np.rint(x * np.float32(255.0)), 0, 255).astype(np.uint8)
    return out


def _f32(x: object) -> ImageF32:
    return np.asarray(x, dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell_px: float) -> ImageF32:
    """Zero-mean, unit-variance noise with features about ``cell_px`` wide (smooth value noise).

    A normal grid with one value per cell is upsampled bicubically to 4 px per cell, softened
    there (cheap: the array is small) and resized to the frame.
    """
    cell = max(cell_px, 1.0)
    gh, gw = math.ceil(h / cell) + 2, math.ceil(w / cell) + 2
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    if cell <= 4.0:
        up = cv2.resize(grid, (round(gw * cell), round(gh * cell)), interpolation=cv2.INTER_CUBIC)
        out = up[:h, :w] if up.shape[0] >= h and up.shape[1] >= w else cv2.resize(up, (w, h))
    else:
        mid = cv2.resize(grid, (gw * 4, gh * 4), interpolation=cv2.INTER_CUBIC)
        mid = cv2.GaussianBlur(mid, (0, 0), 1.0)
        crop = mid[4 : 4 + math.ceil(4 * h / cell), 4 : 4 + math.ceil(4 * w / cell)]
        out = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
    mean, std = cv2.meanStdDev(out)
    return _f32((out - np.float32(mean[0, 0])) / np.float32(max(float(std[0, 0]), 1e-6)))


def _disk_kernel(radius_px: float, alias_sigma_px: float) -> ImageF32:
    """Anti-aliased disk (pixel coverage by a circle of ``radius_px``), then a light Gaussian."""
    sub = 8
    half = math.ceil(radius_px + 3.0 * alias_sigma_px) + 1
    size = 2 * half + 1
    coords = (np.arange(size * sub, dtype=np.float32) + 0.5) / sub - size / 2.0
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    fine = ((yy**2 + xx**2) <= radius_px**2).astype(np.float32)
    kernel = cv2.resize(fine, (size, size), interpolation=cv2.INTER_AREA)
    if float(kernel.sum()) <= 0.0:
        kernel[half, half] = 1.0
    if alias_sigma_px > 0.05:
        kernel = cv2.GaussianBlur(kernel, (0, 0), alias_sigma_px)
    return _f32(kernel / kernel.sum())


def _motion_kernel(
    radius_px: float, sigma_px: float, angle_deg: float
) -> tuple[ImageF32, tuple[int, int]]:
    """One-sided line kernel (ImageMagick ``-motion-blur``): weights exp(-t^2 / 2 sigma^2).

    The streak runs ``2 * radius_px`` pixels from the anchor along ``angle_deg`` (counter-
    clockwise from +x); samples every quarter pixel are splatted bilinearly. Returns the kernel,
    cropped to the streak, and its anchor (x, y) for ``cv2.filter2D``.
    """
    length = max(2.0 * radius_px, 1.0)
    t = np.arange(0.0, length + 1e-6, 0.25)
    weight = np.exp(-(t**2) / (2.0 * max(sigma_px, 0.25) ** 2))
    theta = math.radians(angle_deg)
    px, py = t * math.cos(theta), -t * math.sin(theta)
    x0, y0 = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    fx, fy = px - x0, py - y0
    min_x, min_y = int(x0.min()), int(y0.min())
    kernel = np.zeros((int(y0.max()) - min_y + 2, int(x0.max()) - min_x + 2), np.float64)
    for dy, dx, wk in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        np.add.at(kernel, (y0 + dy - min_y, x0 + dx - min_x), weight * wk)
    return _f32(kernel / kernel.sum()), (-min_x, -min_y)


def _streak(x: ImageF32, radius_px: float, sigma_px: float, angle_deg: float) -> ImageF32:
    kernel, anchor = _motion_kernel(radius_px, sigma_px, angle_deg)
    return _f32(cv2.filter2D(x, -1, kernel, anchor=anchor, borderType=cv2.BORDER_REFLECT_101))


def _zoom(x: ImageF32, factor: float) -> ImageF32:
    """Zoom into the centre by ``factor`` >= 1 (the original's ``clipped_zoom``), same size."""
    h, w = x.shape[:2]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    m = np.array([[factor, 0.0, (1.0 - factor) * cx], [0.0, factor, (1.0 - factor) * cy]])
    return _f32(
        cv2.warpAffine(x, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    )


def _plasma_fractal(
    rng: np.random.Generator, rows: int, cols: int, decay: float
) -> npt.NDArray[np.float64]:
    """Diamond-square plasma on a periodic ``rows`` x ``cols`` map (powers of two), 0..1.

    Same recurrence as the original (which is square): each midpoint is the mean of its four
    neighbours plus uniform noise of amplitude ``wibble ** 2``, and ``wibble`` shrinks by
    ``decay`` per level. A rectangular map starts from a row or column of corners.
    """
    m = np.zeros((rows, cols), np.float64)
    step = min(rows, cols)
    wibble = 100.0

    def noise(shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
        u = rng.random(shape, dtype=np.float32).astype(np.float64)
        return (2.0 * u - 1.0) * (wibble * wibble)

    while step >= 2:
        half = step // 2
        # squares: centre of every cell from its four corners
        corners = m[0::step, 0::step]
        acc = corners + np.roll(corners, -1, axis=0)
        acc = acc + np.roll(acc, -1, axis=1)
        m[half::step, half::step] = acc / 4 + noise(acc.shape)
        # diamonds: edge midpoints from the two corners and the two adjacent centres
        centres = m[half::step, half::step]
        top = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        m[0::step, half::step] = top / 4 + noise(top.shape)
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        m[half::step, 0::step] = left / 4 + noise(left.shape)
        step //= 2
        wibble /= decay
    m -= m.min()
    peak = m.max()
    return m / peak if peak > 0 else m


def _remap(x: ImageF32, map_x: ImageF32, map_y: ImageF32, interpolation: int) -> ImageF32:
    return _f32(
        cv2.remap(x, map_x, map_y, interpolation=interpolation, borderMode=cv2.BORDER_REFLECT_101)
    )


def _grid(h: int, w: int) -> tuple[ImageF32, ImageF32]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx, yy


# --- the 15 corruptions on float32 RGB in [0, 1] ------------------------------------------------
def _gaussian_noise(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    std = np.float32(GAUSSIAN_NOISE_STD[sev - 1])
    return x + rng.standard_normal(x.shape, dtype=np.float32) * std


def _shot_noise(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    photons = SHOT_NOISE_PHOTONS[sev - 1]
    return _f32(rng.poisson(x * np.float32(photons)).astype(np.float32) / np.float32(photons))


def _impulse_noise(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    amount = IMPULSE_NOISE_AMOUNT[sev - 1]
    u = rng.random(x.shape, dtype=np.float32)
    out = x.copy()
    out[u < amount / 2.0] = 1.0
    out[(u >= amount / 2.0) & (u < amount)] = 0.0
    return out


def _defocus_blur(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    radius, alias = DEFOCUS_RADIUS_ALIAS_PX[sev - 1]
    radius_px, alias_px = radius * scale, alias * scale
    # A wide disk removes all detail finer than about radius / 3 px: blur a reduced frame.
    factor = max(int(radius_px // 3.0), 1)
    h, w = x.shape[:2]
    if factor > 1 and min(h, w) >= 8 * factor:
        small = cv2.resize(x, (round(w / factor), round(h / factor)), interpolation=cv2.INTER_AREA)
        kernel = _disk_kernel(radius_px / factor, alias_px / factor)
        small = cv2.filter2D(small, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
        return _f32(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))
    kernel = _disk_kernel(radius_px, alias_px)
    return _f32(cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT_101))


def _glass_blur(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    sigma, delta, iterations = GLASS_SIGMA_DELTA_ITER[sev - 1]
    h, w = x.shape[:2]
    if scale < 1.0:
        # Pixel shuffles cannot be scaled below a pixel: shuffle at 224 px, then reduce.
        big = cv2.resize(x, (round(w / scale), round(h / scale)), interpolation=cv2.INTER_CUBIC)
        out = _glass_blur(_f32(big), sev, rng, 1.0)
        return _f32(cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA))
    sigma_px, delta_px = sigma * scale, delta * scale
    out = _f32(cv2.GaussianBlur(x, (0, 0), sigma_px))
    gx, gy = _grid(h, w)
    for _ in range(iterations):
        # Each pixel takes the value of a random pixel at most delta_px away in x and y.
        offsets = (rng.random((2, h, w), dtype=np.float32) * 2.0 - 1.0) * np.float32(delta_px)
        out = _remap(out, gx + offsets[0], gy + offsets[1], cv2.INTER_NEAREST)
    return _f32(cv2.GaussianBlur(out, (0, 0), sigma_px))


def _motion_blur(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    radius, sigma = MOTION_RADIUS_SIGMA_PX[sev - 1]
    return _streak(x, radius * scale, sigma * scale, rng.uniform(-45.0, 45.0))


def _zoom_blur(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    factors = ZOOM_FACTORS[sev - 1]
    acc = x.copy()
    for factor in factors:
        acc += _zoom(x, factor)
    return acc / np.float32(len(factors) + 1)


def _snow(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    mean, std, zoom, threshold, radius, sigma, blend = SNOW[sev - 1]
    h, w = x.shape[:2]
    flake_px = max(zoom * scale, 1.0)
    gh, gw = max(math.ceil(h / flake_px), 2), max(math.ceil(w / flake_px), 2)
    layer = rng.normal(mean, std, (gh, gw)).astype(np.float32)
    layer = _f32(cv2.resize(layer, (w, h), interpolation=cv2.INTER_LINEAR))
    layer[layer < threshold] = 0.0
    layer = np.clip(layer, 0.0, 1.0)
    layer = _streak(layer, radius * scale, sigma * scale, rng.uniform(-135.0, -45.0))[..., None]
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    x = blend * x + (1.0 - blend) * np.maximum(x, grey * 1.5 + 0.5)
    return _f32(x + layer + np.rot90(layer, k=2))


def _frost_texture(rng: np.random.Generator, h: int, w: int, scale: float) -> ImageF32:
    """Procedural frost on glass, RGB about 0..1 (mean about 0.3): crystal veins and milky haze.

    Veins are ridged noise (bright where smooth noise crosses zero: a network of thin curves,
    like ice-crystal boundaries) at four scales; a coarse noise makes the coverage patchy and
    thicker towards the frame edges, as frost grows from the window frame; a fine grain breaks
    up the haze.
    """
    veins = np.zeros((h, w), np.float32)
    for cell, weight in ((32.0, 0.3), (16.0, 0.3), (8.0, 0.25), (4.0, 0.15)):
        n = _smooth_noise(rng, h, w, cell * scale)
        veins += np.float32(weight) * np.clip(1.0 - np.abs(n) * np.float32(2.0), 0.0, 1.0) ** 4
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    edge = np.minimum(np.minimum(yy, h - 1 - yy) / h, np.minimum(xx, w - 1 - xx) / w)
    coverage = np.clip(0.6 + 0.4 * _smooth_noise(rng, h, w, 64.0 * scale) - 1.2 * edge, 0, 1)
    haze = 0.4 + 0.08 * _smooth_noise(rng, h, w, 1.5 * scale)
    frost = np.clip(coverage * (haze + 1.6 * veins) + 0.1, 0.0, 1.0)
    tint = np.array([0.86, 0.93, 1.0], np.float32)
    return _f32(frost[..., None] * tint)


def _frost(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    image_weight, frost_weight = FROST_IMAGE_FROST_WEIGHTS[sev - 1]
    texture = _frost_texture(rng, x.shape[0], x.shape[1], scale)
    return _f32(np.float32(image_weight) * x + np.float32(frost_weight) * texture)


def _fog(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    strength, decay = FOG_STRENGTH_DECAY[sev - 1]
    h, w = x.shape[:2]
    # The plasma is made in 224-px units (its texture scale) and resized to the frame.
    ref_h, ref_w = max(math.ceil(h / scale), 2), max(math.ceil(w / scale), 2)
    rows = max(256, 1 << math.ceil(math.log2(ref_h)))
    cols = max(256, 1 << math.ceil(math.log2(ref_w)))
    plasma = _plasma_fractal(rng, rows, cols, decay)[:ref_h, :ref_w].astype(np.float32)
    plasma = _f32(cv2.resize(plasma, (w, h), interpolation=cv2.INTER_LINEAR))
    peak = float(x.max())
    out = x + np.float32(strength) * plasma[..., None]
    return _f32(out * np.float32(peak / (peak + strength)))


def _brightness(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    # HSV value + delta with hue and saturation kept: every channel scales by V'/V; black -> grey.
    delta = np.float32(BRIGHTNESS_DELTA[sev - 1])
    value = np.maximum(np.maximum(x[..., 0], x[..., 1]), x[..., 2])
    gain = np.minimum(value + delta, np.float32(1.0)) / np.maximum(value, np.float32(1e-6))
    out = x * gain[..., None]
    out[value <= 0.0] = delta  # black has no hue: it becomes grey
    return _f32(out)


def _contrast(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    factor = np.float32(CONTRAST_FACTOR[sev - 1])
    means = np.array(cv2.mean(x)[:3], np.float32)
    return (x - means) * factor + means


def _elastic_transform(x: ImageF32, sev: int, rng: np.random.Generator, scale: float) -> ImageF32:
    affine_px, rms_px, sigma_px = (v * scale for v in ELASTIC_AFFINE_RMS_SIGMA_PX[sev - 1])
    h, w = x.shape[:2]
    centre = np.array([w / 2.0, h / 2.0], np.float32)
    arm = min(h, w) / 3.0
    src = np.array(
        [centre + arm, [centre[0] + arm, centre[1] - arm], centre - arm], dtype=np.float32
    )
    dst = src + rng.uniform(-affine_px, affine_px, src.shape).astype(np.float32)
    warped = cv2.warpAffine(
        x, cv2.getAffineTransform(src, dst), (w, h), borderMode=cv2.BORDER_REFLECT_101
    )
    shift = rng.random((2, h, w), dtype=np.float32) * 2.0 - 1.0
    fields = []
    for k in range(2):
        smooth = cv2.GaussianBlur(shift[k], (0, 0), max(sigma_px, 0.3))
        rms = float(np.sqrt(np.mean(smooth**2)))
        fields.append(smooth * np.float32(rms_px / rms if rms > 0 else 0.0))
    gx, gy = _grid(h, w)
    return _remap(_f32(warped), gx + fields[0], gy + fields[1], cv2.INTER_LINEAR)


def _pixelate(image: ImageU8, sev: int) -> ImageU8:
    factor = PIXELATE_FACTOR[sev - 1]
    h, w = image.shape[:2]
    small = cv2.resize(
        image, (max(int(w * factor), 1), max(int(h * factor), 1)), interpolation=cv2.INTER_AREA
    )
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST), dtype=np.uint8)


def _jpeg_compression(image: ImageU8, sev: int) -> ImageU8:
    bgr = np.ascontiguousarray(image[..., ::-1])
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY[sev - 1]])
    if not ok:  # pragma: no cover - OpenCV always has a JPEG codec
        raise InputError("JPEG encoding failed")
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if decoded is None:  # pragma: no cover - a buffer OpenCV just wrote always decodes
        raise InputError("JPEG decoding failed")
    return np.ascontiguousarray(decoded[..., ::-1], dtype=np.uint8)


_FloatCorruption = Callable[[ImageF32, int, np.random.Generator, float], ImageF32]

_FLOAT_CORRUPTIONS: Final[Mapping[str, _FloatCorruption]] = MappingProxyType(
    {
        "gaussian_noise": _gaussian_noise,
        "shot_noise": _shot_noise,
        "impulse_noise": _impulse_noise,
        "defocus_blur": _defocus_blur,
        "glass_blur": _glass_blur,
        "motion_blur": _motion_blur,
        "zoom_blur": _zoom_blur,
        "snow": _snow,
        "frost": _frost,
        "fog": _fog,
        "brightness": _brightness,
        "contrast": _contrast,
        "elastic_transform": _elastic_transform,
    }
)
