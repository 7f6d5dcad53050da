"""Helpers shared by the ROS tests: image messages with known pixels, and rclpy on loopback.

- ``raw_image`` / ``compressed_image`` encode a known RGB frame into every supported encoding
  and return the message together with the RGB frame a correct decoder must give back.
- ``RosHarness`` owns one rclpy context per test (loopback DDS: test/conftest.py sets the
  environment before rclpy is imported) and spins its nodes on a background executor thread.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import cv2
import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.client import Client
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

T = TypeVar("T")

RAW_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "yuv422", "yuyv")
LOSSY_ENCODINGS = frozenset({"yuv422", "yuyv"})


# --- frames ---------------------------------------------------------------------------------------
def known_frame(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A uint8 RGB frame with gradients and blocks; horizontal pixel pairs share their colour
    (so 4:2:2 chroma subsampling loses nothing but rounding)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack(
        [(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), ((x + y) * 3) % 256],
        axis=-1,
    ).astype(np.uint8)
    blocks = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    frame[: height // 2, : width // 2] = np.kron(blocks, np.ones((8, 8, 1), np.uint8))[
        : height // 2, : width // 2
    ]
    frame[:, 1::2] = frame[:, 0::2]
    return frame


def stamp(sec: int, nanosec: int = 0) -> Time:
    return Time(sec=sec, nanosec=nanosec)


def _rgb_to_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 limited range (what OpenCV's YUV422 -> RGB conversions invert)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return tuple(np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v))  # type: ignore[return-value]


def _pixels(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(row-major pixel bytes as uint8 (H, row_bytes), expected RGB, big-endian flag)."""
    h, w, _ = rgb.shape
    gray = rgb[..., 1]
    grey3 = np.repeat(gray[..., None], 3, axis=2)
    alpha = np.full((h, w, 1), 255, np.uint8)
    if encoding == "rgb8":
        return rgb.reshape(h, -1), rgb, False
    if encoding == "bgr8":
        return rgb[..., ::-1].reshape(h, -1), rgb, False
    if encoding == "rgba8":
        return np.concatenate([rgb, alpha], axis=2).reshape(h, -1), rgb, False
    if encoding == "bgra8":
        return np.concatenate([rgb[..., ::-1], alpha], axis=2).reshape(h, -1), rgb, False
    if encoding == "mono8":
        return gray.copy(), grey3, False
    if encoding in ("mono16", "mono16_be"):
        big = encoding.endswith("_be")
        values = (gray.astype(np.uint16) * 257).astype(">u2" if big else "<u2")
        return values.view(np.uint8).reshape(h, -1), grey3, big
    if encoding in ("32FC3", "32FC1"):
        src = rgb if encoding == "32FC3" else gray[..., None]
        values = (src.astype(np.float32) / np.float32(255.0)).astype("<f4")
        return values.view(np.uint8).reshape(h, -1), rgb if encoding == "32FC3" else grey3, False
    if encoding in ("yuv422", "yuyv"):
        y, u, v = _rgb_to_yuv(rgb)
        u2 = ((u[:, 0::2].astype(np.uint16) + u[:, 1::2]) // 2).astype(np.uint8)
        v2 = ((v[:, 0::2].astype(np.uint16) + v[:, 1::2]) // 2).astype(np.uint8)
        packed = np.empty((h, w * 2), np.uint8)
        if encoding == "yuv422":  # UYVY
            packed[:, 0::4], packed[:, 1::4], packed[:, 2::4], packed[:, 3::4] = (
                u2, y[:, 0::2], v2, y[:, 1::2]
            )  # fmt: skip
        else:  # YUYV
            packed[:, 0::4], packed[:, 1::4], packed[:, 2::4], packed[:, 3::4] = (
                y[:, 0::2], u2, y[:, 1::2], v2
            )  # fmt: skip
        return packed, rgb, False
    raise ValueError(f"no test encoder for {encoding}")


def raw_image(
    rgb: np.ndarray, encoding: str, stamp_: Time | None = None, padding: int = 0
) -> tuple[Image, np.ndarray]:
    """(sensor_msgs/Image of ``rgb`` in ``encoding``, the RGB a decoder must return).

    ``padding`` extra bytes (0xAB) end every row, as a driver with aligned rows sends them.
    ``mono16_be`` is mono16 with big-endian values.
    """
    rows, expected, big = _pixels(rgb, encoding)
    h = rows.shape[0]
    padded = np.concatenate([rows, np.full((h, padding), 0xAB, np.uint8)], axis=1)
    msg = Image()
    msg.header.stamp = stamp_ or stamp(1, 0)
    msg.header.frame_id = "camera"
    msg.height, msg.width = h, rgb.shape[1]
    msg.encoding = encoding.removesuffix("_be")
    msg.is_bigendian = int(big)
    msg.step = padded.shape[1]
    msg.data = padded.tobytes()
    return msg, expected


def compressed_image(
    rgb: np.ndarray, fmt: str, stamp_: Time | None = None, quality: int = 95
) -> CompressedImage:
    """sensor_msgs/CompressedImage of ``rgb`` as ``fmt`` ("jpeg" or "png")."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", rgb[..., ::-1], params)
    assert ok
    msg = CompressedImage()
    msg.header.stamp = stamp_ or stamp(1, 0)
    msg.header.frame_id = "camera"
    msg.format = fmt
    msg.data = encoded.tobytes()
    return msg


# --- rclpy ---------------------------------------------------------------------------------------
def unique_name(prefix: str = "t") -> str:
    """A namespace no other test (or other pytest session on this domain) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


class Inbox:
    """Messages received by a subscription, collected thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self._items.append(msg)

    @property
    def items(self) -> list[Any]:
        with self._lock:
            return list(self._items)

    def wait_for(self, predicate: Callable[[Any], bool], timeout_s: float) -> Any | None:
        found: list[Any] = []

        def check() -> bool:
            found[:] = [m for m in self.items if predicate(m)]
            return bool(found)

        return found[0] if wait_until(check, timeout_s) else None


class TimedInbox:
    """Messages with their arrival time on ``clock`` (monotonic unless given), thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._items: list[tuple[float, Any]] = []

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self._items.append((self._clock(), msg))

    def items(self, since: float = -math.inf) -> list[tuple[float, Any]]:
        with self._lock:
            return [item for item in self._items if item[0] >= since]

    def wait_for(
        self, predicate: Callable[[Any], bool], timeout_s: float, since: float = -math.inf
    ) -> tuple[float, Any] | None:
        found: list[tuple[float, Any]] = []

        def check() -> bool:
            found[:] = [item for item in self.items(since) if predicate(item[1])]
            return bool(found)

        return found[0] if wait_until(check, timeout_s, 0.005) else None


class RosHarness:
    """One rclpy context and an executor spinning its nodes on a thread.

    A SingleThreadedExecutor, as the nodes' own ``main`` uses: rclpy 9.1's MultiThreadedExecutor
    busy-loops holding the GIL (ros2/rclpy#1452) and delayed messages by up to a second here.
    """

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list[Node] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        # The context may be shut down under the executor when a test ends.
        with contextlib.suppress(Exception):
            self.executor.spin()

    def add(self, node: T) -> T:
        assert isinstance(node, Node)
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def node(self, name: str, namespace: str = "") -> Node:
        return self.add(Node(name, namespace=namespace, context=self.context))

    def close(self) -> None:
        # Stop the spin thread before any node is destroyed: destroying a node whose handles sit
        # in the wait set another thread is waiting on crashed the interpreter (a segfault in a
        # clean-clone run).
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(5.0)
        for node in reversed(self.nodes):
            self.executor.remove_node(node)
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@contextmanager
def ros_harness() -> Iterator[RosHarness]:
    harness = RosHarness()
    try:
        yield harness
    finally:
        harness.close()


def set_parameters(
    client_node: Node, target: str, params: list[Parameter[Any]], timeout_s: float = 5.0
) -> list[SetParametersResult]:
    """Call ``<target>/set_parameters`` over DDS, as ``ros2 param set`` does."""
    client: Client[Any, Any] = client_node.create_client(SetParameters, f"{target}/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=timeout_s), f"{target}/set_parameters"
        future = client.call_async(
            SetParameters.Request(parameters=[p.to_parameter_msg() for p in params])
        )
        assert wait_until(future.done, timeout_s), "set_parameters did not answer"
        response = future.result()
        assert response is not None
        return list(response.results)
    finally:
        client_node.destroy_client(client)


def call_trigger(client_node: Node, service: str, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Call a ``std_srvs/Trigger`` service over DDS; returns (success, message)."""
    from std_srvs.srv import Trigger

    client: Client[Any, Any] = client_node.create_client(Trigger, service)
    try:
        assert client.wait_for_service(timeout_sec=timeout_s), service
        future = client.call_async(Trigger.Request())
        assert wait_until(future.done, timeout_s), f"{service} did not answer"
        response = future.result()
        assert response is not None
        return bool(response.success), str(response.message)
    finally:
        client_node.destroy_client(client)
