"""The fleet report: what ``fleet-replay`` writes beside the per-recording report folders.

Built from the report folders on disk (``recordings/<name>-<key>/summary.json`` and
``timeline.csv``), so recordings replayed now and recordings done by an earlier run (resume)
count the same way:

- ``fleet_summary.json``: per recording the replay summary's figures (frames, certification,
  radius percentiles, OOD events, time per state, handovers, minimal-risk entries, reactions per
  labelled episode) and links to its report; across the fleet the distribution of the certified
  radius and of ``p_lower`` (percentiles and histograms over every frame of every recording),
  the time in each arbiter state, handover requests and minimal-risk entries per hour of
  driving, the worst episodes ranked, the failed and duplicate recordings, and a ``run`` part
  (backend, workers, what was replayed or skipped, wall time, frames per second): the only part
  that differs between two runs of the same fleet and configuration;
- ``fleet_report.md``: the same for people, with links to each recording's report;
- ``fleet_distributions.png``: radius and p_lower histograms, time per state, events per hour;
- ``fleet_states.png``: the share of time in each state, recording by recording.

An *episode* here is a stretch the arbiter spent away from NOMINAL after it had driven: from a
transition out of NOMINAL to the next transition back (or the end of the recording,
``unresolved``). The start-up in MINIMAL_RISK before the operator's first release is not one; a
recording that never reaches NOMINAL (nobody could release) is one episode, ``never_nominal``.
Episodes rank by the worst state reached (MINIMAL_RISK, then HANDOVER_REQUESTED or MANUAL, then
DEGRADED), then by duration, then by the smallest certified radius within.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robust_monitor.tools.report import jsonable

FLEET_FORMAT = "robust_monitor.fleet/1"
SUMMARY_FILE = "fleet_summary.json"
REPORT_FILE = "fleet_report.md"
DISTRIBUTIONS_PLOT = "fleet_distributions.png"
STATES_PLOT = "fleet_states.png"
STATES = ("NOMINAL", "DEGRADED", "HANDOVER_REQUESTED", "MINIMAL_RISK", "MANUAL")
SEVERITY = {"NOMINAL": 0, "DEGRADED": 1, "MANUAL": 2, "HANDOVER_REQUESTED": 2, "MINIMAL_RISK": 3}
PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
HIST_BINS = 20
_PLOT_RECORDINGS = 60
"""At most this many recordings in the per-recording plots (the worst ones)."""


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """A recording whose report folder is complete (replayed now or before)."""

    name: str
    path: str
    recording_sha256: str
    key: str
    folder: str
    """Report folder relative to the fleet folder."""
    seed: int | None


@dataclass
class _Frames:
    """The per-frame columns of one ``timeline.csv`` the fleet figures need."""

    t_s: np.ndarray
    radius: np.ndarray
    p_lower: np.ndarray
    abstained: np.ndarray
    speed_limit: np.ndarray
    ood_reasons: list[str]


def read_timeline(path: Path) -> _Frames:
    """The columns of a replay's ``timeline.csv`` used here."""
    t, radius, p_lower, abstained, limit, reasons = [], [], [], [], [], []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            t.append(float(row["t_s"]))
            radius.append(float(row["radius"]))
            p_lower.append(float(row["p_lower"]))
            abstained.append(row["abstained"] == "true")
            limit.append(float(row["speed_limit_mps"]))
            reasons.append(row.get("ood_reasons") or "")
    return _Frames(
        np.asarray(t, float),
        np.asarray(radius, float),
        np.asarray(p_lower, float),
        np.asarray(abstained, bool),
        np.asarray(limit, float),
        reasons,
    )


def percentiles(values: np.ndarray) -> dict[str, float | None]:
    """Percentiles, min, max and mean (None for no values)."""
    keys = [f"p{q}" for q in PERCENTILES] + ["min", "max", "mean"]
    if values.size == 0:
        return dict.fromkeys(keys)
    qs = np.percentile(values, PERCENTILES)
    out: dict[str, float | None] = {f"p{q}": float(v) for q, v in zip(PERCENTILES, qs, strict=True)}
    out.update(min=float(values.min()), max=float(values.max()), mean=float(values.mean()))
    return out


def histogram(values: np.ndarray, lo: float, hi: float) -> dict[str, list[float] | list[int]]:
    """Counts in ``HIST_BINS`` equal bins over [lo, hi] (values outside land in the end bins)."""
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    counts, _ = np.histogram(np.clip(values, lo, hi), bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _per_hour(count: float, hours: float) -> float | None:
    return count / hours if hours > 0 else None


# --- episodes -------------------------------------------------------------------------------------
def degradation_episodes(
    summary: Mapping[str, Any], frames: _Frames, operator_releases: bool = True
) -> list[dict[str, Any]]:
    """A recording's stretches away from NOMINAL after it had driven (module docstring)."""
    arbiter = summary["arbiter"]
    transitions: list[Mapping[str, Any]] = arbiter["transitions"]
    end_s = float(summary["recording"]["duration_s"])
    state = transitions[0]["from"] if transitions else arbiter["final_state"]
    seen_nominal = state == "NOMINAL"
    episodes: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    visited = [state]
    for t in transitions:
        to, t_s = t["to"], float(t["t_s"])
        visited.append(to)
        if to == "NOMINAL":
            seen_nominal = True
            if current is not None:
                current["end_s"] = t_s
                episodes.append(current)
                current = None
        elif current is None and t["from"] == "NOMINAL":
            current = {"kind": "degradation", "start_s": t_s, "states": [to], "reasons": []}
            current["reasons"] += t.get("reasons", [])
        elif current is not None:
            current["states"].append(to)
            current["reasons"] += t.get("reasons", [])
    if current is not None:
        current["end_s"] = end_s
        current["unresolved"] = True
        episodes.append(current)
    if not seen_nominal and operator_releases:
        reasons: list[str] = []
        for t in transitions:
            reasons += t.get("reasons", [])
        episodes.append(
            {
                "kind": "never_nominal",
                "start_s": 0.0,
                "end_s": end_s,
                "states": visited,
                "reasons": reasons,
                "unresolved": True,
            }
        )
    labelled = summary.get("episodes") or []
    out = []
    for ep in episodes:
        start, end = float(ep["start_s"]), float(ep["end_s"])
        inside = (frames.t_s >= start) & (frames.t_s < end) if end > start else frames.t_s == start
        states = list(dict.fromkeys(ep["states"]))
        worst = max(states, key=lambda s: SEVERITY.get(s, 0))
        ood: dict[str, int] = {}
        for i in np.flatnonzero(inside):
            for reason in filter(None, frames.ood_reasons[i].split(";")):
                ood[reason] = ood.get(reason, 0) + 1
        out.append(
            {
                "kind": ep["kind"],
                "start_s": start,
                "end_s": end,
                "duration_s": max(0.0, end - start),
                "worst_state": worst,
                "states": states,
                "unresolved": bool(ep.get("unresolved", False)),
                "reasons": list(dict.fromkeys(ep["reasons"])),  # in order, once each
                "frames": int(inside.sum()),
                "min_radius": float(frames.radius[inside].min()) if inside.any() else None,
                "min_p_lower": float(frames.p_lower[inside].min()) if inside.any() else None,
                "abstained": int(frames.abstained[inside].sum()),
                "min_speed_limit_mps": float(frames.speed_limit[inside].min())
                if inside.any()
                else None,
                "ood_reasons": dict(sorted(ood.items())),
                "labelled_episodes": [
                    e["name"]
                    for e in labelled
                    if float(e["start_s"]) < max(end, start + 1e-9) and float(e["end_s"]) > start
                ],
            }
        )
    return out


def _rank_key(ep: Mapping[str, Any]) -> tuple[Any, ...]:
    radius = ep["min_radius"] if ep["min_radius"] is not None else math.inf
    return (
        -SEVERITY.get(ep["worst_state"], 0),
        -ep["duration_s"],
        radius,
        ep["recording"],
        ep["start_s"],
    )


# --- the report -----------------------------------------------------------------------------------
def _recording_entry(
    info: EntryInfo, s: Mapping[str, Any], frames: _Frames, has_plot: bool
) -> dict[str, Any]:
    hours = float(s["recording"]["duration_s"]) / 3600.0
    arb = s["arbiter"]
    return {
        "name": info.name,
        "path": info.path,
        "recording_sha256": info.recording_sha256,
        "key": info.key,
        "seed": info.seed,
        "report": info.folder,
        "summary": f"{info.folder}/summary.json",
        "plot": f"{info.folder}/timeline.png" if has_plot else None,
        "topic": s["recording"]["topic"],
        "recording_frames": s["recording"]["frames"],
        "frames": s["frames"],
        "every": s["every"],
        "duration_s": s["recording"]["duration_s"],
        "certified_fraction": s["certified_fraction"],
        "abstained": s["abstained"],
        "radius_l2": s["radius_l2"],
        "radius_l2_certified_only": s["radius_l2_certified_only"],
        "p_lower": percentiles(frames.p_lower),
        "labels": s["labels"],
        "ood_frames_by_level": s["ood"]["frames_by_level"],
        "ood_events": len(s["ood"]["events"]),
        "time_in_state_s": arb["time_in_state_s"],
        "handovers_requested": arb["handovers_requested"],
        "minimal_risk_entries": arb["minimal_risk_entries"],
        "handovers_per_h": _per_hour(arb["handovers_requested"], hours),
        "minimal_risk_entries_per_h": _per_hour(arb["minimal_risk_entries"], hours),
        "final_state": arb["final_state"],
        "operator": {"mode": s["operator"]["mode"], "releases_s": s["operator"]["releases_s"]},
        "reaction": s["reaction"],
        "labelled_episodes": s["episodes"],
    }


def build_fleet_summary(
    out: Path,
    *,
    entries: Sequence[EntryInfo],
    failed: Sequence[Mapping[str, Any]],
    duplicates: Sequence[Mapping[str, Any]],
    configuration: Mapping[str, Any],
    run: Mapping[str, Any],
    top_episodes: int = 20,
) -> dict[str, Any]:
    """The fleet's figures from the report folders under ``out`` (``fleet_summary.json``)."""
    recordings: list[dict[str, Any]] = []
    episodes: list[dict[str, Any]] = []
    all_radius, all_p, certified = [], [], []
    for info in entries:
        folder = out / info.folder
        s = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        frames = read_timeline(folder / "timeline.csv")
        rec = _recording_entry(info, s, frames, (folder / "timeline.png").is_file())
        releases = s["operator"]["mode"] != "never"
        eps = degradation_episodes(s, frames, releases)
        rec["episodes"] = len(eps)
        recordings.append(rec)
        for ep in eps:
            ep.update(recording=info.name, report=info.folder, summary=rec["summary"])
            ep["plot"] = rec["plot"]
            episodes.append(ep)
        all_radius.append(frames.radius)
        all_p.append(frames.p_lower)
        certified.append(~frames.abstained)
    radius = np.concatenate(all_radius) if all_radius else np.zeros(0)
    p_lower = np.concatenate(all_p) if all_p else np.zeros(0)
    ok = np.concatenate(certified) if certified else np.zeros(0, bool)
    driving_s = float(sum(r["duration_s"] for r in recordings))
    hours = driving_s / 3600.0
    time_in_state = {st: 0.0 for st in STATES}
    for r in recordings:
        for st, v in r["time_in_state_s"].items():
            time_in_state[st] = time_in_state.get(st, 0.0) + float(v)
    total_state = sum(time_in_state.values())
    handovers = sum(int(r["handovers_requested"]) for r in recordings)
    minimal = sum(int(r["minimal_risk_entries"]) for r in recordings)
    ood_events = sum(int(r["ood_events"]) for r in recordings)
    final_states: dict[str, int] = {}
    for r in recordings:
        final_states[r["final_state"]] = final_states.get(r["final_state"], 0) + 1
    by_worst: dict[str, int] = {}
    for ep in episodes:
        by_worst[ep["worst_state"]] = by_worst.get(ep["worst_state"], 0) + 1
    episodes.sort(key=_rank_key)
    worst = [{"rank": i + 1, **ep} for i, ep in enumerate(episodes[: max(0, top_episodes)])]
    radius_hi = max(0.05, math.ceil(float(radius.max()) * 20) / 20) if radius.size else 1.0
    fleet = {
        "recordings": len(recordings),
        "failed": len(failed),
        "duplicates": len(duplicates),
        "recording_frames": sum(int(r["recording_frames"]) for r in recordings),
        "certified_frames": int(radius.size),
        "driving_s": driving_s,
        "driving_h": hours,
        "certified_fraction": float(ok.mean()) if ok.size else None,
        "radius_l2": percentiles(radius),
        "radius_l2_certified_only": percentiles(radius[ok]),
        "p_lower": percentiles(p_lower),
        "radius_l2_histogram_certified_only": histogram(radius[ok], 0.0, radius_hi),
        "p_lower_histogram": histogram(p_lower, 0.0, 1.0),
        "time_in_state_s": time_in_state,
        "time_in_state_fraction": {
            st: (v / total_state if total_state > 0 else None) for st, v in time_in_state.items()
        },
        "handovers_requested": handovers,
        "minimal_risk_entries": minimal,
        "handovers_per_h": _per_hour(handovers, hours),
        "minimal_risk_entries_per_h": _per_hour(minimal, hours),
        "ood_events": ood_events,
        "ood_events_per_h": _per_hour(ood_events, hours),
        "final_states": dict(sorted(final_states.items())),
        "episodes": len(episodes),
        "episodes_by_worst_state": dict(sorted(by_worst.items())),
    }
    return {
        "format": FLEET_FORMAT,
        "configuration": dict(configuration),
        "fleet": fleet,
        "worst_episodes": worst,
        "recordings": recordings,
        "failed": [dict(f) for f in failed],
        "duplicates": [dict(d) for d in duplicates],
        "outputs": [SUMMARY_FILE, REPORT_FILE, DISTRIBUTIONS_PLOT, STATES_PLOT],
        "run": dict(run),
    }


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_fleet_report(out: Path, **kwargs: Any) -> dict[str, Any]:
    """Build the fleet summary (``build_fleet_summary``'s arguments) and write every file."""
    summary = jsonable(build_fleet_summary(out, **kwargs))
    write_plots(out, summary)
    _write_text_atomic(out / REPORT_FILE, format_markdown(summary))
    text = json.dumps(summary, indent=2, allow_nan=False)
    _write_text_atomic(out / SUMMARY_FILE, text + "\n")
    return dict(summary)


# --- plots ----------------------------------------------------------------------------------------
_STATE_COLOURS = {
    "NOMINAL": "#3caa3c",
    "DEGRADED": "#e6be00",
    "HANDOVER_REQUESTED": "#ff7800",
    "MINIMAL_RISK": "#dc2828",
    "MANUAL": "#2878c8",
}


def write_plots(out: Path, summary: Mapping[str, Any]) -> None:
    """``fleet_distributions.png`` and ``fleet_states.png`` (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fleet = summary["fleet"]
    recs = summary["recordings"]
    policy = summary["configuration"].get("arbiter_policy", {})
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    (ax_r, ax_p), (ax_s, ax_e) = axes
    for ax, hist, label in (
        (ax_r, fleet["radius_l2_histogram_certified_only"], "certified radius (L2), certified"),
        (ax_p, fleet["p_lower_histogram"], "p_lower, every frame"),
    ):
        edges = np.asarray(hist["edges"])
        ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", edgecolor="k")
        ax.set_xlabel(label)
        ax.set_ylabel("frames (log)")
        ax.set_yscale("log")
    for key, style in (
        ("handover_enter_radius_l2", ":"),
        ("degraded_enter_radius_l2", "--"),
        ("degraded_exit_radius_l2", "-."),
    ):
        if key in policy:
            ax_r.axvline(float(policy[key]), color="r", ls=style, lw=1, label=key)
    if policy:
        ax_r.legend(fontsize=7)
    shares = fleet["time_in_state_fraction"]
    names = list(STATES)
    ax_s.bar(
        range(len(names)),
        [shares.get(n) or 0.0 for n in names],
        color=[_STATE_COLOURS[n] for n in names],
    )
    ax_s.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=7)
    ax_s.set_ylabel("share of driving time")
    ax_s.set_title(f"{fleet['driving_h']:.2f} h of driving, {fleet['recordings']} recordings")
    worst = sorted(
        recs,
        key=lambda r: -((r["handovers_per_h"] or 0.0) + (r["minimal_risk_entries_per_h"] or 0.0)),
    )[:_PLOT_RECORDINGS]
    x = np.arange(len(worst))
    ax_e.bar(x - 0.2, [r["handovers_per_h"] or 0.0 for r in worst], 0.4, label="handovers / h")
    ax_e.bar(
        x + 0.2,
        [r["minimal_risk_entries_per_h"] or 0.0 for r in worst],
        0.4,
        label="minimal-risk entries / h",
    )
    ax_e.set_xticks(x, [r["name"] for r in worst], rotation=60, ha="right", fontsize=6)
    ax_e.set_ylabel("events per hour")
    ax_e.legend(fontsize=7)
    fig.suptitle("fleet replay", fontsize=10)
    fig.savefig(out / DISTRIBUTIONS_PLOT, dpi=100)
    plt.close(fig)

    def away(r: Mapping[str, Any]) -> float:
        total = float(sum(r["time_in_state_s"].values())) or 1.0
        return 1.0 - float(r["time_in_state_s"].get("NOMINAL", 0.0)) / total

    shown = sorted(recs, key=lambda r: (-away(r), r["name"]))[:_PLOT_RECORDINGS]
    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.25 * max(1, len(shown))), constrained_layout=True)
    left = np.zeros(len(shown))
    for st in STATES:
        widths = []
        for r in shown:
            total = sum(r["time_in_state_s"].values()) or 1.0
            widths.append(r["time_in_state_s"].get(st, 0.0) / total)
        ax.barh(range(len(shown)), widths, left=left, color=_STATE_COLOURS[st], label=st)
        left += np.asarray(widths)
    ax.set_yticks(range(len(shown)), [r["name"] for r in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the recording's time in each arbiter state")
    ax.legend(fontsize=7, ncol=5, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.savefig(out / STATES_PLOT, dpi=100)
    plt.close(fig)


# --- markdown -------------------------------------------------------------------------------------
def _f(value: Any, fmt: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, fmt)
    return str(value)


def format_markdown(summary: Mapping[str, Any]) -> str:
    """``fleet_report.md``: the fleet summary for people, linking each recording's report."""
    fleet, run, cfg = summary["fleet"], summary["run"], summary["configuration"]
    certify = cfg.get("certify", {})
    lines = [
        "# Fleet replay",
        "",
        f"{fleet['recordings']} recordings, {fleet['driving_h']:.3f} h of driving, "
        f"{fleet['recording_frames']} frames ({fleet['certified_frames']} certified); "
        f"{fleet['failed']} failed, {fleet['duplicates']} duplicates.",
        "",
        f"Configuration `{str(cfg.get('sha256', ''))[:16]}`: model `{cfg.get('model_name')}`, "
        f"n0 {certify.get('n0')}, n {certify.get('n')}, alpha {certify.get('alpha')}, every "
        f"{cfg.get('every')}, operator {cfg.get('operator')}, seed {cfg.get('seed')}.",
        "",
        "## Fleet",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| certified fraction | {_f(fleet['certified_fraction'])} |",
        f"| handover requests | {fleet['handovers_requested']} "
        f"({_f(fleet['handovers_per_h'], '.2f')} per hour) |",
        f"| minimal-risk entries | {fleet['minimal_risk_entries']} "
        f"({_f(fleet['minimal_risk_entries_per_h'], '.2f')} per hour) |",
        f"| OOD events | {fleet['ood_events']} ({_f(fleet['ood_events_per_h'], '.2f')} per hour) |",
        f"| episodes away from NOMINAL | {fleet['episodes']} |",
        "",
        "| arbiter state | time (s) | share |",
        "| --- | --- | --- |",
    ]
    for st in STATES:
        lines.append(
            f"| {st} | {fleet['time_in_state_s'].get(st, 0.0):.1f} | "
            f"{_f(fleet['time_in_state_fraction'].get(st), '.1%')} |"
        )
    lines += ["", "| distribution | p5 | p25 | p50 | p75 | p95 | min | max |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, key in (
        ("radius (every frame)", "radius_l2"),
        ("radius (certified frames)", "radius_l2_certified_only"),
        ("p_lower", "p_lower"),
    ):
        p = fleet[key]
        cells = " | ".join(_f(p[k]) for k in ("p5", "p25", "p50", "p75", "p95", "min", "max"))
        lines.append(f"| {label} | {cells} |")
    lines += ["", f"![distributions]({DISTRIBUTIONS_PLOT})", "", f"![states]({STATES_PLOT})", ""]
    lines += ["## Worst episodes", ""]
    if summary["worst_episodes"]:
        lines += [
            "| # | recording | from (s) | to (s) | worst state | min radius | during | reasons "
            "| report |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for ep in summary["worst_episodes"]:
            links = f"[summary]({ep['summary']})" + (
                f", [timeline]({ep['plot']})" if ep.get("plot") else ""
            )
            end = f"{ep['end_s']:.2f}" + (" (end)" if ep["unresolved"] else "")
            reasons = "; ".join(ep["reasons"])[:120].replace("|", "/")
            lines.append(
                f"| {ep['rank']} | {ep['recording']} | {ep['start_s']:.2f} | {end} | "
                f"{ep['worst_state']} | {_f(ep['min_radius'])} | "
                f"{', '.join(ep['labelled_episodes']) or '-'} | {reasons} | {links} |"
            )
    else:
        lines.append("No episode away from NOMINAL.")
    lines += [
        "",
        "## Recordings",
        "",
        "| recording | frames | duration (s) | certified | median radius | NOMINAL share | "
        "handovers | MRM entries | final state | report |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["recordings"]:
        total = sum(r["time_in_state_s"].values()) or 1.0
        nominal = r["time_in_state_s"].get("NOMINAL", 0.0) / total
        lines.append(
            f"| {r['name']} | {r['frames']} | {r['duration_s']:.1f} | "
            f"{_f(r['certified_fraction'], '.0%')} | {_f(r['radius_l2']['p50'])} | "
            f"{nominal:.0%} | {r['handovers_requested']} | {r['minimal_risk_entries']} | "
            f"{r['final_state']} | [report]({r['report']}/) |"
        )
    if summary["failed"]:
        lines += ["", "## Failed", "", "| recording | attempts | error |", "| --- | --- | --- |"]
        for f in summary["failed"]:
            error = str(f["error"]).replace("|", "/")
            lines.append(f"| {f['path']} | {f['attempts']} | {error} |")
    if summary["duplicates"]:
        lines += ["", "## Duplicates (replayed once)", ""]
        lines += [f"- {d['path']}: same content as {d['same_as']}" for d in summary["duplicates"]]
    lines += [
        "",
        "## This run",
        "",
        f"{run['backend']}, {run['workers']} workers x {run['threads_per_worker']} threads; "
        f"{run['replayed']} replayed, {run['skipped']} skipped (done before), {run['failed']} "
        f"failed, {run['attempts']} attempts; {run['wall_s']:.1f} s, "
        f"{_f(run['frames_per_s'], '.1f')} frames/s.",
        "",
    ]
    return "\n".join(lines)
