"""Reading camera frames from recordings (rosbag2 sqlite3/mcap, ROS 1 bags) with ``rosbags``.

No ROS installation is needed: ``rosbags`` is pure Python and carries the message definitions.
Frames come out in the project's image form (uint8 RGB) with their header stamp in seconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robust_monitor.core.errors import InputError, RobustMonitorError
from robust_monitor.core.imaging.decode import decode_image_bytes, decode_raw_image

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line (the CLI prints errors as one line)."""
    return " ".join(str(exc).split())


class RecordingError(RobustMonitorError):
    """A recording cannot be read: missing, corrupt, empty, or without a usable camera topic."""


@dataclass(frozen=True, slots=True)
class CameraFrame:
    index: int
    stamp_ns: int
    """Header stamp, exactly (integer nanoseconds: float seconds lose ~100 ns at today's epoch)."""
    image: np.ndarray
    """uint8 (H, W, 3) RGB."""
    frame_id: str = ""
    """``header.frame_id``."""

    @property
    def stamp_s(self) -> float:
        """Header stamp, seconds."""
        return self.stamp_ns * 1e-9


def open_recording(path: Path):  # type: ignore[no-untyped-def]
    from rosbags.highlevel import AnyReader

    if not path.exists():
        raise RecordingError(f"recording not found: {path}")
    try:
        reader = AnyReader([path])
        reader.open()
    except Exception as exc:  # rosbags raises several reader errors; all mean "unreadable"
        raise RecordingError(f"{path}: not a readable rosbag2/ROS 1 recording: {exc}") from exc
    return reader


def camera_topics(path: str | Path) -> dict[str, str]:
    """Camera topics of a recording: {topic: message type}."""
    reader = open_recording(Path(path))
    try:
        return {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_TYPES}
    finally:
        reader.close()


def choose_topic(topics: dict[str, str], requested: str | None, path: Path) -> str:
    if requested is not None:
        if requested not in topics:
            raise RecordingError(
                f"{path}: topic {requested!r} is not a camera topic; camera topics: "
                f"{sorted(topics) or 'none'}"
            )
        return requested
    if len(topics) == 1:
        return next(iter(topics))
    if not topics:
        raise RecordingError(f"{path}: no camera topic (sensor_msgs Image or CompressedImage)")
    raise RecordingError(
        f"{path}: several camera topics, choose one with --topic: {sorted(topics)}"
    )


def iter_frames(path: str | Path, topic: str | None = None) -> Iterator[CameraFrame]:
    """Decoded frames of one camera topic, in recording order."""
    p = Path(path)
    reader = open_recording(p)
    try:
        topics = {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_TYPES}
        chosen = choose_topic(topics, topic, p)
        connections = [c for c in reader.connections if c.topic == chosen]
        messages = reader.messages(connections=connections)
        for index in itertools.count():
            try:
                connection, _time, raw = next(messages)
            except StopIteration:
                return
            except Exception as exc:  # rosbags reader, struct, zstd/lz4 errors on bad chunks
                raise RecordingError(
                    f"{p}: recording is truncated or corrupt after {index} frames on {chosen}: "
                    f"{type(exc).__name__}: {_one_line(exc)}"
                ) from exc
            try:
                msg = reader.deserialize(raw, connection.msgtype)
            except Exception as exc:
                raise RecordingError(
                    f"{p}: message {index} on {chosen} is corrupt: {_one_line(exc)}"
                ) from exc
            stamp_ns = int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)
            try:
                if connection.msgtype.endswith("CompressedImage"):
                    image = decode_image_bytes(bytes(msg.data))
                else:
                    image = decode_raw_image(
                        msg.encoding,
                        msg.height,
                        msg.width,
                        msg.step,
                        bytes(msg.data),
                        bool(msg.is_bigendian),
                    )
            except InputError as exc:
                raise RecordingError(f"{p}: frame {index} on {chosen}: {exc}") from exc
            yield CameraFrame(index, stamp_ns, image, str(msg.header.frame_id))
    finally:
        reader.close()
