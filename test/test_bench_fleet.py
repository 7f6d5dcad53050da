"""``robust-monitor bench --fleet``: the report's shape at a tiny size (no timing targets)."""

from __future__ import annotations

import json

import pytest

from robust_monitor.tools.bench_fleet import bench_fleet


def test_fleet_bench_reports_throughput_and_scaling_per_worker_count() -> None:
    messages: list[str] = []
    report = bench_fleet(2, 6, n0=8, n=32, worker_counts=(2, 1), progress=messages.append)
    json.dumps(report, allow_nan=False)  # strict JSON
    assert report["recordings"] == 2 and report["frames_per_recording"] == 6
    assert report["threads_per_worker"] == 1 and report["all_workers"] >= 1
    assert sorted(report["workers"]) == ["1", "2"]
    for k, entry in report["workers"].items():
        assert entry["workers"] == int(k)
        assert entry["frames"] == 2 * 6, "every frame of every recording replayed"
        assert entry["wall_s"] > 0 and entry["frames_per_s"] > 0
        assert entry["frames_per_s"] == pytest.approx(entry["frames"] / entry["wall_s"], rel=0.01)
        assert entry["replay_s_per_recording"] > 0
    fps_1 = report["workers"]["1"]["frames_per_s"]
    assert report["workers"]["1"]["scaling_efficiency"] == pytest.approx(1.0, abs=1e-3)
    two = report["workers"]["2"]
    assert two["scaling_efficiency"] == pytest.approx(two["frames_per_s"] / (2 * fps_1), abs=1e-3)
    assert report["frames_per_s"] == {k: v["frames_per_s"] for k, v in report["workers"].items()}
    assert len(messages) == 2 and "1 worker(s)" in messages[0]


def test_fleet_bench_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="worker counts"):
        bench_fleet(1, 2, worker_counts=(0,))
