"""Decoding inputs into the project's image form: uint8 (H, W, 3) RGB.

Files (PNG, JPEG, BMP, ...) are decoded with OpenCV; ``.npy`` files hold model-space tensors
([C, H, W] or [B, C, H, W] float in [0, 1]) and are returned as such. Every failure is an
InputError that names the file and says what was expected.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from robust_monitor.core.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_chunk_problem(data: bytes) -> str | None:
    """Why a PNG's chunk structure is impossible (a chunk longer than the bytes after it, no
    IEND), or None. Checked before decoding: OpenCV trusts the declared chunk length, so a
    264-byte PNG whose IDAT claims 160 MB made it allocate gigabytes and stall for seconds."""
    i = len(_PNG_MAGIC)
    while i + 12 <= len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        follow = len(data) - i - 12
        if length > follow:
            return (
                f"PNG chunk {data[i + 4 : i + 8]!r} declares {length} bytes, only {follow} follow"
            )
        if data[i + 4 : i + 8] == b"IEND":
            return None
        i += 12 + length
    return "PNG data ends before its IEND chunk (truncated)"


def decode_image_bytes(data: bytes) -> np.ndarray:
    """Compressed image bytes (JPEG, PNG, ...) -> uint8 (H, W, 3) RGB."""
    if not data:
        raise InputError("empty image data")
    if data.startswith(_PNG_MAGIC) and (problem := png_chunk_problem(data)) is not None:
        raise InputError(f"image data could not be decoded (corrupt PNG: {problem})")
    buffer = np.frombuffer(data, dtype=np.uint8)
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if decoded is None:
        raise InputError("image data could not be decoded (corrupt or unsupported format)")
    return np.ascontiguousarray(decoded[:, :, ::-1])


def load_image_file(path: str | Path) -> np.ndarray:
    """An image file -> uint8 (H, W, 3) RGB."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file not found: {p}")
    try:
        return decode_image_bytes(p.read_bytes())
    except InputError as exc:
        raise InputError(f"{p}: {exc}") from exc


def load_npy_frames(path: str | Path) -> np.ndarray:
    """A ``.npy`` file -> float array [B, C, H, W] (a single [C, H, W] frame gets B = 1)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file not found: {p}")
    try:
        array: np.ndarray = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{p}: not a readable .npy array: {exc}") from exc
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise InputError(
            f"{p}: expected one frame [C, H, W] or a batch [B, C, H, W], "
            f"got shape {list(array.shape)}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{p}: expected float values in [0, 1], got dtype {array.dtype}")
    return array


# --- raw sensor_msgs/Image payloads -----------------------------------------------------------
# The ROS layer hands us (encoding, height, width, step, data) without importing ROS types here.
_CHANNELS = {
    "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 1,
    "yuv422": 2, "uyvy": 2, "yuyv": 2, "yuv422_yuy2": 2, "32fc1": 1, "32fc3": 3,
}  # fmt: skip
_BYTES_PER_VALUE = {"mono16": 2, "32fc1": 4, "32fc3": 4}
RAW_ENCODINGS = tuple(_CHANNELS)
MAX_PIXELS = 4096 * 4096
"""Largest frame we accept: a declared size above this is refused before anything is allocated."""


def decode_raw_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: bytes | bytearray | memoryview,
    is_bigendian: bool = False,
) -> np.ndarray:
    """A sensor_msgs/Image payload -> uint8 (H, W, 3) RGB.

    Supported encodings: RAW_ENCODINGS (yuv422 is UYVY byte order as in ROS; yuyv and
    yuv422_yuy2 are YUYV). Float encodings (32FC1, 32FC3) must hold values in [0, 1]; NaN or
    Inf pixels are refused. The declared size is checked against ``data`` before any array is
    made, so a message claiming a huge frame cannot make us allocate it.
    """
    enc = encoding.strip().lower()
    if enc not in _CHANNELS:
        raise InputError(f"unsupported image encoding {encoding!r}; supported: {RAW_ENCODINGS}")
    if height <= 0 or width <= 0:
        raise InputError(f"image size must be positive, got {width}x{height}")
    if height * width > MAX_PIXELS:
        raise InputError(f"image of {width}x{height} exceeds the {MAX_PIXELS}-pixel limit")
    channels = _CHANNELS[enc]
    value_bytes = _BYTES_PER_VALUE.get(enc, 1)
    row_bytes = width * channels * value_bytes
    if step < row_bytes:
        raise InputError(f"step {step} is smaller than a row of {row_bytes} bytes ({enc})")
    if len(data) < step * (height - 1) + row_bytes:
        raise InputError(
            f"image data has {len(data)} bytes, {width}x{height} {enc} with step {step} "
            f"needs {step * (height - 1) + row_bytes}"
        )
    buffer = np.frombuffer(data, dtype=np.uint8, count=step * (height - 1) + row_bytes)
    rows = np.lib.stride_tricks.as_strided(buffer, shape=(height, row_bytes), strides=(step, 1))
    if value_bytes == 1:
        pixels = np.ascontiguousarray(rows).reshape(height, width, channels)
    else:
        kind = "u2" if enc == "mono16" else "f4"
        dtype = np.dtype(kind).newbyteorder(">" if is_bigendian else "<")
        values = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
        if kind == "f4":
            if not np.isfinite(values).all():
                raise InputError(f"{enc} image contains NaN or Inf values")
            pixels = (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        else:
            pixels = (values >> 8).astype(np.uint8)
    if enc in ("rgb8", "32fc3"):
        # Unpadded rgb8 rows are a view of ``data``: copy so the frame owns writable pixels and
        # does not pin (or alias) the message's buffer.
        return pixels.copy() if np.may_share_memory(pixels, buffer) else pixels
    if enc == "bgr8":
        return np.ascontiguousarray(pixels[:, :, ::-1])
    if enc == "rgba8":
        return np.ascontiguousarray(pixels[:, :, :3])
    if enc == "bgra8":
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    if channels == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    code = cv2.COLOR_YUV2RGB_UYVY if enc in ("yuv422", "uyvy") else cv2.COLOR_YUV2RGB_YUYV
    if width % 2:
        raise InputError(f"{enc} needs an even width, got {width}")
    return cv2.cvtColor(pixels, code)
