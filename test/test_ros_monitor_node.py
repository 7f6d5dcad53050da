"""The monitor node with real rclpy over loopback DDS: frames in, certificates out.

Each test starts its own context, a MonitorNode in its own namespace (so a parallel pytest session
on the same domain cannot interfere) and a camera node that publishes known frames.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy, qos_profile_sensor_data
from rosutil import (
    RAW_ENCODINGS,
    Inbox,
    RosHarness,
    compressed_image,
    known_frame,
    raw_image,
    ros_harness,
    set_parameters,
    stamp,
    unique_name,
    wait_until,
)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool

from robust_monitor.core.certify.sequential import DECISIONS
from robust_monitor.core.errors import ConfigError
from robust_monitor.core.pipeline import CertifyConfig, FramePipeline, default_r_required
from robust_monitor.ros.contract import diagnostics_to_evidence
from robust_monitor.ros.monitor_node import (
    PARAMETERS,
    SPECS,
    Delivery,
    FrameMailbox,
    MonitorNode,
    budget_warning,
    settings_from_values,
)
from robust_monitor.ros.qos import camera_qos, evidence_qos, latched_qos

pytestmark = pytest.mark.ros

FRAME = known_frame()
FAST = {
    "sigma": 0.25, "n0": 16, "n": 64, "batch_size": 64, "provider": "cpu", "certify_mode": "fixed",
}  # fmt: skip
DIAGNOSTIC_KEYS = {
    "ready", "model_name", "model_sha256", "provider", "frame_rate_in_hz",
    "certification_rate_hz", "drop_rate_hz", "drop_fraction", "latency_p50_ms",
    "latency_p95_ms", "latency_p99_ms", "frames_received", "frames_certified", "frames_dropped",
    "decode_errors", "certify_errors", "pending_frames", "last_error",
}  # fmt: skip


@dataclass
class Rig:
    """A monitor under test, a camera publishing to it, and inboxes for what it publishes."""

    harness: RosHarness
    monitor: MonitorNode
    camera: Node
    publisher: Any
    certificates: Inbox
    diagnostics: Inbox
    namespace: str

    def publish(self, msg: Any) -> None:
        self.publisher.publish(msg)

    def publish_until(self, msg: Any, done: Callable[[], bool], timeout_s: float = 6.0) -> bool:
        """Publish ``msg`` until ``done()`` (best effort may lose a frame)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.publish(msg)
            if wait_until(done, 1.5):
                return True
        return False

    def certificate_for(self, msg: Any, timeout_s: float = 6.0) -> DiagnosticArray | None:
        """Publish ``msg`` until its certificate arrives (best effort may lose a frame)."""
        want = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.publish(msg)
            found = self.certificates.wait_for(
                lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == want, 1.5
            )
            if found is not None:
                return found
        return None

    def monitor_status(self, predicate: Any = None, timeout_s: float = 5.0) -> DiagnosticStatus:
        name = f"{self.monitor.get_fully_qualified_name()}: monitor"

        def matches(msg: DiagnosticArray) -> bool:
            return any(s.name == name and (predicate is None or predicate(s)) for s in msg.status)

        found = self.diagnostics.wait_for(matches, timeout_s)
        assert found is not None, f"no /diagnostics status {name!r} matching within {timeout_s} s"
        return next(s for s in found.status if s.name == name)


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


@pytest.fixture
def harness() -> Iterator[RosHarness]:
    with ros_harness() as h:
        yield h


def start(
    harness: RosHarness,
    model_path: Path | str,
    compressed: bool = False,
    wait_ready: bool = True,
    **params: Any,
) -> Rig:
    ns = unique_name()
    topic = f"/{ns}/image_raw" + ("/compressed" if compressed else "")
    settings = {
        "model_path": str(model_path),
        "image_topic": topic,
        "compressed": compressed,
        "diagnostics_period_s": 0.2,
        **FAST,
        **params,
    }
    overrides = [Parameter(k, value=v) for k, v in settings.items()]
    monitor = harness.add(
        MonitorNode(context=harness.context, namespace=f"/{ns}", parameter_overrides=overrides)
    )
    camera = harness.node("camera", ns)
    msg_type = CompressedImage if compressed else Image
    publisher = camera.create_publisher(msg_type, topic, qos_profile_sensor_data)
    certificates, diagnostics = Inbox(), Inbox()
    camera.create_subscription(
        DiagnosticArray, f"/{ns}/robust_monitor/certificate", certificates, evidence_qos()
    )
    camera.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, evidence_qos())
    assert wait_until(lambda: publisher.get_subscription_count() > 0, 10.0), "camera unmatched"
    if wait_ready:
        assert monitor.wait_ready(20.0), monitor.state
    return Rig(harness, monitor, camera, publisher, certificates, diagnostics, ns)


def check_certificate(msg: DiagnosticArray | None, sent: Any) -> None:
    assert msg is not None, "no certificate"
    assert msg.header.stamp.sec == sent.header.stamp.sec
    assert msg.header.stamp.nanosec == sent.header.stamp.nanosec
    assert msg.header.frame_id == sent.header.frame_id
    stamp_s, cert, verdict, problems = diagnostics_to_evidence(msg)
    assert problems == [] and cert is not None, problems
    assert (cert.n0, cert.n, cert.sigma, cert.provider) == (16, 64, 0.25, "cpu")
    assert stamp_s == pytest.approx(sent.header.stamp.sec + sent.header.stamp.nanosec * 1e-9)
    # The OOD verdict travels with the certificate and belongs to the same frame.
    assert verdict is not None and verdict.stamp_s == pytest.approx(stamp_s)
    assert {"blur", "msp", "energy", "p_lower"} <= set(verdict.scores)


# --- frames in, certificates out ------------------------------------------------------------------
def test_every_raw_encoding_is_certified_with_the_frame_stamp(
    harness: RosHarness, small_cnn_path: Path
) -> None:
    rig = start(harness, small_cnn_path)
    cases = [(e, 0) for e in RAW_ENCODINGS] + [("rgb8", 7), ("mono16_be", 2), ("32FC3", 0)]
    for i, (encoding, padding) in enumerate(cases):
        msg, _ = raw_image(FRAME, encoding, stamp(1000 + i, 123_456_789), padding=padding)
        check_certificate(rig.certificate_for(msg), msg)
    assert rig.monitor.stats.decode_errors == 0


def test_compressed_jpeg_and_png_are_certified(harness: RosHarness, small_cnn_path: Path) -> None:
    # use_sim_time without a /clock: stamps still come from the image headers.
    rig = start(harness, small_cnn_path, compressed=True, use_sim_time=True)
    for i, fmt in enumerate(("jpeg", "png")):
        msg = compressed_image(FRAME, fmt, stamp(2000 + i, 42))
        check_certificate(rig.certificate_for(msg), msg)


def test_a_bad_frame_does_not_stop_later_frames(harness: RosHarness, small_cnn_path: Path) -> None:
    rig = start(harness, small_cnn_path)
    truncated, _ = raw_image(FRAME, "rgb8", stamp(3000))
    truncated.data = bytes(truncated.data)[:-10]
    unknown, _ = raw_image(FRAME, "rgb8", stamp(3001))
    unknown.encoding = "bayer_rggb8"
    assert rig.publish_until(truncated, lambda: rig.monitor.stats.decode_errors >= 1)
    assert rig.publish_until(unknown, lambda: rig.monitor.stats.decode_errors >= 2)
    failing = rig.monitor_status(lambda s: s.level == DiagnosticStatus.ERROR)
    assert "none is certified" in failing.message
    good, _ = raw_image(FRAME, "bgr8", stamp(3002))
    check_certificate(rig.certificate_for(good), good)
    assert all(m.header.stamp.sec == 3002 for m in rig.certificates.items)
    status = rig.monitor_status(lambda s: int(values(s)["decode_errors"]) >= 2)
    assert "bayer_rggb8" in values(status)["last_error"]


def test_30hz_camera_keeps_one_pending_frame_and_counts_drops(
    harness: RosHarness, small_cnn_path: Path
) -> None:
    # n = 2048 makes certification (~0.3 s here; n = 192 takes ~30 ms) much slower than the
    # 33 ms between frames.
    rig = start(harness, small_cnn_path, n=2048, batch_size=512)
    pending: list[int] = []
    ages: list[float] = []

    def on_certificate(msg: DiagnosticArray) -> None:
        ages.append(time.time() - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))

    rig.camera.create_subscription(
        DiagnosticArray, f"/{rig.namespace}/robust_monitor/certificate", on_certificate, 10
    )
    time.sleep(0.3)
    answer_s: list[float] = []

    def tune_while_busy() -> None:
        time.sleep(1.0)
        begin = time.monotonic()
        results = set_parameters(
            rig.camera,
            rig.monitor.get_fully_qualified_name(),
            [Parameter("diagnostics_period_s", value=0.25)],
        )
        answer_s.append(time.monotonic() - begin)
        assert results[0].successful

    tuner = threading.Thread(target=tune_while_busy)
    tuner.start()
    for _ in range(75):  # 2.5 s at 30 Hz
        now = time.time()
        msg, _ = raw_image(FRAME, "rgb8", stamp(int(now), int((now % 1) * 1e9)))
        rig.publish(msg)
        pending.append(rig.monitor.pending_frames)
        time.sleep(1 / 30)
    tuner.join()

    def settled() -> bool:  # every frame received was either replaced (dropped) or certified
        stats = rig.monitor.stats
        return stats.received == stats.dropped + stats.certified

    assert wait_until(settled, 10.0), rig.monitor.stats
    stats = rig.monitor.stats
    assert max(pending) <= 1
    assert stats.dropped > 0
    assert stats.certified >= 3
    assert stats.latency_ms is not None and stats.certify_ms is not None
    # One frame in hand and one waiting at most: latency is bounded by ~2 certifications.
    assert stats.latency_ms[2] < 2.5 * stats.certify_ms[2] + 250.0
    # A queue would have grown to ~75 certifications; the mailbox keeps it to about two.
    assert ages and max(ages) < 3.0 * stats.certify_ms[2] / 1e3 + 0.5, ages
    assert answer_s and answer_s[0] < 2.0  # the executor kept serving parameters
    status = rig.monitor_status(lambda s: int(values(s)["frames_dropped"]) > 0)
    assert int(values(status)["frames_dropped"]) > 0


def test_diagnostics_report_health_with_the_expected_keys(
    harness: RosHarness, small_cnn_path: Path
) -> None:
    rig = start(harness, small_cnn_path)
    waiting = rig.monitor_status(lambda s: "no frames received yet" in s.message)
    assert waiting.level == DiagnosticStatus.WARN
    msg, _ = raw_image(FRAME, "rgb8", stamp(4000))
    assert rig.certificate_for(msg) is not None
    ok = rig.monitor_status(
        lambda s: s.level == DiagnosticStatus.OK and values(s)["frames_certified"] != "0"
    )
    report = values(ok)
    assert set(report) >= DIAGNOSTIC_KEYS
    assert report["ready"] == "true" and report["provider"] == "cpu"
    assert report["model_name"] == small_cnn_path.stem and len(report["model_sha256"]) == 64
    assert float(report["latency_p50_ms"]) > 0 and int(report["frames_certified"]) >= 1
    assert ok.hardware_id == small_cnn_path.stem
    stale = rig.monitor_status(lambda s: "no frames on" in s.message)
    assert stale.level == DiagnosticStatus.WARN
    ready = Inbox()  # latched: a late subscriber still gets the current state
    rig.camera.create_subscription(
        Bool, f"/{rig.namespace}/robust_monitor/ready", ready, latched_qos()
    )
    assert ready.wait_for(lambda m: m.data is True, 5.0) is not None


# --- failures: the node stays up and says why -----------------------------------------------------
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "model file not found"),
        ("corrupt", "not a valid ONNX model"),
        ("no-sigma", "no sigma given"),
        ("bad-parameter", "parameter n0"),
        ("pinned-hash-mismatch", "does not match the pinned model_sha256"),
        ("bad-mode", "certify_mode must be one of"),
        ("unreachable-r", "cannot be certified with max_n=300"),
        ("past-the-generator-period", "would not be independent"),
    ],
)
def test_a_node_without_a_usable_model_publishes_error_and_no_certificates(
    harness: RosHarness, small_cnn_path: Path, tmp_path: Path, case: str, expected: str
) -> None:
    model, params = small_cnn_path, dict[str, Any]()
    if case == "missing":
        model = tmp_path / "missing.onnx"
    elif case == "corrupt":
        model = tmp_path / "corrupt.onnx"
        model.write_bytes(b"\x08\x07garbage" * 100)
    elif case == "no-sigma":
        params = {"sigma": 0.0}
    elif case == "pinned-hash-mismatch":  # a swapped model file: refused before it is parsed
        params = {"model_sha256": "0" * 64}
    elif case == "bad-mode":
        params = {"certify_mode": "adaptive"}
    elif case == "unreachable-r":  # found when the model (its sigma) is loaded, not per frame
        params = {"certify_mode": "sequential", "r_required": 5.0}
    elif case == "past-the-generator-period":  # the CPU generator's limit, at load time
        params = {"certify_mode": "fixed", "n": 200_000}
    else:
        params = {"n0": -5}
    rig = start(harness, model, wait_ready=False, **params)
    status = rig.monitor_status(lambda s: s.level == DiagnosticStatus.ERROR)
    assert expected in status.message, status.message
    msg, _ = raw_image(FRAME, "rgb8", stamp(5000))
    for _ in range(3):
        rig.publish(msg)
        time.sleep(0.2)
    assert wait_until(lambda: rig.monitor.stats.not_certified >= 1, 3.0)
    assert rig.certificates.items == []
    assert not rig.monitor.ready
    assert values(rig.monitor_status(lambda s: s.level == DiagnosticStatus.ERROR))["ready"] == (
        "false"
    )


# --- parameters -----------------------------------------------------------------------------------
def _set(rig: Rig, **params: Any) -> Any:
    """Set parameters over the parameter service; the first refusal, else the last result."""
    results = set_parameters(
        rig.camera,
        rig.monitor.get_fully_qualified_name(),
        [Parameter(k, value=v) for k, v in params.items()],
    )
    return next((r for r in results if not r.successful), results[-1])


def test_safety_thresholds_are_read_only_by_default(
    harness: RosHarness, small_cnn_path: Path
) -> None:
    rig = start(harness, small_cnn_path)
    for name, value in (("alpha", 0.01), ("sigma", 0.5), ("n", 1000), ("model_path", "/x.onnx")):
        refused = _set(rig, **{name: value})
        assert not refused.successful and "read-only" in refused.reason, refused
    refused = _set(rig, image_topic="/other")
    assert not refused.successful and "read-only" in refused.reason
    assert _set(rig, diagnostics_period_s=0.5).successful
    assert not _set(rig, diagnostics_period_s=0.0).successful
    assert rig.monitor.get_parameter("alpha").value == 0.001
    assert rig.monitor.ready
    alpha = rig.monitor.describe_parameter("alpha")
    assert alpha.read_only and "allow_runtime_tuning" in alpha.description
    assert alpha.floating_point_range[0].to_value == 0.5
    assert rig.monitor.describe_parameter("n0").integer_range[0].from_value == 0
    assert "seconds" in rig.monitor.describe_parameter("diagnostics_period_s").description
    assert not rig.monitor.describe_parameter("diagnostics_period_s").read_only


def test_runtime_tuning_accepts_valid_and_refuses_invalid_updates(
    harness: RosHarness, small_cnn_path: Path
) -> None:
    rig = start(harness, small_cnn_path, allow_runtime_tuning=True)
    assert not rig.monitor.describe_parameter("alpha").read_only
    assert rig.monitor.describe_parameter("image_topic").read_only
    refusals = {
        "alpha": (0.0, "alpha"),
        "n0": (-1, "n0"),
        "roi": ([0.5, 0.5, 0.6, 0.6], "inside the image"),
        "provider": ("gpu", "provider"),
        "model_path": ("/nonexistent/model.onnx", "not a file"),
        "image_topic": ("/other", "read-only"),
    }
    for name, (value, reason) in refusals.items():
        refused = _set(rig, **{name: value})
        assert not refused.successful and reason in refused.reason, (name, refused)
    assert not _set(rig, alpha=0.9).successful  # outside the descriptor's range
    assert _set(rig, alpha=0.01, roi=[0.0, 0.0, 0.5, 1.0]).successful
    assert wait_until(lambda: rig.monitor.ready and rig.monitor.state.settings is not None, 10.0)
    assert wait_until(lambda: rig.monitor.state.settings.certify.alpha == 0.01, 10.0)  # type: ignore[union-attr]
    msg, _ = raw_image(FRAME, "rgb8", stamp(6000))
    found = rig.certificate_for(msg)
    assert found is not None
    _, cert, _, _ = diagnostics_to_evidence(found)
    assert cert is not None and cert.alpha == 0.01


# --- sequential mode ------------------------------------------------------------------------------
SEQUENTIAL = {"certify_mode": "sequential", "r_required": 0.2, "max_n": 2000}


def test_sequential_parameters_are_declared_guarded_with_their_defaults() -> None:
    # The shipped configuration (pipeline.SHIPPED): sequential, 100 ms budget, max_n 300.
    defaults = {"certify_mode": "sequential", "r_required": 0.0, "budget_ms": 100.0, "max_n": 300}
    assert SPECS["n0"].default == 0
    for name, default in defaults.items():
        spec = SPECS[name]
        assert spec.default == default and spec.tuning.value == "guarded", name
        assert spec.description.startswith(("Certification mode", "Sequential mode")), name
    assert "0 takes the arbiter policy's r_recover" in SPECS["r_required"].description
    assert SPECS["bands_l2"].tuning.value == "guarded"
    assert "[0.1, 0.15, 0.25, 0.3]" in SPECS["bands_l2"].description
    assert "0: no deadline" in SPECS["budget_ms"].description
    assert "max_n" in SPECS["allow_runtime_tuning"].description


def test_sequential_mode_publishes_certificates_with_the_decision(
    harness: RosHarness, small_cnn_path: Path
) -> None:
    rig = start(harness, small_cnn_path, **SEQUENTIAL, budget_ms=500.0, bands_l2=[0.1])
    for name in (*SEQUENTIAL, "bands_l2"):
        described = rig.monitor.describe_parameter(name)
        assert described.read_only and "allow_runtime_tuning" in described.description, name
    assert rig.monitor.get_parameter("bands_l2").value == [0.1]
    assert rig.monitor.describe_parameter("max_n").integer_range[0].from_value == 1
    assert rig.monitor.describe_parameter("budget_ms").floating_point_range[0].from_value == 0.0
    refused = _set(rig, certify_mode="fixed")
    assert not refused.successful and "read-only" in refused.reason
    msg, _ = raw_image(FRAME, "rgb8", stamp(7000, 5))
    found = rig.certificate_for(msg)
    assert found is not None
    _, cert, verdict, problems = diagnostics_to_evidence(found)
    assert problems == [] and cert is not None and verdict is not None, problems
    sent = values(found.status[0])
    assert sent["certify_mode"] == "sequential" and sent["decision"] in DECISIONS
    assert float(sent["r_required"]) == 0.2 and int(sent["looks"]) >= 1
    # The known frame gets every vote: certified in the first look, far below max_n.
    assert sent["decision"] == "certified" and cert.radius >= 0.2
    assert 1 <= cert.n < 2000 and cert.n0 == 16
    status = rig.monitor_status(lambda s: values(s).get("decisions_certified", "0") != "0")
    report = values(status)
    assert report["certify_mode"] == "sequential" and report["max_n"] == "2000"
    assert float(report["budget_ms"]) == 500.0 and float(report["r_required"]) == 0.2
    assert float(report["samples_p99"]) == pytest.approx(cert.n, rel=0.5)


def test_runtime_tuning_switches_to_sequential_and_refuses_what_it_cannot_certify(
    harness: RosHarness, small_cnn_path: Path
) -> None:
    rig = start(harness, small_cnn_path, allow_runtime_tuning=True)
    for change, reason in (
        ({"n": 200_000}, "would not be independent"),  # the CPU generator's period (fixed mode)
        ({"certify_mode": "adaptive"}, "certify_mode must be one of"),
        ({"r_required": -1.0}, "r_required"),
        ({"budget_ms": -1.0}, "budget_ms"),
        ({"max_n": 0}, "max_n"),
        ({"certify_mode": "sequential", "r_required": 5.0}, "cannot be certified"),
        # Checked against the loaded engine, even while a reload is under way.
        ({"certify_mode": "sequential", "max_n": 200_000}, "would not be independent"),
    ):
        refused = _set(rig, **change)
        assert not refused.successful and reason in refused.reason, (change, refused)
    assert rig.monitor.get_parameter("r_required").value == 0.0  # unchanged by the refusals
    assert _set(rig, certify_mode="sequential", budget_ms=250.0).successful

    def reloaded() -> bool:
        settings = rig.monitor.state.settings
        return rig.monitor.ready and settings is not None and settings.certify.sequential

    assert wait_until(reloaded, 10.0), rig.monitor.state
    msg, _ = raw_image(FRAME, "rgb8", stamp(7100))
    found = rig.certificate_for(msg)
    assert found is not None
    sent = values(found.status[0])
    assert sent["certify_mode"] == "sequential"
    assert float(sent["r_required"]) == default_r_required()  # 0: the arbiter policy's


def test_a_budget_below_the_quickest_certification_is_warned_about(small_cnn_path: Path) -> None:
    def pipeline(**certify: Any) -> FramePipeline:
        config = CertifyConfig(sigma=0.25, providers="cpu", mode="sequential", **certify)
        p = FramePipeline(small_cnn_path, config, calibration=None)
        p.warmup()
        return p

    assert "below the" in budget_warning(pipeline(budget_ms=1e-3))
    assert budget_warning(pipeline(budget_ms=60_000.0)) == ""
    assert budget_warning(pipeline()) == ""  # no deadline


# --- pure pieces ---------------------------------------------------------------------------------
def test_mailbox_keeps_only_the_newest_frame() -> None:
    mailbox = FrameMailbox()
    assert mailbox.take(timeout_s=0.01) is None
    assert mailbox.put(Delivery("a", 1.0)) is False
    assert mailbox.put(Delivery("b", 2.0)) is True  # "a" was never taken: dropped
    assert mailbox.pending == 1
    taken = mailbox.take(timeout_s=0.01)
    assert taken is not None and taken.msg == "b" and mailbox.pending == 0
    waiter = threading.Thread(target=lambda: mailbox.take(timeout_s=30.0))
    waiter.start()
    mailbox.close()  # wakes a waiting worker at once
    waiter.join(2.0)
    assert not waiter.is_alive()


def test_settings_from_parameter_values() -> None:
    base = {
        "model_path": "m.onnx", "sigma": 0.0, "n0": 8, "n": 32, "alpha": 0.01,
        "batch_size": 16, "provider": "cpu", "roi": None,
    }  # fmt: skip
    settings = settings_from_values(base)
    assert settings.certify.sigma is None and settings.roi is None
    assert settings.certify.n == 32 and settings.certify.providers == "cpu"
    roi = settings_from_values({**base, "roi": [0.1, 0.2, 0.5, 0.5]}).roi
    assert roi is not None and (roi.x, roi.y, roi.width, roi.height) == (0.1, 0.2, 0.5, 0.5)
    # The sequential keys may be missing: the shipped values.
    assert (settings.certify.mode, settings.certify.budget_ms, settings.certify.max_n) == (
        "sequential",
        100.0,
        300,
    )
    seq = settings_from_values(
        {**base, "certify_mode": "sequential", "r_required": 0.0, "budget_ms": 0.0, "max_n": 64}
    ).certify
    assert (seq.mode, seq.r_required, seq.budget_ms, seq.max_n) == ("sequential", None, None, 64)
    seq = settings_from_values(
        {**base, "certify_mode": "sequential", "r_required": 0.2, "budget_ms": 30.0, "max_n": 64}
    ).certify
    assert (seq.r_required, seq.budget_ms) == (0.2, 30.0)
    assert seq.bands is None  # unset: the arbiter policy's thresholds
    banded = settings_from_values({**base, "bands_l2": [0.12, 0.2]}).certify
    assert banded.bands == (0.12, 0.2) and banded.sequential_config().bands == (0.12, 0.2)
    for change, reason in (
        ({"roi": [0.1, 0.2]}, "roi must be empty or"),
        ({"provider": "cpu,gpu"}, "provider"),
        ({"alpha": 0.0}, "alpha"),
        ({"n": 0}, "n must be in"),
        ({"model_path": " "}, "model_path"),
        ({"certify_mode": "Sequential"}, "certify_mode must be one of"),
        ({"r_required": -0.5}, "r_required must be in"),
        ({"r_required": "0.3"}, "r_required must be a number"),
        ({"budget_ms": -1.0}, "budget_ms must be in"),
        ({"max_n": 0}, "max_n must be in"),
        ({"max_n": 10.0}, "max_n must be an integer"),
        ({"bands_l2": [0.1, -0.2]}, "bands_l2 must hold L2 radii in"),
    ):
        with pytest.raises(ConfigError, match=reason):
            settings_from_values({**base, **change})


# --- QoS -----------------------------------------------------------------------------------------
def test_qos_profiles_are_chosen_on_purpose() -> None:
    default = camera_qos()
    assert default.reliability == qos_profile_sensor_data.reliability
    assert default.depth == qos_profile_sensor_data.depth
    assert camera_qos("reliable", 2).reliability == ReliabilityPolicy.RELIABLE
    assert camera_qos("reliable", 2).depth == 2
    with pytest.raises(ConfigError, match="qos_reliability"):
        camera_qos("sometimes")
    with pytest.raises(ConfigError, match="qos_depth"):
        camera_qos(depth=0)
    latched = latched_qos()
    assert latched.durability == DurabilityPolicy.TRANSIENT_LOCAL and latched.depth == 1
    assert latched.reliability == ReliabilityPolicy.RELIABLE


# --- the process: SIGINT ends it cleanly; a bad model never gives a traceback --------------------
@pytest.mark.parametrize(
    ("good_model", "expected"), [(True, "ready:"), (False, "model not loaded")], ids=["ok", "bad"]
)
def test_main_stays_up_and_stops_cleanly_on_sigint(
    small_cnn_path: Path, good_model: bool, expected: str
) -> None:
    model = small_cnn_path if good_model else small_cnn_path.with_name("absent.onnx")
    ns = unique_name()
    command = [
        sys.executable, "-m", "robust_monitor.ros.monitor_node", "--ros-args",
        "-r", f"__ns:=/{ns}", "-p", f"model_path:={model}", "-p", "sigma:=0.25",
        "-p", "provider:=cpu", "-p", "n:=64", "-p", f"image_topic:=/{ns}/image",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        assert wait_until(lambda: any(expected in line for line in lines), 30.0), lines
        time.sleep(0.5)
        assert proc.poll() is None, "the node exited on its own"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15.0) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5.0)
    assert not any("Traceback" in line for line in lines), "".join(lines)


def test_a_model_matching_its_pinned_hash_certifies(
    harness: RosHarness, small_cnn_path: Path
) -> None:
    pinned = hashlib.sha256(small_cnn_path.read_bytes()).hexdigest()
    rig = start(harness, small_cnn_path, model_sha256=pinned.upper())
    msg, _ = raw_image(FRAME, "rgb8", stamp(5000))
    rig.publish(msg)
    assert wait_until(lambda: len(rig.certificates.items) >= 1, 10.0)
    assert values(rig.monitor_status(lambda s: "model_sha256" in values(s)))["model_sha256"] == (
        pinned
    )


@pytest.mark.parametrize("bad", ["abc", "g" * 64, "0" * 63])
def test_a_malformed_pinned_hash_is_an_invalid_configuration(bad: str) -> None:
    values_ = {spec.name: spec.default for spec in PARAMETERS}
    values_["model_sha256"] = bad
    with pytest.raises(ConfigError, match="model_sha256"):
        settings_from_values(values_)
