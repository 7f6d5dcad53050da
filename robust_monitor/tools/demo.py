"""``robust-monitor demo``: the README's main command, on the embedded defaults.

Certifies frames of the shipped sample drive with the shipped default model through the same
pipeline as the monitor node (camera health, certification, calibrated OOD scores) and prints,
per episode of the drive (from the episode file beside the recording), how often the frame was
certified, how large the certified radius was and how often the OOD verdict flagged it.
Replay with plots and the arbiter come with the replay issue; this stays the quick look.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robust_monitor.assets import SAMPLE_DRIVE
from robust_monitor.core.errors import ConfigError
from robust_monitor.core.ood.verdict import OodLevel
from robust_monitor.core.pipeline import CertifyConfig, FramePipeline
from robust_monitor.tools.certify_cmd import add_certification_args
from robust_monitor.tools.recordings import iter_frames

EPISODES_FILE = "episodes.yaml"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("demo", help="certify the shipped sample drive with the shipped model")
    add_certification_args(parser)
    parser.add_argument(
        "--drive",
        type=Path,
        default=SAMPLE_DRIVE,
        help="folder with the recording and its episodes.yaml",
    )
    parser.add_argument("--every", type=int, default=5, help="certify every k-th frame")
    parser.set_defaults(run=run, n=500, n0=64)


@dataclass
class EpisodeStats:
    name: str
    kind: str
    start_s: float
    end_s: float
    radii: list[float] = field(default_factory=list)
    abstained: int = 0
    ood_flagged: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    def add(
        self, radius: float, abstained: bool, label: str, ood: OodLevel, reasons: tuple[str, ...]
    ) -> None:
        self.radii.append(radius)
        self.abstained += int(abstained)
        self.ood_flagged += int(ood > OodLevel.OK)
        self.labels[label] = self.labels.get(label, 0) + 1
        for reason in reasons:
            self.reasons[reason] = self.reasons.get(reason, 0) + 1


def load_episodes(drive: Path) -> list[dict[str, Any]]:
    path = drive / EPISODES_FILE
    if not path.is_file():
        raise ConfigError(f"episode file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    episodes = data.get("episodes") if isinstance(data, dict) else None
    if not isinstance(episodes, list) or not episodes:
        raise ConfigError(f"{path}: expected a non-empty 'episodes' list")
    return episodes


def find_recording(drive: Path) -> Path:
    bags = sorted(p.parent for p in drive.glob("*/metadata.yaml"))
    if not bags:
        raise ConfigError(f"no rosbag2 recording (a folder with metadata.yaml) under {drive}")
    return bags[0]


def run(args: argparse.Namespace) -> int:
    if args.every < 1:
        raise ConfigError(f"--every must be >= 1, got {args.every}")
    config = CertifyConfig(
        sigma=args.sigma,
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
        batch_size=args.batch,
        providers=args.provider,
        seed=args.seed,
    )
    pipeline = FramePipeline(args.model, config)
    pipeline.warmup()
    engine = pipeline.engine
    episodes = load_episodes(args.drive)
    bag = find_recording(args.drive)
    stats = [
        EpisodeStats(str(e["name"]), str(e.get("kind", "")), float(e["start_s"]), float(e["end_s"]))
        for e in episodes
    ]
    calibrated = "calibrated OOD scores" if pipeline.calibration else "camera checks only"
    print(
        f"robust_monitor demo: {bag.name} with {engine.spec.name} (sigma {engine.sigma}, "
        f"n0 {args.n0}, n {args.n}, alpha {args.alpha}, {calibrated}) on {engine.provider}"
    )
    if engine.fallback:
        print(f"note: {engine.fallback}")
    start_wall = time.perf_counter()
    t0: float | None = None
    done = 0
    for frame in iter_frames(bag):
        t0 = frame.stamp_s if t0 is None else t0
        if frame.index % args.every:
            # Camera health is stateful (frozen frames, stamp gaps): it sees every frame.
            pipeline.health.check(frame.image, frame.stamp_s)
            continue
        t = frame.stamp_s - t0
        result = pipeline.process(frame.image, frame.stamp_s)
        cert, verdict = result.certificate, result.verdict
        for ep in stats:
            if ep.start_s <= t < ep.end_s:
                ep.add(cert.radius, cert.abstained, cert.label_name, verdict.level, verdict.reasons)
        done += 1
        rate = done / (time.perf_counter() - start_wall)
        print(
            f"\r  t={t:5.1f} s  frames certified {done}  ({rate:.1f}/s)",
            end="",
            file=sys.stderr,
            flush=True,
        )
    print(file=sys.stderr)
    print(
        f"\n{'episode':<22}{'kind':<11}{'time (s)':<9}{'frames':>6}{'certified':>10}"
        f"{'median r':>9}{'p10 r':>7}{'OOD':>6}  most frequent label / OOD reasons"
    )
    for ep in stats:
        n = len(ep.radii)
        if n == 0:
            continue
        certified = 1 - ep.abstained / n
        top = max(ep.labels, key=lambda k: ep.labels[k])
        reasons = ", ".join(sorted(ep.reasons, key=lambda k: -ep.reasons[k])[:3])
        print(
            f"{ep.name:<22}{ep.kind:<11}{f'{ep.start_s:.0f}-{ep.end_s:.0f}':<9}{n:>6}"
            f"{certified:>10.0%}{np.median(ep.radii):>9.3f}{np.percentile(ep.radii, 10):>7.3f}"
            f"{ep.ood_flagged / n:>6.0%}  {top} ({ep.labels[top] / n:.0%})"
            + (f" / {reasons}" if reasons else "")
        )
    elapsed = time.perf_counter() - start_wall
    print(
        f"\n{done} frames certified in {elapsed:.1f} s. Radii are L2 in [0,1]-pixel model space; "
        "abstentions count as radius 0. OOD: share of frames whose verdict was WARN or ERROR."
    )
    return 0
