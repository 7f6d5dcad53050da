"""``robust-monitor replay BAG``: judge a recording offline with the monitor and the arbiter.

    robust-monitor replay BAG [--topic T] [--params-file F] [--out DIR] [--rate R]
                              [--operator auto-release|repeat-release|never] [--every K]
                              [--mode fixed|sequential] [--r-required R] [--budget-ms MS]
                              [--max-n N]

Reads a rosbag2 (sqlite3 or mcap) or ROS 1 bag through ``rosbags`` (``recordings.py``), takes
its camera topic (``sensor_msgs/Image`` or ``CompressedImage``; found by itself when there is
only one) and runs every frame through the pipeline the nodes run: ``FramePipeline.process``
(camera health, certification, OOD fusion), as the monitor node does, then ``Arbiter.step`` with
that frame's ``Evidence``, as the arbiter node does.

Clock: the recording's header stamps. Each frame steps the arbiter at its own stamp, i.e. as if
certification took no time (the measured latencies are reported, not simulated; a live node
sees the evidence ``latency_ms`` later). Between frames the arbiter is stepped without evidence
at ``publish_rate_hz`` (the node's tick, half a tick period out of phase with the first frame),
so staleness and the ramps of the limit behave as on the vehicle.

By default frames are processed as fast as possible; ``--rate R`` paces them at R
times the recording's speed (``--rate 1``: as recorded).

Operator: the arbiter starts in MINIMAL_RISK and only an operator release lets it drive.
``--operator`` models the operator:

- ``auto-release`` (default): asks for a release at every frame from the start until one is
  accepted (the arbiter accepts it after ``recovery_time_s`` of healthy evidence), then never
  again; a later MINIMAL_RISK stays until the end, as with an operator who does not intervene.
- ``repeat-release``: asks at every frame spent in MINIMAL_RISK, for the whole recording (an
  operator who releases whenever the arbiter allows it).
- ``never``: no release; the arbiter stays in MINIMAL_RISK (only the certificates are judged).

The mode and every accepted release time are in ``summary.json``.

Configuration: ``--params-file`` is a ROS 2 parameter file (``<node>: ros__parameters: ...``),
by default the package's ``config/robust_monitor.yaml``. The ``robust_monitor`` section gives the
monitor settings (validated by the monitor node's own ``settings_from_values``), the
``robust_monitor_arbiter`` section the policy (``ArbiterPolicy.from_mapping``) and
``publish_rate_hz``; ``/**`` sections apply to both. Unknown keys are refused.

Certification mode: the monitor's ``certify_mode`` (``fixed`` | ``sequential``), ``r_required``,
``budget_ms`` and ``max_n`` parameters, as the node reads them; ``--mode``, ``--r-required``,
``--budget-ms`` and ``--max-n`` override the file's. In sequential mode an unset (0)
``r_required`` is the replayed arbiter policy's ``r_recover`` (``degraded_exit_radius_l2`` of
the same file), so monitor and arbiter share one definition. The budget is wall time on this
machine, so a budgeted replay is only as repeatable as the machine's speed. The summary's
``certification`` section gives the estimation samples per frame (mean, p50, p99, max) and, in
sequential mode, the frames by decision (``certified``, ``unreachable``, ``budget``,
``max_n``).

Output (``--out DIR``, default ``runs/replay_<recording name>``): see ``report.py``. Everything is
written into a temporary folder beside DIR and renamed to DIR at the end, so an interrupted
replay never leaves a report that looks complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hashlib
import itertools
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml

from robust_monitor import __version__
from robust_monitor.assets import DEFAULT_MODEL
from robust_monitor.core.arbiter import (
    Arbiter,
    ArbiterPolicy,
    ArbiterState,
    Decision,
    Evidence,
    OperatorRequest,
    scenario_metrics,
    timeline_from_decisions,
)
from robust_monitor.core.certify.model import sha256_file
from robust_monitor.core.certify.sequential import DECISIONS
from robust_monitor.core.errors import ConfigError
from robust_monitor.core.imaging.preprocess import Roi
from robust_monitor.core.ood.verdict import OodLevel
from robust_monitor.core.pipeline import (
    SHIPPED,
    CertifyConfig,
    FramePipeline,
    default_bands,
    default_calibration_path,
    default_r_required,
)
from robust_monitor.ros.monitor_settings import build_settings
from robust_monitor.tools import report
from robust_monitor.tools.certify_cmd import add_sequential_args
from robust_monitor.tools.recordings import (
    IMAGE_TYPES,
    RecordingError,
    choose_topic,
    iter_frames,
    open_recording,
)
from robust_monitor.tools.report import Episode, FrameRecord

MONITOR_NODE = "robust_monitor"
ARBITER_NODE = "robust_monitor_arbiter"
EPISODES_FILE = "episodes.yaml"
SUMMARY_FORMAT = "robust_monitor.replay/1"
DEFAULT_TICK_HZ = 20.0
ROS_PARAMETERS = "ros__parameters"
_COMMON_KEYS = frozenset({"use_sim_time"})
_ARBITER_NODE_KEYS = frozenset(
    {
        "certificate_topic",
        "stamped_cmd_vel",
        "manual_override_topic",
        "publish_rate_hz",
        "cmd_timeout_s",
        "diagnostics_period_s",
        "allow_runtime_tuning",
    }
)
"""Arbiter node parameters that are not policy keys (only ``publish_rate_hz`` matters here)."""
_RADIUS_PERCENTILES = (5, 10, 25, 50, 75, 90, 95)


class OperatorMode(enum.Enum):
    """How the replay's operator answers the arbiter (see the module docstring)."""

    AUTO_RELEASE = "auto-release"
    REPEAT_RELEASE = "repeat-release"
    NEVER = "never"


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line (the CLI prints errors as one line)."""
    return " ".join(str(exc).split())


# --- configuration --------------------------------------------------------------------------------
def default_params_file() -> Path:
    """The package's ``config/robust_monitor.yaml`` (source tree or a pip/colcon install).

    ``robust_monitor.ros.launch_config`` is pure Python (no rclpy), so this works without ROS.
    """
    from robust_monitor.ros.launch_config import config_dir

    return config_dir() / "robust_monitor.yaml"


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """Everything a replay runs with, resolved and validated."""

    model_path: Path
    certify: CertifyConfig
    roi: Roi | None
    """None: the model metadata's ROI (as the node)."""
    policy: ArbiterPolicy
    tick_hz: float
    """Arbiter steps without evidence per second between frames (the node's publish_rate_hz)."""
    params_file: Path | None
    monitor_values: Mapping[str, Any] = field(default_factory=dict)
    """The monitor parameters given by the file and the overrides (for the summary)."""


def _node_sections(data: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(``/**`` parameters, monitor parameters, arbiter parameters) of a parameter file."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a parameter file holds a mapping of node names")
    sections: dict[str, dict[str, Any]] = {"**": {}, MONITOR_NODE: {}, ARBITER_NODE: {}}
    for key, section in data.items():
        node = str(key).rstrip("/").split("/")[-1]
        if node not in sections:
            continue  # another node's parameters
        params = section.get(ROS_PARAMETERS) if isinstance(section, Mapping) else None
        if not isinstance(params, Mapping):
            raise ConfigError(f"{path}: section {key!r} needs '{ROS_PARAMETERS}: {{name: value}}'")
        sections[node].update(params)
    return sections["**"], sections[MONITOR_NODE], sections[ARBITER_NODE]


def _monitor_settings(values: Mapping[str, Any]) -> tuple[str, CertifyConfig, Roi | None]:
    """Monitor parameters (defaults filled in) -> model path, CertifyConfig, ROI.

    The monitor node's own ``settings_from_values`` checks them (types, ranges, choices) when
    rclpy is installed (it lives in the node module). Without rclpy (a pip install without the
    ``ros`` extra) the dataclasses' own validation is all there is. A pinned ``model_sha256``
    is enforced as the node enforces it: a model file with another hash is refused.
    """
    pinned = str(values.get("model_sha256") or "").strip().lower()
    if pinned and sha256_file(str(values["model_path"])) != pinned:
        raise ConfigError(
            f"{values['model_path']}: sha256 does not match the pinned model_sha256 {pinned}"
        )
    try:
        from robust_monitor.ros.monitor_node import settings_from_values
    except ImportError:
        settings = build_settings(values)  # the same builder, without the node's checks
    else:
        settings = settings_from_values(values)
    return settings.model_path, settings.certify, settings.roi


def _monitor_defaults() -> dict[str, Any]:
    try:
        from robust_monitor.ros.monitor_node import ALLOW_RUNTIME_TUNING, PARAMETERS
    except ImportError:
        d = SHIPPED
        return {
            "model_path": str(DEFAULT_MODEL),
            "model_sha256": "",
            "image_topic": "/camera/image_raw",
            "compressed": False,
            "qos_reliability": "best_effort",
            "qos_depth": 5,
            "sigma": 0.0,
            "n0": d.n0,
            "n": d.n,
            "alpha": d.alpha,
            "batch_size": d.batch_size,
            "provider": d.providers,
            "certify_mode": d.mode,
            "r_required": 0.0,
            "budget_ms": float(d.budget_ms or 0.0),
            "max_n": d.max_n,
            "roi": None,
            "diagnostics_period_s": 1.0,
            "allow_runtime_tuning": False,
        }
    out = {}
    for spec in (ALLOW_RUNTIME_TUNING, *PARAMETERS):
        # A default given as a Parameter.Type (roi) means "unset" (read back as None).
        out[spec.name] = None if isinstance(spec.default, enum.Enum) else spec.default
    return out


def load_config(
    params_file: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> ReplayConfig:
    """Read a ROS 2 parameter file (default: ``config/robust_monitor.yaml``) for a replay.

    ``overrides`` are monitor parameters (``n0``, ``n``, ``model_path``, ``certify_mode``,
    ...) applied over the file. In sequential mode an unset ``r_required`` becomes the file's
    arbiter policy's (``default_r_required(policy)``), and the bands that policy's thresholds
    (``default_bands(policy)``). With a ``seed`` a sequential file's ``budget_ms`` is dropped
    (a seeded run must not depend on the machine's speed) unless ``overrides`` sets it. Raises
    ConfigError naming the file and the key for anything invalid.
    """
    path = Path(params_file) if params_file is not None else default_params_file()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read parameter file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"parameter file {path} is not valid YAML: {_one_line(exc)}") from exc
    wildcard, monitor_raw, arbiter_raw = _node_sections(data, path)
    defaults = _monitor_defaults()
    monitor_known = frozenset(defaults) | _COMMON_KEYS
    policy_keys = frozenset(ArbiterPolicy().as_dict())
    arbiter_known = policy_keys | _ARBITER_NODE_KEYS | _COMMON_KEYS
    for node, raw, known in (
        ("/**", wildcard, monitor_known | arbiter_known),
        (MONITOR_NODE, monitor_raw, monitor_known),
        (ARBITER_NODE, arbiter_raw, arbiter_known),
    ):
        unknown = sorted(str(k) for k in raw if k not in known)
        if unknown:
            raise ConfigError(
                f"{path}: unknown {node} parameter(s) {unknown}; allowed: {sorted(known)}"
            )
    # A /** section applies to every node, each taking the keys it knows; node sections win.
    monitor_given = {k: v for k, v in wildcard.items() if k in monitor_known} | monitor_raw
    arbiter_given = {k: v for k, v in wildcard.items() if k in arbiter_known} | arbiter_raw
    given = {**monitor_given, **dict(overrides or {})}
    given.pop("use_sim_time", None)
    values = {**defaults, **given}
    try:
        model_path, certify, roi = _monitor_settings(values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {MONITOR_NODE}: {exc}") from exc
    if seed is not None:
        certify = dataclasses.replace(certify, seed=seed)
        if certify.sequential and "budget_ms" not in dict(overrides or {}):
            # A seed asks for a reproducible run, and a wall-clock deadline is not one: how
            # often it binds depends on the machine and its load (fleet workers share cores).
            # The file's budget is dropped; an explicit budget_ms override still applies.
            certify = dataclasses.replace(certify, budget_ms=None)
    try:
        policy = ArbiterPolicy.from_mapping(
            {k: v for k, v in arbiter_given.items() if k in policy_keys}
        )
    except ConfigError as exc:
        raise ConfigError(f"{path}: {ARBITER_NODE}: {exc}") from exc
    if certify.sequential and certify.r_required is None:
        certify = dataclasses.replace(certify, r_required=default_r_required(policy))
    if certify.sequential and certify.bands is None:
        # The thresholds the same file's arbiter compares radii with, as for r_required.
        certify = dataclasses.replace(certify, bands=default_bands(policy))
    tick_hz = arbiter_given.get("publish_rate_hz", DEFAULT_TICK_HZ)
    if (
        isinstance(tick_hz, bool)
        or not isinstance(tick_hz, (int, float))
        or not (1.0 <= float(tick_hz) <= 1000.0)
    ):
        raise ConfigError(f"{path}: publish_rate_hz must be in [1, 1000] Hz, got {tick_hz!r}")
    return ReplayConfig(
        model_path=Path(model_path),
        certify=certify,
        roi=roi,
        policy=policy,
        tick_hz=float(tick_hz),
        params_file=path,
        monitor_values=given,
    )


# --- the recording --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """What a replay needs to know before reading the frames."""

    path: Path
    topic: str
    msgtype: str
    frames: int
    """Messages on the camera topic (from the recording's index)."""
    duration_s: float
    """Span of the whole recording (log time), seconds."""


def recording_info(path: str | Path, topic: str | None = None) -> RecordingInfo:
    """The camera topic of a recording and its message count; RecordingError when unusable."""
    p = Path(path)
    try:
        reader = open_recording(p)
    except RecordingError as exc:  # rosbags' messages may span lines; the CLI prints one
        raise RecordingError(_one_line(exc)) from exc
    try:
        topics = {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_TYPES}
        chosen = choose_topic(topics, topic, p)
        count = sum(c.msgcount for c in reader.connections if c.topic == chosen)
        duration = max(0, int(reader.duration)) * 1e-9 if reader.connections else 0.0
    finally:
        reader.close()
    if count == 0:
        raise RecordingError(f"{p}: no frames on {chosen} (empty recording)")
    return RecordingInfo(p, chosen, topics[chosen], count, duration)


def find_episodes(bag: Path) -> tuple[Path | None, list[Episode]]:
    """The ``episodes.yaml`` beside (or inside) a recording and its episodes, if there is one."""
    for candidate in (bag.parent / EPISODES_FILE, bag / EPISODES_FILE):
        if candidate.is_file():
            return candidate, load_episodes(candidate)
    return None, []


def load_episodes(path: Path) -> list[Episode]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read episode file {path}: {exc}") from exc
    raw = data.get("episodes") if isinstance(data, Mapping) else None
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: expected an 'episodes' list")
    episodes = []
    for i, e in enumerate(raw):
        try:
            ep = Episode(
                str(e["name"]), str(e.get("kind", "")), float(e["start_s"]), float(e["end_s"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: episode {i} needs name, start_s and end_s: {exc}") from exc
        if not ep.start_s < ep.end_s:
            raise ConfigError(f"{path}: episode {ep.name} has start_s >= end_s")
        episodes.append(ep)
    return episodes


# --- progress -------------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on a stream (stderr): frames, rate, real-time factor, time left."""

    WIDTH = 24

    def __init__(self, total: int, stream: TextIO | None, min_interval_s: float | None = None):
        self.total = max(1, total)
        self.stream = stream
        if min_interval_s is None:
            # A terminal redraws one line; a log file would get a line per update: fewer there.
            tty = stream is not None and hasattr(stream, "isatty") and stream.isatty()
            min_interval_s = 0.25 if tty else 10.0
        self.min_interval_s = min_interval_s
        self.start = time.perf_counter()
        self._last = -math.inf
        self._width = 0

    def update(self, done: int, recording_s: float, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.perf_counter()
        if not final and now - self._last < self.min_interval_s:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        left = (self.total - done) / rate if rate > 0 else math.inf
        filled = int(self.WIDTH * min(done, self.total) / self.total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        eta = "--:--" if not math.isfinite(left) else f"{int(left) // 60:02d}:{int(left) % 60:02d}"
        text = (
            f"\rreplay [{bar}] {done}/{self.total} frames  {rate:5.1f} frames/s  "
            f"{recording_s / elapsed:4.2f}x real time  left {eta}"
        )
        # Pad over the previous, possibly longer, line (no terminal control codes needed).
        self._width = max(self._width, len(text))
        self.stream.write(text.ljust(self._width) + ("\n" if final else ""))
        self.stream.flush()


# --- the engine -----------------------------------------------------------------------------------
@dataclass
class ReplayRun:
    """What one replay produced (held in memory: per frame only the results, no images)."""

    info: RecordingInfo
    config: ReplayConfig
    operator: OperatorMode
    every: int
    records: list[FrameRecord] = field(default_factory=list)
    steps: list[Decision] = field(default_factory=list)
    """Every arbiter decision in time order: frames, ticks and operator requests."""
    releases_s: list[float] = field(default_factory=list)
    """Accepted operator releases, seconds since the first frame."""
    release_requests: int = 0
    frames_read: int = 0
    t0_s: float = math.nan
    wall_s: float = 0.0
    provider: str = ""
    model_name: str = ""
    model_sha256: str = ""
    calibration_path: Path | None = None
    engine_note: str = ""
    quickest_certify_ms: float | None = None
    """Sequential mode: ``FramePipeline.quickest_certify_ms`` (measured at warm-up)."""

    @property
    def recording_span_s(self) -> float:
        """Recording time covered by the frames read, one frame period included."""
        if not self.records:
            return 0.0
        stamps = [r.t_s for r in self.records]
        period = float(np.median(np.diff(stamps))) / self.every if len(stamps) > 1 else 0.0
        last = (self.frames_read - 1 - self.records[-1].index) * period
        return stamps[-1] + last + period


class ReplayEngine:
    """Frames -> ``FramePipeline`` -> ``Arbiter``, on the recording's clock (module docstring)."""

    def __init__(
        self,
        config: ReplayConfig,
        *,
        operator: OperatorMode = OperatorMode.AUTO_RELEASE,
        every: int = 1,
        rate: float | None = None,
        progress: TextIO | None = None,
    ) -> None:
        if every < 1:
            raise ConfigError(f"--every must be >= 1, got {every}")
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"--rate must be a number > 0 (1 = as recorded), got {rate}")
        self.config = config
        self.operator = operator
        self.every = every
        self.rate = rate
        self.progress_stream = progress
        self.pipeline = FramePipeline(config.model_path, config.certify, config.roi)
        self.pipeline.warmup()

    def run(self, info: RecordingInfo, sink: ReportSink | None = None) -> ReplayRun:
        """Replay every frame of ``info``; ``sink`` receives each certified frame and record."""
        cfg, pipeline = self.config, self.pipeline
        engine = pipeline.engine
        calibration = default_calibration_path(cfg.model_path)
        run = ReplayRun(
            info=info,
            config=cfg,
            operator=self.operator,
            every=self.every,
            provider=engine.provider,
            model_name=engine.spec.name,
            model_sha256=engine.spec.sha256,
            calibration_path=calibration if pipeline.calibration is not None else None,
            engine_note=engine.fallback or "",
            quickest_certify_ms=pipeline.quickest_certify_ms,
        )
        self._check_every(info)
        arbiter = Arbiter(cfg.policy)
        tick_s = 1.0 / cfg.tick_hz
        released = False
        progress = Progress(info.frames, self.progress_stream)
        wall0 = time.perf_counter()
        next_tick = math.nan
        for frame in iter_frames(info.path, info.topic):
            run.frames_read += 1
            if math.isnan(run.t0_s):
                run.t0_s = frame.stamp_s
                run.steps.append(arbiter.step(frame.stamp_s))  # the node's first step at start
                # Live, the tick (steady clock) and the frames are not in phase; half a period
                # off keeps replayed ticks from landing just before every frame.
                tick_index = 0
                next_tick = frame.stamp_s + 0.5 * tick_s
            t_s = frame.stamp_s - run.t0_s
            if frame.index % self.every:
                # Camera health is stateful (frozen frames, stamp gaps): it sees every frame.
                pipeline.health.check(frame.image, frame.stamp_s)
                continue
            if self.rate is not None:
                delay = wall0 + t_s / self.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            while next_tick < frame.stamp_s:
                run.steps.append(arbiter.step(next_tick))
                tick_index += 1  # from the index, not by summing: no drift onto frame times
                next_tick = run.t0_s + (tick_index + 0.5) * tick_s
            began = time.perf_counter()
            result = pipeline.process(frame.image, frame.stamp_s)
            pipeline_ms = (time.perf_counter() - began) * 1e3
            evidence = Evidence(frame.stamp_s, result.certificate, result.verdict)
            decision = arbiter.step(frame.stamp_s, evidence)
            run.steps.append(decision)
            wants_release = self.operator is OperatorMode.REPEAT_RELEASE or (
                self.operator is OperatorMode.AUTO_RELEASE and not released
            )
            if wants_release and decision.state is ArbiterState.MINIMAL_RISK:
                run.release_requests += 1
                answer, after = arbiter.request(frame.stamp_s, OperatorRequest.RELEASE)
                if answer.accepted:
                    released = True
                    run.releases_s.append(t_s)
                    run.steps.append(after)
                    decision = after
            record = FrameRecord(
                frame.index,
                frame.stamp_s,
                t_s,
                result,
                decision,
                pipeline_ms,
                frame.stamp_ns,
                frame.frame_id,
            )
            run.records.append(record)
            if sink is not None:
                sink.add(frame.image, record)
            progress.update(frame.index + 1, t_s)
        run.wall_s = time.perf_counter() - wall0
        if not run.records:
            raise RecordingError(f"{info.path}: no frames on {info.topic} (empty recording)")
        progress.update(run.frames_read, run.recording_span_s, final=True)
        return run

    def _check_every(self, info: RecordingInfo) -> None:
        if self.every == 1 or info.frames < 2 or info.duration_s <= 0:
            return
        period = info.duration_s / (info.frames - 1)
        gap = self.every * period
        largest = max(1, int(self.config.policy.stale_after_s / period - 1e-9))
        if gap >= self.config.policy.stale_after_s:
            raise ConfigError(
                f"--every {self.every} leaves {gap:.3g} s between certified frames, not less than "
                f"stale_after_s {self.config.policy.stale_after_s:g} s: the arbiter would see "
                f"stale evidence; use --every <= {largest}"
            )


class ReportSink:
    """Streams each certified frame into the video and the results bag of a report folder."""

    def __init__(
        self,
        folder: Path,
        fps: float,
        roi: Roi | None,
        model_name: str,
        sha: str,
        video: bool = True,
    ) -> None:
        self.video = report.AnnotatedVideo(folder / report.VIDEO_FILE, fps, roi) if video else None
        self.bag = report.ResultsBag(folder / report.RESULTS_BAG, model_name, sha)

    @property
    def video_frames(self) -> int:
        return 0 if self.video is None else self.video.frames

    def add(self, image: np.ndarray, record: FrameRecord) -> None:
        if self.video is not None:
            self.video.write(image, record)
        self.bag.write(record)

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
        self.bag.close()


# --- the summary ----------------------------------------------------------------------------------
def _percentiles(values: Sequence[float], qs: Sequence[int]) -> dict[str, float | None]:
    if not values:
        return {f"p{q}": None for q in qs}
    array = np.asarray(values, dtype=float)
    return {f"p{q}": float(np.percentile(array, q)) for q in qs}


def _ood_events(records: Sequence[FrameRecord]) -> list[dict[str, Any]]:
    """Runs of consecutive frames whose OOD verdict is WARN or ERROR."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for r in records:
        verdict = r.result.verdict
        flagged = verdict is not None and verdict.level > OodLevel.OK
        if flagged and verdict is not None:
            if current is None:
                current = {
                    "start_s": r.t_s,
                    "end_s": r.t_s,
                    "frames": 0,
                    "level": "warn",
                    "reasons": {},
                }
                events.append(current)
            current["end_s"] = r.t_s
            current["frames"] += 1
            if verdict.level >= OodLevel.ERROR:
                current["level"] = "error"
            for reason in verdict.reasons:
                current["reasons"][reason] = current["reasons"].get(reason, 0) + 1
        else:
            current = None
    return events


def _state_times(steps: Sequence[Decision], end_s: float) -> dict[str, float]:
    """Seconds in each state (zero-order hold from each decision to the next, then to end_s)."""
    out = {s.value: 0.0 for s in ArbiterState}
    for i, d in enumerate(steps):
        until = steps[i + 1].stamp_s if i + 1 < len(steps) else max(end_s, d.stamp_s)
        out[d.state.value] += max(0.0, until - d.stamp_s)
    return out


def _transitions(steps: Sequence[Decision], t0: float) -> list[dict[str, Any]]:
    out = []
    for before, after in itertools.pairwise(steps):
        if before.state is not after.state:
            out.append(
                {
                    "t_s": after.stamp_s - t0,
                    "from": before.state.value,
                    "to": after.state.value,
                    "speed_limit_mps": after.speed_limit_mps,
                    "reasons": list(after.reasons),
                }
            )
    return out


def _episode_summary(
    run: ReplayRun, episodes: Sequence[Episode], hazards: Mapping[str, Any]
) -> list[dict[str, Any]]:
    out = []
    t0 = run.t0_s
    for ep in episodes:
        records = [r for r in run.records if ep.start_s <= r.t_s < ep.end_s]
        steps = [d for d in run.steps if ep.start_s <= d.stamp_s - t0 < ep.end_s]
        radii = [r.result.certificate.radius for r in records]
        flagged = [r for r in records if r.result.verdict and r.result.verdict.level > OodLevel.OK]
        states: dict[str, float] = {s.value: 0.0 for s in ArbiterState}
        for i, d in enumerate(steps):
            nxt = steps[i + 1].stamp_s - t0 if i + 1 < len(steps) else ep.end_s
            states[d.state.value] += max(0.0, min(nxt, ep.end_s) - (d.stamp_s - t0))
        reasons: dict[str, int] = {}
        for r in flagged:
            for reason in r.result.verdict.reasons if r.result.verdict else ():
                reasons[reason] = reasons.get(reason, 0) + 1
        entry: dict[str, Any] = {
            "name": ep.name,
            "kind": ep.kind,
            "start_s": ep.start_s,
            "end_s": ep.end_s,
            "frames": len(records),
            "certified_fraction": (
                sum(not r.result.certificate.abstained for r in records) / len(records)
                if records
                else None
            ),
            "median_radius": float(np.median(radii)) if radii else None,
            "ood_flagged_fraction": len(flagged) / len(records) if records else None,
            "ood_reasons": reasons,
            "time_in_state_s": states,
            "states": sorted(
                {d.state.value for d in steps}, key=[s.value for s in ArbiterState].index
            ),
            "min_speed_limit_mps": min((d.speed_limit_mps for d in steps), default=None),
        }
        if ep.name in hazards:
            entry["reaction"] = hazards[ep.name]
        out.append(entry)
    return out


def build_summary(
    run: ReplayRun, episodes: Sequence[Episode], episodes_path: Path | None
) -> dict[str, Any]:
    """The figures of a replay (``summary.json``)."""
    cfg, records = run.config, run.records
    certs = [r.result.certificate for r in records]
    end_s = run.t0_s + run.recording_span_s
    states = _state_times(run.steps, end_s)
    policy = cfg.policy
    hazard_eps = [ep for ep in episodes if ep.kind != "nominal"]
    timeline = [
        (s.t_s - run.t0_s, s.state, s.speed_limit_mps) for s in timeline_from_decisions(run.steps)
    ]
    hazards: dict[str, Any] = {}
    metrics: dict[str, Any] | None = None
    if hazard_eps and timeline:
        m = scenario_metrics(
            timeline,
            [(ep.start_s, ep.end_s) for ep in hazard_eps],
            nominal_speed_mps=policy.nominal_speed_mps,
            release_times_s=run.releases_s,
        )
        by_onset = {ep.start_s: ep.name for ep in hazard_eps}
        for h in m.hazards:
            hazards[by_onset[h.onset_s]] = {
                "onset_s": h.onset_s,
                "end_s": h.end_s,
                "time_to_slow_s": h.time_to_slow_s,
                "time_to_degrade_s": h.time_to_degrade_s,
                "time_to_request_handover_s": h.time_to_request_handover_s,
                "time_to_stop_s": h.time_to_stop_s,
                "time_to_resume_s": h.time_to_resume_s,
            }
        metrics = {
            "hazards": hazards,
            "counted_s": m.counted_s,
            "false_stop_pct": m.false_stop_pct,
            "false_limit_pct": m.false_limit_pct,
            "note": "hazards = the episodes whose kind is not 'nominal'; "
            "definitions in robust_monitor/core/arbiter/metrics.py",
        }
    transitions = _transitions(run.steps, run.t0_s)
    pipeline_ms = [r.pipeline_ms for r in records]
    span = run.recording_span_s
    levels = {lvl.name.lower(): 0 for lvl in OodLevel}
    levels["none"] = 0
    for r in records:
        levels[r.result.verdict.level.name.lower() if r.result.verdict else "none"] += 1
    sha = run.model_sha256
    params = cfg.params_file
    calibration = run.calibration_path
    import rosbags

    return {
        "format": SUMMARY_FORMAT,
        "recording": {
            "path": str(run.info.path),
            "topic": run.info.topic,
            "msgtype": run.info.msgtype,
            "frames": run.frames_read,
            "first_stamp_s": run.t0_s,
            "duration_s": span,
            "episodes_file": str(episodes_path) if episodes_path else None,
        },
        "frames": len(records),
        "every": run.every,
        "certified_fraction": sum(not c.abstained for c in certs) / len(certs),
        "abstained": sum(c.abstained for c in certs),
        "radius_l2": _percentiles([c.radius for c in certs], _RADIUS_PERCENTILES),
        "radius_l2_certified_only": _percentiles(
            [c.radius for c in certs if not c.abstained], _RADIUS_PERCENTILES
        ),
        "labels": _count(c.label_name for c in certs),
        "certification": {
            **certification_summary(records),
            **(
                {
                    "budget_ms": cfg.certify.budget_ms,
                    "quickest_certify_ms": run.quickest_certify_ms,
                }
                if cfg.certify.sequential
                else {}
            ),
        },
        "ood": {"frames_by_level": levels, "events": _ood_events(records)},
        "arbiter": {
            "time_in_state_s": states,
            "transitions": transitions,
            "handovers_requested": sum(
                t["to"] == ArbiterState.HANDOVER_REQUESTED.value for t in transitions
            ),
            "minimal_risk_entries": sum(
                t["to"] == ArbiterState.MINIMAL_RISK.value for t in transitions
            ),
            "final_state": run.steps[-1].state.value,
        },
        "operator": {
            "mode": run.operator.value,
            "release_requests": run.release_requests,
            "releases_s": run.releases_s,
            "note": "releases are asked for at frame times, answered by the arbiter "
            "(accepted after recovery_time_s of healthy evidence)",
        },
        "reaction": metrics,
        "episodes": _episode_summary(run, episodes, hazards),
        "throughput": {
            "wall_s": run.wall_s,
            "frames_per_s": len(records) / run.wall_s if run.wall_s > 0 else None,
            "recording_frames_per_s": run.frames_read / run.wall_s if run.wall_s > 0 else None,
            "real_time_factor": span / run.wall_s if run.wall_s > 0 else None,
            "pipeline_ms": _percentiles(pipeline_ms, (50, 90, 99)),
            "paced_rate": None,
            "clock": "recording header stamps; evidence stepped at its frame's stamp",
        },
        "configuration": {
            "model": {
                "path": str(cfg.model_path),
                "name": run.model_name,
                "sha256": sha,
            },
            "calibration": None
            if calibration is None
            else {"path": str(calibration), "sha256": sha256_file(calibration)},
            "params_file": None
            if params is None
            else {"path": str(params), "sha256": sha256_file(params)},
            "monitor_overrides": dict(cfg.monitor_values),
            "certify": {
                "sigma": run.records[0].result.certificate.sigma,
                "n0": cfg.certify.n0,
                "n": cfg.certify.n,
                "alpha": cfg.certify.alpha,
                "batch_size": cfg.certify.batch_size,
                "providers": cfg.certify.providers,
                "provider_used": run.provider,
                "seed": cfg.certify.seed,
                "mode": cfg.certify.mode,
                "r_required": cfg.certify.r_required if cfg.certify.sequential else None,
                "budget_ms": cfg.certify.budget_ms if cfg.certify.sequential else None,
                "max_n": cfg.certify.max_n if cfg.certify.sequential else None,
                "bands": list(cfg.certify.bands)
                if cfg.certify.sequential and cfg.certify.bands is not None
                else None,
                "roi": None
                if cfg.roi is None
                else [cfg.roi.x, cfg.roi.y, cfg.roi.width, cfg.roi.height],
            },
            "arbiter_policy": policy.as_dict(),
            "arbiter_policy_sha256": hashlib.sha256(
                yaml.safe_dump(policy.as_dict(), sort_keys=True).encode()
            ).hexdigest(),
            "tick_hz": cfg.tick_hz,
            "engine_note": run.engine_note,
        },
        "software": {
            "robust_monitor": __version__,
            "rosbags": getattr(rosbags, "__version__", ""),
            "python": sys.version.split()[0],
        },
        "outputs": [
            report.TIMELINE_FILE,
            report.SUMMARY_FILE,
            report.PLOT_FILE,
            report.VIDEO_FILE,
            report.RESULTS_BAG,
        ],
    }


def certification_summary(records: Sequence[FrameRecord]) -> dict[str, Any]:
    """Samples per certified frame and, in sequential mode, why sampling stopped.

    ``samples_per_frame`` counts estimation samples (the certificate's ``n``); every frame also
    draws ``n0`` selection samples. ``decisions`` (sequential only) counts frames by decision.
    """
    results = [r.result for r in records]
    drawn = np.asarray([r.certificate.n for r in results], dtype=float)
    out: dict[str, Any] = {
        "mode": results[0].mode if results else None,
        "samples_per_frame": {
            "mean": float(drawn.mean()) if drawn.size else None,
            **_percentiles(drawn.tolist(), (50, 99)),
            "max": int(drawn.max()) if drawn.size else None,
        },
        "selection_samples_per_frame": results[0].certificate.n0 if results else None,
        "note": "samples_per_frame = estimation samples (the certificate's n); each frame also "
        "draws n0 selection samples (n0 = 0: the clean frame's prediction selected the class)",
    }
    sequential = [r for r in results if r.mode == "sequential"]
    if sequential:
        counts: dict[str, int] = dict.fromkeys(DECISIONS, 0)
        for r in sequential:
            counts[str(r.decision)] = counts.get(str(r.decision), 0) + 1
        out["r_required"] = sequential[0].r_required
        out["decisions"] = counts
        out["looks_mean"] = float(np.mean([r.looks for r in sequential]))
    return out


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


# --- the whole replay, atomically -----------------------------------------------------------------
def default_out_dir(bag: Path) -> Path:
    return Path("runs") / f"replay_{bag.resolve().name}"


def replay(
    bag: str | Path,
    out: str | Path | None = None,
    *,
    topic: str | None = None,
    params_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int | None = None,
    operator: OperatorMode = OperatorMode.AUTO_RELEASE,
    every: int = 1,
    rate: float | None = None,
    progress: TextIO | None = None,
    video: bool = True,
    threads: int = 0,
) -> tuple[Path, dict[str, Any]]:
    """Replay ``bag`` and write the report folder; returns (folder, summary).

    ``threads``: onnxruntime intra-op threads of the certification (0: every core), so that
    parallel replays (``fleet-replay``) share the machine; it does not change any result.

    The folder appears complete or not at all: it is built beside ``out`` and renamed at the end.
    """
    bag_path = Path(bag)
    info = recording_info(bag_path, topic)
    config = load_config(params_file, overrides=overrides, seed=seed)
    if threads:
        certify = dataclasses.replace(config.certify, intra_op_threads=threads)
        config = dataclasses.replace(config, certify=certify)
    out_dir = Path(out) if out is not None else default_out_dir(bag_path)
    episodes_path, episodes = find_episodes(bag_path)
    engine = ReplayEngine(config, operator=operator, every=every, rate=rate, progress=progress)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        spec = engine.pipeline.engine.spec
        fps = (info.frames - 1) / info.duration_s if info.duration_s > 0 else 15.0
        sink = ReportSink(tmp, fps / every, engine.pipeline.roi, spec.name, spec.sha256, video)
        try:
            run = engine.run(info, sink)
        finally:
            sink.close()
        summary = build_summary(run, episodes, episodes_path)
        summary["throughput"]["paced_rate"] = rate
        if not video:
            summary["outputs"].remove(report.VIDEO_FILE)
        summary["video_frames"] = sink.video_frames
        report.write_timeline(tmp / report.TIMELINE_FILE, run.records)
        title = (
            f"{bag_path.name} {info.topic}: {spec.name}, n0 {config.certify.n0}, "
            f"{_budget_text(config.certify)}, every {every}; operator {operator.value}"
        )
        report.write_plot(tmp / report.PLOT_FILE, run.records, run.steps, run.t0_s, episodes, title)
        report.write_summary(tmp / report.SUMMARY_FILE, summary)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir, summary


def _budget_text(certify: CertifyConfig) -> str:
    """``n 500`` (fixed) or ``sequential r 0.3, 33 ms, max_n 10000``: the sampling budget."""
    if not certify.sequential:
        return f"n {certify.n}"
    budget = "" if certify.budget_ms is None else f", {certify.budget_ms:g} ms"
    r = certify.r_required if certify.r_required is not None else default_r_required()
    return f"sequential r {r:g}{budget}, max_n {certify.max_n}"


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished folder to ``out_dir``; a previous report there is replaced."""
    old: Path | None = None
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(f"--out {out_dir} exists and is not a folder")
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- the command ----------------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "replay",
        help="replay a recording through the monitor and the arbiter, write a report",
        description=__doc__.split("\n\n", 2)[0] if __doc__ else None,
    )
    parser.add_argument("bag", type=Path, help="rosbag2 folder (sqlite3 or mcap) or ROS 1 .bag")
    parser.add_argument(
        "--out", type=Path, default=None, help="report folder (default: runs/replay_<name>)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="pace at R times the recording's speed (1 = as recorded); default: flat out",
    )
    add_config_args(parser)
    parser.add_argument(
        "--seed", type=int, default=None, help="fixed noise seed (tests only; default: OS entropy)"
    )
    parser.add_argument("--no-video", action="store_true", help="skip annotated.mp4")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """The options that choose what a replay runs (``replay`` and ``fleet-replay``): topic,
    parameter file, operator, ``--every``, the ``n0``/``n``/model overrides and the sequential
    flags; ``config_overrides`` turns them into monitor parameters."""
    parser.add_argument("--topic", default=None, help="camera topic (default: the only one)")
    parser.add_argument(
        "--params-file",
        type=Path,
        default=None,
        help="ROS 2 parameter file (default: the package's config/robust_monitor.yaml)",
    )
    parser.add_argument(
        "--operator",
        choices=[m.value for m in OperatorMode],
        default=OperatorMode.AUTO_RELEASE.value,
        help="auto-release: release once at the start when evidence allows (default); "
        "repeat-release: release whenever MINIMAL_RISK and evidence allow; never",
    )
    parser.add_argument(
        "--every", type=int, default=1, help="certify every k-th frame (camera checks see all)"
    )
    parser.add_argument("--n0", type=int, default=None, help="override the file's n0")
    parser.add_argument("--n", type=int, default=None, help="override the file's n")
    parser.add_argument("--model", default=None, help="override the file's model_path")
    add_sequential_args(parser, overrides=True)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The monitor parameters ``add_config_args``' options set over the parameter file."""
    overrides: dict[str, Any] = {}
    for key in ("n0", "n"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.model is not None:
        overrides["model_path"] = str(args.model)
    overrides.update(sequential_overrides(args))
    return overrides


def run(args: argparse.Namespace) -> int:
    out_dir, summary = replay(
        args.bag,
        args.out,
        topic=args.topic,
        params_file=args.params_file,
        overrides=config_overrides(args),
        seed=args.seed,
        operator=OperatorMode(args.operator),
        every=args.every,
        rate=args.rate,
        progress=None if args.quiet else sys.stderr,
        video=not args.no_video,
    )
    print(format_summary(summary, out_dir))
    return 0


def sequential_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The monitor parameters ``--mode``, ``--r-required``, ``--budget-ms``, ``--max-n`` set
    (``add_sequential_args(overrides=True)``); the ones not given are left to the file."""
    out: dict[str, Any] = {}
    for flag, key, kind in (
        ("mode", "certify_mode", str),
        ("r_required", "r_required", float),
        ("budget_ms", "budget_ms", float),
        ("max_n", "max_n", int),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            out[key] = kind(value)
    return out


def format_summary(summary: Mapping[str, Any], out_dir: Path) -> str:
    """A few lines for people: frames, certification, states, speed, where the report is."""
    tp = summary["throughput"]
    arb = summary["arbiter"]
    states = ", ".join(f"{k} {v:.1f} s" for k, v in arb["time_in_state_s"].items() if v > 0)
    lines = [
        f"replayed {summary['frames']} frames of {summary['recording']['topic']} "
        f"({summary['recording']['duration_s']:.1f} s) in {tp['wall_s']:.1f} s: "
        f"{tp['frames_per_s']:.1f} frames/s, {tp['real_time_factor']:.2f}x real time",
        f"certified {summary['certified_fraction']:.0%}, median radius "
        f"{summary['radius_l2']['p50']:.3f}; OOD events {len(summary['ood']['events'])}",
        _certification_line(summary.get("certification") or {}),
        f"arbiter: {states}; handovers requested {arb['handovers_requested']}; "
        f"operator {summary['operator']['mode']} (releases at "
        f"{', '.join(f'{t:.1f} s' for t in summary['operator']['releases_s']) or 'none'})",
        f"report: {out_dir}",
    ]
    return "\n".join(line for line in lines if line)


def _certification_line(cert: Mapping[str, Any]) -> str:
    """Samples per frame; in sequential mode also r_required and the decision counts."""
    samples = cert.get("samples_per_frame") or {}
    if samples.get("mean") is None:
        return ""
    text = (
        f"{cert.get('mode')}: estimation samples per frame mean {samples['mean']:.0f}, "
        f"p99 {samples['p99']:.0f}"
    )
    decisions = cert.get("decisions")
    if decisions:
        counts = ", ".join(f"{k} {v}" for k, v in decisions.items())
        text += f"; r_required {cert.get('r_required'):g}; decisions: {counts}"
    quickest, budget = cert.get("quickest_certify_ms"), cert.get("budget_ms")
    if quickest is not None and budget is not None and budget < quickest:
        text += (
            f" (budget {budget:g} ms < {quickest:.1f} ms, the quickest certification "
            "measured at warm-up: frames stop on the budget)"
        )
    return text
