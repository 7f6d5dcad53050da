"""``robust-monitor sim SCENARIO.yaml``: drive a scenario in closed loop and judge the monitor.

    robust-monitor sim SCENARIO.yaml [--out DIR] [--seed K] [--params-file F] [--no-plot]
                                     [--mode fixed|sequential] [--r-required R]
                                     [--budget-ms MS] [--max-n N] [--ros]

A simulated car (``robust_monitor.sim``) drives the scenario's road; its camera frames, with the
scheduled corruptions and faults, go through ``FramePipeline.process`` and ``Arbiter.step`` on
the simulation clock, the car's speed follows the arbiter's limit and the operator model acts
through ``Arbiter.request``. The scenario format and its expectations are documented in
``robust_monitor/sim/scenario.py``. With ``--ros`` the same camera, car and operator drive the
real monitor and arbiter nodes as processes over loopback DDS instead, in lock step on
``/clock`` (``sim_ros.py``); the expectations, metrics and report are the same.

Configuration: ``--params-file`` is a ROS 2 parameter file read exactly as ``replay`` reads it
(default: the package's ``config/robust_monitor.yaml``): the arbiter policy, ``publish_rate_hz``
(the tick between frames) and the monitor settings. The scenario's ``certify`` section (default
n0 = 16, n = 100, alpha = 0.001: about 5x cheaper than the node's n = 500; the radius cap at
n = 100 is 0.375 at sigma 0.25, above the 0.30 a frame needs to count as healthy) is applied over
the file, and the certification noise is seeded with the scenario's seed (``--seed`` overrides
it, and the scene's): a run is deterministic.

Certification mode: the file's ``certify_mode``, ``r_required``, ``budget_ms`` and ``max_n``
(as ``replay`` reads them), overridden by ``--mode``, ``--r-required``, ``--budget-ms`` and
``--max-n``. In sequential mode the scenario's ``n`` is not used (``max_n`` caps the samples)
and an unset ``r_required`` is the policy's ``r_recover``. Without a budget a sequential run is
as deterministic as a fixed one; a budget is wall time on this machine (certification takes no
simulated time), so a budgeted run depends on the machine's speed. The summary's
``certification`` section gives the samples per frame and the decisions (as in ``replay``).

Output (``--out DIR``, default ``runs/sim_<scenario name>``), written with ``report.py``'s
writers: ``timeline.csv`` (one row per certified frame), ``timeline.png`` (effects shaded) and
``summary.json`` (expectations, Nav2-style metrics from ``core/arbiter/metrics.py``, distance
driven while degraded, state times, operator actions, configuration).

Exit status: 0 when every expectation holds, 1 when one fails, 2 for a bad scenario or
configuration (``ConfigError``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from robust_monitor import __version__
from robust_monitor.core.arbiter import (
    ArbiterState,
    Decision,
    scenario_metrics,
    timeline_from_decisions,
)
from robust_monitor.core.certify.model import sha256_file
from robust_monitor.core.ood.calibration import Calibration
from robust_monitor.core.pipeline import FramePipeline, default_calibration_path
from robust_monitor.sim import ExpectationResult, Scenario, SimRun, evaluate, load_scenario
from robust_monitor.sim import simulate as simulate_loop
from robust_monitor.tools import report
from robust_monitor.tools.certify_cmd import add_sequential_args
from robust_monitor.tools.replay import (
    ReplayConfig,
    certification_summary,
    default_params_file,
    load_config,
    sequential_overrides,
)
from robust_monitor.tools.report import Episode, FrameRecord

SUMMARY_FORMAT = "robust_monitor.sim/1"


@dataclasses.dataclass(frozen=True, slots=True)
class SimResult:
    """One simulated scenario: the run, the verdicts and the summary."""

    run: SimRun
    config: ReplayConfig
    expectations: tuple[ExpectationResult, ...]
    summary: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.expectations)


def sim_config(
    scenario: Scenario,
    params_file: Path | None,
    seed: int,
    overrides: Mapping[str, Any] | None = None,
) -> ReplayConfig:
    """The parameter file (as ``replay`` reads it) with the scenario's certification budget,
    then ``overrides`` (monitor parameters such as ``certify_mode``, ``budget_ms``) over both.

    Fixed mode runs its ``n`` samples in one batch; sequential mode keeps the file's
    ``batch_size`` (the most samples one look draws).
    """
    return load_config(
        params_file, overrides=monitor_overrides(scenario, params_file, overrides), seed=seed
    )


def monitor_overrides(
    scenario: Scenario, params_file: Path | None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The monitor parameters a run sets over the file: the scenario's certification budget,
    then ``overrides`` (the same keys go to the node with ``--ros``)."""
    c = scenario.certify
    given = dict(overrides or {})
    sequential = load_config(params_file, overrides=given).certify.sequential
    scenario_values: dict[str, Any] = {"n0": c.n0, "n": c.n, "alpha": c.alpha}
    if not sequential:
        scenario_values["batch_size"] = max(c.n0, c.n)
    else:
        # A simulation is judged on simulated time, and a seeded run must give the same
        # timeline on any machine: no wall-clock deadline (the shipped file's 100 ms budget
        # is for a vehicle). An explicit budget_ms override still applies.
        scenario_values["budget_ms"] = 0.0
    return {**scenario_values, **given}


def run_scenario(
    scenario: Scenario | str | Path,
    *,
    params_file: Path | None = None,
    seed: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SimResult:
    """Simulate one scenario in-process and judge it (no files written).

    ``overrides``: monitor parameters applied over the file and the scenario's certify section
    (e.g. ``{"certify_mode": "sequential", "budget_ms": 33.0}``).
    """
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    if seed is not None:
        sc = dataclasses.replace(sc, seed=seed)
    config = sim_config(sc, params_file, sc.seed, overrides)
    pipeline = FramePipeline(
        config.model_path, config.certify, config.roi, calibration=_calibration(config.model_path)
    )
    pipeline.warmup()
    run = simulate_loop(sc, pipeline, config.policy, config.tick_hz)
    results = tuple(evaluate(run, config.policy))
    summary = build_summary(run, config, results, pipeline)
    return SimResult(run, config, results, summary)


def run_scenario_ros(
    scenario: Scenario | str | Path,
    *,
    params_file: Path | None = None,
    seed: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SimResult:
    """Simulate one scenario over real DDS against the node processes (``sim_ros.py``) and
    judge it with the same expectations, metrics and summary as in-process."""
    from robust_monitor.tools.sim_ros import simulate_ros

    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    if seed is not None:
        sc = dataclasses.replace(sc, seed=seed)
    monitor = monitor_overrides(sc, params_file, overrides)
    config = load_config(params_file, overrides=monitor, seed=sc.seed)
    # The same settings built here first: a bad configuration fails before any process starts,
    # and the summary describes the model and certification the node runs.
    pipeline = FramePipeline(
        config.model_path, config.certify, config.roi, calibration=_calibration(config.model_path)
    )
    run = simulate_ros(
        sc,
        params_file=params_file if params_file is not None else default_params_file(),
        monitor_overrides=monitor,
        policy=config.policy,
        tick_hz=config.tick_hz,
        progress=progress,
    )
    results = tuple(evaluate(run, config.policy))
    summary = build_summary(run, config, results, pipeline, transport="ros")
    summary["configuration"]["certify"]["seed"] = None  # the node draws its noise from the OS
    return SimResult(run, config, results, summary)


def _calibration(model_path: Path) -> Calibration | None:
    """The calibration beside the model (as ``calibration="auto"``), parsed once per file.

    The shipped calibration takes seconds to parse (PyYAML's pure-Python loader); a suite of
    scenarios reads it once. The pipeline still checks it against the model's sha256.
    """
    path = default_calibration_path(model_path)
    if not path.is_file():
        return None
    return _load_calibration(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_calibration(path: str, _mtime_ns: int) -> Calibration:
    return Calibration.load(Path(path))


def _episodes(scenario: Scenario) -> list[Episode]:
    return [Episode(e.name, e.kind, e.start_s, e.end_s) for e in scenario.effects]


def _hazards(scenario: Scenario) -> list[tuple[float, float]]:
    """Effect intervals, overlapping ones merged (the metrics need disjoint hazards)."""
    merged: list[list[float]] = []
    for start, end in sorted((e.start_s, e.end_s) for e in scenario.effects):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _state_times(steps: list[Decision], end_s: float) -> dict[str, float]:
    out = {s.value: 0.0 for s in ArbiterState}
    for i, here in enumerate(steps):
        until = steps[i + 1].stamp_s if i + 1 < len(steps) else end_s
        out[here.state.value] += max(0.0, until - here.stamp_s)
    return out


def build_summary(
    run: SimRun,
    config: ReplayConfig,
    results: tuple[ExpectationResult, ...],
    pipeline: FramePipeline,
    transport: str = "in-process",
) -> dict[str, Any]:
    """The figures of one simulation (``summary.json``); ``transport``: ``in-process`` or
    ``ros`` (``--ros``: the nodes over DDS)."""
    sc, policy = run.scenario, config.policy
    speeds = [s.vehicle_speed_mps for s in run.samples]
    timeline = timeline_from_decisions(run.steps, speeds)
    m = scenario_metrics(
        timeline,
        _hazards(sc),
        nominal_speed_mps=policy.nominal_speed_mps,
        release_times_s=run.releases_s,
        stop_tolerance_mps=0.01,
        grace_s=sc.grace_s,
    )
    transitions = [
        {"t_s": b.stamp_s, "from": a.state.value, "to": b.state.value, "reasons": list(b.reasons)}
        for a, b in itertools.pairwise(run.steps)
        if a.state is not b.state
    ]
    certs = [f.result.certificate for f in run.frames]
    flagged = [f for f in run.frames if f.result.verdict is not None and f.result.verdict.level > 0]
    engine = pipeline.engine
    params = config.params_file
    return {
        "format": SUMMARY_FORMAT,
        "scenario": {
            "name": sc.name,
            "path": None if sc.path is None else str(sc.path),
            "description": sc.description,
            "seed": sc.seed,
            "duration_s": sc.duration_s,
            "frame_rate_hz": sc.frame_rate_hz,
            "effects": [
                {
                    "name": e.name,
                    "type": e.type,
                    "start_s": e.start_s,
                    "end_s": e.end_s,
                    "severity": None if e.severity is None else dataclasses.asdict(e.severity),
                }
                for e in sc.effects
            ],
            "operator": dataclasses.asdict(sc.operator),
            "vehicle": dataclasses.asdict(sc.vehicle),
        },
        "passed": all(r.passed for r in results),
        "expectations": [dataclasses.asdict(r) for r in results],
        "metrics": {
            "hazards": [dataclasses.asdict(h) for h in m.hazards],
            "counted_s": m.counted_s,
            "false_stop_pct": m.false_stop_pct,
            "false_limit_pct": m.false_limit_pct,
            "distance_m": run.distance_m,
            "distance_degraded_m": run.distance_degraded_m,
            "note": "hazards = the scenario's effects (overlaps merged); definitions in "
            "robust_monitor/core/arbiter/metrics.py; distance_degraded_m counts DEGRADED, "
            "HANDOVER_REQUESTED and MINIMAL_RISK",
        },
        "certification": {
            **certification_summary(frame_records(run)),
            **(
                {
                    "budget_ms": config.certify.budget_ms,
                    "quickest_certify_ms": pipeline.quickest_certify_ms,
                }
                if config.certify.sequential
                else {}
            ),
        },
        "frames": {
            "certified": len(run.frames),
            "dropped": run.dropped_frames,
            "abstained": sum(c.abstained for c in certs),
            "ood_flagged": len(flagged),
        },
        "arbiter": {
            "time_in_state_s": _state_times(run.steps, sc.duration_s),
            "transitions": transitions,
            "final_state": run.steps[-1].state.value,
        },
        "operator": {
            "takeovers_s": run.takeovers_s,
            "releases_s": run.releases_s,
            "release_requests": run.release_requests,
        },
        "configuration": {
            "model": {"path": str(config.model_path), "sha256": engine.spec.sha256},
            "params_file": None
            if params is None
            else {"path": str(params), "sha256": sha256_file(params)},
            "certify": {
                "sigma": engine.sigma,
                "n0": config.certify.n0,
                "n": config.certify.n,
                "alpha": config.certify.alpha,
                "seed": config.certify.seed,
                "provider_used": engine.provider,
                "mode": config.certify.mode,
                "r_required": None
                if pipeline.sequential is None
                else pipeline.sequential.r_required,
                "budget_ms": config.certify.budget_ms if config.certify.sequential else None,
                "max_n": config.certify.max_n if config.certify.sequential else None,
            },
            "arbiter_policy": policy.as_dict(),
            "arbiter_policy_sha256": hashlib.sha256(
                yaml.safe_dump(policy.as_dict(), sort_keys=True).encode()
            ).hexdigest(),
            "tick_hz": config.tick_hz,
        },
        "transport": transport,
        "throughput": {
            "wall_s": run.wall_s,
            "clock": "simulated; evidence at frame stamps"
            if transport == "in-process"
            else "simulated /clock, lock step over loopback DDS (node noise unseeded)",
        },
        "software": {"robust_monitor": __version__, "python": sys.version.split()[0]},
        "outputs": [report.TIMELINE_FILE, report.SUMMARY_FILE, report.PLOT_FILE],
    }


def frame_records(run: SimRun) -> list[FrameRecord]:
    """The run's frames as the report's records (stamps are simulated seconds)."""
    return [
        FrameRecord(f.index, f.t_s, f.t_s, f.result, f.decision, f.pipeline_ms) for f in run.frames
    ]


def write_outputs(result: SimResult, out_dir: Path, plot: bool = True) -> Path:
    """Write the report folder atomically (built beside ``out_dir``, then renamed)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        records = frame_records(result.run)
        report.write_timeline(tmp / report.TIMELINE_FILE, records)
        summary = dict(result.summary)
        if plot:
            sc = result.run.scenario
            certify = result.config.certify
            budget = f"n {certify.n}" if not certify.sequential else "sequential"
            title = (
                f"sim {sc.name} (seed {sc.seed}): n0 {certify.n0}, "
                f"{budget}; {'PASS' if result.passed else 'FAIL'}"
            )
            report.write_plot(
                tmp / report.PLOT_FILE, records, result.run.steps, 0.0, _episodes(sc), title
            )
        else:
            summary["outputs"] = [o for o in summary["outputs"] if o != report.PLOT_FILE]
        report.write_summary(tmp / report.SUMMARY_FILE, summary)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def format_result(result: SimResult, out_dir: Path | None) -> str:
    """A few lines for people: each expectation, the metrics, where the report is."""
    s = result.summary
    lines = [f"scenario {s['scenario']['name']}: {'PASS' if result.passed else 'FAIL'}"]
    for e in result.expectations:
        lines.append(f"  [{'pass' if e.passed else 'FAIL'}] {e.description}: {e.observed}")
    met = s["metrics"]
    for h in met["hazards"]:
        lines.append(
            "  hazard [{:g}, {:g}) s: degrade {}, stop {}, standstill {}, resume {}".format(
                h["onset_s"],
                h["end_s"],
                *(
                    "-" if h[k] is None else f"{h[k]:.2f} s"
                    for k in (
                        "time_to_degrade_s",
                        "time_to_stop_s",
                        "time_to_standstill_s",
                        "time_to_resume_s",
                    )
                ),
            )
        )
    cert = s.get("certification") or {}
    samples = cert.get("samples_per_frame") or {}
    if cert.get("decisions") and samples.get("mean") is not None:
        counts = ", ".join(f"{k} {v}" for k, v in cert["decisions"].items())
        lines.append(
            f"  sequential (r_required {cert['r_required']:g}): samples per frame mean "
            f"{samples['mean']:.0f}, p99 {samples['p99']:.0f}; decisions: {counts}"
        )
    fs = met["false_stop_pct"]
    lines.append(
        f"  false stops {'-' if fs is None else f'{fs:.1f} %'}; driven {met['distance_m']:.1f} m, "
        f"{met['distance_degraded_m']:.1f} m degraded; final {s['arbiter']['final_state']}"
    )
    if out_dir is not None:
        lines.append(f"  report: {out_dir}")
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "sim",
        help="drive a scenario file in closed loop through the monitor and the arbiter",
        description=__doc__.split("\n\n", 2)[0] if __doc__ else None,
    )
    parser.add_argument("scenario", type=Path, help="scenario YAML (robust_monitor.scenario/1)")
    parser.add_argument(
        "--out", type=Path, default=None, help="report folder (default: runs/sim_<name>)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="override the scenario's seed (scene and noise)"
    )
    parser.add_argument(
        "--params-file",
        type=Path,
        default=None,
        help="ROS 2 parameter file (default: the package's config/robust_monitor.yaml)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip timeline.png")
    parser.add_argument(
        "--ros",
        action="store_true",
        help="run over real DDS against the monitor and arbiter nodes as processes "
        "(lock step on /clock; needs the ros extra and DDS on loopback)",
    )
    add_sequential_args(parser, overrides=True)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.ros:
        result = run_scenario_ros(
            args.scenario,
            params_file=args.params_file,
            seed=args.seed,
            overrides=sequential_overrides(args),
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    else:
        result = run_scenario(
            args.scenario,
            params_file=args.params_file,
            seed=args.seed,
            overrides=sequential_overrides(args),
        )
    out = args.out if args.out is not None else Path("runs") / f"sim_{result.run.scenario.name}"
    write_outputs(result, out, plot=not args.no_plot)
    print(format_result(result, out))
    return 0 if result.passed else 1


def summary_passed(summary: Mapping[str, Any]) -> bool:
    """Whether a ``summary.json`` says every expectation held."""
    return bool(summary.get("passed"))
