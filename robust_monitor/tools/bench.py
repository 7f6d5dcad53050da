"""``robust-monitor bench``: measured speed, side by side in one run, as JSON.

This machine (and a vehicle computer) is noisy, so every comparison is made inside one run with
the contenders interleaved round by round, and the report gives medians and ratios:

- ``bare``: the classifier alone on batches of random frames, at the batch size where it is
  fastest on this machine (swept first) — the ceiling for any smoothing implementation;
- ``smoothing``: the in-graph engine (noise, inference and counting in one onnxruntime graph);
- ``host_reference``: Cohen-style sampling (numpy noise on the host, bare model, Python counting);
- ``noise_only``: the smoothing graph's noise generation alone (same ops, same provider).

Where the smoothing graph falls short of the bare model, ``noise_bound`` says why: a graph that
must make the noise and run the model cannot beat ``1 / (1 / bare + 1 / noise_only)`` samples
per second on a device that does one after the other (a CPU; a GPU overlaps far more), so
``ratio_smoothing_over_noise_bound`` near 1 means the graph itself adds nothing but the noise.

On the CPU provider, ``core_time`` asks whether any schedule could do better. It measures, in
rounds of their own, the bare model, the noise graph and the uniform generator alone (the
``RandomUniformLike`` draws Box-Muller transforms: ``build_uniform_draw_graph``), each on one
thread, and the bare model and the engine as ``cores`` single-thread copies run side by side (a
layout the engine does not use; ``best_bare`` is the faster of it and ``bare``). Work cannot
take fewer core-seconds on several threads than on one, so with ``cores`` cores no graph that
runs the model and this noise exceeds ``cores / (1 / bare_1 + 1 / noise_1)`` samples per second,
and none that draws its uniforms from onnxruntime's generator exceeds ``cores / (1 / bare_1 + 1
/ generator_1)`` even if the Gaussian transform cost nothing. ``ceiling_any_schedule`` and
``ceiling_generator_only`` are those rates over ``best_bare``: upper bounds on smoothing/bare
with onnxruntime's stock CPU kernels, however the work is laid out.

Throughputs are noisy samples per second. Per-frame latency of CERTIFY (n0 + n samples) is
reported as p50/p99 at each requested n.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from robust_monitor import __version__
from robust_monitor.core.certify.engine import SmoothingEngine
from robust_monitor.core.certify.graph import (
    FRAME,
    NOISE_SUM,
    NUM_NOISY,
    build_noise_graph,
    build_uniform_draw_graph,
)
from robust_monitor.core.certify.precision import to_fp16
from robust_monitor.core.certify.reference import HostReferenceSmoother
from robust_monitor.core.errors import ConfigError
from robust_monitor.tools.certify_cmd import add_certification_args, add_precision_arg

BATCH_SWEEP = (32, 64, 128, 256, 512, 1024)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("bench", help="benchmarks with JSON output")
    add_certification_args(parser)
    add_precision_arg(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per contender")
    parser.add_argument("--samples", type=int, default=2048, help="noisy samples per round")
    parser.add_argument(
        "--latency-n",
        type=int,
        nargs="+",
        default=[100, 1000],
        help="n values for per-frame latency",
    )
    parser.add_argument("--latency-frames", type=int, default=30, help="frames per latency point")
    parser.add_argument(
        "--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all)"
    )
    parser.add_argument(
        "--arbiter",
        action="store_true",
        help="also measure the arbiter's reaction time over DDS on loopback (needs rclpy)",
    )
    parser.add_argument("--arbiter-samples", type=int, default=200)
    parser.add_argument("--no-certify", action="store_true", help="skip the certification benches")
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="also compare sequential and fixed-n certification on the sample drive",
    )
    parser.add_argument(
        "--r-required",
        type=float,
        default=None,
        help="--sequential: radius to certify (default: the arbiter policy's)",
    )
    parser.add_argument("--budget-ms", type=float, default=33.0, help="--sequential: budget")
    parser.add_argument("--seq-every", type=int, default=6, help="--sequential: every k-th frame")
    parser.add_argument("--seq-frames", type=int, default=150, help="--sequential: frames")
    parser.add_argument(
        "--seq-n0",
        type=int,
        default=0,
        help="--sequential: the sequential mode's selection samples (default 0: the clean "
        "prediction selects; the fixed mode keeps 64 votes, Cohen's CERTIFY)",
    )
    parser.add_argument(
        "--fuzz",
        action="store_true",
        help="also fuzz every input parser (images, model metadata, calibration; needs "
        "hypothesis, the test extra)",
    )
    parser.add_argument(
        "--fuzz-cases", type=int, default=10_000, help="--fuzz: generated inputs per parser"
    )
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="also measure fleet-replay throughput on the local pool at 1, 2 and all workers",
    )
    parser.add_argument(
        "--fleet-recordings", type=int, default=4, help="--fleet: generated recordings"
    )
    parser.add_argument(
        "--fleet-frames", type=int, default=60, help="--fleet: frames per recording"
    )
    parser.add_argument("--fleet-n0", type=int, default=16, help="--fleet: n0 per frame")
    parser.add_argument("--fleet-n", type=int, default=100, help="--fleet: n per frame")
    parser.add_argument(
        "--soak",
        action="store_true",
        help="run the soak: a camera through both node processes over DDS, RSS and latency drift",
    )
    parser.add_argument("--soak-minutes", type=float, default=10.0, help="--soak: duration")
    parser.add_argument("--soak-hz", type=float, default=30.0, help="--soak: camera rate")
    parser.add_argument(
        "--soak-warmup-s", type=float, default=60.0, help="--soak: left out of growth and drift"
    )
    parser.add_argument(
        "--soak-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--soak: a monitor parameter over the shipped configuration (repeatable)",
    )
    parser.add_argument(
        "--soak-plot", type=Path, default=None, help="--soak: write the RSS/latency plot here"
    )
    parser.set_defaults(run=run)


# The noise-only and uniform-draw contenders share one seed: the draw timed alone is the
# noise graph's own.
_GRAPH_SEED = 1234.0


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _rate(work: Callable[[], object], samples: int) -> float:
    start = time.perf_counter()
    work()
    return samples / (time.perf_counter() - start)


def _repeat(
    session: ort.InferenceSession, output: str, name: str, x: np.ndarray, reps: int
) -> None:
    for _ in range(reps):
        session.run([output], {name: x})


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [
                line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "robust_monitor": __version__,
        "platform": platform.platform(),
    }


def bench_throughput(
    model: Path,
    sigma: float | None,
    provider: str,
    threads: int,
    rounds: int,
    samples: int,
    seed: int | None,
    precision: str = "fp32",
    max_batch: int | None = None,
) -> dict[str, Any]:
    """``max_batch``: the largest batch the sweep tries (memory: a 224x224 ResNet-18 at batch
    1,024 needs more than 24 GiB on the CPU); None tries all of ``BATCH_SWEEP``."""
    engine = SmoothingEngine(
        model,
        sigma,
        providers=provider,
        seed=seed,
        intra_op_threads=threads,
        precision=precision,
    )
    spec = engine.spec
    c, h, w = spec.input_shape
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # The bare model at the same precision as the smoothing graph's classifier.
    bare_model = onnx.load(str(model))
    if precision == "fp16":
        bare_model = to_fp16(bare_model)
    bare = ort.InferenceSession(bare_model.SerializeToString(), options, providers=engine.providers)
    rng = np.random.default_rng(0)
    frame = rng.random((c, h, w), dtype=np.float32)

    _progress("sweeping the bare model's batch size")
    sweep: dict[int, float] = {}
    sizes = [b for b in BATCH_SWEEP if max_batch is None or b <= max_batch] or [BATCH_SWEEP[0]]
    for batch in sizes:
        x = rng.random((batch, c, h, w), dtype=np.float32)
        bare.run([spec.logits_name], {spec.input_name: x})
        reps = max(1, samples // batch)
        start = time.perf_counter()
        _repeat(bare, spec.logits_name, spec.input_name, x, reps)
        sweep[batch] = reps * batch / (time.perf_counter() - start)
    best = max(sweep, key=lambda b: sweep[b])
    _progress(f"bare model fastest at batch {best}: {sweep[best]:.0f} samples/s")
    reference = HostReferenceSmoother(model, engine.sigma, seed=seed, intra_op_threads=threads)
    x_best = rng.random((best, c, h, w), dtype=np.float32)
    reps = max(1, samples // best)
    n_samples = reps * best
    noise_graph = build_noise_graph((c, h, w), engine.sigma, _GRAPH_SEED, engine.noise)
    noise_only = ort.InferenceSession(
        noise_graph.SerializeToString(), options, providers=engine.providers
    )
    noise_feed: dict[str, np.ndarray] = {FRAME: frame, NUM_NOISY: np.array([best], np.int64)}
    engine.sample(frame, best, batch_size=best)  # warm-up at the measured shape
    reference.sample_counts(frame, best, best)
    noise_only.run([NOISE_SUM], noise_feed)
    results: dict[str, list[float]] = {
        "bare": [],
        "smoothing": [],
        "host_reference": [],
        "noise_only": [],
    }
    for r in range(rounds):
        _progress(f"throughput round {r + 1}/{rounds}")
        results["bare"].append(
            _rate(
                lambda: [
                    bare.run([spec.logits_name], {spec.input_name: x_best}) for _ in range(reps)
                ],
                n_samples,
            )
        )
        results["smoothing"].append(
            _rate(lambda: engine.sample(frame, n_samples, batch_size=best), n_samples)
        )
        results["host_reference"].append(
            _rate(lambda: reference.sample_counts(frame, n_samples, best), n_samples)
        )
        results["noise_only"].append(
            _rate(lambda: [noise_only.run([NOISE_SUM], noise_feed) for _ in range(reps)], n_samples)
        )
    median = {k: statistics.median(v) for k, v in results.items()}
    noise_bound = 1.0 / (1.0 / median["bare"] + 1.0 / median["noise_only"])
    core_time = None
    if engine.provider == "cpu":
        core_time = _core_time_ceiling(
            model,
            bare_model,
            noise_graph,
            engine,
            frame,
            x_best,
            noise_feed,
            reps,
            rounds,
            threads,
            median["bare"],
            seed,
        )
    return {
        "provider": engine.provider,
        "providers": engine.providers,
        "precision": engine.precision,
        "noise": engine.noise,
        # The CPU generator's period caps one frame's samples (None: no cap on this provider).
        "max_samples_per_frame": engine.max_samples_per_frame,
        "batch": best,
        "batch_sweep_samples_per_s": {str(k): round(v, 1) for k, v in sweep.items()},
        "samples_per_round": n_samples,
        "rounds": rounds,
        "samples_per_s": {k: round(v, 1) for k, v in median.items()},
        "samples_per_s_all_rounds": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "ratio_smoothing_over_bare": round(median["smoothing"] / median["bare"], 3),
        "ratio_smoothing_over_host_reference": round(
            median["smoothing"] / median["host_reference"], 3
        ),
        "noise_bound_samples_per_s": round(noise_bound, 1),
        "ratio_smoothing_over_noise_bound": round(median["smoothing"] / noise_bound, 3),
        "target_ratio_smoothing_over_bare": 0.9,
        "core_time": core_time,
    }


def _core_time_ceiling(
    model: Path,
    bare_model: onnx.ModelProto,
    noise_graph: onnx.ModelProto,
    engine: SmoothingEngine,
    frame: np.ndarray,
    x_best: np.ndarray,
    noise_feed: dict[str, np.ndarray],
    reps: int,
    rounds: int,
    threads: int,
    bare_rate: float,
    seed: int | None,
) -> dict[str, Any]:
    """Single-thread rates of the bare model, the noise graph and (Box-Muller noise) the uniform
    generator alone; the bare model and the smoothing engine as ``cores`` single-thread copies
    run side by side; and the ceilings on smoothing/bare these imply for any schedule on
    ``cores`` cores (module docstring)."""
    spec = engine.spec
    cores = threads if threads > 0 else len(os.sched_getaffinity(0))
    one = ort.SessionOptions()
    one.intra_op_num_threads = 1
    one.inter_op_num_threads = 1
    one.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    batch = len(x_best)
    n_samples = reps * batch

    def bare_session() -> ort.InferenceSession:
        return ort.InferenceSession(bare_model.SerializeToString(), one, providers=cpu)

    bare_1 = bare_session()
    noise_1 = ort.InferenceSession(noise_graph.SerializeToString(), one, providers=cpu)
    work: dict[str, Callable[[], object]] = {
        "bare": lambda: _repeat(bare_1, spec.logits_name, spec.input_name, x_best, reps),
        "noise_only": lambda: [noise_1.run([NOISE_SUM], noise_feed) for _ in range(reps)],
    }
    if engine.noise == "box_muller":
        gen_1 = ort.InferenceSession(
            build_uniform_draw_graph(spec.input_shape, _GRAPH_SEED).SerializeToString(),
            one,
            providers=cpu,
        )
        work["generator_only"] = lambda: [gen_1.run([NOISE_SUM], noise_feed) for _ in range(reps)]
    # The same work split over `cores` single-thread copies, one per Python thread
    # (onnxruntime releases the GIL while it runs): each copy does a share of the samples.
    bare_copies = [bare_session() for _ in range(cores)]
    engines = [
        SmoothingEngine(
            model,
            engine.sigma,
            providers="cpu",
            seed=None if seed is None else seed + 1 + k,
            intra_op_threads=1,
            precision=engine.precision,
        )
        for k in range(cores)
    ]
    share = max(1, reps // cores)
    parallel_samples = share * batch * cores
    work_parallel: dict[str, list[Callable[[], object]]] = {
        "bare": [
            functools.partial(_repeat, s, spec.logits_name, spec.input_name, x_best, share)
            for s in bare_copies
        ],
        "smoothing": [
            functools.partial(e.sample, frame, share * batch, batch_size=batch) for e in engines
        ],
    }
    for run in work.values():  # warm-up at the measured shapes
        run()
    for e in engines:
        e.sample(frame, batch, batch_size=batch)
    rates: dict[str, list[float]] = {k: [] for k in work}
    parallel: dict[str, list[float]] = {k: [] for k in work_parallel}
    for r in range(rounds):
        _progress(f"single-thread round {r + 1}/{rounds}")
        for key, run in work.items():
            rates[key].append(_rate(run, n_samples))
        for key, runs in work_parallel.items():
            parallel[key].append(_rate(functools.partial(_side_by_side, runs), parallel_samples))
    median = {k: statistics.median(v) for k, v in rates.items()}
    median_parallel = {k: statistics.median(v) for k, v in parallel.items()}
    best_bare = max(bare_rate, median_parallel["bare"])

    def ceiling(other: str) -> float:
        rate = cores / (1.0 / median["bare"] + 1.0 / median[other])
        return round(rate / best_bare, 3)

    return {
        "cores": cores,
        "samples_per_s_one_thread": {k: round(v, 1) for k, v in median.items()},
        "samples_per_s_single_thread_copies": {k: round(v, 1) for k, v in median_parallel.items()},
        "best_bare_samples_per_s": round(best_bare, 1),
        "ratio_copies_smoothing_over_best_bare": round(median_parallel["smoothing"] / best_bare, 3),
        "ceiling_any_schedule": ceiling("noise_only"),
        "ceiling_generator_only": (
            ceiling("generator_only") if "generator_only" in median else None
        ),
    }


def _side_by_side(runs: list[Callable[[], object]]) -> None:
    workers = [threading.Thread(target=run) for run in runs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def bench_latency(
    model: Path,
    sigma: float | None,
    provider: str,
    threads: int,
    n0: int,
    ns: list[int],
    frames: int,
    batch: int,
    alpha: float,
    seed: int | None,
    precision: str = "fp32",
) -> dict[str, Any]:
    engine = SmoothingEngine(
        model,
        sigma,
        providers=provider,
        seed=seed,
        batch_size=batch,
        intra_op_threads=threads,
        precision=precision,
    )
    engine.warmup()
    c, h, w = engine.spec.input_shape
    rng = np.random.default_rng(1)
    out: dict[str, Any] = {}
    for n in ns:
        _progress(f"latency at n0={n0}, n={n} over {frames} frames")
        times = []
        for _ in range(frames):
            frame = rng.random((c, h, w), dtype=np.float32)
            times.append(engine.certify(frame, n0=n0, n=n, alpha=alpha).certificate.latency_ms)
        out[f"n{n}"] = {
            "n0": n0,
            "n": n,
            "frames": frames,
            "p50_ms": round(float(np.percentile(times, 50)), 2),
            "p99_ms": round(float(np.percentile(times, 99)), 2),
            "mean_ms": round(float(np.mean(times)), 2),
        }
    return out


def _soak_value(text: str) -> Any:
    """``--soak-param`` values are typed as ROS 2 parameters are: int, float, bool, else str."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _run_soak(args: argparse.Namespace) -> dict[str, Any]:
    from robust_monitor.tools.bench_soak import SoakConfig, run_soak, write_soak_plot

    params: dict[str, Any] = {}
    for item in args.soak_param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--soak-param takes KEY=VALUE, got {item!r}")
        params[key] = _soak_value(value)
    duration = args.soak_minutes * 60.0
    config = SoakConfig(
        duration_s=duration,
        rate_hz=args.soak_hz,
        warmup_s=min(args.soak_warmup_s, duration / 2),
        window_s=min(60.0, duration / 4),
        monitor_params=params,
    )
    soak = run_soak(config, progress=_progress)
    plot = args.soak_plot
    if plot is None and args.out is not None:
        plot = args.out.with_suffix(".soak.png")
    if plot is not None:
        soak["plot"] = str(write_soak_plot(soak, plot))
    return soak


def run(args: argparse.Namespace) -> int:
    fuzz: Callable[..., dict[str, Any]] | None = None
    if args.fuzz:  # checked first: a missing extra must not cost the other benches' time
        if args.fuzz_cases < 1:
            print(f"--fuzz-cases must be >= 1, got {args.fuzz_cases}", file=sys.stderr)
            return 2
        try:
            from robust_monitor.tools.bench_fuzz import bench_fuzz as fuzz
        except ImportError as exc:
            if not (exc.name or "").startswith("hypothesis"):
                raise
            print(
                "bench --fuzz needs hypothesis, which comes with the test extra: "
                "pip install -e '.[test]'",
                file=sys.stderr,
            )
            return 2
    report: dict[str, Any] = {
        "command": " ".join(["robust-monitor", *sys.argv[1:]])
        if sys.argv
        else "robust-monitor bench",
        "machine": machine_info(),
        "model": str(args.model),
    }
    if not args.no_certify:
        report["certify_throughput"] = bench_throughput(
            args.model,
            args.sigma,
            args.provider,
            args.threads,
            args.rounds,
            args.samples,
            args.seed,
            args.precision,
        )
        from robust_monitor.core.certify.placement import profile_placement

        placement = profile_placement(args.model, args.sigma, providers=args.provider)
        # Every node of the smoothing graph should run on the session's provider: on a GPU,
        # nothing but the frame goes in and nothing but counts come out.
        report["placement"] = placement.report()
        report["certify_latency"] = bench_latency(
            args.model,
            args.sigma,
            args.provider,
            args.threads,
            args.n0,
            args.latency_n,
            args.latency_frames,
            args.batch,
            args.alpha,
            args.seed,
            args.precision,
        )
    if args.sequential:
        from robust_monitor.tools.bench_sequential import bench_sequential

        report["sequential_vs_fixed"] = bench_sequential(
            args.model,
            args.sigma,
            args.provider,
            every=args.seq_every,
            limit=args.seq_frames,
            seq_n0=args.seq_n0,
            alpha=args.alpha,
            r_required=args.r_required,
            budget_ms=args.budget_ms,
            seed=args.seed,
            threads=args.threads,
        )
    if fuzz is not None:
        report["fuzz"] = fuzz(args.fuzz_cases, progress=_progress)
    if args.soak:
        report["soak"] = _run_soak(args)
    if args.fleet:
        from robust_monitor.tools.bench_fleet import bench_fleet

        report["fleet"] = bench_fleet(
            args.fleet_recordings,
            args.fleet_frames,
            n0=args.fleet_n0,
            n=args.fleet_n,
            seed=args.seed if args.seed is not None else 0,
            progress=_progress,
        )
    if args.arbiter:
        from robust_monitor.tools.bench_arbiter import bench_reaction

        _progress(f"arbiter reaction time over DDS, {args.arbiter_samples} samples")
        report["arbiter_reaction"] = bench_reaction(args.arbiter_samples)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(text)
    elif "certify_throughput" in report:
        t = report["certify_throughput"]
        print(f"provider {t['provider']}, batch {t['batch']}: samples/s {t['samples_per_s']}")
        print(
            f"smoothing/bare {t['ratio_smoothing_over_bare']}, "
            f"smoothing/host {t['ratio_smoothing_over_host_reference']}, "
            f"smoothing/noise bound {t['ratio_smoothing_over_noise_bound']}"
        )
        if t["core_time"] is not None:
            ct = t["core_time"]
            print(
                f"ceilings on smoothing/bare over {ct['cores']} cores, any schedule: "
                f"this noise {ct['ceiling_any_schedule']}, "
                f"generator alone {ct['ceiling_generator_only']}"
            )
        for key, value in report["certify_latency"].items():
            print(f"latency {key}: p50 {value['p50_ms']} ms, p99 {value['p99_ms']} ms")
        where = report["placement"]
        off = where["off_provider"]
        print(
            f"placement: {where['nodes_per_provider']}; "
            + (f"{len(off)} node(s) off {where['provider']}: {off}" if off else "none off it")
        )
    if "soak" in report and not args.json:
        soak = report["soak"]
        lat, frames = soak["latency_ms"], soak["frames"]
        print(
            f"soak {soak['config']['duration_s']:g} s at {soak['config']['rate_hz']:g} Hz: "
            f"RSS growth monitor {soak['rss']['monitor']['growth_pct']}%, arbiter "
            f"{soak['rss']['arbiter']['growth_pct']}%; latency p50 {lat['p50']} ms, p99 "
            f"{lat['p99']} ms, p99 drift {lat['p99_drift_ms']} ms; {frames['monitor_dropped']} "
            f"of {frames['monitor_received']} frames dropped (newest-frame policy), "
            f"{frames['lost_in_transport']} lost"
        )
    if "fleet" in report and not args.json:
        f = report["fleet"]
        for k, entry in f["workers"].items():
            print(
                f"fleet {k} worker(s): {entry['frames_per_s']} frames/s, "
                f"scaling efficiency {entry['scaling_efficiency']}"
            )
    if "fuzz" in report and not args.json:
        for name, p in report["fuzz"]["parsers"].items():
            print(
                f"fuzz {name}: {p.get('cases', 0)} cases, {p.get('ok', 0)} ok, "
                f"{p.get('clean_errors', 0)} clean errors, {p.get('unexpected', 0)} unexpected, "
                f"max {p.get('max_case_ms', 0)} ms/case, "
                f"peak RSS +{p.get('peak_rss_growth_kib', 0)} KiB"
                + (f" ({p['skipped']})" if p.get("skipped") else "")
            )
            for failure in p.get("first_unexpected", []):
                print(f"  unexpected: {failure}")
    return 0
