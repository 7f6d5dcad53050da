"""Statistics of randomized smoothing, exactly as Cohen, Rosenfeld & Kolter (ICML 2019).

Notation follows the paper: ``n0`` selection samples pick the candidate class ``c_A``; ``n``
fresh estimation samples give ``count`` votes for it; ``p_lower`` is the one-sided
Clopper-Pearson lower confidence bound on ``p_A = P(f(x + eps) = c_A)`` at level ``alpha``; the
certified L2 radius is ``sigma * Phi^-1(p_lower)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, binomtest, norm

from robust_monitor.core.certify.certificate import ABSTAIN
from robust_monitor.core.errors import ConfigError, ModelError


def validate_alpha(alpha: float) -> float:
    """Return alpha as float, or raise ConfigError unless 0 < alpha < 1."""
    a = float(alpha)
    if not (0.0 < a < 1.0) or math.isnan(a):
        raise ConfigError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


def clopper_pearson_lower(count: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion.

    ``P(p >= clopper_pearson_lower(K, n, alpha)) >= 1 - alpha`` for ``K ~ Binomial(n, p)``,
    whatever ``p`` is (the bound is exact, hence conservative).
    """
    if n < 1 or not 0 <= count <= n:
        raise ConfigError(f"need 0 <= count <= n and n >= 1, got count={count}, n={n}")
    validate_alpha(alpha)
    if count == 0:
        return 0.0
    return float(beta.ppf(alpha, count, n - count + 1))


def clopper_pearson_upper(count: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound on a binomial proportion."""
    if n < 1 or not 0 <= count <= n:
        raise ConfigError(f"need 0 <= count <= n and n >= 1, got count={count}, n={n}")
    validate_alpha(alpha)
    if count == n:
        return 1.0
    return float(beta.ppf(1.0 - alpha, count + 1, n - count))


def radius_from_p_lower(p_lower: float, sigma: float) -> float:
    """Certified L2 radius ``sigma * Phi^-1(p_lower)``; 0 when p_lower <= 1/2 (no certificate)."""
    if p_lower <= 0.5:
        return 0.0
    return float(sigma * norm.ppf(p_lower))


@dataclass(frozen=True, slots=True)
class CertifyOutcome:
    """Pure statistical outcome of CERTIFY for one frame (before timing/provider are known)."""

    label: int
    count: int
    p_lower: float
    radius: float
    abstained: bool


def certify_from_counts(
    selection_counts: np.ndarray, estimation_counts: np.ndarray, alpha: float, sigma: float
) -> CertifyOutcome:
    """CERTIFY from vote counts (Cohen et al. 2019, Algorithm "CERTIFY").

    ``selection_counts`` (from n0 samples) picks ``c_A = argmax``; the votes for ``c_A`` among the
    ``n = estimation_counts.sum()`` *independent* estimation samples give
    ``p_lower = LowerConfBound(count, n, 1 - alpha)``. If ``p_lower < 1/2`` the procedure abstains;
    otherwise it returns ``c_A`` with radius ``sigma * Phi^-1(p_lower)``.

    Guarantee: if it does not abstain, with probability at least ``1 - alpha`` over the samples,
    the smoothed classifier is constant (= ``c_A``) within the returned L2 radius.
    """
    validate_alpha(alpha)
    if sigma <= 0.0 or not math.isfinite(sigma):
        raise ConfigError(f"sigma must be a finite number > 0, got {sigma!r}")
    selection = np.asarray(selection_counts)
    estimation = np.asarray(estimation_counts)
    if selection.shape != estimation.shape or selection.ndim != 1:
        raise ConfigError("selection and estimation counts must be 1-D arrays of one length")
    label = int(np.argmax(selection))
    n = int(estimation.sum())
    count = int(estimation[label])
    p_lower = clopper_pearson_lower(count, n, alpha)
    if p_lower < 0.5:
        return CertifyOutcome(ABSTAIN, count, p_lower, 0.0, True)
    return CertifyOutcome(label, count, p_lower, radius_from_p_lower(p_lower, sigma), False)


def predict_from_counts(counts: np.ndarray, alpha: float) -> int:
    """PREDICT (Cohen et al. 2019): the top class, or ABSTAIN.

    Two-sided binomial test of the top two counts ``n_A`` vs ``n_B`` at p = 1/2; abstain when the
    p-value exceeds alpha. Guarantee: the returned class differs from the smoothed classifier's
    prediction with probability at most alpha.
    """
    validate_alpha(alpha)
    c = np.asarray(counts)
    order = np.argsort(c)[::-1]
    top, second = int(c[order[0]]), int(c[order[1]]) if c.size > 1 else 0
    if top + second == 0:
        return ABSTAIN
    if binomtest(top, top + second, 0.5).pvalue > alpha:
        return ABSTAIN
    return int(order[0])


def clean_class(clean_logits: np.ndarray, num_classes: int) -> int:
    """The class ``n0 = 0`` selects: the base model's top class on the clean frame (see
    ``select_clean`` for why the bound allows it)."""
    logits = np.asarray(clean_logits).reshape(-1)
    if logits.size != num_classes:
        raise ModelError(f"clean logits have {logits.size} values for {num_classes} classes")
    return int(np.argmax(logits))


def select_clean(clean_logits: np.ndarray, num_classes: int) -> np.ndarray:
    """Selection "counts" for ``n0 = 0``: one vote for the clean frame's top class.

    Cohen's CERTIFY draws ``n0`` noisy samples only to *guess* the smoothed top class; its bound
    needs the guess to be independent of the ``n`` estimation samples, nothing more. The base
    model's argmax on the unnoised frame is a fixed function of the frame (no noise enters it),
    so it qualifies even when it is computed in the same graph run as the estimation votes. A
    wrong guess costs no soundness: its votes fall short and the certificate abstains. The same
    holds for whatever class ``argmax`` picks from non-finite logits: only its votes count.
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    counts[clean_class(clean_logits, num_classes)] = 1
    return counts
