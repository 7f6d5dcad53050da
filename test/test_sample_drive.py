"""The shipped sample drive: a readable rosbag2 recording that matches its episode file."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from robust_monitor.assets import SAMPLE_DRIVE
from robust_monitor.synth.roadsigns import CLASSES
from robust_monitor.tools.sample_drive import (
    BAG_NAME,
    CAMERA_TOPIC,
    CLOCK_TOPIC,
    EPISODES_FILE,
    START_NS,
)

BAG = SAMPLE_DRIVE / BAG_NAME
MAX_BYTES = 8_000_000
_KEPT_FRAMES = {0, 150, 255, 450, 600, 705, 750}
"""Frames decoded by the tests: clear (0 s, 10 s, 50 s), fog peak (17 s), full glare (30 s),
tunnel (40 s), blocked lens (47 s)."""


@pytest.fixture(scope="module")
def episodes() -> dict[str, Any]:
    data = yaml.safe_load((SAMPLE_DRIVE / EPISODES_FILE).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def recording() -> dict[str, Any]:
    """Stamps, log times and a few decoded frames of both topics, read once."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    out: dict[str, Any] = {"image_stamps": [], "image_times": [], "clock": [], "frames": {}}
    with AnyReader([BAG], default_typestore=typestore) as reader:
        out["types"] = {c.topic: c.msgtype for c in reader.connections}
        for connection, log_ns, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            if connection.topic == CAMERA_TOPIC:
                index = len(out["image_stamps"])
                out["image_stamps"].append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
                out["image_times"].append(log_ns)
                if index in _KEPT_FRAMES:
                    out["frames"][index] = (msg.format, msg.header.frame_id, bytes(msg.data))
            elif connection.topic == CLOCK_TOPIC:
                out["clock"].append(msg.clock.sec * 10**9 + msg.clock.nanosec)
    return out


def test_recording_is_small_mcap_with_the_expected_topics(recording: dict[str, Any]) -> None:
    size = sum(p.stat().st_size for p in BAG.rglob("*") if p.is_file())
    assert size <= MAX_BYTES, f"sample drive is {size} bytes"
    info = yaml.safe_load((BAG / "metadata.yaml").read_text(encoding="utf-8"))
    assert info["rosbag2_bagfile_information"]["storage_identifier"] == "mcap"
    assert sorted(p.suffix for p in BAG.iterdir()) == [".mcap", ".yaml"]
    assert recording["types"] == {
        CAMERA_TOPIC: "sensor_msgs/msg/CompressedImage",
        CLOCK_TOPIC: "rosgraph_msgs/msg/Clock",
    }


def test_frames_at_15_hz_for_a_minute_with_monotonic_stamps(recording: dict[str, Any]) -> None:
    stamps = np.array(recording["image_stamps"], np.int64)
    assert 880 <= len(stamps) <= 920
    assert stamps[0] == START_NS
    steps = np.diff(stamps) / 1e9
    assert (steps > 0).all(), "header stamps must increase"
    assert np.allclose(steps, 1 / 15, atol=1e-6)
    duration = (stamps[-1] - stamps[0]) / 1e9
    assert 59.0 <= duration <= 61.0
    # Recording (log) time equals the header stamp.
    np.testing.assert_array_equal(stamps, np.array(recording["image_times"], np.int64))
    clock = np.array(recording["clock"], np.int64)
    assert (np.diff(clock) > 0).all()
    assert clock[0] <= stamps[0] and clock[-1] >= stamps[-1] - 10**8
    assert len(clock) >= 2 * len(stamps), "clock should tick faster than the camera"


def test_frames_are_jpeg_that_decode_to_320x240(recording: dict[str, Any]) -> None:
    assert set(recording["frames"]) == _KEPT_FRAMES
    for index, (fmt, frame_id, data) in recording["frames"].items():
        assert "jpeg" in fmt, fmt
        assert frame_id == "camera"
        assert data[:2] == b"\xff\xd8", f"frame {index} is not a JPEG"
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (240, 320, 3)
        assert image.std() > 3.0, f"frame {index} is flat"


def test_episode_file_matches_the_recording(
    episodes: dict[str, Any], recording: dict[str, Any]
) -> None:
    stamps = recording["image_stamps"]
    duration = (stamps[-1] - stamps[0]) / 1e9 + 1 / episodes["frame_rate_hz"]
    assert episodes["recording"] == BAG_NAME
    assert episodes["camera_topic"] == CAMERA_TOPIC
    assert episodes["frames"] == len(stamps)
    assert episodes["duration_s"] == pytest.approx(duration, abs=1e-6)
    eps = episodes["episodes"]
    # Episodes tile the drive without gaps or overlaps.
    assert eps[0]["start_s"] == 0.0
    assert eps[-1]["end_s"] == pytest.approx(duration, abs=1e-6)
    for before, after in itertools.pairwise(eps):
        assert before["end_s"] == after["start_s"]
    for e in eps:
        assert e["start_s"] < e["end_s"]
        assert e["name"] and e["expected"] and e["description"] and e["certification"]
    kinds = {e["kind"] for e in eps}
    assert {"nominal", "corruption", "ood"} <= kinds
    names = {e["name"] for e in eps}
    assert {"fog", "glare", "tunnel"} <= names
    assert eps[0]["kind"] == eps[-1]["kind"] == "nominal"


def test_sign_passages_are_inside_the_drive(episodes: dict[str, Any]) -> None:
    signs = episodes["signs"]
    assert len(signs) >= 6
    by_name = {e["name"]: e for e in episodes["episodes"]}
    seen = set()
    for sign in signs:
        assert sign["class"] in CLASSES[:-1]
        assert 0.0 <= sign["enter_roi_s"] < sign["exit_roi_s"] <= episodes["duration_s"]
        assert sign["frames_in_roi"] >= 5
        ep = by_name[sign["episode"]]
        assert ep["start_s"] <= sign["enter_roi_s"] < ep["end_s"]
        if ep["kind"] == "nominal":
            seen.add(sign["class"])
    assert len(seen) >= 5, f"nominal driving should show most sign classes, saw {seen}"


def test_episode_frames_differ_as_described(recording: dict[str, Any]) -> None:

    def decode(index: int) -> np.ndarray:
        data = recording["frames"][index][2]
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), 1), cv2.COLOR_BGR2RGB)

    clear, fog, glare = decode(150), decode(255), decode(450)
    tunnel, blocked = decode(600), decode(705)
    assert _edges(fog) < 0.5 * _edges(clear), "fog washes out edges"
    assert _saturation(fog) < 0.5 * _saturation(clear), "fog washes out colour"
    assert glare.mean() > clear.mean() + 30, "glare over-exposes"
    assert tunnel[:100].mean() < clear[:100].mean() - 40, "no sky in the tunnel"
    assert blocked.mean() < 0.6 * clear.mean(), "mud on the lens darkens the view"


def _edges(image: np.ndarray) -> float:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean())


def _saturation(image: np.ndarray) -> float:
    return float((image.max(axis=2).astype(np.int16) - image.min(axis=2)).mean())


def test_sample_drive_folder_holds_only_the_recording_and_episodes() -> None:
    names = {p.name for p in Path(SAMPLE_DRIVE).iterdir() if not p.name.startswith(".")}
    assert names == {BAG_NAME, EPISODES_FILE}
