"""``robust-monitor demo``: the README's main command, on the embedded defaults.

Replays the shipped sample drive through the replay engine (``replay.py``): the monitor's
pipeline (camera health, certification, calibrated OOD scores) and the arbiter with the shipped
configuration (``config/robust_monitor.yaml``), the operator releasing once at the start. Prints,
per episode of the drive (the episode file beside the recording), what the monitor saw and what
the arbiter did and how fast (time to degrade, to request a handover, to resume), then where the
full report (timeline, plot, annotated video, results bag) is.

For speed on a small CPU the demo certifies every 3rd frame (5 Hz) with n0 = 16, n = 100
(about 25 s on 2 cores); ``--every 1 --n0 64 --n 500`` is the shipped node's configuration
(several minutes on 2 cores: ``robust-monitor replay`` gives the same report).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robust_monitor.assets import SAMPLE_DRIVE
from robust_monitor.core.errors import ConfigError
from robust_monitor.tools.certify_cmd import add_certification_args
from robust_monitor.tools.replay import OperatorMode, format_summary, replay

EPISODES_FILE = "episodes.yaml"
DEFAULT_OUT = Path("runs") / "demo_sample_drive"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "demo", help="replay the shipped sample drive through the monitor and the arbiter"
    )
    add_certification_args(parser)
    parser.add_argument(
        "--drive",
        type=Path,
        default=SAMPLE_DRIVE,
        help="folder with the recording and its episodes.yaml",
    )
    parser.add_argument(
        "--every", type=int, default=3, help="certify every k-th frame (camera checks see all)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run, n=100, n0=16)


def find_recording(drive: Path) -> Path:
    bags = sorted(p.parent for p in drive.glob("*/metadata.yaml"))
    if not bags:
        raise ConfigError(f"no rosbag2 recording (a folder with metadata.yaml) under {drive}")
    return bags[0]


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def episode_line(ep: Mapping[str, Any]) -> str:
    """One episode in words: what the monitor saw, what the arbiter did, how fast."""
    head = f"{ep['name']:<22}{ep['kind']:<11}{ep['start_s']:>4.0f}-{ep['end_s']:<4.0f}"
    seen = (
        f"certified {ep['certified_fraction']:.0%}, median r {ep['median_radius']:.2f}, "
        f"OOD {ep['ood_flagged_fraction']:.0%}"
    )
    reasons = sorted(ep["ood_reasons"], key=lambda k: -ep["ood_reasons"][k])[:2]
    if reasons:
        seen += f" ({', '.join(reasons)})"
    held = {k: v for k, v in ep["time_in_state_s"].items() if v > 0.05}
    reaction = ep.get("reaction")
    if reaction is not None:
        did = (
            f"degrade after {_seconds(reaction['time_to_degrade_s'])}, "
            f"handover request after {_seconds(reaction['time_to_request_handover_s'])}, "
            f"NOMINAL again {_seconds(reaction['time_to_resume_s'])} after it ended"
        )
        if reaction["time_to_degrade_s"] is None:
            did = "NOT NOTICED: stayed NOMINAL"
    else:
        did = ", ".join(f"{k} {v:.1f} s" for k, v in held.items())
    return f"{head}{seen}\n{'':<41}arbiter: {did}"


def run(args: argparse.Namespace) -> int:
    bag = find_recording(args.drive)
    overrides: dict[str, Any] = {
        "model_path": str(args.model),
        "n0": args.n0,
        "n": args.n,
        "alpha": args.alpha,
        "batch_size": args.batch,
        "provider": args.provider,
    }
    if args.sigma is not None:
        overrides["sigma"] = float(args.sigma)
    print(
        f"robust_monitor demo: replaying {bag.name} (every {args.every}. frame, n0 {args.n0}, "
        f"n {args.n}) through the monitor and the arbiter; the operator releases once at the start"
    )
    out_dir, summary = replay(
        bag,
        args.out,
        overrides=overrides,
        seed=args.seed,
        operator=OperatorMode.AUTO_RELEASE,
        every=args.every,
        progress=None if args.quiet else sys.stderr,
    )
    print()
    for ep in summary["episodes"]:
        print(episode_line(ep))
    print()
    print(format_summary(summary, out_dir))
    print(
        f"plot: {out_dir / 'timeline.png'}; video: {out_dir / 'annotated.mp4'}; "
        f"per-frame table: {out_dir / 'timeline.csv'}"
    )
    print(
        "Times are seconds of recording time. Radii are L2 in [0,1]-pixel model space "
        "(abstentions count as 0). OOD: share of frames whose verdict was WARN or ERROR."
    )
    return 0
