"""The GPU issue's benchmark at toy sizes: every measurement present, targets judged honestly.

The real sizes (ResNet-110, 224x224 ResNet-18, n = 100,000) run on a device machine or by hand;
here small stand-ins check the report's structure and its target logic on the CPU provider.
"""

from __future__ import annotations

import subprocess
import sys

from robust_monitor.tools.bench_device import TARGETS, bench_device


def test_the_device_report_has_every_measurement_at_toy_sizes() -> None:
    report = bench_device(
        "cpu",
        cifar_depth=8,
        imagenet_size=32,
        certify_n=200,
        certify_batch=100,
        certify_repeats=2,
        latency_n=16,
        latency_frames=3,
        throughput_samples=64,
        rounds=1,
        seed=5,
    )
    assert report["machine"]["onnxruntime"] and isinstance(report["machine"]["gpus"], list)
    assert set(report["throughput"]) == {"resnet_cifar", "resnet18"}
    for t in report["throughput"].values():
        assert t["provider"] == "cpu" and t["ratio_smoothing_over_bare"] > 0
    cert = report["certify_resnet_cifar"]
    assert (cert["n0"], cert["n"], len(cert["seconds"])) == (100, 200, 2)
    assert cert["seconds_median"] > 0
    assert report["latency_resnet18"]["frames"] == 3
    assert report["latency_resnet18"]["p99_ms"] >= report["latency_resnet18"]["p50_ms"] > 0
    for where in report["placement"].values():
        assert where["off_provider"] == [] and where["provider"] == "CPUExecutionProvider"
    met = report["targets_met"]
    # Toy sizes never count as meeting the size-bound targets.
    assert report["full_size"] is False
    assert met["resnet110_certify_s_max"] is False and met["resnet18_p99_ms_max"] is False
    assert met["no_node_off_provider"] is True
    ratios = [t["ratio_smoothing_over_bare"] for t in report["throughput"].values()]
    assert met["ratio_smoothing_over_bare_min"] == (
        min(ratios) >= TARGETS["ratio_smoothing_over_bare_min"]
    )


def test_the_device_benchmark_runs_without_rclpy() -> None:
    """The device machines have no ROS: the module must import without it."""
    code = (
        "import sys; sys.modules['rclpy'] = None\n"
        "import robust_monitor.tools.bench_device as b\n"
        "print(sorted(b.TARGETS))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resnet18_p99_ms_max" in result.stdout
