"""ROS image messages -> the project's image form (uint8 (H, W, 3) RGB) and the stamp in seconds.

The pixel work is the core's (``robust_monitor.core.imaging.decode``); this module only reads
message fields and refuses what the core cannot decode. Every failure is an ``InputError`` whose
message says what was wrong, so the node can report the frame, drop it and carry on.

- ``sensor_msgs/Image``: the encodings of ``decode.RAW_ENCODINGS`` (rgb8, bgr8, rgba8, bgra8,
  mono8, mono16, yuv422 (UYVY), yuyv, 32FC1, 32FC3), any ``step`` >= one row (padded rows are
  fine), big- or little-endian multi-byte values.
- ``sensor_msgs/CompressedImage``: JPEG or PNG (told apart by their magic bytes, so the loose
  ``format`` strings of image_transport such as ``"rgb8; jpeg compressed bgr8"`` all work);
  ``compressedDepth`` is refused. The frame size declared in the JPEG/PNG header is checked
  against ``decode.MAX_PIXELS`` before anything is decompressed.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from robust_monitor.core.errors import InputError
from robust_monitor.core.imaging.decode import MAX_PIXELS, decode_image_bytes, decode_raw_image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


def stamp_to_seconds(stamp: Any) -> float:
    """A ``builtin_interfaces/Time`` as float seconds (``sec + nanosec * 1e-9``)."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def image_to_rgb(msg: Image) -> tuple[np.ndarray, float]:
    """``sensor_msgs/Image`` -> (uint8 (H, W, 3) RGB, header stamp in seconds)."""
    try:
        rgb = decode_raw_image(
            msg.encoding,
            int(msg.height),
            int(msg.width),
            int(msg.step),
            memoryview(msg.data),
            bool(msg.is_bigendian),
        )
    except InputError as exc:
        raise InputError(
            f"sensor_msgs/Image ({msg.width}x{msg.height} {msg.encoding!r}): {exc}"
        ) from exc
    return rgb, stamp_to_seconds(msg.header.stamp)


def compressed_image_to_rgb(msg: CompressedImage) -> tuple[np.ndarray, float]:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) -> (uint8 (H, W, 3) RGB, stamp in seconds)."""
    fmt = str(msg.format)
    data = bytes(msg.data)
    if "compresseddepth" in fmt.lower():
        raise InputError(f"CompressedImage format {fmt!r}: compressedDepth is not supported")
    if not data:
        raise InputError(f"CompressedImage (format {fmt!r}) has no data")
    size = declared_size(data)
    if size is None:
        raise InputError(
            f"CompressedImage (format {fmt!r}): data is neither JPEG nor PNG "
            f"(starts with {data[:8].hex()}), or its header is truncated"
        )
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(
            f"CompressedImage (format {fmt!r}) declares an empty {width}x{height} frame"
        )
    if width * height > MAX_PIXELS:
        raise InputError(
            f"CompressedImage (format {fmt!r}) declares {width}x{height}, "
            f"above the {MAX_PIXELS}-pixel limit"
        )
    try:
        rgb = decode_image_bytes(data)
    except InputError as exc:
        raise InputError(f"CompressedImage (format {fmt!r}, {len(data)} bytes): {exc}") from exc
    return rgb, stamp_to_seconds(msg.header.stamp)


def message_to_rgb(msg: Image | CompressedImage) -> tuple[np.ndarray, float]:
    """Either image message -> (uint8 (H, W, 3) RGB, stamp in seconds)."""
    if isinstance(msg, CompressedImage):
        return compressed_image_to_rgb(msg)
    if isinstance(msg, Image):
        return image_to_rgb(msg)
    raise InputError(f"expected sensor_msgs/Image or CompressedImage, got {type(msg).__name__}")


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, or None when ``data`` is neither (or truncated).

    Reads the header only, so a small message cannot make the decoder allocate a huge frame.
    """
    if data.startswith(PNG_MAGIC):
        # The IHDR chunk comes first: length (4), b"IHDR", width (4), height (4), big-endian.
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(JPEG_MAGIC):
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG marker segments up to the first start-of-frame and read its size."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height)
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + length
    return None
