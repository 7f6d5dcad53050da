"""The GPU issue's benchmark, one command for any provider: ``bench --device`` or
``python -m robust_monitor.tools.bench_device --provider cuda --out FILE``.

On the reference models (``reference_models.py``, random weights: throughput does not depend on
them) it measures, in one run on one provider:

1. smoothing-graph against bare-model throughput (``bench.bench_throughput``) for the
   CIFAR-size ResNet-110 (32x32) and ResNet-18 (224x224); target ratio >= 0.9;
2. CERTIFY of one 32x32 frame with ResNet-110 and n = 100,000 estimation samples (n0 = 100);
   target <= 1 s;
3. per-frame latency of ResNet-18 at n = 1,000 samples per frame (n0 = 0: the clean prediction
   selects); target p99 <= 33 ms;
4. where the smoothing graph's nodes ran (``placement.py``): none should be off the provider.

The JSON names the machine (CPU, GPU name and driver from ``nvidia-smi`` when there is one,
onnxruntime, the providers the sessions really got) and the command that produced it, so a
committed result can be read and redone. It imports neither rclpy nor the ROS layer: the
device machines run it from a bare Python.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from robust_monitor.core.certify.engine import SmoothingEngine
from robust_monitor.core.certify.placement import profile_placement
from robust_monitor.tools import reference_models
from robust_monitor.tools.bench import bench_throughput, machine_info

TARGETS = {
    "ratio_smoothing_over_bare_min": 0.9,
    "resnet110_certify_s_max": 1.0,
    "resnet18_p99_ms_max": 33.0,
}
SIGMA = 0.25


def _progress(message: str) -> None:
    print(f"[bench-device] {message}", file=sys.stderr, flush=True)


def gpu_info() -> list[dict[str, str]]:
    """Name, driver and memory of each GPU ``nvidia-smi`` lists ([] when there is none)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    query = "--query-gpu=name,driver_version,memory.total"
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_device(
    provider: str = "auto",
    *,
    precision: str = "fp32",
    cifar_depth: int = 110,
    imagenet_size: int = 224,
    certify_n: int = 100_000,
    certify_batch: int = 10_000,
    certify_repeats: int = 3,
    latency_n: int = 1000,
    latency_frames: int = 50,
    latency_batch: int | None = None,
    throughput_samples: int = 4096,
    rounds: int = 3,
    max_batch: int | None = None,
    seed: int | None = None,
    folder: Path | None = None,
) -> dict[str, Any]:
    """Run the four measurements of the module docstring; return the report (a dict for JSON).

    The defaults are the GPU issue's sizes; smaller ones (``certify_n``, ``latency_frames``,
    ``cifar_depth``, ``imagenet_size``) make a quick check or a CPU run that ends in minutes.
    """
    with tempfile.TemporaryDirectory(prefix="rm_device_") as tmp:
        where = Path(folder) if folder is not None else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        _progress(f"building ResNet-{cifar_depth} (32x32) and ResNet-18 ({imagenet_size}px)")
        cifar = reference_models.resnet_cifar(cifar_depth)
        imagenet = reference_models.resnet18(input_size=imagenet_size)
        cifar_path = reference_models.save(cifar, where / f"resnet{cifar_depth}_cifar.onnx")
        imagenet_path = reference_models.save(imagenet, where / "resnet18.onnx")
        models = {
            "resnet_cifar": {
                "depth": cifar_depth,
                "input": [3, 32, 32],
                "parameters": reference_models.parameter_count(cifar),
            },
            "resnet18": {
                "input": [3, imagenet_size, imagenet_size],
                "parameters": reference_models.parameter_count(imagenet),
            },
        }
        throughput: dict[str, Any] = {}
        placement: dict[str, Any] = {}
        for name, path in (("resnet_cifar", cifar_path), ("resnet18", imagenet_path)):
            _progress(f"{name}: throughput, smoothing graph against the bare model")
            t = bench_throughput(
                path, SIGMA, provider, 0, rounds, throughput_samples, seed, precision, max_batch
            )
            throughput[name] = {
                key: t[key]
                for key in (
                    "provider",
                    "providers",
                    "precision",
                    "noise",
                    "batch",
                    "samples_per_s",
                    "ratio_smoothing_over_bare",
                    "ratio_smoothing_over_noise_bound",
                )
            }
            placement[name] = profile_placement(path, SIGMA, providers=provider, num=32).report()

        _progress(f"resnet_cifar: CERTIFY with n0 = 100, n = {certify_n:,}")
        engine = SmoothingEngine(
            cifar_path,
            SIGMA,
            batch_size=certify_batch,
            providers=provider,
            seed=seed,
            precision=precision,
        )
        engine.warmup()
        rng = np.random.default_rng(0)
        seconds = []
        radius = 0.0
        for _ in range(certify_repeats):
            frame = rng.random((3, 32, 32), dtype=np.float32)
            began = time.perf_counter()
            result = engine.certify(frame, n0=100, n=certify_n, alpha=0.001)
            seconds.append(time.perf_counter() - began)
            radius = result.certificate.radius
        certify_median_s = statistics.median(seconds)
        certify = {
            "provider": engine.provider,
            "n0": 100,
            "n": certify_n,
            "batch": certify_batch,
            "repeats": certify_repeats,
            "seconds": [round(s, 3) for s in seconds],
            "seconds_median": round(certify_median_s, 3),
            "samples_per_s": round((100 + certify_n) / certify_median_s, 1),
            "last_radius": round(radius, 4),
        }

        _progress(f"resnet18: latency at n = {latency_n} over {latency_frames} frames")
        engine = SmoothingEngine(
            imagenet_path,
            SIGMA,
            batch_size=latency_batch or latency_n,
            providers=provider,
            seed=seed,
            precision=precision,
        )
        engine.warmup()
        c, h, w = engine.spec.input_shape
        times = []
        for _ in range(latency_frames):
            frame = rng.random((c, h, w), dtype=np.float32)
            times.append(engine.certify(frame, n0=0, n=latency_n).certificate.latency_ms)
        latency_p99_ms = _percentile(times, 99)
        latency = {
            "provider": engine.provider,
            "n0": 0,
            "n": latency_n,
            "batch": latency_batch or latency_n,
            "frames": latency_frames,
            "p50_ms": round(_percentile(times, 50), 2),
            "p99_ms": round(latency_p99_ms, 2),
            "max_ms": round(max(times), 2),
        }

    ratios = [throughput[k]["ratio_smoothing_over_bare"] for k in throughput]
    full_size = cifar_depth == 110 and imagenet_size == 224 and certify_n == 100_000
    return {
        "command": " ".join(sys.argv) if sys.argv else "bench_device",
        "machine": {**machine_info(), "gpus": gpu_info()},
        "provider_requested": provider,
        "precision": precision,
        "models": models,
        "throughput": throughput,
        "certify_resnet_cifar": certify,
        "latency_resnet18": latency,
        "placement": placement,
        "targets": TARGETS,
        "targets_met": {
            "ratio_smoothing_over_bare_min": min(ratios)
            >= TARGETS["ratio_smoothing_over_bare_min"],
            "resnet110_certify_s_max": full_size
            and certify_median_s <= TARGETS["resnet110_certify_s_max"],
            "resnet18_p99_ms_max": imagenet_size == 224
            and latency_n == 1000
            and latency_p99_ms <= TARGETS["resnet18_p99_ms_max"],
            "no_node_off_provider": all(not p["off_provider"] for p in placement.values()),
        },
        "full_size": full_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m robust_monitor.tools.bench_device", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--provider", default="auto", help="auto | cpu | cuda | tensorrt")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("--certify-n", type=int, default=100_000, help="ResNet-110 CERTIFY n")
    parser.add_argument("--certify-batch", type=int, default=10_000, help="samples per run")
    parser.add_argument("--certify-repeats", type=int, default=3)
    parser.add_argument("--latency-frames", type=int, default=50, help="ResNet-18 frames")
    parser.add_argument(
        "--latency-batch", type=int, default=None, help="ResNet-18 samples per run (default: n)"
    )
    parser.add_argument("--samples", type=int, default=4096, help="throughput samples per round")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument(
        "--max-batch", type=int, default=None, help="largest throughput batch (memory)"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here as well")
    args = parser.parse_args(argv)
    report = bench_device(
        args.provider,
        precision=args.precision,
        certify_n=args.certify_n,
        certify_batch=args.certify_batch,
        certify_repeats=args.certify_repeats,
        latency_frames=args.latency_frames,
        latency_batch=args.latency_batch,
        throughput_samples=args.samples,
        rounds=args.rounds,
        max_batch=args.max_batch,
        seed=args.seed,
    )
    shown = sys.argv[1:] if argv is None else argv
    report["command"] = " ".join(["python -m robust_monitor.tools.bench_device", *shown])
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
