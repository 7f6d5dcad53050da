"""From a decoded camera image to the model's input tensor.

Images inside the project are ``uint8`` (H, W, 3) RGB arrays (``decode.py`` makes them from files
and, later, from ROS encodings). ``to_model_input`` crops an optional region of interest,
resizes to the model's (H, W) with area interpolation, applies the model's channel order and
scales to float32 [0, 1] in (C, H, W) layout: the space in which certified radii are measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from robust_monitor.core.certify.model import ModelSpec
from robust_monitor.core.errors import ConfigError, InputError


@dataclass(frozen=True, slots=True)
class Roi:
    """A region of interest as fractions of the image: top-left x, y, then width, height."""

    x: float = 0.0
    y: float = 0.0
    width: float = 1.0
    height: float = 1.0

    def __post_init__(self) -> None:
        values = (self.x, self.y, self.width, self.height)
        if not all(np.isfinite(v) for v in values):
            raise ConfigError(f"roi values must be finite, got {values}")
        if self.x < 0 or self.y < 0 or self.width <= 0 or self.height <= 0:
            raise ConfigError(f"roi needs x, y >= 0 and width, height > 0, got {values}")
        if self.x + self.width > 1.0 + 1e-9 or self.y + self.height > 1.0 + 1e-9:
            raise ConfigError(
                f"roi must lie inside the image (x+width, y+height <= 1), got {values}"
            )

    def crop(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        x0, y0 = round(self.x * w), round(self.y * h)
        x1 = max(x0 + 1, round((self.x + self.width) * w))
        y1 = max(y0 + 1, round((self.y + self.height) * h))
        return image[y0:y1, x0:x1]


FULL_FRAME = Roi()


def roi_from_metadata(spec: ModelSpec) -> Roi:
    """The region of interest a model's metadata names (``roi.normalized_xywh``), else the frame."""
    entry = spec.extra.get("roi")
    if entry is None:
        return FULL_FRAME
    try:
        x, y, w, h = (float(v) for v in entry["normalized_xywh"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{spec.path}: metadata 'roi' needs 'normalized_xywh': [x, y, width, height] as "
            f"fractions of the frame ({exc})"
        ) from exc
    return Roi(x, y, w, h)


def check_rgb_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` if it is a uint8 (H, W, 3) array, else raise InputError saying why."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image must have shape (H, W, 3), got {list(image.shape)}")
    return image


def to_model_input(image: np.ndarray, spec: ModelSpec, roi: Roi = FULL_FRAME) -> np.ndarray:
    """uint8 (H, W, 3) RGB image -> float32 (C, H, W) in [0, 1] for ``spec``'s model."""
    check_rgb_image(image)
    c, h, w = spec.input_shape
    if c != 3:
        raise InputError(f"the model takes {c} channels; RGB images need a 3-channel model")
    cropped = roi.crop(image)
    interpolation = cv2.INTER_AREA if cropped.shape[0] >= h else cv2.INTER_LINEAR
    resized = cv2.resize(cropped, (w, h), interpolation=interpolation)
    if spec.channel_order == "bgr":
        resized = resized[:, :, ::-1]
    return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32) * np.float32(1 / 255)
