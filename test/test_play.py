"""``robust-monitor play``: a recording written with rosbags is published live over rclpy (DDS on
loopback, test/conftest.py) with its timing and a /clock, and received by a subscriber here."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosutil import ros_harness

pytestmark = pytest.mark.ros

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
T = TYPESTORE.types
START_NS = 1_700_000_000_000_000_000
FRAMES = 10
PERIOD_NS = 50_000_000  # 20 Hz: the recording lasts 0.45 s


def write_bag(path: Path) -> Path:
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection("/cam", "sensor_msgs/msg/Image", typestore=TYPESTORE)
        clock = writer.add_connection("/clock", "rosgraph_msgs/msg/Clock", typestore=TYPESTORE)
        for i in range(FRAMES):
            ns = START_NS + i * PERIOD_NS
            stamp = T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
            msg = T["sensor_msgs/msg/Image"](
                header=T["std_msgs/msg/Header"](stamp=stamp, frame_id="camera"),
                height=2,
                width=2,
                encoding="rgb8",
                is_bigendian=0,
                step=6,
                data=np.full(12, i, np.uint8),
            )
            writer.write(cam, ns, TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            tick = T["rosgraph_msgs/msg/Clock"](clock=stamp)
            writer.write(clock, ns, TYPESTORE.serialize_cdr(tick, "rosgraph_msgs/msg/Clock"))
    return path


def test_play_publishes_frames_in_order_with_a_clock(tmp_path: Path) -> None:
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    bag = write_bag(tmp_path / "bag")
    images: list[tuple[float, int, int]] = []
    clocks: list[int] = []
    with ros_harness() as ros:
        node = ros.node("play_listener")
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(
            Image,
            "/cam",
            lambda m: images.append(
                (
                    time.perf_counter(),
                    m.header.stamp.sec * 10**9 + m.header.stamp.nanosec,
                    m.data[0],
                )
            ),
            qos,
        )
        node.create_subscription(
            Clock, "/clock", lambda m: clocks.append(m.clock.sec * 10**9 + m.clock.nanosec), qos
        )
        cmd = [
            sys.executable, "-m", "robust_monitor.tools.cli", "play", str(bag),
            "--wait-for-subscribers", "30", "--delay", "0.5",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        time.sleep(0.5)
    assert done.returncode == 0, done.stderr
    assert f"played {FRAMES} messages" in done.stdout
    # Every frame, in order, with its header untouched (raw CDR passed through).
    assert [s for _, s, _ in images] == [START_NS + i * PERIOD_NS for i in range(FRAMES)]
    assert [v for _, _, v in images] == list(range(FRAMES))
    # Original timing: 0.45 s from first to last frame (scheduling jitter allowed).
    span = images[-1][0] - images[0][0]
    assert 0.3 <= span <= 1.5, span
    # The generated clock (the recorded /clock is not replayed): recording time, increasing.
    assert len(clocks) >= 5
    assert clocks == sorted(clocks)
    assert clocks[0] >= START_NS and clocks[-1] <= START_NS + 2 * 10**9


def test_play_refuses_a_ros1_bag_and_a_missing_one(tmp_path: Path) -> None:
    from robust_monitor.tools.cli import main

    ros1 = tmp_path / "x.bag"
    ros1.write_bytes(b"#ROSBAG V2.0\n")
    assert main(["play", str(ros1)]) == 2
    assert main(["play", str(tmp_path / "none")]) == 2
