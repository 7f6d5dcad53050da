"""Train the shipped road-sign classifiers (development only: needs the ``train`` extra, PyTorch).

Recipe (Cohen, Rosenfeld & Kolter 2019, section 4): the base classifier ``f`` is trained with
Gaussian noise augmentation at the *same* sigma that certification later uses, so that
``f(x + eps)``, ``eps ~ N(0, sigma^2 I)``, is accurate and the smoothed classifier ``g`` has a large
top-class probability. Every training image gets fresh noise in every epoch; no clipping.

Data: freshly rendered by ``robust_monitor.synth.roadsigns`` (``TRAIN_DATA_SEED``); accuracy is
measured on renders of ``EVAL_DATA_SEED``; ``TEST_DATA_SEED`` is reserved for the tests of the
shipped models and never used here. The run is seeded end to end and uses
``torch.use_deterministic_algorithms(True)``.

Outputs, for ``--out DIR/STEM``:
- ``STEM.onnx``: input ``image`` float32 [batch, 3, 64, 64], RGB in [0, 1]; outputs ``logits``
  [batch, 8] and ``features`` [batch, 128] (the penultimate layer); opset 17, IR version 10;
- ``STEM.json``: the metadata the model loader reads (format ``robust_monitor.model/1``);
- ``STEM.train.json``: the recipe, seeds, data sizes, timings and measured accuracies.

Run (about 7 minutes each on 2 idle CPU cores, 17 on shared ones; the sigma=0.5 model starts
from the sigma=0.25 weights, as Cohen et al. trained one model per sigma but a warm start halves
the time it needs, and trains a quarter of its images clean, which lifts the base model's clean
accuracy from 95% to 98% at a cost of under a point under noise)::

    python -m robust_monitor.tools.train --sigma 0.25 \
        --out robust_monitor/assets/models/roadsigns_s025 --save-checkpoint build/roadsigns_s025.pt
    python -m robust_monitor.tools.train --sigma 0.5 \
        --out robust_monitor/assets/models/roadsigns_s050 --init-from build/roadsigns_s025.pt \
        --max-lr 3e-3 --epochs 14 --clean-fraction 0.25
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
from torch import nn

from robust_monitor.core.errors import ConfigError, ModelError
from robust_monitor.synth.roadsigns import (
    CLASSES,
    EVAL_DATA_SEED,
    TEST_DATA_SEED,
    TRAIN_DATA_SEED,
    render_dataset,
)

MODEL_FORMAT = "robust_monitor.model/1"
INPUT_SIZE = 64
FEATURE_DIM = 128
OPSET = 17
IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 would write 14.


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyper-parameters of one training run (all recorded in ``STEM.train.json``)."""

    sigma: float
    """Std of the Gaussian noise augmentation, in [0, 1] pixel units (= certification sigma)."""
    name: str
    train_size: int = 36_000
    eval_size: int = 2_400
    epochs: int = 8
    batch_size: int = 128
    max_lr: float = 4e-3
    weight_decay: float = 1e-4
    torch_seed: int = 0
    train_data_seed: int = TRAIN_DATA_SEED
    eval_data_seed: int = EVAL_DATA_SEED
    threads: int = 2
    render_workers: int = 2
    smoothing_votes: int = 100
    """Noise draws per image for the smoothed-prediction accuracy (majority vote, no abstain)."""
    smoothing_images: int = 400
    init_from: str | None = None
    """Optional state_dict (.pt) to start from (warm start), e.g. the sigma=0.25 model's."""
    clean_fraction: float = 0.0
    """Share of each batch trained without noise (each image independently, fresh every step).
    The smoothed classifier only ever sees noisy copies, so this buys the *base* model's clean
    accuracy (which the OOD scores and the clean-logit outputs use) at a small cost in noisy
    accuracy; 0 is Cohen's recipe exactly."""

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        if not 0.0 <= self.sigma <= 2.0:
            raise ConfigError(f"sigma must be in [0, 2] (pixel units of [0, 1]), got {self.sigma}")
        for field in ("train_size", "eval_size", "epochs", "batch_size", "threads"):
            if getattr(self, field) < 1:
                raise ConfigError(f"{field} must be >= 1, got {getattr(self, field)}")
        if TEST_DATA_SEED in (self.train_data_seed, self.eval_data_seed):
            raise ConfigError(f"data seed {TEST_DATA_SEED} is reserved for the shipped-model tests")
        if not 0.0 <= self.clean_fraction < 1.0:
            raise ConfigError(f"clean_fraction must be in [0, 1), got {self.clean_fraction}")
        if self.train_data_seed == self.eval_data_seed:
            raise ConfigError("train_data_seed and eval_data_seed must differ (held-out data)")


def _conv(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class RoadSignNet(nn.Module):
    """Compact CNN: 64x64 RGB in [0, 1] -> (logits [B, 8], features [B, 128]).

    A fixed 3x3 mean filter, a stride-2 stem (32x32), 3x3 conv blocks with BatchNorm and ReLU,
    two max-pools (16x16, 8x8), global average pooling to the 128-d feature vector (the
    ``features`` output), and one linear layer to the logits.
    """

    def __init__(self, num_classes: int = len(CLASSES), feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            # Fixed 3x3 mean filter: lowers the noise std 3x before the first learned layer, so
            # clean and noisy inputs look alike to the network (better clean accuracy).
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            *_conv(3, 24, stride=2),
            *_conv(24, 32),
            nn.MaxPool2d(2),
            *_conv(32, 64),
            nn.MaxPool2d(2),
            *_conv(64, feature_dim),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(image)
        return self.head(features), features


def _to_tensor(images: npt.NDArray[np.uint8]) -> torch.Tensor:
    """uint8 NHWC RGB -> float32 NCHW in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def _log(message: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _accuracy(
    model: nn.Module,
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.int64],
    sigma: float,
    seed: int,
) -> float:
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), 512):
            x = _to_tensor(images[start : start + 512])
            if sigma > 0:
                x = x + sigma * torch.randn(x.shape, generator=gen)
            logits, _ = model(x)
            correct += int((logits.argmax(1).numpy() == labels[start : start + 512]).sum())
    return correct / len(images)


def train_model(config: TrainConfig) -> tuple[RoadSignNet, dict[str, Any]]:
    """Render the data, train with noise augmentation, return the model and a run record."""
    config.validate()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.torch_seed)
    torch.use_deterministic_algorithms(True)
    record: dict[str, Any] = {"config": asdict(config)}

    t0 = time.perf_counter()
    train_x, train_y = render_dataset(
        config.train_size, config.train_data_seed, INPUT_SIZE, workers=config.render_workers
    )
    render_s = time.perf_counter() - t0
    _log(f"rendered {config.train_size} training images in {render_s:.0f} s")
    record["render_train_s"] = round(render_s, 1)

    model = RoadSignNet()
    if config.init_from:
        model.load_state_dict(torch.load(config.init_from, map_location="cpu", weights_only=True))
        _log(f"initialised from {config.init_from}")
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(config.train_size / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.max_lr, total_steps=config.epochs * steps_per_epoch
    )
    shuffle_gen = torch.Generator().manual_seed(config.torch_seed + 1)
    noise_gen = torch.Generator().manual_seed(config.torch_seed + 2)
    # Its own stream, drawn only when used, so clean_fraction = 0 trains exactly as before.
    clean_gen = torch.Generator().manual_seed(config.torch_seed + 3)
    labels_t = torch.from_numpy(train_y)
    epochs: list[dict[str, float]] = []
    t_train = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        t_epoch = time.perf_counter()
        order = torch.randperm(config.train_size, generator=shuffle_gen)
        loss_sum, correct = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = _to_tensor(train_x[idx.numpy()])
            noise = config.sigma * torch.randn(x.shape, generator=noise_gen)
            if config.clean_fraction > 0.0:
                keep = torch.rand(len(idx), generator=clean_gen) >= config.clean_fraction
                noise = noise * keep.to(noise.dtype).view(-1, 1, 1, 1)
            x = x + noise
            x = x.contiguous(memory_format=torch.channels_last)
            y = labels_t[idx]
            logits, _ = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        entry = {
            "epoch": epoch + 1,
            "loss": round(loss_sum / config.train_size, 4),
            "noisy_train_accuracy": round(correct / config.train_size, 4),
            "seconds": round(time.perf_counter() - t_epoch, 1),
        }
        epochs.append(entry)
        _log(f"epoch {entry}")
    record["train_s"] = round(time.perf_counter() - t_train, 1)
    record["epochs"] = epochs
    model = model.to(memory_format=torch.contiguous_format).eval()
    return model, record


def export_onnx(model: RoadSignNet, path: Path) -> None:
    """Export to ONNX (opset 17, IR 10, dynamic batch) and check it with ``onnx.checker``."""
    model = model.eval()
    example = torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The TorchScript-based exporter writes opset 17 directly; the dynamo exporter emits 18 and
    # its down-conversion fails on ReduceMean.
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["logits", "features"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    proto.ir_version = IR_VERSION
    proto.producer_name = "robust_monitor.tools.train"
    proto.doc_string = (
        "Road-sign classifier: image float32 [B,3,64,64] RGB in [0,1] -> logits [B,8], "
        "features [B,128]"
    )
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_logits(session: ort.InferenceSession, x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    out = [session.run(["logits"], {"image": x[s : s + 512]})[0] for s in range(0, len(x), 512)]
    return np.concatenate(out, axis=0)


def verify_onnx(model: RoadSignNet, path: Path, images: npt.NDArray[np.uint8]) -> float:
    """Max |torch - onnxruntime| over both outputs on ``images``; raise ``ModelError`` if large."""
    x = _to_tensor(images)
    with torch.no_grad():
        logits_t, features_t = model(x)
    logits_o, features_o = _session(path).run(["logits", "features"], {"image": x.numpy()})
    diff = max(
        float(np.abs(logits_o - logits_t.numpy()).max()),
        float(np.abs(features_o - features_t.numpy()).max()),
    )
    if diff > 1e-3:
        raise ModelError(f"ONNX export of {path} differs from torch by {diff:.2e} (limit 1e-3)")
    return diff


def evaluate_onnx(path: Path, sigma: float, config: TrainConfig) -> dict[str, Any]:
    """Held-out accuracies of the exported model: clean, under N(0, sigma^2), smoothed vote."""
    images, labels = render_dataset(
        config.eval_size, config.eval_data_seed, INPUT_SIZE, workers=config.render_workers
    )
    session = _session(path)
    x = _to_tensor(images).numpy()
    rng = np.random.default_rng(config.eval_data_seed)
    clean = _onnx_logits(session, x).argmax(1)
    noisy = _onnx_logits(session, x + sigma * rng.standard_normal(x.shape, np.float32)).argmax(1)
    per_class = {
        name: round(float((clean[labels == k] == k).mean()), 4) for k, name in enumerate(CLASSES)
    }
    # Smoothed prediction (majority of noisy votes), on a subset: what certification estimates.
    m, votes = min(config.smoothing_images, len(x)), config.smoothing_votes
    smoothed = np.empty(m, np.int64)
    for i in range(m):
        batch = x[i : i + 1] + sigma * rng.standard_normal((votes, *x.shape[1:]), np.float32)
        counts = np.bincount(_onnx_logits(session, batch).argmax(1), minlength=len(CLASSES))
        smoothed[i] = int(counts.argmax())
    return {
        "eval_data_seed": config.eval_data_seed,
        "eval_images": len(x),
        "clean_accuracy": round(float((clean == labels).mean()), 4),
        "noisy_accuracy": round(float((noisy == labels).mean()), 4),
        "noisy_sigma": sigma,
        "clean_accuracy_per_class": per_class,
        "smoothed_vote_accuracy": round(float((smoothed == labels[:m]).mean()), 4),
        "smoothed_vote_images": m,
        "smoothed_votes_per_image": votes,
    }


def model_metadata(onnx_path: Path, name: str, sigma: float) -> dict[str, Any]:
    """The ``robust_monitor.model/1`` metadata of an exported model (``STEM.json``)."""
    from robust_monitor.synth.scene import DEFAULT_ROI

    return {
        "format": MODEL_FORMAT,
        "name": name,
        "classes": list(CLASSES),
        "input": {
            "name": "image",
            "shape": [3, INPUT_SIZE, INPUT_SIZE],
            "channel_order": "rgb",
            "value_range": [0.0, 1.0],
        },
        "outputs": {"logits": "logits", "features": "features"},
        "sigma": sigma,
        "sha256": sha256_of(onnx_path),
        "roi": DEFAULT_ROI.as_metadata(),
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON with a trailing newline."""
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def run(config: TrainConfig, out_stem: Path, checkpoint: Path | None = None) -> dict[str, Any]:
    """Train, export, verify and evaluate; write ``.onnx``, ``.json`` and ``.train.json``.

    ``checkpoint``: also save the trained state_dict there (for a warm start of another run).
    """
    t_start = time.perf_counter()
    model, record = train_model(config)
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), checkpoint)
    onnx_path = out_stem.with_suffix(".onnx")
    export_onnx(model, onnx_path)
    check_images, _ = render_dataset(64, config.eval_data_seed, INPUT_SIZE, start=10**6)
    record["onnx_max_abs_diff"] = verify_onnx(model, onnx_path, check_images)
    record["evaluation"] = evaluate_onnx(onnx_path, config.sigma, config)
    _log(f"evaluation {record['evaluation']}")
    record["total_s"] = round(time.perf_counter() - t_start, 1)
    record["onnx_bytes"] = onnx_path.stat().st_size
    record["parameters"] = sum(p.numel() for p in model.parameters())
    record["architecture"] = RoadSignNet.__doc__
    record["environment"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
    }
    record["data"] = {
        "generator": "robust_monitor.synth.roadsigns.render_dataset",
        "train_images": config.train_size,
        "train_data_seed": config.train_data_seed,
        "eval_data_seed": config.eval_data_seed,
        "reserved_test_data_seed": TEST_DATA_SEED,
        "noise_augmentation": (
            f"x + N(0, {config.sigma}^2) on every image, every epoch, no clip"
            if config.clean_fraction == 0.0
            else f"x + N(0, {config.sigma}^2), no clip, on each image with probability "
            f"{1.0 - config.clean_fraction:g} per step (else the clean image)"
        ),
    }
    if config.init_from:
        record["init_from_sha256"] = sha256_of(Path(config.init_from))
    record["optimizer"] = "AdamW + OneCycleLR (cosine), cross-entropy"
    record["command"] = " ".join(["python -m robust_monitor.tools.train", *sys.argv[1:]])
    write_json(out_stem.with_suffix(".train.json"), record)
    write_json(onnx_path.with_suffix(".json"), model_metadata(onnx_path, config.name, config.sigma))
    return record


_DEFAULTS = TrainConfig(sigma=0.25, name="defaults")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m robust_monitor.tools.train --sigma S --out DIR/STEM``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, required=True, help="noise std (pixel units)")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    parser.add_argument("--name", help="model name in the metadata (default: the stem)")
    parser.add_argument("--train-size", type=int, default=_DEFAULTS.train_size)
    parser.add_argument("--eval-size", type=int, default=_DEFAULTS.eval_size)
    parser.add_argument("--epochs", type=int, default=_DEFAULTS.epochs)
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    parser.add_argument("--max-lr", type=float, default=_DEFAULTS.max_lr)
    parser.add_argument("--seed", type=int, default=_DEFAULTS.torch_seed, help="torch seed")
    parser.add_argument("--threads", type=int, default=_DEFAULTS.threads)
    parser.add_argument("--init-from", help="state_dict (.pt) to start from (warm start)")
    parser.add_argument("--save-checkpoint", type=Path, help="save the trained state_dict here")
    parser.add_argument(
        "--clean-fraction",
        type=float,
        default=_DEFAULTS.clean_fraction,
        help="share of training images left without noise at each step (default 0: Cohen's)",
    )
    parser.add_argument(
        "--metadata-only",
        action="store_true",
        help="only rewrite STEM.json for an existing STEM.onnx (after editing the ROI)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.suffix == ".onnx":
        out = out.with_suffix("")
    name = args.name or out.name
    if args.metadata_only:
        onnx_path = out.with_suffix(".onnx")
        if not onnx_path.is_file():
            raise ModelError(f"--metadata-only needs an existing model, {onnx_path} is missing")
        write_json(onnx_path.with_suffix(".json"), model_metadata(onnx_path, name, args.sigma))
        return 0
    config = replace(
        TrainConfig(sigma=args.sigma, name=name),
        train_size=args.train_size,
        eval_size=args.eval_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_lr=args.max_lr,
        torch_seed=args.seed,
        threads=args.threads,
        init_from=args.init_from,
        clean_fraction=args.clean_fraction,
    )
    record = run(config, out, args.save_checkpoint)
    _log(f"done in {record['total_s']:.0f} s: {record['evaluation']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
