"""The per-frame pipeline every front end shares: frame -> tensor -> certificate + OOD verdict.

The ROS monitor node, replay, simulation and the demo all call ``FramePipeline.process`` so
that a recording replayed offline gets exactly what the live node would have published.

Per frame: camera-health checks on the whole image (stateful: frozen frames and stamp gaps),
preprocessing to model space (region of interest, resize, channel order), certification, the
model-based OOD scores from the clean pass and the certificate, and their fusion into one
``OodVerdict``. Without a calibration file only the camera checks can fire (the model scores are
still reported).

Certification modes (``CertifyConfig.mode``):

- ``fixed`` (default): Cohen's CERTIFY with ``n0`` selection and ``n`` estimation samples.
- ``sequential``: ``core/certify/sequential.py``; estimation samples come in looks and sampling
  stops as soon as ``radius >= r_required`` is certified, shown unreachable, ``budget_ms`` is
  spent or ``max_n`` samples are drawn (``n`` is not used). ``r_required`` defaults to the
  arbiter policy's ``r_recover`` (``default_r_required``), the radius a frame needs to count as
  healthy in *every* arbiter state. The published certificate's ``p_lower`` is the smaller of
  the confidence sequence's bound and the Clopper-Pearson bound of the final counts, so that
  every reader of the contract can check it from ``(count, n, alpha)`` as in fixed mode
  (lowering a valid lower bound keeps it valid; a ``certified`` stop is never lowered, since
  its bound is the final look's and the mixture bound is the wider one). ``FrameResult`` carries
  the mode, the decision, the looks and ``r_required``.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from robust_monitor.core.arbiter.policy import ArbiterPolicy
from robust_monitor.core.certify.certificate import ABSTAIN, Certificate
from robust_monitor.core.certify.engine import SmoothingEngine
from robust_monitor.core.certify.sequential import (
    SequentialConfig,
    certify_sequential,
    check_frame_samples,
    first_look_size,
    max_certifiable_radius,
    required_p,
)
from robust_monitor.core.certify.stats import clopper_pearson_lower, radius_from_p_lower
from robust_monitor.core.errors import ConfigError
from robust_monitor.core.imaging.preprocess import Roi, roi_from_metadata, to_model_input
from robust_monitor.core.ood.calibration import Calibration
from robust_monitor.core.ood.camera_health import CameraHealthConfig, CameraHealthMonitor
from robust_monitor.core.ood.fusion import FusionConfig, OodFusion
from robust_monitor.core.ood.scores import model_scores
from robust_monitor.core.ood.verdict import OodVerdict

CALIBRATION_SUFFIX = ".calibration.yaml"
MODES = ("fixed", "sequential")
"""Certification modes: fixed ``n`` (Cohen's CERTIFY) or sequential (stop once decided)."""
DEFAULT_MAX_N = 10_000
"""Most estimation samples per frame in sequential mode (radius cap 0.758 at sigma 0.25 and
alpha 0.001, i.e. every vote agreeing)."""


def default_r_required(policy: ArbiterPolicy | None = None) -> float:
    """The radius sequential certification targets when none is given: ``policy.r_recover``
    (``degraded_exit_radius_l2``; the shipped policy's when ``policy`` is None).

    The arbiter counts a frame as healthy at ``radius >= r_required`` only while NOMINAL; in
    every other state (and for the healthy run an operator release needs) it asks for the
    stricter ``r_recover`` (hysteresis). A monitor does not know the arbiter's state, and a
    sequential certifier reports a radius just above its target, so targeting ``r_required``
    would keep the arbiter from ever recovering or accepting a release; ``r_recover`` counts as
    healthy in every state.
    """
    return (policy or ArbiterPolicy()).r_recover


def default_bands(policy: ArbiterPolicy | None = None) -> tuple[float, ...]:
    """The radii sequential certification also decides when none are given: every threshold of
    ``policy`` (the shipped policy's when None), so that a frame stopped below ``r_required``
    still tells the arbiter which level it is at."""
    return (policy or ArbiterPolicy()).radius_thresholds


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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
    mode: str = "fixed"
    """``fixed`` (n0 + n samples, Cohen's CERTIFY) or ``sequential`` (see the module docstring);
    the fields below apply to sequential mode only."""
    r_required: float | None = None
    """L2 radius (model-input units) to certify; None: ``default_r_required()``."""
    budget_ms: float | None = None
    """Certification time budget per frame, milliseconds (selection included); None: none."""
    max_n: int = DEFAULT_MAX_N
    """Most estimation samples per frame."""
    bands: tuple[float, ...] | None = None
    """Radii below ``r_required`` that a frame must also be decided against before an
    ``unreachable`` stop; None: the arbiter policy's thresholds (``default_bands``); ``()``:
    none."""
    intra_op_threads: int = 0
    """onnxruntime intra-op threads of the engine; 0: onnxruntime's default (every core)."""

    def __post_init__(self) -> None:
        if self.n0 < 0 or self.n < 1 or self.batch_size < 1:
            raise ConfigError(
                f"n0 must be >= 0 (0: the clean prediction selects the class) and n and "
                f"batch_size >= 1, got {self.n0}, {self.n}, {self.batch_size}"
            )
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        r = self.r_required
        if r is not None and not (_is_real(r) and math.isfinite(r) and r > 0):
            raise ConfigError(
                f"r_required must be None (the arbiter policy's) or a finite L2 radius > 0, "
                f"got {r!r}"
            )
        b = self.budget_ms
        if b is not None and not (_is_real(b) and math.isfinite(b) and b > 0):
            raise ConfigError(
                f"budget_ms must be None (no deadline) or a finite number of milliseconds > 0, "
                f"got {b!r}"
            )
        if isinstance(self.max_n, bool) or not isinstance(self.max_n, numbers.Integral):
            raise ConfigError(f"max_n must be an integer >= 1, got {self.max_n!r}")
        if self.max_n < 1:
            raise ConfigError(f"max_n must be an integer >= 1, got {self.max_n!r}")
        bands = self.bands
        if bands is not None and not (
            isinstance(bands, (tuple, list))
            and all(_is_real(t) and math.isfinite(t) and t > 0 for t in bands)
        ):
            raise ConfigError(
                f"bands must be None (the arbiter policy's thresholds) or finite L2 radii > 0, "
                f"got {bands!r}"
            )
        threads = self.intra_op_threads
        if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 0:
            raise ConfigError(f"intra_op_threads must be an integer >= 0, got {threads!r}")

    @property
    def sequential(self) -> bool:
        return self.mode == "sequential"

    def sequential_config(self, r_required: float | None = None) -> SequentialConfig:
        """The ``SequentialConfig`` of these settings (``r_required`` given: it wins over the
        field; neither: ``default_r_required()``)."""
        if r_required is None:
            r_required = self.r_required if self.r_required is not None else default_r_required()
        return SequentialConfig(
            r_required=float(r_required),
            budget_ms=None if self.budget_ms is None else float(self.budget_ms),
            alpha=self.alpha,
            n0=self.n0,
            max_n=int(self.max_n),
            bands=default_bands() if self.bands is None else tuple(float(t) for t in self.bands),
        )


SHIPPED = CertifyConfig(mode="sequential", n0=0, budget_ms=100.0, max_n=300)
"""The monitor's shipped certification settings: the monitor node's parameter defaults,
``config/robust_monitor.yaml``, and so replay, sim and the demo. (``CertifyConfig()`` itself
stays Cohen's fixed-n CERTIFY, for library use.)

Sequential, because the arbiter asks one question per frame and most frames answer it in one
look (60 samples at ``r_required`` 0.3, against 564 for fixed ``n0 = 64``, ``n = 500``): the
sample drive replays at about 3.5x real time on a 2-core CPU instead of 0.5x, with the same
handover requests. ``n0 = 0``: the clean prediction selects the class, at no cost in samples.
``max_n = 300`` bounds a frame near a threshold to about 70 ms on that CPU and keeps a seeded
replay reproducible (a sample cap does not depend on the machine's speed); ``budget_ms = 100``
is the safety net on a slower machine. The arbiter's thresholds are decided as bands
(``CertifyConfig.bands``)."""


def check_reachable(config: SequentialConfig, sigma: float) -> None:
    """ConfigError when ``config.r_required`` cannot be certified at ``sigma`` with ``max_n``
    samples (even if every vote agreed): no frame would ever reach it."""
    ceiling = max_certifiable_radius(sigma, config.alpha, config.max_n, config.first_look_share)
    if config.r_required > ceiling:
        raise ConfigError(
            f"r_required={config.r_required:g} cannot be certified with max_n={config.max_n} "
            f"samples at alpha={config.alpha:g} and sigma={sigma:g} (at most {ceiling:.4g}); "
            "raise max_n or lower r_required"
        )


@dataclass(frozen=True, slots=True)
class FrameResult:
    """Everything the monitor knows about one frame."""

    stamp_s: float
    certificate: Certificate
    verdict: OodVerdict
    clean_logits: np.ndarray
    clean_features: np.ndarray | None
    mode: str = "fixed"
    """How the frame was certified: ``fixed`` or ``sequential``."""
    decision: str | None = None
    """Sequential mode: why sampling stopped (``certified``, ``unreachable``, ``budget``,
    ``max_n``); None in fixed mode."""
    looks: int = 0
    """Sequential mode: estimation batches drawn (0 in fixed mode, or when the budget ran out
    during selection)."""
    r_required: float | None = None
    """Sequential mode: the radius the frame was certified against; None in fixed mode."""

    @property
    def samples(self) -> int:
        """Noisy samples drawn for the frame: selection plus estimation (``n0 + n``)."""
        return int(self.certificate.n0) + int(self.certificate.n)


def verifiable(cert: Certificate, class_name: str, margin: float = 0.0) -> Certificate:
    """``cert`` with ``p_lower`` at most the Clopper-Pearson bound of its own counts (radius and
    abstention recomputed when it is lowered); ``class_name`` names the label when it abstains;
    ``margin`` comes off a recomputed radius (the engine's floating-point lattice margin).

    A sequential certificate's bound is the running maximum of a confidence sequence; the
    contract's readers check ``p_lower`` against the Clopper-Pearson bound of ``(count, n,
    alpha)``, which an earlier look's bound can exceed. The minimum of a valid lower bound and
    any number is still a valid lower bound, so this keeps the guarantee and makes the
    certificate checkable.
    """
    if cert.n < 1:
        return cert
    bound = clopper_pearson_lower(cert.count, cert.n, cert.alpha)
    if cert.p_lower <= bound:
        return cert
    abstained = bound < 0.5
    return replace(
        cert,
        label=ABSTAIN if abstained else cert.label,
        p_lower=bound,
        radius=0.0 if abstained else max(0.0, radius_from_p_lower(bound, cert.sigma) - margin),
        abstained=abstained,
        label_name=class_name if abstained else cert.label_name,
    )


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
        refused (ModelError). In sequential mode an ``r_required`` that ``max_n`` samples cannot
        certify at the model's sigma is refused here (ConfigError), not at the first frame, and
        so is a sample count per frame beyond the CPU generator's period
        (``SmoothingEngine.max_samples_per_frame``)."""
        self.config = config or CertifyConfig()
        self.engine = SmoothingEngine(
            model_path,
            self.config.sigma,
            batch_size=self.config.batch_size,
            providers=self.config.providers,
            seed=self.config.seed,
            intra_op_threads=self.config.intra_op_threads,
        )
        self.sequential: SequentialConfig | None = None
        """Sequential mode's settings, ``r_required`` resolved; None in fixed mode."""
        self.quickest_certify_ms: float | None = None
        """Sequential mode, after ``warmup``: the fastest a frame can be certified for
        ``r_required`` on this machine (every vote agreeing). A ``budget_ms`` below it stops
        (nearly) every frame on the budget, with a small radius or an abstention."""
        if self.config.sequential:
            self.sequential = self.config.sequential_config()
            check_reachable(self.sequential, self.engine.sigma)
            check_frame_samples(self.engine, self.sequential)
        else:
            self.engine.check_certify_samples(self.config.n0, self.config.n)
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
        """Run the graph once; in sequential mode also measure ``quickest_certify_ms``."""
        self.engine.warmup()
        if self.sequential is not None:
            self.quickest_certify_ms = self._quickest_certify_ms(self.sequential)

    def _quickest_certify_ms(self, seq: SequentialConfig) -> float:
        """Wall time of the least work that can certify ``r_required``: ``n0`` selection samples
        with the clean pass, then as many samples as unanimous votes need (best of two runs on a
        mid-grey frame; a need beyond one engine batch is extrapolated from one batch, so the
        measurement costs at most about a batch)."""
        c, h, w = self.engine.spec.input_shape
        grey = np.full((c, h, w), 0.5, np.float32)
        p_required = required_p(seq.r_required, self.engine.sigma)
        need = first_look_size(seq, p_required)
        look = min(need, self.engine.batch_size)
        best = math.inf
        for _ in range(2):
            began = time.perf_counter()
            if seq.n0 > 0:
                self.engine.sample(grey, seq.n0, with_clean=True)
            selected = time.perf_counter()
            self.engine.sample(grey, look, with_clean=seq.n0 == 0)
            looked = time.perf_counter()
            total = (selected - began) + (looked - selected) * need / look
            best = min(best, total * 1e3)
        return best

    def process(self, image: np.ndarray, stamp_s: float) -> FrameResult:
        """Certify one uint8 (H, W, 3) RGB frame taken at ``stamp_s`` (seconds)."""
        health = self.health.check(image, stamp_s)
        x = to_model_input(image, self.engine.spec, self.roi)
        seq = self.sequential
        if seq is None:
            fixed = self.engine.certify(
                x, n0=self.config.n0, n=self.config.n, alpha=self.config.alpha
            )
            cert, logits, features = fixed.certificate, fixed.clean_logits, fixed.clean_features
        else:
            done = certify_sequential(self.engine, x, seq)
            cert = verifiable(
                done.certificate, self.engine.spec.class_name(ABSTAIN), self.engine.radius_margin
            )
            logits, features = done.clean_logits, done.clean_features
        scores = model_scores(
            logits=logits,
            features=features,
            mahalanobis=self.calibration.mahalanobis if self.calibration else None,
            abstained=cert.abstained,
            p_lower=cert.p_lower,
            model_input=x,
            input_stats=self.calibration.input_stats if self.calibration else None,
        )
        verdict = self.fusion.fuse(scores, camera=health, stamp_s=stamp_s)
        if seq is None:
            return FrameResult(stamp_s, cert, verdict, logits, features)
        return FrameResult(
            stamp_s,
            cert,
            verdict,
            logits,
            features,
            mode="sequential",
            decision=done.decision,
            looks=done.looks,
            r_required=seq.r_required,
        )
