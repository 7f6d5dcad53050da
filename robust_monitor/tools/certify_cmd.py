"""``robust-monitor certify``: certify image files or ``.npy`` frames from the command line.

Contract (other tools and tests rely on it)::

    robust-monitor certify --model M.onnx --input X [--sigma S] [--n0 N0] [--n N] [--alpha A]
                           [--batch B] [--seed K] [--provider P]
                           [--mode fixed|sequential] [--r-required R] [--budget-ms MS]
                           [--max-n N] --json

X is an image file (decoded, resized to the model input, scaled to [0, 1]) or a ``.npy`` holding
one frame [C, H, W] or a batch [B, C, H, W] already in model space. With ``--json`` it prints
one JSON object per frame, one per line, with the certificate's fields.

``--mode sequential`` (``core/certify/sequential.py``) samples in looks and stops once
``radius >= r_required`` is certified, shown unreachable, ``--budget-ms`` is spent or ``--max-n``
samples are drawn; the JSON line adds ``decision``, ``looks``, ``p_upper`` and ``p_required``.
``r_required`` defaults to the arbiter policy's ``r_recover`` (the radius that counts as healthy
in every arbiter state; ``pipeline.default_r_required``), so the monitor and the arbiter share
one definition.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from robust_monitor.assets import DEFAULT_MODEL
from robust_monitor.core.certify.engine import SmoothingEngine, check_params
from robust_monitor.core.certify.sequential import SequentialConfig, certify_sequential
from robust_monitor.core.errors import InputError
from robust_monitor.core.imaging.decode import IMAGE_SUFFIXES, load_image_file, load_npy_frames
from robust_monitor.core.imaging.preprocess import to_model_input
from robust_monitor.core.pipeline import default_r_required


def add_certification_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by every command that certifies (certify, bench, demo, ...)."""
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX classifier")
    parser.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="noise level (L2, [0,1] pixel scale); default: the model's metadata",
    )
    parser.add_argument(
        "--n0", type=int, default=100, help="selection samples per frame (0: the clean prediction)"
    )
    parser.add_argument(
        "--n",
        type=int,
        default=1000,
        help="estimation samples per frame (on the CPU provider n0 + n is capped by the noise "
        "generator's period: 174,762 at 3x64x64; see README, Noise and seeds)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.001,
        help="failure probability of each certificate, in (0, 1)",
    )
    parser.add_argument("--batch", type=int, default=500, help="noisy samples per graph run")
    parser.add_argument(
        "--seed", type=int, default=None, help="fixed noise seed (tests only; default: OS entropy)"
    )
    parser.add_argument(
        "--provider",
        default="auto",
        help="auto | cpu | cuda | tensorrt (comma-separated list allowed)",
    )


def add_precision_arg(parser: argparse.ArgumentParser) -> None:
    """``--precision fp32|fp16`` (certify, bench): the classifier's arithmetic; noise and vote
    counting stay float32 (``core/certify/precision.py``)."""
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        default="fp32",
        help="the classifier in float32 or float16 (noise and counting stay float32)",
    )


def add_sequential_args(parser: argparse.ArgumentParser, *, overrides: bool = False) -> None:
    """``--mode``, ``--r-required``, ``--budget-ms``, ``--max-n`` (certify, bench, replay, sim).

    ``overrides=True`` (replay, sim): every default is None, meaning "as the parameter file
    says" (the monitor's ``certify_mode``, ``r_required``, ``budget_ms``, ``max_n``), and 0
    means what it means there (``--r-required 0``: the arbiter policy's; ``--budget-ms 0``: no
    deadline).
    """
    file_note = " (default: the parameter file's {})"
    parser.add_argument(
        "--mode",
        choices=("fixed", "sequential"),
        default=None if overrides else "fixed",
        help="fixed n (Cohen's CERTIFY) or sequential (stop once r_required is decided)"
        + (file_note.format("certify_mode") if overrides else ""),
    )
    parser.add_argument(
        "--r-required",
        type=float,
        default=None,
        help="sequential: the L2 radius to certify "
        + (
            file_note.format("r_required; 0 there or here: the arbiter policy's r_recover")
            if overrides
            else f"(default: the arbiter policy's r_recover, {default_r_required():g})"
        ),
    )
    parser.add_argument(
        "--budget-ms",
        type=float,
        default=None,
        help="sequential: time budget per frame (ms)"
        + (file_note.format("budget_ms; 0: no deadline") if overrides else ""),
    )
    parser.add_argument(
        "--max-n",
        type=int,
        default=None if overrides else 10_000,
        help="sequential: most estimation samples per frame"
        + (file_note.format("max_n") if overrides else ""),
    )


def sequential_config(args: argparse.Namespace) -> SequentialConfig:
    """The SequentialConfig the sequential arguments describe (validated)."""
    r_required = args.r_required if args.r_required is not None else default_r_required()
    return SequentialConfig(
        r_required=r_required,
        budget_ms=args.budget_ms,
        alpha=args.alpha,
        n0=args.n0,
        max_n=args.max_n,
    )


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("certify", help="certify frames from an image file or .npy")
    add_certification_args(parser)
    add_precision_arg(parser)
    add_sequential_args(parser)
    parser.add_argument("--input", type=Path, required=True, help="image file or .npy")
    parser.add_argument("--json", action="store_true", help="one JSON object per frame")
    parser.set_defaults(run=run)


def load_frames(path: Path, engine: SmoothingEngine) -> np.ndarray:
    """Frames in model space [B, C, H, W] from an image file or a .npy file."""
    if path.suffix.lower() == ".npy":
        return load_npy_frames(path)
    if path.suffix.lower() in IMAGE_SUFFIXES or path.is_file():
        return to_model_input(load_image_file(path), engine.spec)[None]
    raise InputError(f"input must be an image file or a .npy file, got {path}")


def run(args: argparse.Namespace) -> int:
    check_params(
        args.sigma if args.sigma is not None else 1.0, args.n0, args.n, args.alpha, args.batch
    )
    engine = SmoothingEngine(
        args.model,
        args.sigma,
        batch_size=args.batch,
        providers=args.provider,
        seed=args.seed,
        precision=args.precision,
    )
    if engine.fallback:
        print(f"robust-monitor certify: note: {engine.fallback}", file=sys.stderr)
    sequential = sequential_config(args) if args.mode == "sequential" else None
    frames = load_frames(args.input, engine)
    for index, frame in enumerate(frames):
        extra: dict[str, object] = {}
        if sequential is None:
            cert = engine.certify(frame, n0=args.n0, n=args.n, alpha=args.alpha).certificate
        else:
            seq = certify_sequential(engine, frame, sequential)
            cert = seq.certificate
            extra = {
                "decision": seq.decision,
                "looks": seq.looks,
                "p_upper": seq.p_upper,
                "p_required": seq.p_required,
                "r_required": sequential.r_required,
            }
        if args.json:
            print(json.dumps({"frame": index, **cert.as_dict(), **extra}), flush=True)
        else:
            verdict = "abstain" if cert.abstained else f"{cert.label_name} (class {cert.label})"
            decided = f"  {extra['decision']} after {extra['looks']} looks" if extra else ""
            print(
                f"frame {index}: {verdict}  radius {cert.radius:.3f}  p_lower {cert.p_lower:.4f}  "
                f"n0 {cert.n0}  n {cert.n}  alpha {cert.alpha:g}  sigma {cert.sigma:g}  "
                f"{cert.latency_ms:.1f} ms on {cert.provider}{decided}"
            )
    return 0
