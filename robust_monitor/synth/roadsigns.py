"""Procedural road-sign images: labelled 64x64 RGB renders of 8 classes for training and tests.

Every image is drawn with OpenCV and numpy from a seeded ``numpy.random.Generator`` that belongs
to that image alone: image ``index`` of data set ``seed`` uses
``np.random.default_rng(np.random.SeedSequence([seed, index]))``, so any image can be rendered on
its own, in any order and in parallel, and comes out bit-identical. The label of image ``index`` is
``index % len(CLASSES)``, which balances every data set over the classes (counts differ by at most
one).

What a render contains (the variation a road camera sees):
- a background: sky gradient with clouds, asphalt with a lane stripe, foliage-like noise, clutter of
  random shapes, or a roadside view (sky, tree line, verge and road) like the scene ROI shows;
- the sign (absent for ``no_sign``) on a pole or free, at a random scale (``SIGN_SCALE_RANGE`` of
  the image width), position (up to a little past the image edge), in-plane rotation and
  perspective tilt (``cv2.warpPerspective``), with faded paint;
- ``no_sign`` images may hold sign-like distractors the classifier must not take for a sign: bare
  poles, sign backs, green direction boards, white plates;
- partial occlusion (leaves, a post, a dark box), lighting (gain, gamma, contrast, shading
  ramp), colour cast, mild Gaussian or motion blur and sensor noise.

Images are drawn at twice the output size and reduced with ``cv2.INTER_AREA`` (anti-aliasing);
lighting, blur and noise are applied at the output size. Deliberately absent (kept for the OOD
episodes of the sample drive): walls, tunnels, indoor scenes, fog and glare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from robust_monitor.core.errors import ConfigError

CLASSES: Final[tuple[str, ...]] = (
    "stop",
    "yield",
    "no_entry",
    "speed_limit_30",
    "speed_limit_50",
    "pedestrian_crossing",
    "priority_road",
    "no_sign",
)
"""Class names in label order (label ``i`` is ``CLASSES[i]``)."""

NO_SIGN: Final[int] = CLASSES.index("no_sign")
"""Label of the background class (no sign in view)."""

SIGN_SCALE_RANGE: Final[tuple[float, float]] = (0.28, 0.92)
"""Range of the sign's size (its unrotated width) as a fraction of the image width."""

TRAIN_DATA_SEED: Final[int] = 101
"""Data set seed of the shipped models' training renders."""
EVAL_DATA_SEED: Final[int] = 202
"""Data set seed of the held-out renders the training recipe reports accuracy on."""
TEST_DATA_SEED: Final[int] = 303
"""Reserved for the tests of the shipped models: never rendered for training or model selection."""

CANVAS_PX: Final[int] = 128
"""Side of the square RGBA canvas each sign is drawn on before it is warped into place."""

ImageU8 = npt.NDArray[np.uint8]
ImageF32 = npt.NDArray[np.float32]

# Paint colours (RGB, 0..1), faded further per image.
_RED = (0.78, 0.06, 0.08)
_WHITE = (0.96, 0.96, 0.94)
_BLACK = (0.05, 0.05, 0.06)
_BLUE = (0.05, 0.28, 0.68)
_YELLOW = (0.98, 0.76, 0.05)
_GREY = (0.55, 0.56, 0.58)

_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX)


def _f32(array: Any) -> ImageF32:
    """View (no copy when already float32) of an OpenCV/numpy result as a float32 array."""
    return np.asarray(array, dtype=np.float32)


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that draws image ``index`` of data set ``seed`` (both non-negative ints)."""
    if seed < 0 or index < 0:
        raise ConfigError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def label_of(index: int) -> int:
    """Label of image ``index`` in every data set: ``index % len(CLASSES)`` (balanced)."""
    return int(index) % len(CLASSES)


# --------------------------------------------------------------------------------------------
# Sign canvases
# --------------------------------------------------------------------------------------------


def _put_text_centered(
    canvas: ImageF32,
    text: str,
    center: tuple[float, float],
    width: float,
    colour: tuple[float, float, float],
    font: int,
    thickness_frac: float,
) -> None:
    """Draw ``text`` so that it is ``width`` pixels wide and centred on ``center``."""
    (w1, _h1), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = width / w1
    thickness = max(1, round(thickness_frac * width))
    (w, h), _ = cv2.getTextSize(text, font, scale, thickness)
    org = (round(center[0] - w / 2), round(center[1] + h / 2))
    # putText draws on 8-bit images only: draw coverage, then blend the paint in.
    ink = np.zeros(canvas.shape[:2], np.uint8)
    cv2.putText(ink, text, org, font, scale, 255, thickness, cv2.LINE_AA)
    cover = ink.astype(np.float32)[..., None] / 255.0
    canvas *= 1.0 - cover
    canvas += cover * np.asarray(colour, np.float32)


def _walking_figure(canvas: ImageF32, cx: float, cy: float, h: float) -> None:
    """A pedestrian of height ``h`` made of a circle and thick lines, centred at (cx, cy)."""
    t = max(2, round(h * 0.09))
    head = (round(cx + 0.06 * h), round(cy - 0.38 * h))
    cv2.circle(canvas, head, max(2, round(0.1 * h)), _BLACK, -1, cv2.LINE_AA)
    neck = (cx + 0.03 * h, cy - 0.25 * h)
    hip = (cx - 0.02 * h, cy + 0.08 * h)
    segments = [
        (neck, hip),
        (hip, (cx - 0.22 * h, cy + 0.48 * h)),  # back leg
        (hip, (cx + 0.12 * h, cy + 0.26 * h)),  # front thigh
        ((cx + 0.12 * h, cy + 0.26 * h), (cx + 0.2 * h, cy + 0.5 * h)),  # front shin
        ((cx + 0.02 * h, cy - 0.18 * h), (cx - 0.2 * h, cy + 0.02 * h)),  # back arm
        ((cx + 0.02 * h, cy - 0.18 * h), (cx + 0.22 * h, cy - 0.02 * h)),  # front arm
    ]
    for a, b in segments:
        cv2.line(
            canvas, (round(a[0]), round(a[1])), (round(b[0]), round(b[1])), _BLACK, t, cv2.LINE_AA
        )


def _regular_polygon(n: int, radius: float, phase_deg: float, c: float) -> npt.NDArray[np.int32]:
    angles = np.deg2rad(phase_deg + 360.0 * np.arange(n) / n)
    pts = np.stack([c + radius * np.cos(angles), c + radius * np.sin(angles)], axis=1)
    return np.round(pts).astype(np.int32)


@lru_cache(maxsize=64)
def _sign_canvas_cached(class_id: int, font_index: int) -> ImageF32:
    size = CANVAS_PX
    rgba = np.zeros((size, size, 4), np.float32)
    rgb = np.ascontiguousarray(rgba[..., :3])
    mask = np.zeros((size, size), np.float32)
    c = size / 2.0
    r = size / 2.0 - 2.0
    font = _FONTS[font_index]
    name = CLASSES[class_id]
    ci = (round(c), round(c))
    if name == "stop":
        outer = _regular_polygon(8, r / math.cos(math.pi / 8), 22.5, c)
        inner = _regular_polygon(8, 0.9 * r / math.cos(math.pi / 8), 22.5, c)
        cv2.fillPoly(rgb, [outer], _WHITE, cv2.LINE_AA)
        cv2.fillPoly(rgb, [inner], _RED, cv2.LINE_AA)
        cv2.fillPoly(mask, [outer], 1.0, cv2.LINE_AA)
        _put_text_centered(rgb, "STOP", (c, c), 1.45 * r, _WHITE, font, 0.09)
    elif name == "yield":
        # Inverted triangle, apex down; the width spans the canvas.
        top = c - 0.82 * r
        outer = np.array([[c - r, top], [c + r, top], [c, top + math.sqrt(3) * r]])
        centroid = outer.mean(axis=0)
        inner = centroid + 0.62 * (outer - centroid)
        cv2.fillPoly(rgb, [np.round(outer).astype(np.int32)], _RED, cv2.LINE_AA)
        cv2.fillPoly(rgb, [np.round(inner).astype(np.int32)], _WHITE, cv2.LINE_AA)
        cv2.fillPoly(mask, [np.round(outer).astype(np.int32)], 1.0, cv2.LINE_AA)
    elif name == "no_entry":
        cv2.circle(rgb, ci, round(r), _RED, -1, cv2.LINE_AA)
        cv2.circle(mask, ci, round(r), 1.0, -1, cv2.LINE_AA)
        bw, bh = 0.62 * r, 0.17 * r
        cv2.rectangle(
            rgb, (round(c - bw), round(c - bh)), (round(c + bw), round(c + bh)), _WHITE, -1
        )
    elif name in ("speed_limit_30", "speed_limit_50"):
        cv2.circle(rgb, ci, round(r), _RED, -1, cv2.LINE_AA)
        cv2.circle(rgb, ci, round(0.78 * r), _WHITE, -1, cv2.LINE_AA)
        cv2.circle(mask, ci, round(r), 1.0, -1, cv2.LINE_AA)
        text = "30" if name.endswith("30") else "50"
        _put_text_centered(rgb, text, (c, c), 1.0 * r, _BLACK, font, 0.12)
    elif name == "pedestrian_crossing":
        half = 0.9 * r
        cv2.rectangle(
            rgb, (round(c - half), round(c - half)), (round(c + half), round(c + half)), _BLUE, -1
        )
        cv2.rectangle(
            mask, (round(c - half), round(c - half)), (round(c + half), round(c + half)), 1.0, -1
        )
        tri = np.array(
            [[c, c - 0.78 * r], [c - 0.8 * r, c + 0.68 * r], [c + 0.8 * r, c + 0.68 * r]]
        )
        cv2.fillPoly(rgb, [np.round(tri).astype(np.int32)], _WHITE, cv2.LINE_AA)
        # Zebra stripes under the walker.
        for k in range(-2, 3):
            x = c + k * 0.22 * r
            cv2.rectangle(
                rgb,
                (round(x - 0.06 * r), round(c + 0.48 * r)),
                (round(x + 0.06 * r), round(c + 0.6 * r)),
                _BLACK,
                -1,
            )
        _walking_figure(rgb, c, c + 0.08 * r, 0.72 * r)
    elif name == "priority_road":
        outer = _regular_polygon(4, r, 0.0, c)
        inner = _regular_polygon(4, 0.66 * r, 0.0, c)
        edge = _regular_polygon(4, 0.97 * r, 0.0, c)
        cv2.fillPoly(rgb, [outer], _BLACK, cv2.LINE_AA)
        cv2.fillPoly(rgb, [edge], _WHITE, cv2.LINE_AA)
        cv2.fillPoly(rgb, [inner], _YELLOW, cv2.LINE_AA)
        cv2.fillPoly(mask, [outer], 1.0, cv2.LINE_AA)
    else:
        raise ConfigError(f"class {class_id} ({name!r}) has no sign to draw")
    rgba[..., :3] = rgb
    rgba[..., 3] = mask
    rgba.setflags(write=False)
    return rgba


def sign_canvas(class_id: int, font_index: int = 0) -> ImageF32:
    """RGBA float32 canvas (``CANVAS_PX`` square, values 0..1) of the sign of ``class_id``.

    The sign fills the canvas (its width spans the canvas, less a 2 px margin); alpha is 0 outside
    it. ``font_index`` picks one of two Hershey fonts for signs with text. Read-only (cached).
    """
    if not 0 <= class_id < NO_SIGN:
        raise ConfigError(f"class_id must be in 0..{NO_SIGN - 1} (a sign class), got {class_id}")
    if font_index not in (0, 1):
        raise ConfigError(f"font_index must be 0 or 1, got {font_index}")
    return _sign_canvas_cached(int(class_id), int(font_index))


def _distractor_canvas(rng: np.random.Generator) -> ImageF32:
    """A sign-like object that is not one of the classes (a sign back, board or plate)."""
    size = CANVAS_PX
    rgba = np.zeros((size, size, 4), np.float32)
    rgb = np.ascontiguousarray(rgba[..., :3])
    mask = np.zeros((size, size), np.float32)
    c, r = size / 2.0, size / 2.0 - 2.0
    kind = rng.integers(4)
    if kind == 0:  # back of a sign: grey metal, any of the shapes
        shape = rng.integers(3)
        grey = tuple(float(v) for v in rng.uniform(0.35, 0.7) * np.ones(3))
        if shape == 0:
            cv2.circle(rgb, (round(c), round(c)), round(r), grey, -1, cv2.LINE_AA)
            cv2.circle(mask, (round(c), round(c)), round(r), 1.0, -1, cv2.LINE_AA)
        else:
            n = 8 if shape == 1 else 3
            poly = _regular_polygon(n, r, 22.5 if n == 8 else 30.0, c)
            cv2.fillPoly(rgb, [poly], grey, cv2.LINE_AA)
            cv2.fillPoly(mask, [poly], 1.0, cv2.LINE_AA)
    else:  # rectangular board: green direction sign, white plate, brown tourist sign
        base = [(0.05, 0.42, 0.2), (0.93, 0.93, 0.9), (0.45, 0.25, 0.1)][kind - 1]
        ink = (0.95, 0.95, 0.95) if kind != 2 else (0.1, 0.1, 0.1)
        hw, hh = r, r * rng.uniform(0.35, 0.7)
        p0, p1 = (round(c - hw), round(c - hh)), (round(c + hw), round(c + hh))
        cv2.rectangle(rgb, p0, p1, base, -1)
        cv2.rectangle(mask, p0, p1, 1.0, -1)
        cv2.rectangle(rgb, p0, p1, ink, 2)
        lines = int(rng.integers(1, 4))
        for k in range(lines):
            y = c - hh + (k + 1) * 2 * hh / (lines + 1)
            x1 = c - hw + 8 + rng.uniform(0.4, 1.0) * (2 * hw - 16)
            cv2.line(rgb, (round(c - hw + 8), round(y)), (round(x1), round(y)), ink, 4)
    rgba[..., :3] = rgb
    rgba[..., 3] = mask
    return rgba


# --------------------------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------------------------


def smooth_noise(
    rng: np.random.Generator, height: int, width: int, cells: Sequence[int], channels: int = 1
) -> ImageF32:
    """Fractal value noise, about 0..1: random grids of ``cells`` per side, bicubic-upsampled.

    Finer grids get half the weight of the previous one. Shape (H, W) or (H, W, channels).
    """
    # Sum the octaves on the finest grid, then upsample once (one large resize, not one each).
    finest = max(cells)
    acc = np.zeros((finest, finest, channels), np.float32)
    weight, total = 1.0, 0.0
    for n in cells:
        grid = rng.random((n, n, channels), dtype=np.float32)
        if n != finest:
            grid = _f32(cv2.resize(grid, (finest, finest), interpolation=cv2.INTER_CUBIC))
        acc += weight * grid.reshape(finest, finest, channels)
        total += weight
        weight *= 0.5
    acc /= total
    out = _f32(cv2.resize(acc, (width, height), interpolation=cv2.INTER_CUBIC))
    return out.reshape(height, width) if channels == 1 else out.reshape(height, width, channels)


def _colour(rng: np.random.Generator, base: Sequence[float], jitter: float) -> ImageF32:
    return np.clip(np.asarray(base, np.float32) + rng.normal(0, jitter, 3), 0, 1).astype(np.float32)


def _vertical_gradient(top: ImageF32, bottom: ImageF32, h: int, w: int) -> ImageF32:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    row = top[None, None, :] * (1 - t) + bottom[None, None, :] * t
    return np.ascontiguousarray(np.broadcast_to(row, (h, w, 3)), dtype=np.float32)


def _sky(rng: np.random.Generator, h: int, w: int) -> ImageF32:
    top = _colour(rng, rng.choice([(0.25, 0.45, 0.8), (0.55, 0.6, 0.68), (0.7, 0.75, 0.82)]), 0.06)
    bottom = np.clip(top + rng.uniform(0.1, 0.3), 0, 1).astype(np.float32)
    img = _vertical_gradient(top, bottom, h, w)
    if rng.random() < 0.7:
        clouds = smooth_noise(rng, h, w, (3, 6, 12))
        cover = np.clip((clouds - rng.uniform(0.35, 0.6)) * 3.0, 0, 1)[..., None]
        img = img * (1 - cover) + cover * rng.uniform(0.8, 1.0)
    return img.astype(np.float32)


def _asphalt(rng: np.random.Generator, h: int, w: int) -> ImageF32:
    grey = rng.uniform(0.22, 0.5)
    tex = smooth_noise(rng, h, w, (4, 16, 48)) - 0.5
    img = np.empty((h, w, 3), np.float32)
    img[...] = (grey + 0.15 * tex)[..., None]
    img += rng.normal(0, 0.025, (h, w, 1)).astype(np.float32)
    img *= _colour(rng, (1.0, 1.0, 1.02), 0.02)
    if rng.random() < 0.5:
        paint = (0.9, 0.9, 0.88) if rng.random() < 0.7 else (0.9, 0.75, 0.2)
        x0, x1 = rng.uniform(-0.2, 1.2, 2) * w
        cv2.line(img, (round(x0), 0), (round(x1), h), paint, int(rng.integers(3, 12)), cv2.LINE_AA)
    return img


def _foliage(rng: np.random.Generator, h: int, w: int) -> ImageF32:
    base = rng.choice([(0.15, 0.35, 0.1), (0.3, 0.4, 0.12), (0.12, 0.25, 0.1), (0.45, 0.35, 0.12)])
    tex = smooth_noise(rng, h, w, (4, 10, 24, 48), channels=3)
    lum = smooth_noise(rng, h, w, (6, 20, 40))
    img = np.asarray(base, np.float32) * (0.5 + 1.1 * lum[..., None]) + 0.12 * (tex - 0.5)
    # Leaves: bright and dark specks.
    for _ in range(int(rng.integers(10, 30))):
        centre = (int(rng.integers(w)), int(rng.integers(h)))
        axes = (int(rng.integers(2, 7)), int(rng.integers(1, 4)))
        shade = _colour(rng, base, 0.1) * rng.uniform(0.5, 1.5)
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, shade.tolist(), -1)
    return _f32(img)


def _clutter(rng: np.random.Generator, h: int, w: int) -> ImageF32:
    img = _vertical_gradient(rng.random(3, np.float32), rng.random(3, np.float32), h, w)
    for _ in range(int(rng.integers(4, 14))):
        col = rng.random(3).tolist()
        kind = rng.integers(4)
        p = rng.integers(-w // 4, w + w // 4, 4)
        if kind == 0:
            cv2.rectangle(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), col, -1)
        elif kind == 1:
            cv2.ellipse(
                img,
                (int(p[0]), int(p[1])),
                (int(rng.integers(3, w // 3)), int(rng.integers(3, w // 3))),
                float(rng.uniform(0, 180)),
                0,
                360,
                col,
                -1,
                cv2.LINE_AA,
            )
        elif kind == 2:
            thick = int(rng.integers(1, 8))
            cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), col, thick, cv2.LINE_AA)
        else:
            pts = rng.integers(-w // 4, w + w // 4, (int(rng.integers(3, 6)), 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], col, cv2.LINE_AA)
    return img


def _roadside(rng: np.random.Generator, h: int, w: int) -> ImageF32:
    """Sky over a tree line, verge and road: what the scene's right-side ROI looks at."""
    img = _sky(rng, h, w)
    horizon = rng.uniform(0.3, 0.75) * h
    x = np.arange(w, dtype=np.float32)
    tree_top = horizon - rng.uniform(0.05, 0.35) * h * (
        0.6 + 0.8 * smooth_noise(rng, 1, w, (3, 9))[0]
    )
    rows = np.arange(h, dtype=np.float32)[:, None]
    trees = rows >= tree_top[None, :]
    foliage = _foliage(rng, h, w)
    img = np.where(trees[..., None], foliage, img)
    ground = rows >= horizon + 0.02 * h * np.sin(x / w * rng.uniform(1, 6))[None, :]
    grass = _colour(rng, (0.3, 0.45, 0.15), 0.06) * (
        0.8 + 0.4 * smooth_noise(rng, h, w, (8, 32))[..., None]
    )
    img = np.where(ground[..., None], grass, img)
    if rng.random() < 0.6:  # road surface in the lower part
        road = _asphalt(rng, h, w)
        edge = horizon + rng.uniform(0.1, 0.4) * (h - horizon)
        slope = rng.uniform(-1.0, 1.0)
        road_mask = rows >= edge + slope * (x - w / 2)[None, :] * 0.5
        img = np.where(road_mask[..., None], road, img)
    return img.astype(np.float32)


_BACKGROUNDS = (_sky, _asphalt, _foliage, _clutter, _roadside)
_BACKGROUND_P = np.array([0.15, 0.1, 0.2, 0.2, 0.35])


def render_background(rng: np.random.Generator, height: int, width: int) -> ImageF32:
    """A random background (float32 RGB 0..1) of one of the kinds the module docstring lists."""
    kind = int(rng.choice(len(_BACKGROUNDS), p=_BACKGROUND_P))
    return _BACKGROUNDS[kind](rng, height, width)


# --------------------------------------------------------------------------------------------
# Placement, occlusion and camera effects
# --------------------------------------------------------------------------------------------


def _rotation(yaw: float, pitch: float, roll: float) -> npt.NDArray[np.float64]:
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return np.asarray(r_yaw @ r_pitch @ r_roll, np.float64)


def sign_homography(
    width_px: float,
    center: tuple[float, float],
    yaw_rad: float = 0.0,
    pitch_rad: float = 0.0,
    roll_rad: float = 0.0,
) -> npt.NDArray[np.float64]:
    """3x3 homography from canvas pixels to image pixels for a sign ``width_px`` wide.

    The sign plane is rotated by yaw (about the vertical axis), pitch and roll (in-plane) and seen
    by a pinhole camera four sign-widths away, so tilts foreshorten it like a real view would.
    """
    half = width_px / 2.0
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    pts3 = np.concatenate([corners * half, np.zeros((4, 1))], axis=1)
    distance = 4.0 * width_px
    rotated = pts3 @ _rotation(yaw_rad, pitch_rad, roll_rad).T + np.array([0.0, 0.0, distance])
    projected = distance * rotated[:, :2] / rotated[:, 2:3] + np.asarray(center)
    src = (corners + 1) / 2 * CANVAS_PX
    hom = cv2.getPerspectiveTransform(src.astype(np.float32), projected.astype(np.float32))
    return np.asarray(hom, np.float64)


def composite_rgba(
    image: ImageF32, rgba: ImageF32, homography: npt.NDArray[np.float64]
) -> ImageF32:
    """Warp ``rgba`` (canvas) with ``homography`` and alpha-blend it over ``image`` (in place)."""
    h, w = image.shape[:2]
    warped = cv2.warpPerspective(
        rgba, homography, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    alpha = warped[..., 3:4]
    image *= 1.0 - alpha
    image += warped[..., :3] * alpha
    return image


def _pole(rng: np.random.Generator, image: ImageF32, x: float, top: float, width_px: float) -> None:
    h = image.shape[0]
    grey = float(rng.uniform(0.35, 0.75))
    half = max(1.0, width_px * rng.uniform(0.03, 0.06))
    cv2.rectangle(
        image,
        (round(x - half), round(top)),
        (round(x + half), h + 2),
        (grey, grey, grey * 1.03),
        -1,
    )


def _occlude(
    rng: np.random.Generator, image: ImageF32, center: tuple[float, float], size: float
) -> None:
    """Cover part of the object at ``center`` (up to about a third of it) with a near object."""
    kind = rng.integers(3)
    angle = rng.uniform(0, 2 * math.pi)
    dist = size * rng.uniform(0.45, 0.75)
    ox, oy = center[0] + dist * math.cos(angle), center[1] + dist * math.sin(angle)
    if kind == 0:  # leaves
        base = _colour(rng, (0.15, 0.35, 0.1), 0.06)
        for _ in range(int(rng.integers(4, 9))):
            c = (round(ox + rng.normal(0, size * 0.15)), round(oy + rng.normal(0, size * 0.15)))
            axes = (round(size * rng.uniform(0.08, 0.22)), round(size * rng.uniform(0.05, 0.14)))
            shade = (base * rng.uniform(0.6, 1.4)).tolist()
            cv2.ellipse(image, c, axes, float(rng.uniform(0, 180)), 0, 360, shade, -1, cv2.LINE_AA)
    elif kind == 1:  # a post or branch crossing the sign
        col = _colour(rng, (0.3, 0.25, 0.2), 0.1).tolist()
        dx, dy = math.cos(angle + math.pi / 2) * size, math.sin(angle + math.pi / 2) * size
        p0 = (round(ox - dx), round(oy - dy))
        p1 = (round(ox + dx), round(oy + dy))
        cv2.line(image, p0, p1, col, max(2, round(size * rng.uniform(0.08, 0.18))), cv2.LINE_AA)
    else:  # a box (vehicle, building corner) in front
        col = (rng.random(3) * rng.uniform(0.2, 0.8)).tolist()
        half = size * rng.uniform(0.25, 0.45)
        cv2.rectangle(
            image,
            (round(ox - half), round(oy - half)),
            (round(ox + half), round(oy + half)),
            col,
            -1,
        )


def _motion_kernel(rng: np.random.Generator) -> ImageF32:
    length = int(rng.integers(3, 6))
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(
        (length / 2 - 0.5, length / 2 - 0.5), float(rng.uniform(0, 180)), 1.0
    )
    kernel = _f32(cv2.warpAffine(kernel, rot, (length, length)))
    return (kernel / max(float(kernel.sum()), 1e-6)).astype(np.float32)


def apply_camera(rng: np.random.Generator, image: ImageF32) -> ImageU8:
    """Lighting, colour cast, shading, blur and sensor noise; float RGB 0..1 in, uint8 RGB out."""
    h, w = image.shape[:2]
    img = image
    if rng.random() < 0.35:
        img = _f32(cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.1))))
    elif rng.random() < 0.12:
        img = _f32(cv2.filter2D(img, -1, _motion_kernel(rng)))
    mean = float(img.mean())
    contrast = rng.uniform(0.7, 1.2)
    img = (img - mean) * contrast + mean
    img = np.clip(img, 0, 1) ** rng.uniform(0.75, 1.35)
    gain = math.exp(rng.uniform(math.log(0.5), math.log(1.35)))
    cast = np.exp(rng.normal(0, 0.07, 3)).astype(np.float32)
    img = img * (gain * cast)
    if rng.random() < 0.3:  # shading ramp (shadow of a building, low sun)
        direction = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = (xx - w / 2) * math.cos(direction) + (yy - h / 2) * math.sin(direction)
        ramp = ramp / (max(h, w) / 2)
        img = img * (1.0 - rng.uniform(0.1, 0.45) * np.clip(ramp + 0.5, 0, 1))[..., None]
    noise_sd = rng.uniform(0.0, 0.03)
    img = img + rng.normal(0, noise_sd, img.shape).astype(np.float32)
    return np.asarray(np.clip(img * 255.0 + 0.5, 0, 255), np.uint8)


# --------------------------------------------------------------------------------------------
# Public renderers
# --------------------------------------------------------------------------------------------


def render_sign(rng: np.random.Generator, class_id: int, size: int = 64) -> ImageU8:
    """One labelled render: uint8 RGB image of shape (size, size, 3) showing class ``class_id``.

    Draws at twice ``size`` and reduces with area interpolation. All randomness comes from ``rng``
    (use ``image_rng(seed, index)`` for reproducible data sets).
    """
    if not 0 <= class_id < len(CLASSES):
        raise ConfigError(f"class_id must be in 0..{len(CLASSES) - 1}, got {class_id}")
    if not 16 <= size <= 512:
        raise ConfigError(f"size must be in 16..512 pixels, got {size}")
    big = 2 * size
    image = render_background(rng, big, big)

    is_sign = class_id != NO_SIGN
    draw_object = is_sign or rng.random() < 0.45
    if draw_object:
        lo, hi = SIGN_SCALE_RANGE
        width_px = big * math.exp(rng.uniform(math.log(lo), math.log(hi)))
        slack = max(0.0, (big - width_px) / 2) + 0.12 * width_px
        center = (big / 2 + rng.uniform(-slack, slack), big / 2 + rng.uniform(-slack, slack))
        if rng.random() < 0.6:
            _pole(rng, image, center[0], center[1], width_px)
        if is_sign:
            canvas = sign_canvas(class_id, int(rng.integers(2)))
            fade = rng.uniform(0.0, 0.3)
            canvas = canvas.copy()
            canvas[..., :3] = canvas[..., :3] * (1 - fade) + fade * rng.uniform(0.5, 0.9)
        elif rng.random() < 0.75:
            canvas = _distractor_canvas(rng)
        else:
            canvas = None  # a bare pole
        if canvas is not None:
            hom = sign_homography(
                width_px,
                center,
                yaw_rad=math.radians(rng.uniform(-45, 45)),
                pitch_rad=math.radians(rng.uniform(-20, 20)),
                roll_rad=math.radians(rng.normal(0, 6)),
            )
            composite_rgba(image, canvas, hom)
        if rng.random() < 0.25:
            _occlude(rng, image, center, width_px)

    small = _f32(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
    return apply_camera(rng, small)


def render_item(seed: int, index: int, size: int = 64) -> tuple[ImageU8, int]:
    """Image ``index`` of data set ``seed`` and its label (``label_of(index)``)."""
    label = label_of(index)
    return render_sign(image_rng(seed, index), label, size), label


def _render_range(args: tuple[int, int, int, int]) -> ImageU8:
    seed, start, stop, size = args
    out = np.empty((stop - start, size, size, 3), np.uint8)
    for k, index in enumerate(range(start, stop)):
        out[k] = render_sign(image_rng(seed, index), label_of(index), size)
    return out


def render_dataset(
    n: int, seed: int, size: int = 64, start: int = 0, workers: int = 1
) -> tuple[ImageU8, npt.NDArray[np.int64]]:
    """Images ``start .. start+n-1`` of data set ``seed``: uint8 [N, size, size, 3] and int64 [N].

    Labels cycle through the classes, so the set is balanced. The result does not depend on
    ``workers`` (processes used to render; each image has its own generator).
    """
    if n < 0 or start < 0:
        raise ConfigError(f"n and start must be >= 0, got n={n}, start={start}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    labels = np.array([label_of(i) for i in range(start, start + n)], np.int64)
    if workers == 1 or n < 64:
        return _render_range((seed, start, start + n, size)), labels
    chunk = max(64, math.ceil(n / (workers * 8)))
    jobs = [(seed, s, min(s + chunk, start + n), size) for s in range(start, start + n, chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_render_range, jobs))
    return np.concatenate(parts, axis=0), labels
