"""Decoding inputs into the project's image form: uint8 (H, W, 3) RGB.

Files (PNG, JPEG, BMP, ...) are decoded with OpenCV; ``.npy`` files hold model-space tensors
([C, H, W] or [B, C, H, W] float in [0, 1]) and are returned as such. Every failure is an
InputError that names the file and says what was expected.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from robust_monitor.core.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def decode_image_bytes(data: bytes) -> np.ndarray:
    """Compressed image bytes (JPEG, PNG, ...) -> uint8 (H, W, 3) RGB."""
    if not data:
        raise InputError("empty image data")
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
