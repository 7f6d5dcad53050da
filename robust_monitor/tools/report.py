"""The replay report: what a replay writes into its output folder.

One ``ReportWriter`` per replay. Frames stream into the video and the results bag while the
replay runs (nothing of the recording is held in memory); the timeline, the summary and the plot
are written at the end:

- ``timeline.csv``: one row per certified frame (columns in ``TIMELINE_COLUMNS``, then one
  ``ood.<score>`` column per OOD score);
- ``summary.json``: the figures of the whole run (built by ``replay.py``);
- ``timeline.png``: radius and p_lower, OOD scores, arbiter state and speed limit against time,
  episodes shaded when the recording has an episode file;
- ``annotated.mp4``: the frames with label, radius, OOD verdict, state and limit drawn on them
  (OpenCV ``VideoWriter``, fourcc ``mp4v``);
- ``results/``: a rosbag2 (mcap storage) written with ``rosbags``: per frame the certificate as
  ``diagnostic_msgs/msg/DiagnosticArray`` (the ``~/certificate`` contract of
  ``robust_monitor/ros/contract.py``), the arbiter state as ``std_msgs/msg/String`` and the speed
  limit as ``std_msgs/msg/Float64``, all at the frame's stamp (log time = header stamp).

No rclpy here: the certificate's key/value pairs, level and text come from
``ros/contract_fields.py``, the same builder ``contract.certificate_to_diagnostics`` wraps in a
message (a test also reads the results bag back through ``contract.diagnostics_to_evidence``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from robust_monitor.core.arbiter import ArbiterState, Decision
from robust_monitor.core.errors import RobustMonitorError
from robust_monitor.core.imaging.preprocess import Roi
from robust_monitor.core.ood.verdict import OodLevel
from robust_monitor.core.pipeline import FrameResult
from robust_monitor.ros.contract_fields import (
    OOD_SCORE_PREFIX,
    STATUS_NAME,
    certificate_level,
    certificate_message_text,
    certificate_pairs,
)

TIMELINE_FILE = "timeline.csv"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "timeline.png"
VIDEO_FILE = "annotated.mp4"
RESULTS_BAG = "results"

CERTIFICATE_TOPIC = "/robust_monitor/certificate"
STATE_TOPIC = "/robust_monitor_arbiter/state"
SPEED_LIMIT_TOPIC = "/robust_monitor_arbiter/speed_limit"
"""Topics of the results bag: the names the nodes publish under in the root namespace."""


TIMELINE_COLUMNS = (
    "index",
    "stamp_s",
    "t_s",
    "label",
    "label_name",
    "p_lower",
    "radius",
    "abstained",
    "count",
    "ood_level",
    "ood_reasons",
    "state",
    "speed_limit_mps",
    "handover_requested",
    "latency_ms",
    "pipeline_ms",
    "reasons",
)
"""Units: ``stamp_s`` header stamp and ``t_s`` seconds since the first frame; ``radius`` L2 in
model-input units; ``speed_limit_mps`` m/s; ``latency_ms`` the certification's wall time (the
certificate's ``latency_ms``), ``pipeline_ms`` the whole frame (camera checks, preprocessing,
certification, OOD) in milliseconds."""

STATE_ORDER = (
    ArbiterState.NOMINAL,
    ArbiterState.DEGRADED,
    ArbiterState.HANDOVER_REQUESTED,
    ArbiterState.MINIMAL_RISK,
    ArbiterState.MANUAL,
)
_STATE_BGR = {
    ArbiterState.NOMINAL: (60, 170, 60),
    ArbiterState.DEGRADED: (0, 190, 230),
    ArbiterState.HANDOVER_REQUESTED: (0, 120, 255),
    ArbiterState.MINIMAL_RISK: (40, 40, 220),
    ArbiterState.MANUAL: (200, 120, 40),
}


class ReportError(RobustMonitorError):
    """A report file cannot be written (video encoder missing, disk full, ...)."""


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One certified frame of a replay and what the arbiter decided on it."""

    index: int
    """Index of the frame among the topic's messages (0-based)."""
    stamp_s: float
    """Header stamp, seconds."""
    t_s: float
    """Seconds since the first frame's stamp (the time axis of the report and episode files)."""
    result: FrameResult
    decision: Decision
    pipeline_ms: float
    """Wall time of ``FramePipeline.process`` for this frame, milliseconds."""
    stamp_ns: int | None = None
    """Header stamp exactly, nanoseconds (None: derived from ``stamp_s``)."""
    frame_id: str = ""
    """The image's ``header.frame_id`` (copied into the certificate's header)."""


@dataclass(frozen=True, slots=True)
class Episode:
    """One named interval of a recording (``episodes.yaml``), seconds after the first frame."""

    name: str
    kind: str
    start_s: float
    end_s: float


def stamp_ns(stamp_s: float) -> int:
    """Seconds -> integer nanoseconds (the frame stamps arrive as float seconds)."""
    return round(stamp_s * 1e9)


# --- the results bag ------------------------------------------------------------------------------
class ResultsBag:
    """The rosbag2 (mcap) of certificates, states and limits, one of each per frame."""

    def __init__(self, path: Path, model_name: str, model_sha256: str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self._typestore = get_typestore(Stores.ROS2_KILTED)
        self._types = self._typestore.types
        self._model_name = model_name
        self._model_sha256 = model_sha256
        self._writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        add = self._writer.add_connection
        self._cert = add(
            CERTIFICATE_TOPIC, "diagnostic_msgs/msg/DiagnosticArray", typestore=self._typestore
        )
        self._state = add(STATE_TOPIC, "std_msgs/msg/String", typestore=self._typestore)
        self._limit = add(SPEED_LIMIT_TOPIC, "std_msgs/msg/Float64", typestore=self._typestore)

    def write(self, record: FrameRecord) -> None:
        t = self._types
        ns = record.stamp_ns if record.stamp_ns is not None else stamp_ns(record.stamp_s)
        stamp = t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
        status = t["diagnostic_msgs/msg/DiagnosticStatus"](
            level=certificate_level(record.result),
            name=STATUS_NAME,
            message=certificate_message_text(record.result),
            hardware_id=self._model_name,
            values=[
                t["diagnostic_msgs/msg/KeyValue"](key=k, value=v)
                for k, v in certificate_pairs(record.result, self._model_sha256)
            ],
        )
        header = t["std_msgs/msg/Header"](stamp=stamp, frame_id=record.frame_id)
        array = t["diagnostic_msgs/msg/DiagnosticArray"](header=header, status=[status])
        serialize = self._typestore.serialize_cdr
        self._writer.write(self._cert, ns, serialize(array, array.__msgtype__))
        state = t["std_msgs/msg/String"](data=record.decision.state.value)
        self._writer.write(self._state, ns, serialize(state, state.__msgtype__))
        limit = t["std_msgs/msg/Float64"](data=float(record.decision.speed_limit_mps))
        self._writer.write(self._limit, ns, serialize(limit, limit.__msgtype__))

    def close(self) -> None:
        self._writer.close()


# --- the annotated video --------------------------------------------------------------------------
def annotate(image_rgb: np.ndarray, record: FrameRecord, roi: Roi | None) -> np.ndarray:
    """A BGR copy of the frame with the ROI, the certificate, the verdict, state and limit."""
    frame = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    h, w = frame.shape[:2]
    cert, verdict, decision = record.result.certificate, record.result.verdict, record.decision
    colour = _STATE_BGR[decision.state]
    if roi is not None:
        x0, y0 = int(roi.x * w), int(roi.y * h)
        x1, y1 = int((roi.x + roi.width) * w), int((roi.y + roi.height) * h)
        cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
    label = "ABSTAIN" if cert.abstained else cert.label_name
    ood = verdict.level.name if verdict is not None else "none"
    lines = [
        f"t {record.t_s:6.2f} s  {label}",
        f"r {cert.radius:.3f}  p {cert.p_lower:.3f}  OOD {ood}",
        f"{decision.state.value}  {decision.speed_limit_mps:.1f} m/s",
    ]
    scale = max(0.35, min(w, h) / 600.0)
    line_h = int(22 * scale / 0.4)
    band = line_h * len(lines) + 6
    overlay = frame.copy()
    cv2.rectangle(overlay, (0, h - band), (w, h), (0, 0, 0), -1)
    frame = cv2.addWeighted(overlay, 0.55, frame, 0.45, 0)
    cv2.rectangle(frame, (0, 0), (w - 1, h - 1), colour, 3)
    for i, text in enumerate(lines):
        y = h - band + line_h * (i + 1)
        line_colour = colour if i == 2 else (255, 255, 255)
        cv2.putText(
            frame, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, line_colour, 1, cv2.LINE_AA
        )
    return frame


class AnnotatedVideo:
    """``annotated.mp4``: opened on the first frame (its size fixes the video's)."""

    def __init__(self, path: Path, fps: float, roi: Roi | None) -> None:
        self._path = path
        self._fps = fps if math.isfinite(fps) and fps > 0 else 15.0
        self._roi = roi
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image_rgb: np.ndarray, record: FrameRecord) -> None:
        frame = annotate(image_rgb, record, self._roi)
        size = (frame.shape[1], frame.shape[0])
        if self._writer is None:
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(str(self._path), fourcc, self._fps, size)
            if not self._writer.isOpened():
                raise ReportError(f"cannot write {self._path}: OpenCV has no mp4v encoder")
            self._size = size
        elif size != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


# --- timeline, summary, plot ----------------------------------------------------------------------
def score_names(records: Sequence[FrameRecord]) -> list[str]:
    names: set[str] = set()
    for record in records:
        if record.result.verdict is not None:
            names.update(record.result.verdict.scores)
    return sorted(names)


def write_timeline(path: Path, records: Sequence[FrameRecord]) -> None:
    """``timeline.csv``: one row per frame (see ``TIMELINE_COLUMNS``), then the OOD scores."""
    scores = score_names(records)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*TIMELINE_COLUMNS, *(OOD_SCORE_PREFIX + s for s in scores)])
        for r in records:
            cert, verdict, d = r.result.certificate, r.result.verdict, r.decision
            row: list[Any] = [
                r.index,
                f"{r.stamp_s:.9f}",
                f"{r.t_s:.6f}",
                cert.label,
                cert.label_name,
                repr(float(cert.p_lower)),
                repr(float(cert.radius)),
                str(cert.abstained).lower(),
                cert.count,
                verdict.level.name.lower() if verdict is not None else "none",
                ";".join(verdict.reasons) if verdict is not None else "",
                d.state.value,
                repr(float(d.speed_limit_mps)),
                str(d.handover_requested).lower(),
                f"{cert.latency_ms:.3f}",
                f"{r.pipeline_ms:.3f}",
                "; ".join(d.reasons),
            ]
            values = verdict.scores if verdict is not None else {}
            row += [repr(float(values[s])) if s in values else "" for s in scores]
            writer.writerow(row)


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """``summary.json``: strict JSON (NaN and infinities become null)."""
    text = json.dumps(jsonable(summary), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: non-finite floats become None, numpy scalars and paths plain."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


_EPISODE_COLOURS = {"nominal": None, "corruption": "#f4c542", "ood": "#e8606b"}


def write_plot(
    path: Path,
    records: Sequence[FrameRecord],
    steps: Sequence[Decision],
    t0_s: float,
    episodes: Sequence[Episode],
    title: str,
) -> None:
    """``timeline.png``: certificate, OOD scores, arbiter state and speed limit against time.

    ``steps`` are every arbiter decision of the replay (frames and ticks), so the limit's ramps
    show between frames.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([r.t_s for r in records])
    radius = np.array([r.result.certificate.radius for r in records])
    p_lower = np.array([r.result.certificate.p_lower for r in records])
    abstained = np.array([r.result.certificate.abstained for r in records])
    fig, axes = plt.subplots(4, 1, figsize=(12, 9), sharex=True, constrained_layout=True)
    ax_cert, ax_ood, ax_state, ax_limit = axes
    for ax in axes:
        for ep in episodes:
            colour = _EPISODE_COLOURS.get(ep.kind, "#9db4d8")
            if colour is not None:
                ax.axvspan(ep.start_s, ep.end_s, color=colour, alpha=0.18, lw=0)
    for ep in episodes:
        ax_cert.text(
            (ep.start_s + ep.end_s) / 2,
            1.02,
            ep.name,
            transform=ax_cert.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=7,
            rotation=0,
        )
    ax_cert.plot(t, radius, lw=1, label="radius (L2)")
    ax_cert.plot(t, p_lower, lw=1, label="p_lower")
    if abstained.any():
        ax_cert.scatter(
            t[abstained], np.zeros(int(abstained.sum())), s=8, c="red", label="abstained"
        )
    ax_cert.set_ylim(0, 1.05)
    ax_cert.set_ylabel("certificate")
    ax_cert.legend(loc="lower left", fontsize=7, ncol=3)

    for name in score_names(records):
        values = np.asarray(
            [
                float(r.result.verdict.scores.get(name, np.nan)) if r.result.verdict else np.nan
                for r in records
            ],
            dtype=np.float64,
        )
        if np.isfinite(values).any():
            ax_ood.plot(t, values, lw=0.8, label=name)
    levels = np.array([int(r.result.verdict.level) if r.result.verdict else 0 for r in records])
    for level, colour in ((OodLevel.WARN, "#f4a742"), (OodLevel.ERROR, "#d62728")):
        hit = levels == int(level)
        if hit.any():
            ax_ood.scatter(
                t[hit], np.zeros(int(hit.sum())), s=6, c=colour, marker="|", label=level.name
            )
    ax_ood.set_yscale("symlog", linthresh=1.0)
    ax_ood.set_ylabel("OOD scores")
    ax_ood.legend(loc="upper left", fontsize=6, ncol=6)

    st = np.array([s.stamp_s - t0_s for s in steps])
    state_idx = np.array([STATE_ORDER.index(s.state) for s in steps])
    limit = np.array([s.speed_limit_mps for s in steps])
    ax_state.step(st, state_idx, where="post", lw=1.2)
    ax_state.set_yticks(range(len(STATE_ORDER)), [s.value for s in STATE_ORDER], fontsize=7)
    ax_state.set_ylim(-0.5, len(STATE_ORDER) - 0.5)
    ax_state.set_ylabel("arbiter")
    ax_limit.step(st, limit, where="post", lw=1.2, color="k")
    ax_limit.set_ylabel("speed limit (m/s)")
    ax_limit.set_xlabel("time since the first frame (s)")
    ax_limit.set_ylim(bottom=0)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
