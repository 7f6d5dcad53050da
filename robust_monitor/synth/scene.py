"""Whole camera frames of a drive: a road in perspective with road signs approaching.

A forward-looking pinhole camera (``Camera``: 320x240 px, focal length 300 px, horizon at row 108,
mounted 1.4 m above the road) rides in the right lane of a two-lane road at a constant speed. The
world is fixed by a seed: sky and clouds, a far tree line, grass and asphalt textures, trees and
bushes on both verges, and road signs on posts on the right verge (``SignPlacement``, by default
every 30-40 m, 2.5 m right of the camera, centre 2.1 m high, 0.9 m wide). Frame ``t`` shows the
world from odometer ``speed_mps * t``: a sign appears near the vanishing point, grows, and leaves
the frame at the right edge. Rendering is deterministic (no randomness per frame), so a drive can be
rendered frame by frame, in any order.

Region of interest (``DEFAULT_ROI``): the classifier sees a fixed square on the right of the frame,
x 222..310, y 36..124 px of the 320x240 frame (88x88 px), reduced to 64x64 with area interpolation
(``crop_roi``). A sign with the default placement is wholly inside it from about 9.9 m to 5.9 m
ahead, where it is 27-46 px wide (0.31-0.52 of the ROI, inside the training scale range of
``roadsigns.SIGN_SCALE_RANGE``); at 6 m/s and 15 Hz that is about 10 frames per sign. Elsewhere the
ROI shows verge, trees and sky: the ``no_sign`` class.

Frames are drawn at twice the size and reduced with area interpolation (anti-aliasing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.synth.roadsigns import CLASSES, NO_SIGN, sign_canvas, smooth_noise

ImageU8 = npt.NDArray[np.uint8]
ImageF32 = npt.NDArray[np.float32]

_SS: Final[int] = 2
"""Supersampling factor: frames are drawn at _SS times the camera resolution."""
_SHIFT: Final[int] = 4
"""Fractional bits of OpenCV drawing coordinates (1/16 px) for smooth motion."""


@dataclass(frozen=True, slots=True)
class Camera:
    """Pinhole camera looking along the road, optical axis level (horizon at ``horizon_y``)."""

    width: int = 320
    height: int = 240
    focal_px: float = 300.0
    horizon_y: float = 108.0
    """Image row of the horizon (the principal point's row), pixels."""
    mount_height_m: float = 1.4

    @property
    def cx(self) -> float:
        """Image column of the principal point (the frame centre)."""
        return self.width / 2.0

    def project(self, lateral_m: float, height_m: float, ahead_m: float) -> tuple[float, float]:
        """Pixel (u, v) of the point ``ahead_m`` ahead, ``lateral_m`` right, ``height_m`` up."""
        u = self.cx + self.focal_px * lateral_m / ahead_m
        v = self.horizon_y - self.focal_px * (height_m - self.mount_height_m) / ahead_m
        return u, v


@dataclass(frozen=True, slots=True)
class Roi:
    """Region of interest, in pixels of a ``frame_width`` x ``frame_height`` frame.

    Frames of another size use the same region scaled proportionally (``box_for``).
    """

    x: int
    y: int
    width: int
    height: int
    frame_width: int = 320
    frame_height: int = 240

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ConfigError(
                f"ROI width and height must be >= 1 px, got {self.width}x{self.height}"
            )
        if self.x < 0 or self.y < 0:
            raise ConfigError(f"ROI x and y must be >= 0, got ({self.x}, {self.y})")
        if self.x + self.width > self.frame_width or self.y + self.height > self.frame_height:
            raise ConfigError(
                f"ROI {self.width}x{self.height}+{self.x}+{self.y} leaves the "
                f"{self.frame_width}x{self.frame_height} frame"
            )

    def box_for(self, frame_width: int, frame_height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the region in a frame of the given size (proportional)."""
        sx, sy = frame_width / self.frame_width, frame_height / self.frame_height
        x0, y0 = round(self.x * sx), round(self.y * sy)
        x1 = max(x0 + 1, round((self.x + self.width) * sx))
        y1 = max(y0 + 1, round((self.y + self.height) * sy))
        return x0, y0, x1, y1

    def contains(self, box: tuple[float, float, float, float]) -> bool:
        """True when the box (x0, y0, x1, y1), in reference-frame pixels, lies wholly inside."""
        return (
            box[0] >= self.x
            and box[1] >= self.y
            and box[2] <= self.x + self.width
            and box[3] <= self.y + self.height
        )

    def as_metadata(self) -> dict[str, Any]:
        """The ``roi`` entry of the model metadata (pixels of the reference frame + fractions)."""
        return {
            "frame_size": [self.frame_width, self.frame_height],
            "x": self.x,
            "y": self.y,
            "width": self.width,
            "height": self.height,
            "normalized_xywh": [
                round(self.x / self.frame_width, 6),
                round(self.y / self.frame_height, 6),
                round(self.width / self.frame_width, 6),
                round(self.height / self.frame_height, 6),
            ],
            "resize": "cv2.INTER_AREA",
            "description": (
                "Fixed square on the right of the frame that roadside signs pass through; crop it "
                "(scaled proportionally for other frame sizes) and resize to the model input."
            ),
        }


DEFAULT_ROI: Final[Roi] = Roi(x=222, y=36, width=88, height=88)
"""The region the shipped models classify (see the module docstring)."""


def crop_roi(frame: ImageU8, roi: Roi = DEFAULT_ROI, size: int = 64) -> ImageU8:
    """Crop ``roi`` from an RGB uint8 frame (H, W, 3) and resize it to (size, size, 3)."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError(
            f"frame must be uint8 (H, W, 3) RGB, got {frame.dtype} array of shape {frame.shape}"
        )
    if size < 1:
        raise ConfigError(f"size must be >= 1 px, got {size}")
    x0, y0, x1, y1 = roi.box_for(frame.shape[1], frame.shape[0])
    patch = frame[y0:y1, x0:x1]
    if patch.shape[:2] == (size, size):
        return np.ascontiguousarray(patch)
    interpolation = cv2.INTER_AREA if patch.shape[0] >= size else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(patch, (size, size), interpolation=interpolation), np.uint8)


@dataclass(frozen=True, slots=True)
class SignPlacement:
    """A road sign on a post at ``position_m`` along the road (odometer reading when reached)."""

    class_id: int
    position_m: float
    lateral_m: float = 2.5
    """Right of the camera's line of travel (the right edge line is at 1.75 m)."""
    center_height_m: float = 2.1
    width_m: float = 0.9

    def __post_init__(self) -> None:
        if not 0 <= self.class_id < NO_SIGN:
            raise ConfigError(
                f"class_id must be a sign class 0..{NO_SIGN - 1}, got {self.class_id}"
            )
        if self.width_m <= 0 or self.center_height_m <= self.width_m / 2:
            raise ConfigError(
                f"sign must have width_m > 0 and stand above ground, got width_m={self.width_m}, "
                f"center_height_m={self.center_height_m}"
            )


@dataclass(frozen=True, slots=True)
class SignView:
    """Where a sign appears in a frame."""

    class_id: int
    distance_m: float
    """Distance ahead of the camera, metres."""
    bbox_xyxy: tuple[float, float, float, float]
    """The sign's square canvas in frame pixels (x0, y0, x1, y1), not clipped to the frame."""
    in_roi: bool
    """True when ``bbox_xyxy`` lies wholly inside the scene's ROI."""

    @property
    def class_name(self) -> str:
        """Name of the sign's class."""
        return CLASSES[self.class_id]

    @property
    def width_px(self) -> float:
        """Width of the bounding box, pixels."""
        return self.bbox_xyxy[2] - self.bbox_xyxy[0]


@dataclass(frozen=True, slots=True)
class SceneFrame:
    """One rendered frame and what it shows."""

    image: ImageU8
    """uint8 RGB, (height, width, 3)."""
    t_s: float
    odometer_m: float
    signs: tuple[SignView, ...]
    """Signs in view (bounding box overlaps the frame), nearest first."""

    @property
    def sign_in_roi(self) -> SignView | None:
        """The nearest sign wholly inside the ROI, if any (the label the ROI should get)."""
        return next((s for s in self.signs if s.in_roi), None)


@dataclass(frozen=True, slots=True)
class _Tree:
    position_m: float
    lateral_m: float
    trunk_height_m: float
    trunk_width_m: float
    blobs: tuple[tuple[float, float, float, tuple[float, float, float]], ...]
    """Crown circles: (lateral offset m, height m, radius m, RGB colour)."""


def _tileable_noise(rng: np.random.Generator, rows: int, cols: int, waves: int = 40) -> ImageF32:
    """Smooth noise in 0..1 that wraps around seamlessly (a sum of periodic waves)."""
    r = np.arange(rows, dtype=np.float64)[:, None] / rows
    c = np.arange(cols, dtype=np.float64)[None, :] / cols
    out = np.zeros((rows, cols))
    for _ in range(waves):
        m, n = rng.integers(-24, 25), rng.integers(-12, 13)
        amplitude = 1.0 / (1.0 + math.hypot(float(m), float(n)))
        out += amplitude * np.cos(2 * math.pi * (m * r + n * c) + rng.uniform(0, 2 * math.pi))
    out = (out - out.min()) / max(float(np.ptp(out)), 1e-9)
    return np.asarray(out, np.float32)


def default_signs(
    seed: int, length_m: float, first_m: float = 30.0, spacing_m: tuple[float, float] = (30.0, 40.0)
) -> tuple[SignPlacement, ...]:
    """Signs every ``spacing_m`` metres from ``first_m`` to ``length_m``, cycling all sign classes.

    The class order is a seeded permutation, repeated, so every class appears once per cycle.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x516E]))
    order = rng.permutation(NO_SIGN)
    signs: list[SignPlacement] = []
    position = first_m
    while position <= length_m:
        signs.append(SignPlacement(int(order[len(signs) % NO_SIGN]), round(position, 2)))
        position += float(rng.uniform(*spacing_m))
    return tuple(signs)


@dataclass(frozen=True)
class RoadScene:
    """A seeded road world, rendered at any odometer reading or time (see the module docstring)."""

    seed: int = 0
    speed_mps: float = 6.0
    length_m: float = 600.0
    """Extent of the world (trees and default signs are placed up to here plus 150 m)."""
    signs: tuple[SignPlacement, ...] | None = None
    """None: ``default_signs(seed, length_m)``."""
    camera: Camera = field(default_factory=Camera)
    roi: Roi = DEFAULT_ROI
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.speed_mps < 0 or self.length_m <= 0:
            raise ConfigError(
                f"speed_mps must be >= 0 and length_m > 0, got {self.speed_mps}, {self.length_m}"
            )
        if (self.camera.width, self.camera.height) != (self.roi.frame_width, self.roi.frame_height):
            raise ConfigError("roi.frame_width/height must equal the camera's width/height")

    # ---------------------------------------------------------------- world (built once, cached)
    @property
    def sign_placements(self) -> tuple[SignPlacement, ...]:
        """The signs of this world, by position along the road."""
        if self.signs is not None:
            return tuple(sorted(self.signs, key=lambda s: s.position_m))
        return default_signs(self.seed, self.length_m)

    def _rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([int(self.seed), stream]))

    def _world(self) -> dict[str, Any]:
        if not self._cache:
            self._cache["background"] = self._static_background()
            self._cache["ground_tex"] = _tileable_noise(self._rng(2), 256, 128)
            self._cache["trees"] = self._plant_trees()
            self._cache["canvases"] = {
                cid: sign_canvas(cid, 0) for cid in {s.class_id for s in self.sign_placements}
            }
        return self._cache

    def _static_background(self) -> ImageF32:
        """Sky, clouds and the far tree line (at infinity: they do not move while driving)."""
        cam = self.camera
        rng = self._rng(1)
        h, w = cam.height * _SS, cam.width * _SS
        horizon = cam.horizon_y * _SS
        rows = np.arange(h, dtype=np.float32)[:, None, None]
        t = np.clip(rows / horizon, 0, 1)
        top, bottom = (
            np.array([0.3, 0.5, 0.85], np.float32),
            np.array([0.78, 0.85, 0.93], np.float32),
        )
        sky = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).astype(np.float32)
        clouds = smooth_noise(rng, h, w, (4, 8, 16, 32))
        cover = np.clip((clouds - 0.55) * 3.0, 0, 1)[..., None] * (1 - t)
        sky = sky * (1 - cover) + 0.95 * cover
        # Tree line / hills: a silhouette a few pixels above the horizon, hazy green.
        profile = horizon - _SS * (4 + 14 * smooth_noise(rng, 1, w, (5, 17, 60))[0])
        hills = rows[..., 0] >= profile[None, :]
        shade = 0.85 + 0.3 * smooth_noise(rng, h, w, (20, 60))[..., None]
        hill_colour = np.array([0.32, 0.45, 0.35], np.float32) * shade
        return np.where(hills[..., None], hill_colour, sky).astype(np.float32)

    def _plant_trees(self) -> tuple[_Tree, ...]:
        rng = self._rng(3)
        trees: list[_Tree] = []
        for side, lateral_range in ((1.0, (5.0, 12.0)), (-1.0, (9.0, 16.0))):
            position = float(rng.uniform(0, 10))
            while position < self.length_m + 150.0:
                bush = rng.random() < 0.3
                lateral = side * float(rng.uniform(*lateral_range))
                trunk_h = 0.0 if bush else float(rng.uniform(1.5, 3.0))
                radius = float(rng.uniform(0.6, 1.2) if bush else rng.uniform(1.3, 2.4))
                base = np.array([0.16, 0.36, 0.12]) * rng.uniform(0.7, 1.2) + rng.normal(0, 0.03, 3)
                blobs = []
                for _ in range(int(rng.integers(4, 8))):
                    dx = float(rng.normal(0, radius * 0.45))
                    dz = float(trunk_h + radius + rng.normal(0, radius * 0.4))
                    colour = np.clip(base * rng.uniform(0.75, 1.25), 0, 1)
                    blobs.append(
                        (
                            dx,
                            max(dz, radius * 0.5),
                            radius * float(rng.uniform(0.5, 0.8)),
                            (float(colour[0]), float(colour[1]), float(colour[2])),
                        )
                    )
                trees.append(
                    _Tree(position, lateral, trunk_h, float(rng.uniform(0.2, 0.4)), tuple(blobs))
                )
                position += float(rng.uniform(7.0, 22.0))
        return tuple(trees)

    # ---------------------------------------------------------------- geometry
    def odometer_at(self, t_s: float) -> float:
        """Distance driven at time ``t_s`` (metres)."""
        return self.speed_mps * t_s

    def sign_views(self, odometer_m: float) -> tuple[SignView, ...]:
        """Signs in view at ``odometer_m`` (bbox overlapping the frame), nearest first."""
        cam = self.camera
        views = []
        for sign in self.sign_placements:
            ahead = sign.position_m - odometer_m
            if ahead < 1.0:
                continue
            u, v = cam.project(sign.lateral_m, sign.center_height_m, ahead)
            half = cam.focal_px * sign.width_m / ahead / 2
            box = (u - half, v - half, u + half, v + half)
            if box[0] >= cam.width or box[2] <= 0 or box[1] >= cam.height or box[3] <= 0:
                continue
            if half * 2 < 1.0:
                continue
            views.append(SignView(sign.class_id, ahead, box, self.roi.contains(box)))
        return tuple(sorted(views, key=lambda s: s.distance_m))

    # ---------------------------------------------------------------- rendering
    def render(self, t_s: float) -> SceneFrame:
        """The frame at time ``t_s`` (odometer ``speed_mps * t_s``)."""
        return self.render_at(self.odometer_at(t_s), t_s)

    def render_at(self, odometer_m: float, t_s: float | None = None) -> SceneFrame:
        """The frame seen from ``odometer_m`` metres along the road."""
        world = self._world()
        image = world["background"].copy()
        self._draw_ground(image, odometer_m, world["ground_tex"])
        objects: list[tuple[float, Any]] = []
        for tree in world["trees"]:
            ahead = tree.position_m - odometer_m
            if 1.0 < ahead < 150.0:
                objects.append((ahead, tree))
        for sign in self.sign_placements:
            ahead = sign.position_m - odometer_m
            if 1.0 < ahead < 150.0:
                objects.append((ahead, sign))
        for ahead, obj in sorted(objects, key=lambda item: -item[0]):
            if isinstance(obj, _Tree):
                self._draw_tree(image, obj, ahead)
            else:
                self._draw_sign(image, obj, ahead, world["canvases"][obj.class_id])
        cam = self.camera
        small = cv2.resize(image, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
        frame = np.clip(small * 255.0 + 0.5, 0, 255).astype(np.uint8)
        t = odometer_m / self.speed_mps if t_s is None and self.speed_mps > 0 else (t_s or 0.0)
        return SceneFrame(frame, float(t), float(odometer_m), self.sign_views(odometer_m))

    def _draw_ground(self, image: ImageF32, odometer_m: float, tex: ImageF32) -> None:
        cam = self.camera
        h, w = image.shape[:2]
        first = math.floor(cam.horizon_y * _SS) + 1
        v = (np.arange(first, h, dtype=np.float32) + 0.5) / _SS
        ahead = cam.focal_px * cam.mount_height_m / (v - cam.horizon_y)  # (rows,)
        u = (np.arange(w, dtype=np.float32) + 0.5) / _SS
        lateral = (u[None, :] - cam.cx) * ahead[:, None] / cam.focal_px  # (rows, cols)
        along = odometer_m + ahead[:, None]
        zi = np.floor(along / 0.6).astype(np.int64) % tex.shape[0]
        xi = np.floor(lateral / 0.6).astype(np.int64) % tex.shape[1]
        noise = tex[zi, xi]
        grass = np.array([0.3, 0.46, 0.16], np.float32) * (0.75 + 0.5 * noise)[..., None]
        asphalt = np.array([0.33, 0.33, 0.35], np.float32) * (0.9 + 0.2 * noise)[..., None]
        road = (lateral > -5.25) & (lateral < 1.75)
        ground = np.where(road[..., None], asphalt, grass)
        paint = (np.abs(lateral - 1.6) < 0.075) | (np.abs(lateral + 5.1) < 0.075)
        paint |= (np.abs(lateral + 1.75) < 0.06) & (np.mod(along, 9.0) < 3.0)
        ground[paint] = (0.9, 0.9, 0.88)
        haze = 1.0 - np.exp(-ahead / 220.0)
        ground = (
            ground * (1 - haze[:, None, None]) + np.array([0.7, 0.76, 0.8]) * haze[:, None, None]
        )
        image[first:] = ground

    def _px(self, u: float, v: float) -> tuple[int, int]:
        scale = _SS * (1 << _SHIFT)
        return round(u * scale), round(v * scale)

    def _draw_tree(self, image: ImageF32, tree: _Tree, ahead: float) -> None:
        cam = self.camera
        scale = cam.focal_px / ahead
        if tree.trunk_height_m > 0:
            u0, v_top = cam.project(
                tree.lateral_m - tree.trunk_width_m / 2, tree.trunk_height_m + 0.5, ahead
            )
            u1, v_bottom = cam.project(tree.lateral_m + tree.trunk_width_m / 2, 0.0, ahead)
            cv2.rectangle(
                image,
                self._px(u0, v_top),
                self._px(u1, v_bottom),
                (0.3, 0.22, 0.15),
                -1,
                cv2.LINE_AA,
                _SHIFT,
            )
        for dx, height, radius, colour in tree.blobs:
            u, v = cam.project(tree.lateral_m + dx, height, ahead)
            r = round(radius * scale * _SS * (1 << _SHIFT))
            if r > 0:
                cv2.circle(image, self._px(u, v), r, colour, -1, cv2.LINE_AA, _SHIFT)

    def _draw_sign(
        self, image: ImageF32, sign: SignPlacement, ahead: float, canvas: ImageF32
    ) -> None:
        cam = self.camera
        # Post: from under the sign to the ground.
        u0, v_top = cam.project(sign.lateral_m - 0.035, sign.center_height_m, ahead)
        u1, v_bottom = cam.project(sign.lateral_m + 0.035, 0.0, ahead)
        cv2.rectangle(
            image,
            self._px(u0, v_top),
            self._px(u1, v_bottom),
            (0.55, 0.56, 0.58),
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )
        u, v = cam.project(sign.lateral_m, sign.center_height_m, ahead)
        width = cam.focal_px * sign.width_m / ahead * _SS
        if width < 1.0:
            return
        # Reduce the canvas with area interpolation first, then place it with sub-pixel accuracy.
        side = max(2, min(canvas.shape[0], math.ceil(width) + 1))
        small = cv2.resize(canvas, (side, side), interpolation=cv2.INTER_AREA)
        k = width / side
        cx, cy = u * _SS, v * _SS
        h, w = image.shape[:2]
        x0, y0 = max(0, math.floor(cx - width / 2) - 1), max(0, math.floor(cy - width / 2) - 1)
        x1, y1 = min(w, math.ceil(cx + width / 2) + 1), min(h, math.ceil(cy + width / 2) + 1)
        if x1 <= x0 or y1 <= y0:
            return
        matrix = np.array([[k, 0, cx - width / 2 - x0], [0, k, cy - width / 2 - y0]], np.float64)
        warped = cv2.warpAffine(small, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
        alpha = warped[..., 3:4]
        patch = image[y0:y1, x0:x1]
        patch *= 1.0 - alpha
        patch += warped[..., :3] * alpha


def sign_scale_in_roi(view: SignView, roi: Roi = DEFAULT_ROI) -> float:
    """Width of a sign's box as a fraction of the ROI width (compare ``SIGN_SCALE_RANGE``)."""
    return view.width_px / roi.width


def roi_sequence(scene: RoadScene, times_s: Sequence[float], size: int = 64) -> ImageU8:
    """ROI crops of the frames at ``times_s``: uint8 [N, size, size, 3]."""
    return np.stack([crop_roi(scene.render(t).image, scene.roi, size) for t in times_s])


def render_tunnel(odometer_m: float, camera: Camera = Camera()) -> ImageU8:
    """A frame inside a road tunnel: tiled walls, ceiling lamps, a dark far end.

    Nothing like it is in the training data (``roadsigns`` draws no walls or tunnels): the sample
    drive uses it as input the classifier never saw. Deterministic in ``odometer_m``; the camera
    rides in the right lane (walls 2.6 m right and 6.1 m left, ceiling 5 m above the road).
    """
    h, w = camera.height * _SS, camera.width * _SS
    v = (np.arange(h, dtype=np.float32) + 0.5) / _SS
    u = (np.arange(w, dtype=np.float32) + 0.5) / _SS
    dx = ((u - camera.cx) / camera.focal_px)[None, :]  # ray direction per unit depth
    dy = ((camera.horizon_y - v) / camera.focal_px)[:, None]  # up is positive
    big = np.float32(1e6)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_floor = np.where(dy < 0, -camera.mount_height_m / dy, big)
        z_ceiling = np.where(dy > 0, (5.0 - camera.mount_height_m) / dy, big)
        z_right = np.where(dx > 0, 2.6 / dx, big)
        z_left = np.where(dx < 0, -6.1 / dx, big)
    z_floor, z_ceiling = np.broadcast_to(z_floor, (h, w)), np.broadcast_to(z_ceiling, (h, w))
    z_right, z_left = np.broadcast_to(z_right, (h, w)), np.broadcast_to(z_left, (h, w))
    depth = np.minimum(np.minimum(z_floor, z_ceiling), np.minimum(z_right, z_left))
    along = odometer_m + depth
    lateral = dx * depth
    height = camera.mount_height_m + dy * depth
    image = np.empty((h, w, 3), np.float32)
    # Walls: pale tiles in 0.3 m squares with dark grout, a dark band near the road.
    tile = (np.mod(along, 0.3) < 0.02) | (np.mod(height, 0.3) < 0.02)
    wall = np.where(tile[..., None], np.float32(0.35), np.array([0.78, 0.76, 0.66], np.float32))
    wall = np.where((height < 1.0)[..., None], np.array([0.2, 0.2, 0.22], np.float32), wall)
    floor = np.full((h, w, 3), 0.22, np.float32)
    lines = (np.abs(lateral - 1.6) < 0.075) | (
        (np.abs(lateral + 1.75) < 0.06) & (np.mod(along, 9.0) < 3.0)
    )
    floor[lines] = (0.75, 0.75, 0.7)
    ceiling = np.full((h, w, 3), 0.12, np.float32)
    lamps = (np.mod(along, 8.0) < 1.2) & (np.abs(lateral + 1.75) < 0.5)
    ceiling[lamps] = (1.0, 0.85, 0.55)
    is_floor = depth == z_floor
    is_ceiling = depth == z_ceiling
    image[...] = wall
    image[is_floor] = floor[is_floor]
    image[is_ceiling] = ceiling[is_ceiling]
    # Sodium-lit, darker with distance; the lamps stay bright.
    light = np.exp(-depth / 45.0)[..., None] * np.array([1.0, 0.88, 0.65], np.float32)
    image = np.where(lamps[..., None] & is_ceiling[..., None], image, image * light)
    small = cv2.resize(image, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
    return np.asarray(np.clip(small * 255.0 + 0.5, 0, 255), np.uint8)
