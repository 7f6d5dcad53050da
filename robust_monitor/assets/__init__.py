"""Files shipped inside the package: default models, calibration files, the sample drive.

They live inside the Python package so a pip install and a colcon install find them the same
way. ``asset(...)`` returns a real filesystem path.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = ASSETS_DIR / "models" / "roadsigns_s025.onnx"
SAMPLE_DRIVE = ASSETS_DIR / "sample_drive"


def asset(*parts: str) -> Path:
    """Path of a shipped file, e.g. ``asset("models", "roadsigns_s025.onnx")``."""
    return ASSETS_DIR.joinpath(*parts)
