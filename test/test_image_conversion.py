"""sensor_msgs/Image and CompressedImage -> RGB: every encoding round-trips; bad frames are
InputErrors that say what was wrong. No DDS needed."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rosutil import RAW_ENCODINGS, compressed_image, known_frame, raw_image, stamp
from sensor_msgs.msg import CompressedImage, Image

from robust_monitor.core.errors import InputError
from robust_monitor.ros.image_conversion import (
    PNG_MAGIC,
    compressed_image_to_rgb,
    declared_size,
    image_to_rgb,
    message_to_rgb,
    stamp_to_seconds,
)

FRAME = known_frame()
EXACT = [e for e in (*RAW_ENCODINGS, "mono16_be", "32FC1", "32FC3") if e not in ("yuv422", "yuyv")]


@pytest.mark.parametrize("padding", [0, 3, 16], ids=lambda p: f"pad{p}")
@pytest.mark.parametrize("encoding", EXACT)
def test_lossless_encodings_round_trip_exactly(encoding: str, padding: int) -> None:
    msg, expected = raw_image(FRAME, encoding, stamp(12, 250_000_000), padding=padding)
    rgb, stamp_s = image_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.shape == FRAME.shape
    np.testing.assert_array_equal(rgb, expected)
    assert stamp_s == pytest.approx(12.25, abs=1e-9)


@pytest.mark.parametrize("padding", [0, 4])
@pytest.mark.parametrize("encoding", ["yuv422", "yuyv"])
def test_yuv_encodings_round_trip_closely(encoding: str, padding: int) -> None:
    msg, expected = raw_image(FRAME, encoding, padding=padding)
    rgb, _ = image_to_rgb(msg)
    assert rgb.shape == FRAME.shape
    assert np.abs(rgb.astype(int) - expected).max() <= 3


def test_decoded_frame_owns_its_pixels() -> None:
    msg, _ = raw_image(FRAME, "rgb8")
    rgb, _ = image_to_rgb(msg)
    assert rgb.flags.writeable
    assert not np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize(
    ("fmt", "label"), [("png", "png"), ("png", "bgr8; png compressed bgr8"), ("jpeg", "jpeg")]
)
def test_compressed_round_trip(fmt: str, label: str) -> None:
    msg = compressed_image(FRAME, fmt, stamp(7, 5))
    msg.format = label
    rgb, stamp_s = compressed_image_to_rgb(msg)
    assert rgb.shape == FRAME.shape and rgb.dtype == np.uint8
    error = np.abs(rgb.astype(int) - FRAME)
    if fmt == "png":
        assert error.max() == 0
    else:
        assert error.mean() < 8.0
    assert stamp_s == pytest.approx(7 + 5e-9)


def test_jpeg_format_string_of_image_transport_is_accepted() -> None:
    msg = compressed_image(FRAME, "jpeg")
    msg.format = "rgb8; jpeg compressed bgr8"
    assert compressed_image_to_rgb(msg)[0].shape == FRAME.shape


def test_message_to_rgb_dispatches_on_type() -> None:
    assert message_to_rgb(raw_image(FRAME, "bgr8")[0])[0].shape == FRAME.shape
    assert message_to_rgb(compressed_image(FRAME, "png"))[0].shape == FRAME.shape
    with pytest.raises(InputError, match="expected sensor_msgs/Image"):
        message_to_rgb("not a message")


def test_stamp_to_seconds() -> None:
    assert stamp_to_seconds(stamp(3, 500_000_000)) == 3.5


# --- refused frames -------------------------------------------------------------------------------
def _raw(**changes: object) -> Image:
    msg, _ = raw_image(FRAME, "rgb8")
    for key, value in changes.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"data": bytes(raw_image(FRAME, "rgb8")[0].data)[:-1]}, "needs"),
        ({"data": b""}, "needs"),
        ({"step": 64 * 3 - 1}, "step"),
        ({"step": 64 * 3 + 1}, "needs"),
        ({"height": 100_000, "width": 100_000}, "pixel limit"),
        ({"height": 4000, "width": 4000, "step": 12000}, "needs"),
        ({"height": 0}, "positive"),
        ({"encoding": "bayer_rggb8"}, "unsupported image encoding"),
        ({"encoding": "8UC3"}, "unsupported image encoding"),
        ({"encoding": ""}, "unsupported image encoding"),
    ],
    ids=[
        "truncated",
        "empty",
        "step-too-small",
        "step-too-large-for-data",
        "huge",
        "large-without-data",
        "zero-height",
        "bayer",
        "8UC3",
        "no-encoding",
    ],
)
def test_bad_raw_frames_are_input_errors(changes: dict[str, object], match: str) -> None:
    start = time.perf_counter()
    with pytest.raises(InputError, match=match) as info:
        image_to_rgb(_raw(**changes))
    assert "sensor_msgs/Image" in str(info.value)
    assert time.perf_counter() - start < 0.5  # refused before anything big is allocated


def test_odd_width_yuv_is_refused() -> None:
    msg, _ = raw_image(FRAME[:, :63], "rgb8")
    msg.encoding, msg.step = "yuv422", 63 * 2
    msg.data = bytes(63 * 2 * FRAME.shape[0])
    with pytest.raises(InputError, match="even width"):
        image_to_rgb(msg)


def test_non_finite_float_image_is_refused() -> None:
    msg, _ = raw_image(FRAME, "32FC1")
    values = np.frombuffer(bytes(msg.data), "<f4").copy()
    values[5] = np.nan
    msg.data = values.tobytes()
    with pytest.raises(InputError, match="NaN"):
        image_to_rgb(msg)


def _compressed(data: bytes, fmt: str = "jpeg") -> CompressedImage:
    msg = CompressedImage()
    msg.format = fmt
    msg.data = data
    return msg


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">II", width, height) + b"\x08\x02\x00\x00\x00"
    return PNG_MAGIC + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00\x00\x00\x00"


def _jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof


def test_declared_size_reads_headers() -> None:
    jpeg = bytes(compressed_image(FRAME, "jpeg").data)
    png = bytes(compressed_image(FRAME, "png").data)
    assert declared_size(jpeg) == (64, 48)
    assert declared_size(png) == (64, 48)
    assert declared_size(_jpeg_header(65_000, 9)) == (65_000, 9)
    assert declared_size(b"GIF89a....") is None
    assert declared_size(jpeg[:3]) is None


@pytest.mark.parametrize(
    ("data", "fmt", "match"),
    [
        (b"", "jpeg", "no data"),
        (b"\xff\xd8\xff" + bytes(200), "jpeg", "neither JPEG nor PNG|could not be decoded"),
        (bytes(compressed_image(FRAME, "jpeg").data)[:300], "jpeg", "could not be decoded"),
        (bytes(compressed_image(FRAME, "png").data)[:500], "png", "could not be decoded"),
        (b"GIF89a" + bytes(100), "gif", "neither JPEG nor PNG"),
        (_png_header(60_000, 60_000), "png", "pixel limit"),
        (_jpeg_header(65_000, 65_000) + bytes(100), "jpeg", "pixel limit"),
        (_png_header(0, 10), "png", "empty"),
        (bytes(compressed_image(FRAME, "png").data), "16UC1; compressedDepth", "compressedDepth"),
    ],
    ids=[
        "empty",
        "jpeg-magic-then-zeros",
        "truncated-jpeg",
        "truncated-png",
        "gif",
        "png-bomb",
        "jpeg-bomb",
        "png-zero-width",
        "compressed-depth",
    ],
)
def test_bad_compressed_frames_are_input_errors(data: bytes, fmt: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        compressed_image_to_rgb(_compressed(data, fmt))
    assert "CompressedImage" in str(info.value)


# --- fuzzing: whatever arrives, the answer is a frame or an InputError ----------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoding=st.sampled_from([*RAW_ENCODINGS, "32FC1", "32FC3", "RGB8", " bgr8 ", "16UC1", "x"]),
    height=st.integers(0, 40),
    width=st.integers(0, 40),
    step=st.integers(0, 200),
    data=st.binary(max_size=3000),
    big=st.booleans(),
)
def test_random_raw_messages_give_a_frame_or_an_input_error(
    encoding: str, height: int, width: int, step: int, data: bytes, big: bool
) -> None:
    msg = Image(height=height, width=width, step=step, encoding=encoding, is_bigendian=int(big))
    msg.data = data
    try:
        rgb, _ = image_to_rgb(msg)
    except InputError:
        return
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.sampled_from(
        [b"", b"\xff\xd8\xff", PNG_MAGIC, _png_header(8, 8), _jpeg_header(8, 8)]
    ),
    body=st.binary(max_size=400),
)
def test_random_compressed_messages_give_a_frame_or_an_input_error(
    prefix: bytes, body: bytes
) -> None:
    try:
        rgb, _ = compressed_image_to_rgb(_compressed(prefix + body))
    except InputError:
        return
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8
