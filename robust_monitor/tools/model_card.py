"""``robust-monitor model-card``: measure a model and write its card (Markdown, JSON, PNG).

The card states what a user needs to trust the shipped model: data and recipe (from the
``<stem>.train.json`` the trainer writes), the sha256 of the ONNX file, the base model's clean
accuracy on held-out renders, and the *certified accuracy* of the smoothed classifier at radii
0, 0.25, 0.5, 0.75 and 1.0: the fraction of held-out images whose certificate is the true label
with a radius at least r (Cohen et al. 2019, Table/Figure "certified accuracy").

The certificates are produced by the project's own ``robust-monitor certify --json`` on
batches of rendered images saved as ``.npy``; results are appended chunk by chunk to
``certify.jsonl`` under ``--work``, so a long run (500 images x 10,100 samples) can be
interrupted and resumed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from robust_monitor.assets import DEFAULT_MODEL
from robust_monitor.core.certify.model import load_model_spec
from robust_monitor.core.errors import ConfigError

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
HELD_OUT_SEED = 909_000
"""Data-set seed of the card's held-out renders (training used 101, its evaluation 202)."""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("model-card", help="measure a model and write its card")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--images", type=int, default=500, help="held-out renders certified")
    parser.add_argument("--clean-images", type=int, default=2000, help="renders for clean accuracy")
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--chunk", type=int, default=25, help="images per certify call")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="held-out data-set seed")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder of the card (default: beside the model, <stem>.card.*)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("runs/model_card"),
        help="where per-image results are kept so a run can resume",
    )
    parser.set_defaults(run=run)


def certified_accuracy(records: list[dict[str, Any]], labels: np.ndarray) -> dict[str, float]:
    """Fraction of images certified as their true label with radius >= r, for each r in RADII."""
    out = {}
    for r in RADII:
        hits = sum(
            1
            for rec in records
            if not rec["abstained"]
            and rec["label"] == int(labels[rec["image"]])
            and rec["radius"] >= r
        )
        out[f"{r:.2f}"] = hits / max(len(records), 1)
    return out


def _render(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from robust_monitor.synth.roadsigns import render_dataset

    images, labels = render_dataset(n, seed)
    return images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255), labels


def run(args: argparse.Namespace) -> int:
    if args.images < 1 or args.chunk < 1:
        raise ConfigError("--images and --chunk must be >= 1")
    spec = load_model_spec(args.model)
    out = args.out or args.model.parent
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)  # before the measurement, not after it
    stem = args.model.stem
    work = args.work / stem
    work.mkdir(parents=True, exist_ok=True)
    jsonl = work / "certify.jsonl"
    settings = {
        "n0": args.n0,
        "n": args.n,
        "alpha": args.alpha,
        "seed": args.seed,
        "sha256": spec.sha256,
    }
    settings_file = work / "settings.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        raise ConfigError(f"{work} holds a run with other settings; remove it to start again")
    settings_file.write_text(json.dumps(settings))

    xs, labels = _render(args.images, args.seed)
    done = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.is_file() else []
    start_wall = time.perf_counter()
    for start in range(len(done), args.images, args.chunk):
        stop = min(args.images, start + args.chunk)
        with tempfile.TemporaryDirectory() as tmp:
            batch = Path(tmp) / "batch.npy"
            np.save(batch, xs[start:stop])
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "robust_monitor.tools.cli",
                    "certify",
                    "--model",
                    str(args.model),
                    "--input",
                    str(batch),
                    "--n0",
                    str(args.n0),
                    "--n",
                    str(args.n),
                    "--alpha",
                    str(args.alpha),
                    "--batch",
                    str(args.batch),
                    "--json",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise ConfigError(f"robust-monitor certify failed: {result.stderr.strip()}")
        with jsonl.open("a", encoding="utf-8") as handle:
            for line in result.stdout.splitlines():
                rec = json.loads(line)
                rec["image"] = start + rec.pop("frame")
                handle.write(json.dumps(rec) + "\n")
                done.append(rec)
        rate = (stop - start) / max(time.perf_counter() - start_wall, 1e-9)
        start_wall = time.perf_counter()
        left = (args.images - stop) / max(rate, 1e-9)
        print(
            f"[model-card] {stop}/{args.images} images certified, ~{left / 60:.1f} min left",
            file=sys.stderr,
            flush=True,
        )

    clean_x, clean_labels = _render(args.clean_images, args.seed + 1)
    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    predictions = np.concatenate(
        [
            session.run([spec.logits_name], {spec.input_name: clean_x[i : i + 256]})[0].argmax(
                axis=1
            )
            for i in range(0, len(clean_x), 256)
        ]
    )
    clean_accuracy = float((predictions == clean_labels).mean())
    accuracy = certified_accuracy(done, labels)
    train_file = args.model.with_name(stem + ".train.json")
    recipe = json.loads(train_file.read_text()) if train_file.is_file() else {}
    card = {
        "model": spec.name,
        "onnx": args.model.name,
        "sha256": spec.sha256,
        "sigma": spec.sigma,
        "classes": list(spec.classes),
        "input": {"shape": list(spec.input_shape), "channel_order": spec.channel_order},
        "recipe": recipe.get("config", {}),
        "training_time_s": recipe.get("train_s"),
        "clean_accuracy": {
            "value": clean_accuracy,
            "images": len(clean_x),
            "seed": args.seed + 1,
        },
        "certified_accuracy": {
            "values": accuracy,
            "images": len(done),
            "seed": args.seed,
            "n0": args.n0,
            "n": args.n,
            "alpha": args.alpha,
            "measured_by": "robust-monitor certify --json",
        },
        "abstention_rate": sum(r["abstained"] for r in done) / max(len(done), 1),
    }
    (out / f"{stem}.card.json").write_text(json.dumps(card, indent=2) + "\n")
    _plot(done, labels, out / f"{stem}.card.png", spec.name)
    (out / f"{stem}.card.md").write_text(_markdown(card, stem))
    print(json.dumps(card["certified_accuracy"]["values"]))
    return 0


def _plot(records: list[dict[str, Any]], labels: np.ndarray, path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    radii = np.linspace(0, 1.5, 151)
    good = np.array(
        [
            r["radius"]
            for r in records
            if not r["abstained"] and r["label"] == int(labels[r["image"]])
        ]
    )
    acc = [(good >= r).sum() / max(len(records), 1) for r in radii]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(radii, acc)
    ax.set_xlabel("L2 radius ([0,1]-pixel model space)")
    ax.set_ylabel("certified accuracy")
    ax.set_title(f"{name}: certified accuracy vs radius ({len(records)} images)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _max_radius(card: dict[str, Any]) -> float:
    """The largest radius ``n`` estimation samples can certify at ``alpha`` (unanimous votes)."""
    from robust_monitor.core.certify.stats import clopper_pearson_lower, radius_from_p_lower

    ca = card["certified_accuracy"]
    n = int(ca["n"])
    return radius_from_p_lower(clopper_pearson_lower(n, n, float(ca["alpha"])), card["sigma"])


def write_markdown(card_json: Path) -> Path:
    """(Re)write ``<stem>.card.md`` from ``<stem>.card.json`` (no measurement)."""
    card = json.loads(card_json.read_text())
    stem = card_json.name.removesuffix(".card.json")
    out = card_json.with_name(f"{stem}.card.md")
    out.write_text(_markdown(card, stem))
    return out


def _markdown(card: dict[str, Any], stem: str) -> str:
    ca = card["certified_accuracy"]
    rows = "\n".join(f"| {r} | {v:.1%} |" for r, v in ca["values"].items())
    recipe = "\n".join(f"- {k}: {v}" for k, v in card["recipe"].items())
    clean_share = float(card["recipe"].get("clean_fraction") or 0.0)
    noise = f"trained with Gaussian noise augmentation at sigma = {card['sigma']}"
    noise += " (the certification sigma)"
    if clean_share > 0:
        noise += f"; each training image left clean with probability {clean_share:g} per step"
    return f"""# Model card: {card["model"]}

- file: `{card["onnx"]}`, sha256 `{card["sha256"]}`
- input: {card["input"]["shape"]} {card["input"]["channel_order"].upper()} in [0, 1]
- classes: {", ".join(card["classes"])}
- {noise}

## Accuracy

Base model, clean held-out renders: **{card["clean_accuracy"]["value"]:.1%}**
({card["clean_accuracy"]["images"]} images, data-set seed {card["clean_accuracy"]["seed"]}).

Certified accuracy of the smoothed classifier ({ca["images"]} held-out renders, seed {ca["seed"]},
n0 = {ca["n0"]}, n = {ca["n"]}, alpha = {ca["alpha"]}, measured by `{ca["measured_by"]}`):

| radius (L2) | certified accuracy |
| --- | --- |
{rows}

Abstention rate: {card["abstention_rate"]:.1%}. Curve: `{stem}.card.png`.
With n = {ca["n"]} and alpha = {ca["alpha"]} no radius above
sigma * Phi^-1(alpha^(1/n)) = {_max_radius(card):.3f} can be certified (every vote agreeing), so
larger radii read 0% by construction, not because the model fails there.

## Recipe

{recipe}

Regenerate with `make model` (renders data, trains, exports, and re-measures this card).
"""
