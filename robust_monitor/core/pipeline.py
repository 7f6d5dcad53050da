"""The per-frame pipeline every front end shares: frame -> tensor -> certificate + OOD verdict.

The ROS monitor node, replay, simulation and the demo all call ``FramePipeline.process`` so
that a recording replayed offline gets exactly what the live node would have published.

Per frame: camera-health checks on the whole image (stateful: frozen frames and stamp gaps),
preprocessing to model space (region of interest, resize, channel order), certification, the
model-based OOD scores from the clean pass and the certificate, and their fusion into one
``OodVerdict``. Without a calibration file only the camera checks can fire (the model scores are
still reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robust_monitor.core.certify.certificate import Certificate
from robust_monitor.core.certify.engine import SmoothingEngine
from robust_monitor.core.errors import ConfigError
from robust_monitor.core.imaging.preprocess import Roi, roi_from_metadata, to_model_input
from robust_monitor.core.ood.calibration import Calibration
from robust_monitor.core.ood.camera_health import CameraHealthConfig, CameraHealthMonitor
from robust_monitor.core.ood.fusion import FusionConfig, OodFusion
from robust_monitor.core.ood.scores import model_scores
from robust_monitor.core.ood.verdict import OodVerdict

CALIBRATION_SUFFIX = ".calibration.yaml"


def default_calibration_path(model_path: str | Path) -> Path:
    """Where a model's calibration file lives by convention: ``model.calibration.yaml``."""
    p = Path(model_path)
    return p.with_name(p.stem + CALIBRATION_SUFFIX)


@dataclass(frozen=True, slots=True)
class CertifyConfig:
    """Certification parameters (Cohen et al. 2019 notation)."""

    sigma: float | None = None
    """Noise level; None takes the model metadata's sigma."""
    n0: int = 64
    n: int = 500
    alpha: float = 0.001
    batch_size: int = 500
    providers: str = "auto"
    seed: int | None = None
    """Fixed noise seed, for tests only; None draws it from the OS entropy source."""

    def __post_init__(self) -> None:
        if self.n0 < 1 or self.n < 1 or self.batch_size < 1:
            raise ConfigError(
                f"n0, n and batch_size must be >= 1, got {self.n0}, {self.n}, {self.batch_size}"
            )
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")


@dataclass(frozen=True, slots=True)
class FrameResult:
    """Everything the monitor knows about one frame."""

    stamp_s: float
    certificate: Certificate
    verdict: OodVerdict
    clean_logits: np.ndarray
    clean_features: np.ndarray | None


class FramePipeline:
    """Preprocess (ROI, resize, channel order), certify, and judge one RGB frame at a time."""

    def __init__(
        self,
        model_path: str | Path,
        config: CertifyConfig | None = None,
        roi: Roi | None = None,
        *,
        calibration: Calibration | str | Path | None = "auto",
        camera_health: CameraHealthConfig | None = None,
        fusion: FusionConfig | None = None,
    ) -> None:
        """``calibration``: a Calibration, a path to one, ``"auto"`` (the file beside the model
        if there is one) or None (camera checks only). A calibration made for another model is
        refused (ModelError)."""
        self.config = config or CertifyConfig()
        self.engine = SmoothingEngine(
            model_path,
            self.config.sigma,
            batch_size=self.config.batch_size,
            providers=self.config.providers,
            seed=self.config.seed,
        )
        self.roi = roi if roi is not None else roi_from_metadata(self.engine.spec)
        sha = self.engine.spec.sha256
        if calibration == "auto":
            auto = default_calibration_path(model_path)
            calibration = auto if auto.is_file() else None
        if isinstance(calibration, (str, Path)):
            calibration = Calibration.load(Path(calibration), model_sha256=sha)
        elif calibration is not None:
            calibration.check_model(sha)
        self.calibration: Calibration | None = calibration
        self.health = CameraHealthMonitor(camera_health)
        self.fusion = OodFusion(calibration, fusion)

    def warmup(self) -> None:
        self.engine.warmup()

    def process(self, image: np.ndarray, stamp_s: float) -> FrameResult:
        """Certify one uint8 (H, W, 3) RGB frame taken at ``stamp_s`` (seconds)."""
        health = self.health.check(image, stamp_s)
        x = to_model_input(image, self.engine.spec, self.roi)
        result = self.engine.certify(x, n0=self.config.n0, n=self.config.n, alpha=self.config.alpha)
        cert = result.certificate
        scores = model_scores(
            logits=result.clean_logits,
            features=result.clean_features,
            mahalanobis=self.calibration.mahalanobis if self.calibration else None,
            abstained=cert.abstained,
            p_lower=cert.p_lower,
            model_input=x,
            input_stats=self.calibration.input_stats if self.calibration else None,
        )
        verdict = self.fusion.fuse(scores, camera=health, stamp_s=stamp_s)
        return FrameResult(stamp_s, cert, verdict, result.clean_logits, result.clean_features)
