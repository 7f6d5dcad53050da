"""``robust-monitor demo``: the README's main command, on the embedded defaults.

Replays the shipped sample drive through the replay engine (``replay.py``): the monitor's
pipeline (camera health, certification, calibrated OOD scores) and the arbiter with the shipped
configuration (``config/robust_monitor.yaml``), the operator releasing once at the start. Prints,
per episode of the drive (the episode file beside the recording), what the monitor saw and what
the arbiter did and how fast (time to degrade, to request a handover, to resume), then where the
full report (timeline, plot, annotated video, results bag) is.

It certifies every frame with the shipped configuration (sequential, ``n0 = 0``, at most 300
estimation samples per frame): about 20 s for the 900 frames on 2 CPU cores. ``--mode``,
``--n0``, ``--n``, ``--max-n``, ... override the parameter file, ``--every K`` certifies every
K-th frame only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robust_monitor.assets import SAMPLE_DRIVE
from robust_monitor.core.errors import ConfigError
from robust_monitor.tools.certify_cmd import add_certification_args, add_sequential_args
from robust_monitor.tools.replay import (
    OperatorMode,
    format_summary,
    replay,
    sequential_overrides,
)

EPISODES_FILE = "episodes.yaml"
DEFAULT_OUT = Path("runs") / "demo_sample_drive"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "demo", help="replay the shipped sample drive through the monitor and the arbiter"
    )
    add_certification_args(parser)
    add_sequential_args(parser, overrides=True)
    parser.add_argument(
        "--drive",
        type=Path,
        default=SAMPLE_DRIVE,
        help="folder with the recording and its episodes.yaml",
    )
    parser.add_argument(
        "--every", type=int, default=1, help="certify every k-th frame (camera checks see all)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # None: as the parameter file says (config/robust_monitor.yaml, the shipped configuration).
    parser.set_defaults(run=run, n=None, n0=None)


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
        "alpha": args.alpha,
        "batch_size": args.batch,
        "provider": args.provider,
        **sequential_overrides(args),
    }
    for key in ("n0", "n"):
        if getattr(args, key) is not None:
            overrides[key] = int(getattr(args, key))
    if args.sigma is not None:
        overrides["sigma"] = float(args.sigma)
    frames = "every frame" if args.every == 1 else f"every {args.every}. frame"
    print(
        f"robust_monitor demo: replaying {bag.name} ({frames}) through the monitor and the "
        "arbiter; the operator releases once at the start"
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
    cert = summary.get("certification") or {}
    if cert.get("mode") == "sequential":
        print(
            f"Sequential certification stops sampling once a frame is certified for "
            f"r_required = {cert['r_required']:g}, so a clear frame reports a radius just above "
            "it, not its largest certifiable one (--mode fixed --n0 64 for that)."
        )
    return 0
