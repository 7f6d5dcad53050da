"""The soak benchmark (``robust-monitor bench --soak``): its figures, and a short real run.

The full soak (10 minutes at 30 Hz) is a benchmark, not a test; here a short one runs the real
nodes over loopback DDS to check that the report is complete and says what happened, and the
figures it is built from are checked against closed forms.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from robust_monitor.core.errors import ConfigError
from robust_monitor.tools import bench_soak
from robust_monitor.tools.bench_soak import SoakConfig, run_soak, write_soak_plot


def test_growth_is_measured_after_the_warm_up_from_a_fitted_line() -> None:
    # 100 MiB during warm-up, then 200 MiB growing by 1 MiB per minute for 10 minutes.
    samples = [(t, 100.0) for t in range(0, 60, 5)]
    samples += [(float(t), 200.0 + (t - 60) / 60.0) for t in range(60, 661, 5)]
    g = bench_soak._growth(samples, warmup_s=60)
    assert g["slope_mib_per_min"] == pytest.approx(1.0, abs=1e-6)
    assert g["growth_pct"] == pytest.approx(100 * 10 / 200, abs=0.5)  # the warm-up is left out
    assert g["after_warmup_mib"] == pytest.approx(200.0, abs=0.6)


def test_latency_windows_and_time_in_state() -> None:
    t0 = 1000.0
    latencies = [(t0 + 10 + i * 0.1, 50.0 + (i >= 100) * 50.0) for i in range(200)]
    windows = bench_soak._windows(latencies, t0, warmup_s=10, window_s=10)
    assert [w["frames"] for w in windows] == [100, 100]
    assert [w["p99_ms"] for w in windows] == [50.0, 100.0]
    states = [(5.0, "MINIMAL_RISK"), (12.0, "NOMINAL"), (18.0, "DEGRADED")]
    assert bench_soak._time_in_state(states, 10.0, 20.0) == {
        "MINIMAL_RISK": 2.0, "NOMINAL": 6.0, "DEGRADED": 2.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    "kwargs",
    [{"duration_s": 0}, {"warmup_s": 30, "duration_s": 20}, {"rate_hz": -1}, {"frames": 0}],
)
def test_bad_soak_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SoakConfig(**kwargs)


def test_the_soak_refuses_to_start_dds_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    with pytest.raises(ConfigError, match="LOCALHOST"):
        run_soak(SoakConfig(duration_s=1, warmup_s=0))


def test_a_short_soak_through_the_real_nodes(tmp_path: Path) -> None:
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    config = SoakConfig(
        duration_s=10, rate_hz=30, warmup_s=4, window_s=3, rss_period_s=0.5,
        monitor_params={"n0": 16, "n": 64}, arbiter_params={"recovery_time_s": 0.5},
    )  # fmt: skip
    report = run_soak(config)
    json.dumps(report)  # the report is JSON as it is
    assert report["nodes_alive_at_end"] == {"monitor": True, "arbiter": True}
    frames = report["frames"]
    assert frames["published"] == pytest.approx(300, rel=0.1)
    # Every frame reached the monitor over loopback, and every one was certified or dropped.
    assert frames["lost_in_transport"] <= 3
    assert frames["monitor_certified"] + frames["monitor_dropped"] == pytest.approx(
        frames["monitor_received"], abs=1
    )
    assert frames["certificates_received"] > 20 and frames["bad_certificates"] == 0
    assert report["pending_frames_max"] <= 1 and report["target"]["bounded_queue"]
    assert report["latency_ms"]["p99"] is not None and report["latency_ms"]["windows"]
    for name in ("monitor", "arbiter"):
        assert report["rss"][name]["after_warmup_mib"] > 10
        assert len(report["rss_samples"][name]) >= 15
    assert report["operator_released"]
    assert "NOMINAL" in report["arbiter_time_in_state_s"]
    plot = write_soak_plot(report, tmp_path / "soak.png")
    assert plot.stat().st_size > 10_000


def test_the_bench_command_refuses_a_malformed_soak_parameter() -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "robust_monitor.tools.cli", "bench", "--no-certify", "--soak"]
    done = subprocess.run(
        [*cmd, "--soak-param", "n500"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "--soak-param takes KEY=VALUE" in done.stderr


def test_soak_parameters_are_typed_like_ros_parameters() -> None:
    from robust_monitor.tools.bench import _soak_value

    assert [_soak_value(v) for v in ("500", "0.5", "true", "sequential")] == [
        500, 0.5, True, "sequential",
    ]  # fmt: skip
