"""``robust-monitor bench --fleet``: fleet replay throughput for 1, 2 and all workers.

A fleet of recordings is generated in a temporary folder (``write_fleet``: windows of the
shipped sample drive, each re-stamped so every recording is different content) and replayed by
``fleet.run_fleet`` on the local process pool with 1, 2 and ``os.cpu_count()`` workers (counts
that coincide are measured once), each worker on **one** onnxruntime thread so that ``k``
workers use ``k`` cores and the scaling is the pool's, not onnxruntime's threading. Reported per
worker count: wall time of the whole fleet (pool start-up, replays, the fleet report), frames
per second (recording frames / wall time) and the scaling efficiency
``fps_k / (k * fps_1)``. No video is encoded (``--no-video``), as the frames are what scales.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from robust_monitor.assets import SAMPLE_DRIVE

SAMPLE_BAG = SAMPLE_DRIVE / "roadside_drive"
CAMERA_TOPIC = "/camera/image_raw/compressed"
FLEET_START_NS = 1_800_000_000 * 10**9
"""First stamp of the generated fleet; recording i starts i hours later."""


def _sample_messages(limit: int) -> list[bytes]:
    """The first ``limit`` raw (CDR) camera messages of the shipped sample drive."""
    from rosbags.highlevel import AnyReader

    out: list[bytes] = []
    with AnyReader([SAMPLE_BAG]) as reader:
        connections = [c for c in reader.connections if c.topic == CAMERA_TOPIC]
        for _conn, _t, raw in reader.messages(connections=connections):
            out.append(bytes(raw))
            if len(out) >= limit:
                break
    return out


def write_fleet(
    folder: Path,
    recordings: int,
    frames: int,
    *,
    offsets_s: Sequence[float] | None = None,
    storages: Sequence[str] = ("mcap", "sqlite3"),
    rate_hz: float = 15.0,
) -> list[Path]:
    """Write ``recordings`` rosbag2 recordings of ``frames`` camera frames each under ``folder``.

    Recording ``i`` holds the sample drive's frames from ``offsets_s[i]`` seconds on (default:
    spread evenly over the drive), stamped from ``FLEET_START_NS + i`` hours at ``rate_hz``, in
    storage ``storages[i % len(storages)]``. Returns the recordings' folders.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if recordings < 1 or frames < 1:
        raise ValueError(f"recordings and frames must be >= 1, got {recordings}, {frames}")
    source = _sample_messages(900)
    span = len(source) - frames
    if span < 0:
        raise ValueError(f"at most {len(source)} frames per recording, got {frames}")
    if offsets_s is None:
        starts = [round(i * span / max(1, recordings - 1)) for i in range(recordings)]
    else:
        if len(offsets_s) != recordings:
            raise ValueError("one offset per recording")
        starts = [min(span, max(0, round(o * 15.0))) for o in offsets_s]
    store = get_typestore(Stores.ROS2_KILTED)
    msgtype = "sensor_msgs/msg/CompressedImage"
    time_t = store.types["builtin_interfaces/msg/Time"]
    period_ns = round(1e9 / rate_hz)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, start in enumerate(starts):
        storage = storages[i % len(storages)]
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        path = folder / f"drive_{i:03d}"
        with Writer(path, version=9, storage_plugin=plugin) as writer:
            conn = writer.add_connection(CAMERA_TOPIC, msgtype, typestore=store)
            for k in range(frames):
                msg: Any = store.deserialize_cdr(source[start + k], msgtype)
                ns = FLEET_START_NS + i * 3600 * 10**9 + k * period_ns
                msg.header.stamp = time_t(sec=ns // 10**9, nanosec=ns % 10**9)
                writer.write(conn, ns, store.serialize_cdr(msg, msgtype))
        out.append(path)
    return out


def bench_fleet(
    recordings: int = 4,
    frames: int = 60,
    *,
    n0: int = 16,
    n: int = 100,
    every: int = 1,
    worker_counts: Sequence[int] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fleet throughput on the local pool at each worker count, and the scaling efficiency."""
    from robust_monitor.tools.fleet import FleetOptions, run_fleet

    cores = os.cpu_count() or 1
    counts = sorted(set(worker_counts or (1, 2, cores)))
    if counts[0] < 1:
        raise ValueError(f"worker counts must be >= 1, got {counts}")
    overrides = {"n0": n0, "n": n, "provider": "cpu"}
    per: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rm-fleet-bench-") as tmp:
        bags = write_fleet(Path(tmp) / "bags", recordings, frames)
        for k in counts:
            if progress is not None:
                progress(f"fleet: {recordings} recordings x {frames} frames on {k} worker(s)")
            options = FleetOptions(
                overrides=overrides, seed=seed, every=every, video=False, workers=k, threads=1
            )
            began = time.perf_counter()
            result = run_fleet(bags, Path(tmp) / f"run_{k}", options)
            wall = time.perf_counter() - began
            run = result.summary["run"]
            if result.exit_code != 0 or run["replayed"] != recordings:
                raise RuntimeError(f"fleet bench run on {k} workers failed: {result.summary}")
            done = int(run["recording_frames_replayed"])
            per[str(k)] = {
                "workers": k,
                "wall_s": round(wall, 3),
                "frames": done,
                "frames_per_s": round(done / wall, 2),
                "replay_s_per_recording": round(
                    sum(
                        float(r.get("wall_s", 0.0))
                        for r in _markers(Path(tmp) / f"run_{k}", result.summary)
                    )
                    / recordings,
                    3,
                ),
            }
    base = per["1"]["frames_per_s"] if "1" in per else None
    for k_text, entry in per.items():
        k = int(k_text)
        entry["scaling_efficiency"] = round(entry["frames_per_s"] / (k * base), 3) if base else None
    return {
        "recordings": recordings,
        "frames_per_recording": frames,
        "n0": n0,
        "n": n,
        "every": every,
        "threads_per_worker": 1,
        "cores": cores,
        "backend": "process-pool",
        "workers": per,
        "all_workers": cores,
        "frames_per_s": {k: v["frames_per_s"] for k, v in per.items()},
        "scaling_efficiency": {k: v["scaling_efficiency"] for k, v in per.items()},
        "note": "frames/s = recording frames / wall time of the whole fleet run (pool start-up "
        "and fleet report included); efficiency = fps_k / (k * fps_1); 'all' = cores workers",
    }


def _markers(out: Path, summary: dict[str, Any]) -> list[dict[str, Any]]:
    import json

    from robust_monitor.tools.fleet import TASK_FILE

    return [
        json.loads((out / r["report"] / TASK_FILE).read_text(encoding="utf-8"))
        for r in summary["recordings"]
    ]
