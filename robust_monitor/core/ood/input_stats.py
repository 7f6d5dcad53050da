"""Input-statistics OOD detector: low-level statistics of the model input, scored by Mahalanobis.

The model-based detectors (``scores``) see an input only through the network, which was trained
with Gaussian noise augmentation and so is blind to noise, and tolerant of blur, pixelation and
JPEG artefacts that still change what it predicts. This detector looks at the pixels of the
model-space input (the (C, H, W) float tensor in [0, 1] that ``to_model_input`` gives) and
summarises each frame by ``FEATURES``:

- ``log_noise_immerkaer``: ``log`` of Immerkær's (1996) fast noise standard deviation,
  ``sigma = sqrt(pi / 2) / (6 (W - 2)(H - 2)) * sum |I * M|`` with the Laplacian-difference
  kernel ``M = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` on the grey image (``M`` cancels locally
  planar image structure, so the response is mostly noise);
- ``log_noise_mad``: the same response's robust scale, ``median |I * M| / (0.6745 * 6)`` (MAD of
  a zero-mean Gaussian; ``6 = ||M||_2``); with the mean-based estimate it separates dense
  Gaussian noise (both rise) from impulse noise (the mean rises far more than the median);
- ``log_gradient``: ``log`` mean absolute horizontal plus vertical difference (edge energy);
- ``log_laplacian_ratio``: ``log`` of the mean ``|I * M|`` over the mean gradient (fine over
  coarse detail: falls under blur, rises under noise);
- ``log_fine_coarse_gradient``: ``log`` of the mean gradient over that of the 2x2-averaged image
  (how much edge energy lives at the finest scale: blur lowers it, noise raises it);
- ``zero_diff_h`` / ``zero_diff_v``: fractions of horizontal / vertical neighbours with equal
  8-bit values (pixelation, posterisation, clipping);
- ``log_blockiness``: ``log`` of the mean absolute difference across the 8x8 JPEG block
  boundaries over the mean difference elsewhere (both directions);
- ``mean_r|g|b``, ``std_r|g|b``: per-channel mean and standard deviation;
- ``saturated`` / ``dark``: fractions of pixels with any channel at 255 / all channels at 0, as
  ``sqrt`` (their in-distribution values pile up at 0);
- ``colourfulness``: Hasler & Süsstrunk's (2003) colourfulness of the RGB image.

``InputStatsModel.fit`` standardises the features of the in-distribution frames it is given and
scores a new frame (higher = more OOD) by one of two ``METHODS``:

- ``knn`` (default): the mean Euclidean distance of its standardised features to their ``k``
  nearest fitted frames (Sun et al. 2022 use the same score on network features). The
  in-distribution statistics are multi-modal (sky, asphalt, foliage, clutter backgrounds), which a
  nearest-neighbour distance follows and one Gaussian does not; the fitted frames are stored;
- ``mahalanobis``: the Mahalanobis distance to one Gaussian with a Ledoit-Wolf-shrunk covariance.

On held-out validation sets (seeds 888001-888004, disjoint from the evaluation's), ``knn`` with
``k = 5`` separated far-OOD frames with AUROC 0.96 against 0.95 for ``mahalanobis``, severity-5
corruptions 0.88 against 0.87. Thresholds are set like every other detector's, by
``calibration`` from in-distribution frames that did not fit the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy import linalg

from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.core.ood.scores import ledoit_wolf_shrinkage

FloatArray = npt.NDArray[np.float64]

FEATURES: Final[tuple[str, ...]] = (
    "log_noise_immerkaer",
    "log_noise_mad",
    "log_gradient",
    "log_laplacian_ratio",
    "log_fine_coarse_gradient",
    "zero_diff_h",
    "zero_diff_v",
    "log_blockiness",
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "saturated",
    "dark",
    "colourfulness",
)
"""Names of the statistics ``input_features`` returns, in order."""

_LUMA: Final = np.array([0.299, 0.587, 0.114], np.float32)
_EPS: Final[float] = 1e-4
"""Floor (in [0, 1] intensity units) inside the logarithms: about a quarter of an 8-bit step."""
_BLOCK: Final[int] = 8
METHODS: Final[tuple[str, ...]] = ("knn", "mahalanobis")
DEFAULT_K: Final[int] = 5


def _laplacian_difference(gray: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``gray * M`` over the valid (H - 2, W - 2) region (Immerkær's kernel ``M``)."""
    g = gray
    c = g[1:-1, 1:-1]
    edges = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    corners = g[:-2, :-2] + g[:-2, 2:] + g[2:, :-2] + g[2:, 2:]
    out: npt.NDArray[np.float32] = corners - 2.0 * edges + 4.0 * c
    return out


def immerkaer_sigma(gray: npt.ArrayLike) -> float:
    """Immerkær's (1996) noise standard deviation of a 2-D image (same units as the image).

    For an image of constant or locally planar intensity plus i.i.d. Gaussian noise of standard
    deviation ``sigma``, the estimate's expectation is ``sigma``. Needs at least 3x3 pixels.
    """
    g = np.asarray(gray, np.float32)
    if g.ndim != 2 or g.shape[0] < 3 or g.shape[1] < 3:
        raise InputError(f"need a 2-D image of at least 3x3 pixels, got shape {g.shape}")
    h, w = g.shape
    r = _laplacian_difference(g)
    return float(
        math.sqrt(math.pi / 2.0)
        * float(np.abs(r).sum(dtype=np.float64))
        / (6.0 * (w - 2) * (h - 2))
    )


def input_features(x: npt.ArrayLike) -> FloatArray:
    """The ``FEATURES`` of one model input: (C, H, W) float in [0, 1], C = 3 (RGB), H, W >= 9."""
    a = np.asarray(x, np.float32)
    if a.ndim != 3 or a.shape[0] != 3 or a.shape[1] < 9 or a.shape[2] < 9:
        raise InputError(f"model input must be (3, H, W) with H, W >= 9, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError("model input must be finite (found NaN or Inf)")
    _c, h, w = a.shape
    gray = np.tensordot(_LUMA, a, axes=1)
    lap = np.abs(_laplacian_difference(gray))
    lap_mean = float(lap.mean(dtype=np.float64))
    sigma_mean = math.sqrt(math.pi / 2.0) * lap_mean / 6.0
    sigma_mad = float(np.median(lap)) / (0.6745 * 6.0)
    dh = np.abs(np.diff(gray, axis=1))
    dv = np.abs(np.diff(gray, axis=0))
    gradient = 0.5 * (float(dh.mean(dtype=np.float64)) + float(dv.mean(dtype=np.float64)))
    he, we = h - h % 2, w - w % 2
    coarse = gray[:he, :we].reshape(he // 2, 2, we // 2, 2).mean(axis=(1, 3))
    coarse_gradient = 0.5 * (
        float(np.abs(np.diff(coarse, axis=1)).mean(dtype=np.float64))
        + float(np.abs(np.diff(coarse, axis=0)).mean(dtype=np.float64))
    )
    q = np.rint(a * np.float32(255.0)).astype(np.int16)
    zero_h = float(np.all(q[:, :, 1:] == q[:, :, :-1], axis=0).mean())
    zero_v = float(np.all(q[:, 1:, :] == q[:, :-1, :], axis=0).mean())
    # Differences between column 8k-1 and 8k (and rows likewise) cross a JPEG block boundary.
    at_h = np.zeros(w - 1, bool)
    at_h[_BLOCK - 1 :: _BLOCK] = True
    at_v = np.zeros(h - 1, bool)
    at_v[_BLOCK - 1 :: _BLOCK] = True
    across = float(dh[:, at_h].sum(dtype=np.float64) + dv[at_v, :].sum(dtype=np.float64))
    across /= dh[:, at_h].size + dv[at_v, :].size
    within = float(dh[:, ~at_h].sum(dtype=np.float64) + dv[~at_v, :].sum(dtype=np.float64))
    within /= dh[:, ~at_h].size + dv[~at_v, :].size
    flat = a.reshape(3, -1)
    means = flat.mean(axis=1, dtype=np.float64)
    stds = flat.std(axis=1, dtype=np.float64)
    saturated = float(np.any(q >= 255, axis=0).mean())
    dark = float(np.all(q <= 0, axis=0).mean())
    rg = flat[0] - flat[1]
    yb = 0.5 * (flat[0] + flat[1]) - flat[2]
    colourfulness = math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(
        float(rg.mean()), float(yb.mean())
    )
    return np.array(
        [
            math.log(sigma_mean + _EPS),
            math.log(sigma_mad + _EPS),
            math.log(gradient + _EPS),
            math.log((lap_mean + _EPS) / (gradient + _EPS)),
            math.log((gradient + _EPS) / (coarse_gradient + _EPS)),
            zero_h,
            zero_v,
            math.log((across + _EPS) / (within + _EPS)),
            *means,
            *stds,
            math.sqrt(saturated),
            math.sqrt(dark),
            colourfulness,
        ],
        np.float64,
    )


def input_features_batch(images: npt.ArrayLike) -> FloatArray:
    """``input_features`` of every input of an (N, 3, H, W) batch: (N, len(FEATURES))."""
    batch = np.asarray(images)
    if batch.ndim != 4:
        raise InputError(f"a batch of model inputs must be (N, 3, H, W), got shape {batch.shape}")
    if batch.dtype == np.uint8:
        return np.stack([input_features(b.astype(np.float32) / np.float32(255.0)) for b in batch])
    return np.stack([input_features(b) for b in batch])


@dataclass(frozen=True, eq=False)
class InputStatsModel:
    """In-distribution ``FEATURES``, standardised, and a distance to them (see ``METHODS``).

    ``score(x)``, with ``z = (features(x) - center) / scale``, is for ``method`` ``knn`` the mean
    Euclidean distance of ``z`` to its ``k`` nearest rows of ``reference`` (the standardised
    fitted frames), and for ``mahalanobis`` ``sqrt(z^T covariance^-1 z)``. Higher = less like
    the in-distribution frames = more OOD. ``covariance`` (both methods keep it, for reports) is
    the standardised features' covariance shrunk towards ``trace / D * I`` (Ledoit-Wolf) plus a
    floor of 1e-6, so it is well-conditioned even for nearly constant features.

    Equality is identity (the fields are arrays); compare ``as_dict()`` values instead.
    """

    features: tuple[str, ...]
    center: FloatArray
    scale: FloatArray
    covariance: FloatArray
    shrinkage: float = 0.0
    num_samples: int = 0
    method: str = "knn"
    k: int = DEFAULT_K
    reference: FloatArray | None = None
    """(num_samples, D) standardised fitted features; needed by ``knn``."""
    _whiten: FloatArray = field(init=False, repr=False, compare=False)
    _ref_sq: FloatArray | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.features) != FEATURES:
            raise ConfigError(
                f"input_stats features must be {list(FEATURES)}, got {list(self.features)}; "
                "recalibrate with this version of robust_monitor"
            )
        d = len(FEATURES)
        center = np.asarray(self.center, np.float64)
        scale = np.asarray(self.scale, np.float64)
        cov = np.asarray(self.covariance, np.float64)
        if center.shape != (d,) or scale.shape != (d,) or cov.shape != (d, d):
            raise ConfigError(
                f"input_stats needs center ({d},), scale ({d},) and covariance ({d}, {d}), got "
                f"{center.shape}, {scale.shape}, {cov.shape}"
            )
        if not (np.all(np.isfinite(center)) and np.all(np.isfinite(cov))):
            raise ConfigError("input_stats center and covariance must be finite")
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0.0)):
            raise ConfigError("input_stats scale must be finite and > 0")
        if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-12):
            raise ConfigError("input_stats covariance must be symmetric")
        if self.method not in METHODS:
            raise ConfigError(
                f"input_stats method must be one of {list(METHODS)}, got {self.method!r}"
            )
        try:
            chol = linalg.cholesky(cov, lower=True)
        except linalg.LinAlgError as exc:
            raise ConfigError(f"input_stats covariance must be positive definite: {exc}") from exc
        reference = None if self.reference is None else np.asarray(self.reference, np.float64)
        if self.method == "knn":
            if not (isinstance(self.k, int) and not isinstance(self.k, bool) and self.k >= 1):
                raise ConfigError(f"input_stats k must be an integer >= 1, got {self.k!r}")
            if reference is None or reference.ndim != 2 or reference.shape[1] != d:
                raise ConfigError(f"input_stats method knn needs a (N, {d}) reference")
            if reference.shape[0] < self.k or not np.all(np.isfinite(reference)):
                raise ConfigError(
                    f"input_stats reference must hold >= k = {self.k} finite rows, "
                    f"got {reference.shape[0]}"
                )
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "covariance", cov)
        object.__setattr__(self, "reference", reference)
        object.__setattr__(self, "_whiten", linalg.solve_triangular(chol, np.eye(d), lower=True))
        ref_sq = None if reference is None else (reference**2).sum(axis=1)
        object.__setattr__(self, "_ref_sq", ref_sq)

    @classmethod
    def fit(
        cls,
        features: npt.ArrayLike,
        shrinkage: float | None = None,
        method: str = "knn",
        k: int = DEFAULT_K,
    ) -> InputStatsModel:
        """Fit to the (N, len(FEATURES)) features of in-distribution inputs (N >= 2, N >= k)."""
        x = np.asarray(features, np.float64)
        d = len(FEATURES)
        if x.ndim != 2 or x.shape[1] != d or x.shape[0] < 2:
            raise InputError(f"features must be (N, {d}) with N >= 2, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise InputError("features must be finite (found NaN or Inf)")
        if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
            raise ConfigError(f"shrinkage must be None (Ledoit-Wolf) or in [0, 1], got {shrinkage}")
        center = x.mean(axis=0)
        scale = x.std(axis=0)
        # A feature constant on every fitted frame gets a tiny scale: any change is unusual.
        scale = np.where(scale > 1e-9, scale, 1e-9)
        z = (x - center) / scale
        n = z.shape[0]
        cov = z.T @ z / n
        weight = ledoit_wolf_shrinkage(z) if shrinkage is None else float(shrinkage)
        mu = float(np.trace(cov)) / d
        cov = (1.0 - weight) * cov + weight * mu * np.eye(d) + 1e-6 * np.eye(d)
        cov = 0.5 * (cov + cov.T)
        reference = z if method == "knn" else None
        return cls(FEATURES, center, scale, cov, weight, int(n), method, k, reference)

    def score_features(self, features: npt.ArrayLike) -> FloatArray:
        """Score of feature rows (N, D) -> (N,), or of one (D,) row -> 0-d."""
        f = np.asarray(features, np.float64)
        d = len(FEATURES)
        if f.shape[-1:] != (d,) or f.ndim > 2:
            raise InputError(f"features must be ({d},) or (N, {d}), got shape {f.shape}")
        z = (f - self.center) / self.scale
        if self.method == "mahalanobis":
            w = z @ self._whiten.T
            out: FloatArray = np.sqrt((w**2).sum(axis=-1))
            return out
        assert self.reference is not None and self._ref_sq is not None
        z2 = np.atleast_2d(z)
        sq = (z2**2).sum(axis=1)[:, None] + self._ref_sq[None, :] - 2.0 * z2 @ self.reference.T
        dist = np.sqrt(np.maximum(sq, 0.0))
        nearest = np.partition(dist, self.k - 1, axis=1)[:, : self.k]
        result: FloatArray = nearest.mean(axis=1)
        return result[0] if z.ndim == 1 else result

    def score(self, x: npt.ArrayLike) -> float:
        """The detector score of one model input (C, H, W) in [0, 1]."""
        return float(self.score_features(input_features(x)))

    def as_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (YAML / JSON); ``from_dict(m.as_dict())`` rebuilds ``m``."""
        return {
            "features": list(self.features),
            "method": self.method,
            "k": int(self.k),
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "covariance": self.covariance.tolist(),
            "shrinkage": float(self.shrinkage),
            "num_samples": int(self.num_samples),
            "reference": None if self.reference is None else self.reference.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputStatsModel:
        """Inverse of ``as_dict``; ``ConfigError`` for missing or unknown keys, types, shapes."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"input_stats model must be a mapping, got {type(data).__name__}")
        keys = {
            "features",
            "method",
            "k",
            "center",
            "scale",
            "covariance",
            "shrinkage",
            "num_samples",
            "reference",
        }
        missing, unknown = sorted(keys - set(data)), sorted(str(k) for k in set(data) - keys)
        if missing or unknown:
            raise ConfigError(
                f"input_stats model: missing keys {missing}, unknown keys {unknown}; "
                f"expected exactly {sorted(keys)}"
            )
        names = data["features"]
        if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"input_stats features must be a list of names, got {names!r}")
        arrays: dict[str, FloatArray | None] = {}
        for key in ("center", "scale", "covariance", "reference"):
            if key == "reference" and data[key] is None:
                arrays[key] = None
                continue
            try:
                arrays[key] = np.asarray(data[key], np.float64)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"input_stats {key} must be numbers: {exc}") from exc
        shrinkage, num = data["shrinkage"], data["num_samples"]
        if not (isinstance(shrinkage, int | float) and not isinstance(shrinkage, bool)):
            raise ConfigError(f"input_stats shrinkage must be a number, got {shrinkage!r}")
        if not (isinstance(num, int) and not isinstance(num, bool) and num >= 0):
            raise ConfigError(f"input_stats num_samples must be an integer >= 0, got {num!r}")
        center, scale, cov = arrays["center"], arrays["scale"], arrays["covariance"]
        assert center is not None and scale is not None and cov is not None
        return cls(
            tuple(names),
            center,
            scale,
            cov,
            float(shrinkage),
            num,
            str(data["method"]),
            data["k"],
            arrays["reference"],
        )
