"""Render the shipped sample drive: a rosbag2 (MCAP) recording of a synthetic camera plus episodes.

One minute of 320x240 frames at 15 Hz from ``robust_monitor.synth.scene``: a car drives at 6 m/s
along a country road with road signs approaching on the right verge. The recording holds

- ``/camera/image_raw/compressed`` (``sensor_msgs/msg/CompressedImage``, JPEG, header stamp =
  recording time, ``frame_id`` "camera"), and
- ``/clock`` (``rosgraph_msgs/msg/Clock``) at 50 Hz, for replays with ``use_sim_time``.

Signs (``SIGN_SCHEDULE``) pass through the classifier's ROI every 3-5 s, every class at least
once in clear conditions and one at the worst moment of each corruption. Episodes (``EPISODES``;
written to ``episodes.yaml`` beside the recording together with the times at which each sign is
wholly inside the ROI):

- nominal driving; then fog that thickens and clears (``corruptions.corrupt(..., "fog", s)``,
  blended between severities for a smooth ramp); nominal; glare that flares up and fades
  (``corruptions.glare`` with a rising then falling strength); nominal; a road tunnel
  (``scene.render_tunnel``: a scene unlike any training image); a lens blocked by mud
  (``corruptions.lens_occlusion``); nominal to the end.

Everything is seeded: running ``python -m robust_monitor.tools.sample_drive --out DIR`` again gives
the same frames. Stamps start at ``START_NS`` (2026-01-01T00:00:00Z) so the bag is reproducible.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt
import yaml

from robust_monitor.core.errors import ConfigError
from robust_monitor.synth import corruptions
from robust_monitor.synth.roadsigns import CLASSES
from robust_monitor.synth.scene import DEFAULT_ROI, RoadScene, SignPlacement, render_tunnel

ImageU8 = npt.NDArray[np.uint8]

CAMERA_TOPIC: Final = "/camera/image_raw/compressed"
CLOCK_TOPIC: Final = "/clock"
FRAME_ID: Final = "camera"
JPEG_FORMAT: Final = "rgb8; jpeg compressed bgr8"
"""``format`` as image_transport's compressed publisher writes it for an rgb8 camera."""
START_NS: Final = 1_767_225_600 * 10**9
"""Stamp of the first frame: 2026-01-01T00:00:00Z."""
BAG_NAME: Final = "roadside_drive"
EPISODES_FILE: Final = "episodes.yaml"
EPISODES_FORMAT: Final = "robust_monitor.episodes/1"


@dataclass(frozen=True, slots=True)
class DriveConfig:
    """What to render; defaults are the shipped drive."""

    duration_s: float = 60.0
    frame_rate_hz: float = 15.0
    clock_rate_hz: float = 50.0
    speed_mps: float = 6.0
    scene_seed: int = 2026
    effect_seed: int = 7
    jpeg_quality: int = 75

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        if self.duration_s <= 0 or self.frame_rate_hz <= 0 or self.clock_rate_hz <= 0:
            raise ConfigError("duration_s, frame_rate_hz and clock_rate_hz must be > 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.duration_s < EPISODES[-1].start_s:
            raise ConfigError(
                f"duration_s must reach the last episode (starts at {EPISODES[-1].start_s} s)"
            )


@dataclass(frozen=True, slots=True)
class Episode:
    """A stretch of the drive, ``start_s <= t < end_s`` seconds after the first frame."""

    name: str
    kind: str
    """``nominal``, ``corruption`` (the view degrades) or ``ood`` (unlike the training data)."""
    start_s: float
    end_s: float
    description: str
    expected: str
    """What a working monitor (certification + OOD check + arbiter) should do here."""
    certification: str
    """What randomized smoothing with the shipped ``roadsigns_s025`` model does here, measured
    (sigma 0.25, n = 1000, alpha = 0.001, every sign frame and every 6th other frame)."""


_NOMINAL_CERT = (
    "Every frame certified; the sign's class while a sign is inside the ROI, no_sign otherwise "
    "(a few frames with a sign half inside the ROI get that sign's class); radius near the n-cap."
)

EPISODES: Final[tuple[Episode, ...]] = (
    Episode(
        "nominal_start",
        "nominal",
        0.0,
        12.0,
        "Clear day; signs approach on the right verge and cross the ROI.",
        "Certified labels that follow the signs; OOD score low; arbiter nominal.",
        _NOMINAL_CERT,
    ),
    Episode(
        "fog",
        "corruption",
        12.0,
        22.0,
        "Fog thickens from none to ImageNet-C severity 5 (16-18 s) and clears again by 22 s.",
        "Smaller certified radii and some abstentions while signs cross the fogged ROI; the "
        "arbiter degrades (slows down) and recovers as the fog clears.",
        "Sign frames: median radius drops from about 0.6 (clear) to about 0.2, 13% abstain; the "
        "signs are still read correctly when certified.",
    ),
    Episode(
        "nominal_after_fog",
        "nominal",
        22.0,
        28.0,
        "Clear again.",
        "As nominal_start: certified, arbiter back to nominal.",
        _NOMINAL_CERT,
    ),
    Episode(
        "glare",
        "corruption",
        28.0,
        34.0,
        "Low sun in the lens: glare flares up to full strength (29.5-32.5 s) and fades; the yield "
        "sign at 31 s is washed out.",
        "An exposure or OOD check must flag the over-exposed frames and the arbiter degrade: "
        "certification alone does not notice (see certification).",
        "Every frame certified as no_sign with a large radius, the yield sign included: a "
        "certificate is about robustness to small perturbations, not about correctness.",
    ),
    Episode(
        "nominal_before_tunnel",
        "nominal",
        34.0,
        38.0,
        "Clear.",
        "As nominal_start.",
        _NOMINAL_CERT,
    ),
    Episode(
        "tunnel",
        "ood",
        38.0,
        46.0,
        "A road tunnel (tiled walls, ceiling lamps): a scene the model never saw in training.",
        "The OOD check flags the frames and the arbiter fails safe, whatever the certificates say.",
        "Every frame certified as no_sign with a large radius (the broad no_sign class absorbs "
        "the tunnel wall); energy, kNN and class-conditional Mahalanobis scores on the model's "
        "features stay at in-distribution levels, so the OOD check needs more than these.",
    ),
    Episode(
        "blocked_view",
        "ood",
        46.0,
        49.0,
        "Mud on the lens covers most of the view and all of the ROI (lens_occlusion, severity 5); "
        "the speed_limit_30 sign at 47.5 s is hidden.",
        "A blocked-view / OOD check flags the frames and the arbiter fails safe until the view "
        "clears.",
        "Every frame certified as no_sign with a large radius, like the tunnel.",
    ),
    Episode(
        "nominal_end",
        "nominal",
        49.0,
        60.0,
        "Clear road again.",
        "As nominal_start; the arbiter returns to nominal after its recovery hold.",
        _NOMINAL_CERT,
    ),
)


SIGN_SCHEDULE: Final[tuple[tuple[float, str], ...]] = (
    (3.0, "stop"),
    (7.0, "yield"),
    (10.5, "speed_limit_30"),
    (14.0, "speed_limit_50"),  # light fog
    (17.0, "no_entry"),  # thickest fog
    (20.5, "pedestrian_crossing"),  # fog clearing
    (24.0, "priority_road"),
    (27.0, "stop"),
    (31.0, "yield"),  # full glare
    (36.0, "speed_limit_50"),
    (47.5, "speed_limit_30"),  # behind the mud on the lens
    (51.0, "no_entry"),
    (54.5, "pedestrian_crossing"),
    (58.0, "priority_road"),
)
"""(time the sign is mid-way through the ROI in seconds, class): every class in nominal driving,
and a sign at the worst moment of each corruption."""

ROI_MID_AHEAD_M: Final = 7.9
"""Distance ahead at which a default-placed sign is mid-way through ``DEFAULT_ROI``."""


def drive_scene(config: DriveConfig) -> RoadScene:
    """The road world of the drive, with the signs of ``SIGN_SCHEDULE``."""
    signs = tuple(
        SignPlacement(CLASSES.index(name), round(config.speed_mps * t + ROI_MID_AHEAD_M, 2))
        for t, name in SIGN_SCHEDULE
    )
    length = config.speed_mps * config.duration_s + 50.0
    return RoadScene(
        seed=config.scene_seed, speed_mps=config.speed_mps, length_m=length, signs=signs
    )


def _episode_at(t_s: float) -> Episode:
    for episode in EPISODES:
        if episode.start_s <= t_s < episode.end_s:
            return episode
    return EPISODES[-1]


def _ramp(t_s: float, start_s: float, peak_from_s: float, peak_to_s: float, end_s: float) -> float:
    """0 until ``start_s``, up to 1 at ``peak_from_s``, 1 until ``peak_to_s``, 0 by ``end_s``."""
    if t_s <= start_s or t_s >= end_s:
        return 0.0
    if t_s < peak_from_s:
        x = (t_s - start_s) / (peak_from_s - start_s)
    elif t_s <= peak_to_s:
        return 1.0
    else:
        x = (end_s - t_s) / (end_s - peak_to_s)
    return 0.5 - 0.5 * math.cos(math.pi * x)  # smooth start and stop


def _effect_rng(seed: int, episode: str) -> np.random.Generator:
    # One fixed generator state per episode: the fog bank and the sun stay put between frames.
    return np.random.default_rng(np.random.SeedSequence([seed, sum(map(ord, episode))]))


@lru_cache(maxsize=8)
def _mud_seed(seed: int) -> int:
    """Seed of the mud blob: the first one from ``seed`` on whose blob covers the ROI.

    The blob's place is random; a blob beside the ROI would leave the classifier's view clear.
    """
    probe = np.full((240, 320, 3), 200, np.uint8)
    x0, y0, x1, y1 = DEFAULT_ROI.box_for(320, 240)
    cover = corruptions.OCCLUSION_COVERED_FRACTION[-1]
    for k in range(1000):
        out = corruptions.lens_occlusion(probe, cover, _effect_rng(seed + k, "mud"))
        if (out[y0:y1, x0:x1] < 100).all(axis=2).mean() >= 0.95:
            return seed + k
    raise ConfigError(f"no mud blob from effect seed {seed} on covers the ROI")


def _fog(image: ImageU8, amount: float, seed: int) -> ImageU8:
    """Fog at a continuous severity ``amount * 5``: blend of the two neighbouring severities."""
    level = amount * 5.0
    if level <= 0.0:
        return image
    low = math.floor(level)
    frac = level - low

    def at(severity: int) -> npt.NDArray[np.float32]:
        if severity == 0:
            return image.astype(np.float32)
        out = corruptions.corrupt(image, "fog", min(severity, 5), _effect_rng(seed, "fog"))
        return out.astype(np.float32)

    mixed = at(low) * (1.0 - frac) + (at(low + 1) * frac if frac > 0 else 0.0)
    return np.asarray(np.clip(np.rint(mixed), 0, 255), np.uint8)


def render_frame(config: DriveConfig, scene: RoadScene, index: int) -> tuple[ImageU8, float]:
    """Frame ``index`` of the drive (uint8 RGB 240x320x3) and its time in seconds."""
    t = index / config.frame_rate_hz
    episode = _episode_at(t)
    if episode.name == "tunnel":
        return render_tunnel(scene.odometer_at(t)), t
    image = scene.render(t).image
    if episode.name == "fog":
        image = _fog(image, _ramp(t, 12.0, 16.0, 18.0, 22.0), config.effect_seed)
    elif episode.name == "glare":
        strength = _ramp(t, 28.0, 29.5, 32.5, 34.0)
        if strength > 0.02:
            image = corruptions.glare(image, strength, _effect_rng(config.effect_seed, "glare"))
    elif episode.name == "blocked_view":
        cover = corruptions.OCCLUSION_COVERED_FRACTION[-1]
        image = corruptions.lens_occlusion(
            image, cover, _effect_rng(_mud_seed(config.effect_seed), "mud")
        )
    return image, t


def _frames(config: DriveConfig, scene: RoadScene) -> Iterator[tuple[int, ImageU8, float]]:
    count = round(config.duration_s * config.frame_rate_hz)
    for index in range(count):
        image, t = render_frame(config, scene, index)
        yield index, image, t


def _sign_passages(config: DriveConfig, scene: RoadScene) -> list[dict[str, Any]]:
    """When each sign is wholly inside the ROI (frame times), in frames that show the road."""
    count = round(config.duration_s * config.frame_rate_hz)
    passages: dict[float, dict[str, Any]] = {}
    for index in range(count):
        t = index / config.frame_rate_hz
        episode = _episode_at(t)
        if episode.name == "tunnel":
            continue
        view = next((v for v in scene.sign_views(scene.odometer_at(t)) if v.in_roi), None)
        if view is None:
            continue
        key = round(scene.odometer_at(t) + view.distance_m, 2)  # the sign's position
        entry = passages.setdefault(
            key,
            {
                "class": view.class_name,
                "position_m": key,
                "enter_roi_s": round(t, 4),
                "episode": episode.name,
            },
        )
        entry["exit_roi_s"] = round(t + 1.0 / config.frame_rate_hz, 4)
        entry["frames_in_roi"] = entry.get("frames_in_roi", 0) + 1
    order = ("class", "position_m", "enter_roi_s", "exit_roi_s", "frames_in_roi", "episode")
    return [{key: entry[key] for key in order} for entry in passages.values()]


def write_drive(out_dir: Path, config: DriveConfig = DriveConfig(), force: bool = False) -> Path:
    """Render the drive into ``out_dir/BAG_NAME`` (rosbag2, MCAP) and ``out_dir/episodes.yaml``."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    config.validate()
    bag_dir = out_dir / BAG_NAME
    if bag_dir.exists():
        if not force:
            raise ConfigError(f"{bag_dir} exists; pass force=True (--force) to replace it")
        shutil.rmtree(bag_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    typestore = get_typestore(Stores.ROS2_KILTED)
    types = typestore.types
    time_t: Callable[..., Any] = types["builtin_interfaces/msg/Time"]
    header_t, image_t = types["std_msgs/msg/Header"], types["sensor_msgs/msg/CompressedImage"]
    clock_t = types["rosgraph_msgs/msg/Clock"]
    scene = drive_scene(config)

    def stamp(ns: int) -> Any:
        return time_t(sec=ns // 10**9, nanosec=ns % 10**9)

    frame_period_ns = round(1e9 / config.frame_rate_hz)
    clock_period_ns = round(1e9 / config.clock_rate_hz)
    end_ns = START_NS + round(config.duration_s * 1e9)
    next_clock_ns = START_NS
    with Writer(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        camera = writer.add_connection(CAMERA_TOPIC, image_t.__msgtype__, typestore=typestore)
        clock = writer.add_connection(CLOCK_TOPIC, clock_t.__msgtype__, typestore=typestore)
        for index, image, _t in _frames(config, scene):
            ns = START_NS + index * frame_period_ns
            while next_clock_ns <= ns:
                msg = clock_t(clock=stamp(next_clock_ns))
                writer.write(
                    clock, next_clock_ns, typestore.serialize_cdr(msg, clock_t.__msgtype__)
                )
                next_clock_ns += clock_period_ns
            ok, jpeg = cv2.imencode(
                ".jpg",
                cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality],
            )
            if not ok:
                raise ConfigError(f"JPEG encoding failed for frame {index}")
            msg = image_t(
                header=header_t(stamp=stamp(ns), frame_id=FRAME_ID),
                format=JPEG_FORMAT,
                data=np.asarray(jpeg, np.uint8).reshape(-1),
            )
            writer.write(camera, ns, typestore.serialize_cdr(msg, image_t.__msgtype__))
        while next_clock_ns < end_ns:
            msg = clock_t(clock=stamp(next_clock_ns))
            writer.write(clock, next_clock_ns, typestore.serialize_cdr(msg, clock_t.__msgtype__))
            next_clock_ns += clock_period_ns
    _write_episodes(out_dir / EPISODES_FILE, config, scene)
    return bag_dir


def _write_episodes(path: Path, config: DriveConfig, scene: RoadScene) -> None:
    frames = round(config.duration_s * config.frame_rate_hz)
    payload: dict[str, Any] = {
        "format": EPISODES_FORMAT,
        "recording": BAG_NAME,
        "camera_topic": CAMERA_TOPIC,
        "clock_topic": CLOCK_TOPIC,
        "frame_rate_hz": config.frame_rate_hz,
        "frames": frames,
        "duration_s": config.duration_s,
        "start_stamp_ns": START_NS,
        "times": "seconds after the first frame's header stamp; episode = [start_s, end_s)",
        "speed_mps": config.speed_mps,
        "roi": DEFAULT_ROI.as_metadata(),
        "generator": "python -m robust_monitor.tools.sample_drive "
        f"--scene-seed {config.scene_seed} --effect-seed {config.effect_seed}",
        "episodes": [
            {
                "name": e.name,
                "kind": e.kind,
                "start_s": e.start_s,
                "end_s": min(e.end_s, config.duration_s),
                "description": e.description,
                "expected": e.expected,
                "certification": e.certification,
            }
            for e in EPISODES
            if e.start_s < config.duration_s
        ],
        "signs": _sign_passages(config, scene),
    }
    header = (
        "# Sample drive: what happens when. Written by robust_monitor.tools.sample_drive;\n"
        "# regenerate with `python -m robust_monitor.tools.sample_drive --force`.\n"
    )
    text = yaml.safe_dump(payload, sort_keys=False, width=100, allow_unicode=False)
    path.write_text(header + text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m robust_monitor.tools.sample_drive [--out DIR] [--force]``."""
    from robust_monitor.assets import SAMPLE_DRIVE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SAMPLE_DRIVE, help="output folder")
    parser.add_argument("--force", action="store_true", help="replace an existing recording")
    defaults = DriveConfig()
    parser.add_argument("--duration", type=float, default=defaults.duration_s, help="seconds")
    parser.add_argument("--scene-seed", type=int, default=defaults.scene_seed)
    parser.add_argument("--effect-seed", type=int, default=defaults.effect_seed)
    parser.add_argument("--jpeg-quality", type=int, default=defaults.jpeg_quality)
    args = parser.parse_args(argv)
    config = DriveConfig(
        duration_s=args.duration,
        scene_seed=args.scene_seed,
        effect_seed=args.effect_seed,
        jpeg_quality=args.jpeg_quality,
    )
    t0 = time.perf_counter()
    bag = write_drive(args.out, config, force=args.force)
    size = sum(p.stat().st_size for p in bag.rglob("*") if p.is_file())
    print(f"wrote {bag} ({size / 1e6:.2f} MB) in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
