"""Model-based out-of-distribution scores, from logits, features and the smoothing certificate.

Convention: every *detector score* (the names in ``DETECTORS``, what ``model_scores`` returns and
what ``calibration`` thresholds) is oriented so that **higher means more out-of-distribution**:

- ``msp``: ``1 - max softmax probability`` (Hendrycks & Gimpel 2017), in [0, 1 - 1/K].
- ``energy``: the free energy ``-T * logsumexp(logits / T)`` (Liu et al. 2020); in-distribution
  inputs get large logits and so low (very negative) energy.
- ``mahalanobis``: the smallest Mahalanobis distance of the feature vector to a class mean, with
  one covariance shared by all classes (Lee et al. 2018), fitted by ``MahalanobisModel.fit``.
- ``abstain``: 1 when randomized smoothing abstained, else 0.
- ``p_lower``: ``1 - p_lower``, where ``p_lower`` is the certificate's lower confidence bound of
  the top class probability under noise.
- ``input_stats``: the Mahalanobis distance of low-level statistics of the model input (noise
  level, edge energy, pixelation, JPEG blockiness, colour) to their in-distribution Gaussian
  (``input_stats.InputStatsModel``); it looks at the pixels, not through the network.

``max_softmax_probability`` itself is the classic *confidence* (higher = more in-distribution);
it is offered for reports, and ``msp`` is its detector form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
from scipy import linalg

from robust_monitor.core.errors import ConfigError, InputError

if TYPE_CHECKING:
    from robust_monitor.core.ood.input_stats import InputStatsModel

FloatArray = npt.NDArray[np.float64]

DETECTORS: Final[tuple[str, ...]] = (
    "msp",
    "energy",
    "mahalanobis",
    "abstain",
    "p_lower",
    "input_stats",
)
"""Names of the model-based detectors; every score is higher = more OOD."""


def _logits(logits: npt.ArrayLike) -> FloatArray:
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] < 2:
        raise InputError(f"logits must have a last axis of >= 2 classes, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("logits must be finite (found NaN or Inf)")
    return x


def log_softmax(logits: npt.ArrayLike) -> FloatArray:
    """Log-probabilities over the last axis, computed stably (max subtracted first)."""
    x = _logits(logits)
    shifted = x - x.max(axis=-1, keepdims=True)
    out: FloatArray = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return out


def softmax(logits: npt.ArrayLike) -> FloatArray:
    """Probabilities over the last axis (stable for any finite logits)."""
    return np.exp(log_softmax(logits))


def max_softmax_probability(logits: npt.ArrayLike) -> FloatArray:
    """Largest class probability, shape ``logits.shape[:-1]`` (higher = more in-distribution)."""
    x = _logits(logits)
    shifted = x - x.max(axis=-1, keepdims=True)
    # The top class has shifted logit 0, so its probability is 1 / sum(exp(shifted)).
    out: FloatArray = 1.0 / np.exp(shifted).sum(axis=-1)
    return out


def msp_score(logits: npt.ArrayLike) -> FloatArray:
    """``1 - max softmax probability`` (higher = more OOD)."""
    out: FloatArray = 1.0 - max_softmax_probability(logits)
    return out


def energy(logits: npt.ArrayLike, temperature: float = 1.0) -> FloatArray:
    """Free energy ``-T * logsumexp(logits / T)`` over the last axis (higher = more OOD).

    Stable for any finite logits: ``logsumexp(z) = max(z) + log(sum(exp(z - max(z))))``.
    """
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ConfigError(f"temperature must be a finite number > 0, got {temperature!r}")
    z = _logits(logits) / temperature
    peak = z.max(axis=-1)
    lse = peak + np.log(np.exp(z - peak[..., None]).sum(axis=-1))
    out: FloatArray = -temperature * lse
    return out


def abstention_score(abstained: bool) -> float:
    """1.0 when the smoothed classifier abstained, else 0.0 (higher = more OOD)."""
    return 1.0 if abstained else 0.0


def p_lower_score(p_lower: float) -> float:
    """``1 - p_lower`` (higher = more OOD); ``p_lower`` must be in [0, 1]."""
    if not 0.0 <= p_lower <= 1.0:
        raise InputError(f"p_lower must be a probability in [0, 1], got {p_lower!r}")
    return 1.0 - float(p_lower)


# --- Mahalanobis --------------------------------------------------------------------------------
def ledoit_wolf_shrinkage(residuals: FloatArray) -> float:
    """Ledoit & Wolf (2004) optimal shrinkage of ``X^T X / n`` towards ``trace / D * I``.

    ``residuals`` (n, D) must already be centred (here: per class). Returns a weight in [0, 1].
    """
    n, d = residuals.shape
    cov = residuals.T @ residuals / n
    mu = float(np.trace(cov)) / d
    delta = float(np.sum((cov - mu * np.eye(d)) ** 2)) / d
    if delta <= 0.0:
        return 0.0
    fourth = float(np.sum(np.sum(residuals**2, axis=1) ** 2))
    beta = (fourth / n - float(np.sum(cov**2))) / (d * n)
    return float(min(max(beta, 0.0), delta) / delta)


@dataclass(frozen=True, eq=False)
class MahalanobisModel:
    """Class means and one shared (tied) covariance over feature vectors.

    ``score(x)`` is ``min_k sqrt((x - mean_k)^T covariance^-1 (x - mean_k))``: higher = farther
    from every class = more OOD. The covariance is the pooled within-class covariance shrunk
    towards a multiple of the identity (``shrinkage`` in [0, 1]; Ledoit-Wolf by default), plus a
    floor of 1e-6 of its mean variance, so it is well-conditioned even when there are fewer
    samples than feature dimensions.

    Equality is identity (the fields are arrays); compare ``as_dict()`` values instead.
    """

    class_labels: tuple[int, ...]
    means: FloatArray
    """(K, D) class means, row k for ``class_labels[k]``."""
    covariance: FloatArray
    """(D, D) shared covariance (symmetric positive definite)."""
    shrinkage: float = 0.0
    num_samples: int = 0
    _whiten: FloatArray = field(init=False, repr=False, compare=False)
    _white_means: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        means = np.asarray(self.means, dtype=np.float64)
        cov = np.asarray(self.covariance, dtype=np.float64)
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ConfigError(f"means must be a (K, D) array with K, D >= 1, got {means.shape}")
        k, d = means.shape
        if cov.shape != (d, d):
            raise ConfigError(f"covariance must be ({d}, {d}) to match the means, got {cov.shape}")
        if len(self.class_labels) != k or len(set(self.class_labels)) != k:
            raise ConfigError(
                f"class_labels must be {k} distinct integers (one per mean), "
                f"got {list(self.class_labels)}"
            )
        if not (np.all(np.isfinite(means)) and np.all(np.isfinite(cov))):
            raise ConfigError("means and covariance must be finite")
        if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-12 * max(float(np.abs(cov).max()), 1)):
            raise ConfigError("covariance must be symmetric")
        try:
            chol = linalg.cholesky(cov, lower=True)
        except linalg.LinAlgError as exc:
            raise ConfigError(f"covariance must be positive definite: {exc}") from exc
        whiten = linalg.solve_triangular(chol, np.eye(d), lower=True)
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "covariance", cov)
        object.__setattr__(self, "class_labels", tuple(int(c) for c in self.class_labels))
        object.__setattr__(self, "_whiten", whiten)
        object.__setattr__(self, "_white_means", means @ whiten.T)

    @property
    def feature_dim(self) -> int:
        return int(self.means.shape[1])

    @classmethod
    def fit(
        cls, features: npt.ArrayLike, labels: npt.ArrayLike, shrinkage: float | None = None
    ) -> MahalanobisModel:
        """Fit class means and the shrunk pooled covariance to ``features`` (N, D), ``labels`` (N,).

        ``shrinkage`` None picks the Ledoit-Wolf weight; a number in [0, 1] fixes it. Every class
        present in ``labels`` gets a mean. Raises ``InputError`` for mismatched or non-finite
        inputs, or features that do not vary within the classes at all.
        """
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels)
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
            raise InputError(f"features must be (N, D) with N >= 2, got shape {x.shape}")
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise InputError(
                f"labels must be {x.shape[0]} integers (one per feature row), "
                f"got {y.dtype} {y.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise InputError("features must be finite (found NaN or Inf)")
        if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
            raise ConfigError(f"shrinkage must be None (Ledoit-Wolf) or in [0, 1], got {shrinkage}")
        classes, index = np.unique(y, return_inverse=True)
        if classes.size >= x.shape[0]:
            raise InputError(
                f"need more samples ({x.shape[0]}) than classes ({classes.size}) to estimate "
                "a within-class covariance"
            )
        counts = np.bincount(index, minlength=classes.size).astype(np.float64)
        means = np.zeros((classes.size, x.shape[1]))
        np.add.at(means, index, x)
        means /= counts[:, None]
        residuals = x - means[index]
        n, d = residuals.shape
        cov = residuals.T @ residuals / n
        mu = float(np.trace(cov)) / d
        if not mu > 0.0:
            raise InputError("features do not vary within the classes: no covariance to fit")
        weight = ledoit_wolf_shrinkage(residuals) if shrinkage is None else float(shrinkage)
        cov = (1.0 - weight) * cov + weight * mu * np.eye(d)
        cov += 1e-6 * mu * np.eye(d)
        cov = 0.5 * (cov + cov.T)
        return cls(
            class_labels=tuple(int(c) for c in classes),
            means=means,
            covariance=cov,
            shrinkage=weight,
            num_samples=int(n),
        )

    def distances(self, features: npt.ArrayLike) -> FloatArray:
        """Mahalanobis distance of each feature row to each class mean: (N, K), or (K,) for (D,)."""
        x = np.asarray(features, dtype=np.float64)
        single = x.ndim == 1
        x2 = x[None, :] if single else x
        if x2.ndim != 2 or x2.shape[1] != self.feature_dim:
            raise InputError(
                f"features must be ({self.feature_dim},) or (N, {self.feature_dim}), "
                f"got shape {x.shape}"
            )
        if not np.all(np.isfinite(x2)):
            raise InputError("features must be finite (found NaN or Inf)")
        z = x2 @ self._whiten.T
        m = self._white_means
        sq = (z**2).sum(axis=1)[:, None] + (m**2).sum(axis=1)[None, :] - 2.0 * z @ m.T
        out: FloatArray = np.sqrt(np.maximum(sq, 0.0))
        return out[0] if single else out

    def score(self, features: npt.ArrayLike) -> FloatArray:
        """Smallest distance over the classes: (N,), or a 0-d array for one (D,) vector."""
        out: FloatArray = self.distances(features).min(axis=-1)
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (YAML / JSON); ``from_dict(m.as_dict()) == m`` in value."""
        return {
            "class_labels": list(self.class_labels),
            "means": self.means.tolist(),
            "covariance": self.covariance.tolist(),
            "shrinkage": float(self.shrinkage),
            "num_samples": int(self.num_samples),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MahalanobisModel:
        """Inverse of ``as_dict``; ``ConfigError`` for missing or unknown keys, types, shapes."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"mahalanobis model must be a mapping, got {type(data).__name__}")
        keys = {"class_labels", "means", "covariance", "shrinkage", "num_samples"}
        missing, unknown = sorted(keys - set(data)), sorted(str(k) for k in set(data) - keys)
        if missing or unknown:
            raise ConfigError(
                f"mahalanobis model: missing keys {missing}, unknown keys {unknown}; "
                f"expected exactly {sorted(keys)}"
            )
        labels = data["class_labels"]
        if not isinstance(labels, Sequence) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in labels
        ):
            raise ConfigError(f"class_labels must be a list of integers, got {labels!r}")
        means = _matrix(data["means"], "means")
        covariance = _matrix(data["covariance"], "covariance")
        shrinkage, num = data["shrinkage"], data["num_samples"]
        if not (_is_number(shrinkage) and 0.0 <= shrinkage <= 1.0):
            raise ConfigError(f"shrinkage must be a number in [0, 1], got {shrinkage!r}")
        if not (isinstance(num, int) and not isinstance(num, bool) and num >= 0):
            raise ConfigError(f"num_samples must be an integer >= 0, got {num!r}")
        return cls(tuple(labels), means, covariance, float(shrinkage), num)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _matrix(value: object, name: str) -> FloatArray:
    ok = (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(
            isinstance(row, Sequence)
            and not isinstance(row, str)  # a string is a Sequence too
            and len(row) > 0
            and all(_is_number(v) for v in row)
            for row in value
        )
    )
    if not ok:
        raise ConfigError(f"{name} must be a non-empty list of lists of numbers")
    assert isinstance(value, Sequence)
    widths = {len(row) for row in value}
    if len(widths) != 1:
        raise ConfigError(
            f"{name} rows must all have the same length, got lengths {sorted(widths)}"
        )
    return np.asarray(value, dtype=np.float64)


# --- all scores of one frame --------------------------------------------------------------------
def model_scores(
    *,
    logits: npt.ArrayLike | None = None,
    features: npt.ArrayLike | None = None,
    mahalanobis: MahalanobisModel | None = None,
    abstained: bool | None = None,
    p_lower: float | None = None,
    temperature: float = 1.0,
    model_input: npt.ArrayLike | None = None,
    input_stats: InputStatsModel | None = None,
) -> dict[str, float]:
    """Every detector score that the given outputs of one frame allow, keyed by detector name.

    ``logits`` (K,) give ``msp`` and ``energy``; ``features`` (D,) with a fitted ``mahalanobis``
    model give ``mahalanobis``; the certificate's ``abstained`` and ``p_lower`` give ``abstain``
    and ``p_lower``; the (C, H, W) ``model_input`` in [0, 1] with a fitted ``input_stats`` model
    gives ``input_stats``. All are higher = more OOD.
    """
    out: dict[str, float] = {}
    if logits is not None:
        x = _logits(logits)
        if x.ndim != 1:
            raise InputError(f"logits of one frame must be (K,), got shape {x.shape}")
        out["msp"] = float(msp_score(x))
        out["energy"] = float(energy(x, temperature))
    if features is not None and mahalanobis is not None:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 1:
            raise InputError(f"features of one frame must be (D,), got shape {f.shape}")
        out["mahalanobis"] = float(mahalanobis.score(f))
    if abstained is not None:
        out["abstain"] = abstention_score(abstained)
    if p_lower is not None:
        out["p_lower"] = p_lower_score(p_lower)
    if model_input is not None and input_stats is not None:
        out["input_stats"] = input_stats.score(model_input)
    return out
