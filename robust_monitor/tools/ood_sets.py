"""Frames for the OOD evaluation (``eval_ood``): whole camera frames unlike the training data.

Every far-OOD generator returns whole 320x240 RGB uint8 camera frames (the size of the
simulated camera, ``synth.scene.Camera``), because the camera-health checks are made for whole
frames; the classifier then sees the model's region of interest of that frame, exactly as in the
deployed pipeline. Far-OOD sets (``FAR_OOD_SETS``):

- ``noise_uniform``: every channel of every pixel uniform in 0..255 (a sensor or cable fault).
- ``noise_gaussian``: per-pixel Gaussian noise around a random grey level (mean 50..200 DN,
  standard deviation 15..80 DN), clipped.
- ``textures``: procedural patterns: checkerboards, sinusoidal plaids, brick walls, polka dots,
  barcode stripes and false-colour plasma (fractal noise through a cycling hue map).
- ``photos``: random 4:3 crops (a quarter to all of the short side, random mirror) of natural
  photographs: those of ``skimage.data`` when scikit-image is installed, else the two photos
  matplotlib ships in its sample data (``grace_hopper.jpg``, ``Minduka_Present_Blue_Pack.png``).
  The set is skipped when neither is available (``available_far_ood_sets``).
- ``tunnel``: ``synth.scene.render_tunnel`` at random odometer readings (walls, tiles and lamps;
  the road-sign renderer draws no walls or tunnels).

Not used as far-OOD: ``RoadScene`` crops without a sign in the region of interest; they are the
in-distribution class ``no_sign``.

``scene_frames`` and ``paste_into_roi`` make the whole frames the camera-health checks see for
in-distribution and corrupted renders: a road scene whose region of interest shows the render.

Each frame ``i`` of a set is drawn from its own generator,
``np.random.default_rng(np.random.SeedSequence([seed, set_index, i]))``, so a set is the same
whatever its size and order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.synth.roadsigns import smooth_noise
from robust_monitor.synth.scene import DEFAULT_ROI, RoadScene, Roi, render_tunnel

ImageU8 = npt.NDArray[np.uint8]
ImageF32 = npt.NDArray[np.float32]

FRAME_WIDTH_PX: Final[int] = 320
FRAME_HEIGHT_PX: Final[int] = 240

FAR_OOD_SETS: Final[tuple[str, ...]] = (
    "noise_uniform",
    "noise_gaussian",
    "textures",
    "photos",
    "tunnel",
)
"""Names of the far-OOD sets, in report order."""

SKIMAGE_PHOTOS: Final[tuple[str, ...]] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "cat",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
)
"""``skimage.data`` images used as photos when scikit-image is installed."""

MATPLOTLIB_PHOTOS: Final[tuple[str, ...]] = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")


def _u8(image: npt.NDArray[np.floating]) -> ImageU8:
    """Float RGB in 0..1 -> uint8, rounded and clipped."""
    return np.asarray(np.clip(image * 255.0 + 0.5, 0, 255), np.uint8)


def frame_rng(seed: int, set_index: int, index: int) -> np.random.Generator:
    """The generator of frame ``index`` of set ``set_index`` in a collection seeded ``seed``."""
    if min(seed, set_index, index) < 0:
        raise ConfigError(
            f"seed, set_index and index must be >= 0, got {seed}, {set_index}, {index}"
        )
    return np.random.default_rng(np.random.SeedSequence([seed, set_index, index]))


# --- noise -------------------------------------------------------------------------------------
def noise_uniform(rng: np.random.Generator) -> ImageU8:
    """Every value uniform in 0..255."""
    return rng.integers(0, 256, (FRAME_HEIGHT_PX, FRAME_WIDTH_PX, 3), dtype=np.uint8)


def noise_gaussian(rng: np.random.Generator) -> ImageU8:
    """Gaussian noise (std 15..80 DN) around a random grey level (50..200 DN), clipped."""
    mean = rng.uniform(50.0, 200.0)
    std = rng.uniform(15.0, 80.0)
    values = rng.normal(mean, std, (FRAME_HEIGHT_PX, FRAME_WIDTH_PX, 3))
    return np.asarray(np.clip(values + 0.5, 0, 255), np.uint8)


# --- textures ----------------------------------------------------------------------------------
def _rotated_grid(rng: np.random.Generator) -> tuple[ImageF32, ImageF32]:
    """Pixel coordinates rotated by a random angle: (u, v), each (H, W)."""
    yy, xx = np.mgrid[0:FRAME_HEIGHT_PX, 0:FRAME_WIDTH_PX].astype(np.float32)
    angle = rng.uniform(0.0, math.pi)
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return xx * c + yy * s, -xx * s + yy * c


def _two_colours(rng: np.random.Generator) -> tuple[ImageF32, ImageF32]:
    a = rng.random(3).astype(np.float32)
    b = rng.random(3).astype(np.float32)
    while float(np.abs(a - b).sum()) < 0.6:  # keep the pattern visible
        b = rng.random(3).astype(np.float32)
    return a, b


def _blend(mask: ImageF32, a: ImageF32, b: ImageF32) -> ImageF32:
    m = mask[..., None]
    out: ImageF32 = (a[None, None, :] * (1.0 - m) + b[None, None, :] * m).astype(np.float32)
    return out


def _checkerboard(rng: np.random.Generator) -> ImageF32:
    u, v = _rotated_grid(rng)
    cell = rng.uniform(4.0, 40.0)
    mask = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    return _blend(mask, *_two_colours(rng))


def _plaid(rng: np.random.Generator) -> ImageF32:
    acc = np.zeros((FRAME_HEIGHT_PX, FRAME_WIDTH_PX), np.float32)
    count = int(rng.integers(1, 4))
    for _ in range(count):
        u, _v = _rotated_grid(rng)
        period = rng.uniform(5.0, 60.0)
        acc += np.sin(2.0 * np.pi * u / np.float32(period) + np.float32(rng.uniform(0, 6.3)))
    mask = (0.5 + 0.5 * acc / count).astype(np.float32)
    return _blend(mask, *_two_colours(rng))


def _bricks(rng: np.random.Generator) -> ImageF32:
    brick_h = rng.uniform(8.0, 30.0)
    brick_w = brick_h * rng.uniform(1.5, 3.0)
    mortar = max(1.0, brick_h * rng.uniform(0.08, 0.2))
    yy, xx = np.mgrid[0:FRAME_HEIGHT_PX, 0:FRAME_WIDTH_PX].astype(np.float32)
    row = np.floor(yy / brick_h)
    shifted = xx + (row % 2) * np.float32(brick_w / 2)
    in_mortar = (np.mod(yy, brick_h) < mortar) | (np.mod(shifted, brick_w) < mortar)
    brick, joint = _two_colours(rng)
    image = _blend(in_mortar.astype(np.float32), brick, joint)
    # A little per-brick shade, as real bricks have.
    shade = rng.uniform(0.8, 1.2, (int(FRAME_HEIGHT_PX / brick_h) + 2, 64)).astype(np.float32)
    col = np.floor(shifted / brick_w).astype(np.int64) % 64
    image *= shade[row.astype(np.int64), col][..., None]
    return image


def _polka(rng: np.random.Generator) -> ImageF32:
    u, v = _rotated_grid(rng)
    pitch = rng.uniform(10.0, 50.0)
    radius = pitch * rng.uniform(0.15, 0.45)
    du = np.mod(u, pitch) - pitch / 2
    dv = np.mod(v, pitch) - pitch / 2
    mask = (du * du + dv * dv <= radius * radius).astype(np.float32)
    return _blend(mask, *_two_colours(rng))


def _barcode(rng: np.random.Generator) -> ImageF32:
    u, _v = _rotated_grid(rng)
    widths = rng.uniform(1.5, 12.0, 512)
    edges = np.cumsum(widths) - 256.0 * 6.75
    stripe = (np.searchsorted(edges, u.ravel()) % 2).reshape(u.shape).astype(np.float32)
    return _blend(stripe, *_two_colours(rng))


def _plasma(rng: np.random.Generator) -> ImageF32:
    field = smooth_noise(rng, FRAME_HEIGHT_PX, FRAME_WIDTH_PX, (4, 8, 16, 32))
    cycles = rng.uniform(2.0, 6.0)
    hue = np.mod(field * np.float32(cycles * 180.0) + np.float32(rng.uniform(0, 180)), 180.0)
    hsv = np.stack(
        [hue, np.full_like(hue, 255.0), np.full_like(hue, rng.uniform(180.0, 255.0))], axis=-1
    ).astype(np.uint8)
    rgb = np.asarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), np.float32) / np.float32(255.0)
    return rgb


_TEXTURES: Final[tuple[Callable[[np.random.Generator], ImageF32], ...]] = (
    _checkerboard,
    _plaid,
    _bricks,
    _polka,
    _barcode,
    _plasma,
)


def texture(rng: np.random.Generator) -> ImageU8:
    """One procedural texture frame (a pattern drawn uniformly from the six kinds)."""
    kind = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    return _u8(kind(rng))


# --- photos ------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def photo_sources() -> tuple[tuple[str, ImageU8], ...]:
    """Natural photos available on this machine: ``(name, uint8 RGB)`` pairs (maybe none).

    ``skimage.data`` when scikit-image is installed, otherwise matplotlib's sample photos.
    """
    photos: list[tuple[str, ImageU8]] = []
    try:
        from skimage import data as skdata  # type: ignore[import-not-found,unused-ignore]

        for name in SKIMAGE_PHOTOS:
            try:
                image = np.asarray(getattr(skdata, name)())
            except Exception:  # a missing or undownloadable image is skipped
                continue
            photos.append((f"skimage.data.{name}", _as_rgb(image)))
    except ImportError:
        pass
    if photos:
        return tuple(photos)
    try:
        import matplotlib

        folder = Path(matplotlib.get_data_path()) / "sample_data"
    except ImportError:
        return ()
    for name in MATPLOTLIB_PHOTOS:
        path = folder / name
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is not None:
            rgb = np.ascontiguousarray(bgr[..., ::-1], dtype=np.uint8)
            photos.append((f"matplotlib/sample_data/{name}", rgb))
    return tuple(photos)


def _as_rgb(image: npt.NDArray[np.generic]) -> ImageU8:
    if image.dtype != np.uint8:
        image = _u8(np.asarray(image, np.float64) / max(float(np.max(image)), 1e-9))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def photo(rng: np.random.Generator) -> ImageU8:
    """A random 4:3 crop of one of ``photo_sources()``, resized to the frame size."""
    sources = photo_sources()
    if not sources:
        raise InputError("no natural photos available (install scikit-image or matplotlib)")
    _name, image = sources[int(rng.integers(len(sources)))]
    h, w = image.shape[:2]
    full_w = min(w, h * FRAME_WIDTH_PX // FRAME_HEIGHT_PX)
    crop_w = max(16, round(full_w * rng.uniform(0.25, 1.0)))
    crop_h = max(12, round(crop_w * FRAME_HEIGHT_PX / FRAME_WIDTH_PX))
    x0 = int(rng.integers(0, w - crop_w + 1))
    y0 = int(rng.integers(0, h - crop_h + 1))
    crop = image[y0 : y0 + crop_h, x0 : x0 + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interpolation = cv2.INTER_AREA if crop_w >= FRAME_WIDTH_PX else cv2.INTER_LINEAR
    size = (FRAME_WIDTH_PX, FRAME_HEIGHT_PX)
    return np.asarray(cv2.resize(np.ascontiguousarray(crop), size, interpolation=interpolation))


def tunnel(rng: np.random.Generator) -> ImageU8:
    """A frame inside a road tunnel at a random odometer reading."""
    return render_tunnel(float(rng.uniform(0.0, 500.0)))


_GENERATORS: Final[dict[str, Callable[[np.random.Generator], ImageU8]]] = {
    "noise_uniform": noise_uniform,
    "noise_gaussian": noise_gaussian,
    "textures": texture,
    "photos": photo,
    "tunnel": tunnel,
}


def available_far_ood_sets() -> tuple[str, ...]:
    """``FAR_OOD_SETS`` that can be generated here (``photos`` needs a photo source)."""
    return tuple(s for s in FAR_OOD_SETS if s != "photos" or photo_sources())


def far_ood_frames(name: str, count: int, seed: int) -> list[ImageU8]:
    """Frames ``0 .. count-1`` of far-OOD set ``name``: uint8 (240, 320, 3) RGB each."""
    if name not in _GENERATORS:
        raise ConfigError(f"unknown far-OOD set {name!r}; allowed: {list(FAR_OOD_SETS)}")
    if count < 0:
        raise ConfigError(f"count must be >= 0, got {count}")
    make = _GENERATORS[name]
    set_index = FAR_OOD_SETS.index(name)
    return [make(frame_rng(seed, set_index, i)) for i in range(count)]


# --- whole frames around a render --------------------------------------------------------------
def scene_frames(count: int, seed: int, duration_s: float = 90.0) -> list[ImageU8]:
    """``count`` frames of one seeded ``RoadScene`` drive at random times in ``[0, duration_s)``."""
    if count < 1:
        raise ConfigError(f"count must be >= 1, got {count}")
    scene = RoadScene(seed=seed)
    times = np.sort(np.random.default_rng(seed).uniform(0.0, duration_s, count))
    return [scene.render(float(t)).image for t in times]


def paste_into_roi(frame: ImageU8, image: ImageU8, roi: Roi = DEFAULT_ROI) -> ImageU8:
    """A copy of ``frame`` whose region ``roi`` shows ``image`` (resized to the region)."""
    x0, y0, x1, y1 = roi.box_for(frame.shape[1], frame.shape[0])
    size = (x1 - x0, y1 - y0)
    interpolation = cv2.INTER_AREA if image.shape[1] >= size[0] else cv2.INTER_LINEAR
    out = frame.copy()
    out[y0:y1, x0:x1] = cv2.resize(image, size, interpolation=interpolation)
    return out


def set_names(names: Sequence[str] | None) -> tuple[str, ...]:
    """Validated far-OOD set names (None: every available set)."""
    if names is None:
        return available_far_ood_sets()
    bad = [n for n in names if n not in FAR_OOD_SETS]
    if bad:
        raise ConfigError(f"unknown far-OOD set(s) {bad}; allowed: {list(FAR_OOD_SETS)}")
    if "photos" in names and not photo_sources():
        raise ConfigError("far-OOD set 'photos' needs scikit-image or matplotlib sample photos")
    return tuple(dict.fromkeys(names))
