"""Out-of-distribution and camera-health monitoring: from one frame to an ``OodVerdict``.

- ``verdict.py``: ``OodVerdict`` and ``OodLevel``, the contract the arbiter consumes.
- ``camera_health.py``: ``CameraHealthMonitor``, per-frame image checks (blur, exposure, black
  or blocked view, frozen frames, stamp gaps, non-finite values).
- ``scores.py``: model-based scores (MSP, energy, Mahalanobis, smoothing abstention and
  ``p_lower``), all higher = more OOD.
- ``input_stats.py``: ``InputStatsModel``, the input-statistics detector (noise level, edge
  energy, pixelation, JPEG blockiness, colour of the model input, scored by Mahalanobis).
- ``calibration.py``: conformal thresholds at a target false-alarm rate, saved per model.
- ``fusion.py``: ``OodFusion``, camera checks + model scores -> ``OodVerdict``.

Nothing here imports rclpy.
"""

from robust_monitor.core.ood.calibration import (
    Calibration,
    DetectorThreshold,
    calibrate,
    calibrate_outputs,
    conformal_threshold,
)
from robust_monitor.core.ood.camera_health import (
    CHECKS,
    CameraHealthConfig,
    CameraHealthMonitor,
    CameraHealthResult,
)
from robust_monitor.core.ood.fusion import FusionConfig, OodFusion
from robust_monitor.core.ood.input_stats import InputStatsModel, input_features
from robust_monitor.core.ood.scores import DETECTORS, MahalanobisModel, model_scores
from robust_monitor.core.ood.verdict import OodLevel, OodVerdict

__all__ = [
    "CHECKS",
    "DETECTORS",
    "Calibration",
    "CameraHealthConfig",
    "CameraHealthMonitor",
    "CameraHealthResult",
    "DetectorThreshold",
    "FusionConfig",
    "InputStatsModel",
    "MahalanobisModel",
    "OodFusion",
    "OodLevel",
    "OodVerdict",
    "calibrate",
    "calibrate_outputs",
    "conformal_threshold",
    "input_features",
    "model_scores",
]
