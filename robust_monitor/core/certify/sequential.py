"""Sequential, deadline-aware certification: stop sampling as soon as the answer is known.

Cohen's CERTIFY draws a fixed number ``n`` of estimation samples. Here the estimation samples
come in batches ("looks"), and after each look the procedure stops as soon as

* ``certified``: ``p_lower >= Phi(r_required / sigma)``, so the certified radius is at least
  ``r_required``;
* ``unreachable``: ``p_upper < Phi(r_required / sigma)``, so no number of further samples would
  certify ``r_required`` (at this alpha), and every radius of ``bands`` (the arbiter's other
  thresholds) is decided too: certified, or shown out of reach in the same way;
* ``budget``: the time budget (measured from the start of the frame) is spent, or
* ``max_n``: ``max_n`` estimation samples have been drawn,

and reports the radius ``sigma * Phi^-1(p_lower)`` of the running lower bound (or abstains when
``p_lower < 1/2``), as CERTIFY does.

Why the bounds survive optional stopping: ``p_lower`` and ``p_upper`` are a *confidence
sequence* for ``p_A``, not a confidence interval recomputed at each look. For the votes
``S_n`` of ``c_A`` among the first ``n`` estimation samples, Robbins' Beta-binomial mixture

    M_n(p) = B(a + S_n, b + n - S_n) / B(a, b) / (p^S_n (1 - p)^(n - S_n))

(the likelihood ratio of the Beta(a, b)-mixture against ``p``, Robbins 1970) is a nonnegative
martingale with ``M_0 = 1`` when ``p`` is the true ``p_A``, so by Ville's inequality
``P(exists n >= 1: M_n(p_A) >= 1/alpha) <= alpha``. The set ``{p : M_n(p) < 1/alpha}`` is an
interval (``-log`` likelihood is convex in ``p``) that contains ``S_n / n``; its end points,
intersected over all looks so far, are ``p_lower`` and ``p_upper``. Hence with probability at
least ``1 - alpha``, *simultaneously for every n*, ``p_lower <= p_A <= p_upper``: the bounds
stay valid at any stopping time, whatever rule (data, clock, deadline, batch sizes chosen from
the data) decided when to look and when to stop. See Howard, Ramdas, McAuliffe & Sekhon (2021),
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2), and, for
randomized smoothing, Voráček (2024), "Treatment of statistical estimation problems in
randomized smoothing for model verification" (arXiv 2406.17830).

The first look: its size is fixed by the configuration before any vote is seen, so the fixed-n
Clopper-Pearson bound is exact for it. A share ``first_look_share`` of alpha goes to that one
bound and the rest to the confidence sequence; ``p_lower`` is the larger of the two, and by the
union bound both hold together with probability at least ``1 - alpha``. Clear frames, most of
any drive, are certified in that first look with fewer samples than the confidence sequence
alone would need (``FIRST_LOOK_SHARE``).

The pure functions (``mixture_bounds``, ``mixture_bounds_array``, ``ConfidenceSequence``,
``required_p``, ``max_certifiable_radius``) import nothing from ONNX and can be reused by the
arbiter and the bench; ``certify_sequential`` drives a ``SmoothingEngine``.
"""

from __future__ import annotations

import functools
import math
import numbers
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
from scipy.special import betaln
from scipy.stats import norm

from robust_monitor.core.certify.certificate import ABSTAIN, Certificate
from robust_monitor.core.certify.stats import (
    clean_class,
    clopper_pearson_lower,
    radius_from_p_lower,
    validate_alpha,
)
from robust_monitor.core.errors import ConfigError

if TYPE_CHECKING:  # the engine (and onnxruntime) only when a caller has one
    from robust_monitor.core.certify.engine import Samples, SmoothingEngine

Decision = Literal["certified", "unreachable", "budget", "max_n"]
DECISIONS: tuple[Decision, ...] = ("certified", "unreachable", "budget", "max_n")

PRIOR_A = 4.0
PRIOR_B = 0.5
"""Beta(4, 1/2) mixing prior (mean 0.89): the mixture is tightest where its prior mass is, and
the question asked is whether ``p_A`` clears ``Phi(r_required / sigma)``, 0.73-0.89 for the
shipped models and policy, so the mass sits near 1. At alpha = 0.001 and a required 0.886 it
certifies unanimous votes after 70 samples (Jeffreys' Beta(1/2, 1/2): 81) and 95% agreement
after 365 (405), and shows 80% agreement unreachable after 315 (330); it is slower only to rule
out p_A near 1/2 (25 samples against 20). Any fixed prior gives a valid confidence sequence."""

FIRST_LOOK = 32
GROWTH = 1.25
"""Adaptive looks (``batch_size=None``): the first look has ``FIRST_LOOK`` samples, or as many as
unanimous votes need to certify ``r_required`` if that is more (``min_unanimous_n``), and each
later one grows the total by ``GROWTH`` (so about ``log(max_n / 32) / log(1.25)`` looks in all)."""

FIRST_LOOK_SHARE = 0.8
"""Share of alpha spent on a Clopper-Pearson lower bound of the *first* look alone (its size is
fixed before any vote is seen, so the fixed-n bound is exact for it); the confidence sequence
gets the rest. By the union bound the whole procedure still errs with probability <= alpha.
Most frames of a drive are clear and certified in that one look: at alpha = 0.001 and the
shipped r_required of 0.30 (sigma 0.25) unanimous votes certify after 60 samples, against 70
with the confidence sequence alone; later looks pay with a confidence sequence at alpha / 5,
whose bounds are a few percent wider. 0 gives the confidence sequence all of alpha."""

_BISECTIONS = 64  # halves [0, 1] below 1e-19, under the spacing of doubles; also caps Newton


# -- confidence sequence (pure) -------------------------------------------------------------------
def _check_counts(count: int, n: int) -> None:
    if n < 0 or not 0 <= count <= n:
        raise ConfigError(f"need 0 <= count <= n, got count={count}, n={n}")


def _check_prior(a: float, b: float) -> None:
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        raise ConfigError(f"prior parameters a and b must be finite and > 0, got a={a}, b={b}")


def mixture_bounds(
    count: int, n: int, alpha: float, a: float = PRIOR_A, b: float = PRIOR_B
) -> tuple[float, float]:
    """``(p_lower, p_upper)`` of the Beta(a, b)-binomial mixture confidence sequence after ``n``
    Bernoulli trials with ``count`` successes.

    Guarantee: for i.i.d. Bernoulli(p) trials, ``P(exists n: p < p_lower_n or p > p_upper_n)
    <= alpha`` (Ville's inequality on Robbins' mixture martingale), so the bounds may be read at
    any stopping time. Both ends are rounded outward (each returned bound lies outside the set
    ``{p : M_n(p) < 1/alpha}``, at or beyond its end). ``n = 0`` gives ``(0, 1)``.
    """
    _check_counts(count, n)
    alpha = validate_alpha(alpha)
    _check_prior(a, b)
    if n == 0:
        return 0.0, 1.0
    # M_n(p) >= 1/alpha  <=>  log-lik(p) <= log(marginal likelihood) + log(alpha) =: level.
    level = float(betaln(a + count, b + n - count) - betaln(a, b)) + math.log(alpha)
    p_lower = 0.0 if count == 0 else _set_end(count, n, level, upward=False)
    p_upper = 1.0 if count == n else _set_end(count, n, level, upward=True)
    return p_lower, p_upper


def _log_likelihood(count: int, n: int, p: float) -> float:
    out = 0.0
    if count:
        out += count * math.log(p) if p > 0.0 else -math.inf
    if n - count:
        out += (n - count) * math.log1p(-p) if p < 1.0 else -math.inf
    return out


def _set_end(count: int, n: int, level: float, upward: bool) -> float:
    """The end of ``{p : log-lik(p) > level}`` above (``upward``) or below ``count / n``, rounded
    outward: the returned point is outside the set (or is 0 or 1).

    ``level - log-lik(p)`` is convex in ``p``, so Newton's method started outside the set moves
    monotonically towards the end and never crosses it (a tangent of a convex function lies
    below it); an iterate that rounding puts inside is discarded.
    """
    p_hat = count / n
    edge = 1.0 if upward else 0.0
    inside = p_hat
    # Start where a quadratic approximation of the log-likelihood puts the end, moving out
    # (then bisecting towards the edge) until the point is outside with a finite likelihood.
    gap = _log_likelihood(count, n, p_hat) - level
    step = 1.5 * math.sqrt(2.0 * gap * max(p_hat * (1.0 - p_hat), 1.0 / n) / n)
    out = p_hat + step if upward else p_hat - step
    for _ in range(_BISECTIONS):
        if 0.0 < out < 1.0 and _log_likelihood(count, n, out) <= level:
            break
        if 0.0 < out < 1.0:
            inside = out
        out = 0.5 * (inside + edge)
    else:
        return edge
    for _ in range(_BISECTIONS):
        margin = level - _log_likelihood(count, n, out)
        slope = (n - count) / (1.0 - out) - count / out
        if slope == 0.0:
            break
        nxt = out - margin / slope
        if not (min(out, inside) < nxt < max(out, inside)) or nxt == out:
            break
        if _log_likelihood(count, n, nxt) > level:
            # Rounding put the iterate just inside: back off by growing multiples of an ulp.
            for j in range(_BISECTIONS):
                back = nxt + (math.ulp(nxt) * 2.0**j if upward else -math.ulp(nxt) * 2.0**j)
                if not min(out, nxt) < back < max(out, nxt):
                    break
                if _log_likelihood(count, n, back) <= level:
                    out = back
                    break
            break
        out = nxt
    return out


def mixture_bounds_array(
    count: npt.ArrayLike, n: npt.ArrayLike, alpha: float, a: float = PRIOR_A, b: float = PRIOR_B
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``mixture_bounds`` over arrays of counts and trial numbers (same shape or
    broadcastable); for simulations and the bench. Returns float64 arrays ``(p_lower, p_upper)``.
    """
    k = np.asarray(count, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    k, m = np.broadcast_arrays(k, m)
    if np.any(m < 0) or np.any(k < 0) or np.any(k > m):
        raise ConfigError("need 0 <= count <= n for every element")
    alpha = validate_alpha(alpha)
    _check_prior(a, b)
    safe_m = np.where(m > 0, m, 1.0)
    level = betaln(a + k, b + m - k) - betaln(a, b) + math.log(alpha)
    p_hat = k / safe_m

    def outside(p: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            loglik = np.where(k > 0, k * np.log(p), 0.0) + np.where(
                m > k, (m - k) * np.log1p(-p), 0.0
            )
        return np.asarray(loglik <= level)

    def crossing(inside: np.ndarray, out: np.ndarray) -> np.ndarray:
        for _ in range(_BISECTIONS):
            mid = 0.5 * (inside + out)
            is_out = outside(mid)
            out = np.where(is_out, mid, out)
            inside = np.where(is_out, inside, mid)
        return out

    p_lower = np.where(k > 0, crossing(p_hat.copy(), np.zeros_like(p_hat)), 0.0)
    p_upper = np.where(k < m, crossing(p_hat.copy(), np.ones_like(p_hat)), 1.0)
    empty = m == 0
    return np.where(empty, 0.0, p_lower), np.where(empty, 1.0, p_upper)


class ConfidenceSequence:
    """Running anytime-valid bounds on a Bernoulli mean, updated one batch ("look") at a time.

    ``p_lower`` / ``p_upper`` are the running intersection (max of lower ends, min of upper
    ends) of ``mixture_bounds`` over all looks so far; the intersection of a confidence sequence
    is one too, so: with probability at least ``1 - alpha``, for every look at once,
    ``p_lower <= p <= p_upper``.
    """

    def __init__(self, alpha: float, a: float = PRIOR_A, b: float = PRIOR_B) -> None:
        self.alpha = validate_alpha(alpha)
        _check_prior(a, b)
        self.a, self.b = float(a), float(b)
        self.count = 0
        self.n = 0
        self.looks = 0
        self.p_lower = 0.0
        self.p_upper = 1.0

    def update(self, count: int, n: int) -> tuple[float, float]:
        """Add a batch of ``n`` trials with ``count`` successes; return ``(p_lower, p_upper)``."""
        _check_counts(int(count), int(n))
        self.count += int(count)
        self.n += int(n)
        self.looks += 1
        lo, hi = mixture_bounds(self.count, self.n, self.alpha, self.a, self.b)
        self.p_lower = max(self.p_lower, lo)
        self.p_upper = min(self.p_upper, hi)
        return self.p_lower, self.p_upper


def required_p(r_required: float, sigma: float) -> float:
    """``Phi(r_required / sigma)``: the smallest ``p_lower`` whose radius is ``>= r_required``."""
    return float(norm.cdf(r_required / sigma))


def max_certifiable_radius(
    sigma: float, alpha: float, max_n: int, first_look_share: float = 0.0
) -> float:
    """The largest radius the sequential mode can certify with ``max_n`` estimation samples,
    reached when every vote agrees: the larger of the confidence sequence's bound at
    ``(1 - first_look_share) * alpha`` after ``max_n`` votes and, with a share, the first
    look's Clopper-Pearson bound at ``first_look_share * alpha`` (``alpha^(1/n)`` for a first
    look of up to ``max_n``), as ``sigma * Phi^-1(p_lower)``. A node can check ``r_required``
    against it at start-up."""
    share = float(first_look_share)
    p_lower, _ = mixture_bounds(int(max_n), int(max_n), alpha * (1.0 - share))
    if share > 0.0:
        p_lower = max(p_lower, clopper_pearson_lower(int(max_n), int(max_n), alpha * share))
    return radius_from_p_lower(p_lower, sigma)


# -- configuration and result ---------------------------------------------------------------------
def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class SequentialConfig:
    """Parameters of sequential certification (units in the names).

    ``r_required``: the L2 radius (model-input space, as ``Certificate.radius``) a frame must
    be certified for, >= 0. ``budget_ms``: wall-time budget per frame in milliseconds from the
    start of the frame (selection included), or None for no deadline; it is checked before
    every batch, so a frame overruns it by at most one batch. ``alpha``: error level of the
    whole sequential procedure. ``n0``: selection samples; 0 selects the base model's
    prediction on the clean frame (``stats.clean_class``), which costs no samples and keeps
    the guarantee. ``batch_size``: estimation samples
    per look, or None for adaptive looks (``FIRST_LOOK`` samples, then the total grows by
    ``GROWTH`` per look, capped by the engine's batch size and, under a budget, by what the
    measured throughput can fit in the time left; a fixed look larger than the engine's batch
    size runs as several engine batches with no clock check between them). ``max_n``: most
    estimation samples per frame. ``first_look_share``: share of ``alpha`` spent on the first
    look's Clopper-Pearson bound (``FIRST_LOOK_SHARE``), in [0, 1). ``bands``: further L2
    radii below ``r_required`` whose side must be decided too before an ``unreachable`` stop
    (a frame that cannot reach ``r_required`` keeps sampling until, for each band, its radius
    is certified at or above it or shown below it), so a reader with several thresholds (the
    arbiter's hysteresis levels) gets each of them decided; radii at or above ``r_required``
    add nothing. Empty: only ``r_required`` is decided.
    """

    r_required: float
    budget_ms: float | None = None
    alpha: float = 0.001
    n0: int = 64
    batch_size: int | None = None
    max_n: int = 10_000
    bands: tuple[float, ...] = ()
    first_look_share: float = FIRST_LOOK_SHARE

    def __post_init__(self) -> None:
        r = self.r_required
        if not _is_real(r) or not math.isfinite(r) or r < 0:
            raise ConfigError(f"r_required must be a finite number >= 0 (an L2 radius), got {r!r}")
        budget = self.budget_ms
        if budget is not None and (
            not _is_real(budget) or not math.isfinite(budget) or budget <= 0
        ):
            raise ConfigError(
                f"budget_ms must be None (no deadline) or a finite number of milliseconds > 0, "
                f"got {budget!r}"
            )
        if not _is_real(self.alpha):
            raise ConfigError(f"alpha must be a number in (0, 1), got {self.alpha!r}")
        validate_alpha(self.alpha)
        if not _is_int(self.n0) or self.n0 < 0:
            raise ConfigError(
                f"n0 (selection samples; 0: the clean prediction selects) must be an integer "
                f">= 0, got {self.n0!r}"
            )
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise ConfigError(
                f"batch_size must be None (adaptive) or an integer >= 1, got {self.batch_size!r}"
            )
        if not _is_int(self.max_n) or self.max_n < 1:
            raise ConfigError(
                f"max_n (most estimation samples per frame) must be an integer >= 1, "
                f"got {self.max_n!r}"
            )
        share = self.first_look_share
        if not _is_real(share) or not 0.0 <= share < 1.0:
            raise ConfigError(
                f"first_look_share (the share of alpha spent on the first look's "
                f"Clopper-Pearson bound) must be a number in [0, 1), got {share!r}"
            )
        if not isinstance(self.bands, tuple) or not all(
            _is_real(t) and math.isfinite(t) and t > 0 for t in self.bands
        ):
            raise ConfigError(f"bands must be a tuple of finite L2 radii > 0, got {self.bands!r}")


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """Outcome of ``certify_sequential`` for one frame.

    ``certificate`` is the same dataclass CERTIFY returns (``n`` = estimation samples actually
    drawn, ``p_lower`` = the confidence sequence's running lower bound); ``clean_logits`` and
    ``clean_features`` are the clean frame's outputs for OOD scoring, as in ``SmoothingResult``.
    """

    certificate: Certificate
    clean_logits: np.ndarray
    clean_features: np.ndarray | None
    decision: Decision
    looks: int
    """Estimation batches drawn (0 when the budget ran out during selection)."""
    p_upper: float
    """Running upper confidence bound on ``p_A`` (1.0 before the first look)."""
    p_required: float
    """``Phi(r_required / sigma)``, the threshold both bounds were compared with."""
    bands_decided: bool = True
    """Whether every band of ``SequentialConfig.bands`` was decided when sampling stopped
    (always true for ``certified``, ``unreachable`` and when there are no bands)."""


# -- the procedure --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def min_unanimous_n(alpha: float, p_required: float, max_n: int) -> int:
    """The fewest estimation samples that certify ``p_required`` when every vote agrees
    (``max_n`` when even ``max_n`` unanimous votes do not). Sizing the first adaptive look so
    makes a clear frame one look; the bound does not care how looks are sized."""
    low, high = 1, int(max_n)
    if mixture_bounds(high, high, alpha)[0] < p_required:
        return high
    while low < high:
        mid = (low + high) // 2
        if mixture_bounds(mid, mid, alpha)[0] >= p_required:
            high = mid
        else:
            low = mid + 1
    return low


@functools.lru_cache(maxsize=64)
def min_unanimous_cp_n(alpha: float, p_required: float, max_n: int) -> int:
    """The fewest samples whose one-sided Clopper-Pearson bound at ``alpha`` certifies
    ``p_required`` when every vote agrees (``max_n`` when ``max_n`` do not): the bound of ``n``
    of ``n`` is ``alpha^(1/n)``."""
    if not 0.0 < p_required < 1.0:
        return int(max_n)
    need = math.ceil(math.log(alpha) / math.log(p_required))
    while need > 1 and clopper_pearson_lower(need - 1, need - 1, alpha) >= p_required:
        need -= 1
    while need < max_n and clopper_pearson_lower(need, need, alpha) < p_required:
        need += 1
    return int(min(need, max_n))


def first_look_size(config: SequentialConfig, p_required: float) -> int:
    """Samples in the first adaptive look: ``FIRST_LOOK``, or as many as unanimous votes need
    to certify ``p_required`` if that is more, by the first look's Clopper-Pearson bound when
    ``first_look_share > 0`` (``min_unanimous_cp_n``) and by the confidence sequence otherwise
    (``min_unanimous_n``); at most ``max_n``. A function of the configuration only, never of
    the votes, as the first look's fixed-n bound requires."""
    alpha_first = config.alpha * config.first_look_share
    if alpha_first > 0.0:
        need = min_unanimous_cp_n(alpha_first, p_required, config.max_n)
    else:
        need = min_unanimous_n(config.alpha, p_required, config.max_n)
    return min(max(FIRST_LOOK, need), config.max_n)


def _next_look(
    config: SequentialConfig,
    n: int,
    engine_batch: int,
    rate_per_ms: float | None,
    remaining_ms: float | None,
    first_look: int = FIRST_LOOK,
) -> int:
    left = config.max_n - n
    if config.batch_size is not None:
        return min(config.batch_size, left)
    size = first_look if n == 0 else max(1, math.ceil(n * (GROWTH - 1.0)))
    size = min(size, engine_batch, left)
    if rate_per_ms is not None and remaining_ms is not None:
        # Fit the look in the time left (with a fifth to spare for the run's fixed cost), but
        # never below a handful of samples.
        size = min(size, max(8, int(0.8 * rate_per_ms * remaining_ms)))
    return max(1, min(size, left))


def max_runs(config: SequentialConfig, engine_batch: int) -> int:
    """An upper bound on the graph runs one frame takes: the selection's batches, then looks
    of at least ``min(8, batch)`` samples each (``_next_look``) but the last."""
    selection = math.ceil(config.n0 / engine_batch)
    smallest = min(config.batch_size or 8, 8, engine_batch)
    return selection + math.ceil(config.max_n / smallest) + 1


def check_frame_samples(engine: SmoothingEngine, config: SequentialConfig) -> None:
    """ConfigError when a frame under ``config`` could draw more noise than the engine's
    generator period allows (``SmoothingEngine.check_frame_samples``)."""
    runs = max_runs(config, engine.batch_size)
    engine.check_frame_samples(config.n0 + config.max_n, runs, f"n0 + max_n (in up to {runs} runs)")


def certify_sequential(
    engine: SmoothingEngine, frame: np.ndarray, config: SequentialConfig
) -> SequentialResult:
    """Sequential CERTIFY of one frame, stopping as soon as ``r_required`` is decided.

    ``n0`` selection samples choose ``c_A`` (argmax of their votes; they take no part in the
    estimate); with ``n0 = 0`` the clean frame's prediction does, from the clean pass of the
    first look's graph run (it involves no noise, so it is independent of the votes). Estimation
    samples then arrive in looks; after each, the confidence sequence of
    ``p_A = P(f(frame + eps) = c_A)`` is updated and the procedure stops with ``decision``
    ``"certified"`` (``p_lower >= Phi(r_required / sigma)``), ``"unreachable"`` (``p_upper <
    Phi(r_required / sigma)`` and each of ``bands`` decided), ``"max_n"`` or ``"budget"``
    (checked before every look and after selection). The certificate carries ``c_A`` and
    radius ``sigma * Phi^-1(p_lower)``, or abstains (label -1, radius 0) when
    ``p_lower < 1/2``.

    Guarantee (any stopping rule, including the clock): with probability at least ``1 - alpha``
    over the estimation noise, ``p_lower <= p_A <= p_upper`` at every look at once (``p_lower``
    the larger of the first look's Clopper-Pearson bound at ``first_look_share * alpha`` and the
    confidence sequence's at the rest of alpha). Hence
    (i) unless the certificate abstains, the smoothed classifier returns ``label`` everywhere
    within L2 distance ``radius`` of ``frame`` (Cohen et al. 2019, Theorem 1), except with
    probability at most alpha; in particular ``"certified"`` is reported when
    ``sigma * Phi^-1(p_A) < r_required`` with probability at most alpha; and (ii)
    ``"unreachable"`` is reported when ``p_A >= Phi(r_required / sigma)`` with probability at
    most alpha. (i) and (ii) fail together with probability at most alpha, not 2 alpha.

    Raises ConfigError when ``r_required`` exceeds ``max_certifiable_radius`` (no frame could
    ever be certified) or when ``max_n`` samples could outrun the generator's period
    (``check_frame_samples``), and InputError for a malformed frame.
    """
    start = time.perf_counter()
    sigma = engine.sigma
    p_required, p_bands, ceiling = _targets(config, sigma, engine.radius_margin)
    if config.r_required > ceiling:
        raise ConfigError(
            f"r_required={config.r_required} cannot be certified with max_n={config.max_n} "
            f"samples at alpha={config.alpha} and sigma={sigma} (at most {ceiling:.4g}); "
            "raise max_n or lower r_required"
        )
    check_frame_samples(engine, config)
    x = engine.bind(frame)  # checked, and copied to the device once for every look
    clean: Samples | None = None
    label = -1
    rate_per_ms: float | None = None
    if config.n0 > 0:
        selection_start = time.perf_counter()
        clean = engine.sample(x, config.n0, with_clean=True)
        selection_ms = (time.perf_counter() - selection_start) * 1e3
        label = int(np.argmax(clean.counts))
        # The selection run is the first throughput measurement, so under a budget even the
        # first look is sized to the time left (it includes the clean pass: an underestimate).
        rate_per_ms = config.n0 / selection_ms if selection_ms > 0 else None
    alpha_first = config.alpha * config.first_look_share
    cs = ConfidenceSequence(config.alpha - alpha_first)
    first_look = first_look_size(config, p_required)
    first_lower = 0.0
    decision: Decision
    estimation_start = time.perf_counter()
    while True:
        elapsed_ms = (time.perf_counter() - start) * 1e3
        # Without selection samples the first look carries the clean pass: it always runs.
        if config.budget_ms is not None and elapsed_ms >= config.budget_ms and clean is not None:
            decision = "budget"
            break
        remaining = None if config.budget_ms is None else config.budget_ms - elapsed_ms
        size = _next_look(config, cs.n, engine.batch_size, rate_per_ms, remaining, first_look)
        batch = engine.sample(x, size, with_clean=clean is None)
        if clean is None:
            clean = batch
            assert batch.clean_logits is not None
            label = clean_class(batch.clean_logits, engine.spec.num_classes)
        p_lower, p_upper = cs.update(int(batch.counts[label]), size)
        if alpha_first > 0.0 and cs.looks == 1:
            first_lower = clopper_pearson_lower(cs.count, cs.n, alpha_first)
        p_lower = max(p_lower, first_lower)
        # Throughput over everything a look costs (sampling and bounds), for sizing looks.
        spent_ms = (time.perf_counter() - estimation_start) * 1e3
        rate_per_ms = cs.n / spent_ms if spent_ms > 0 else rate_per_ms
        if p_lower >= p_required and p_lower >= 0.5:
            decision = "certified"
            break
        if p_upper < p_required and _bands_decided(p_bands, p_lower, p_upper):
            decision = "unreachable"
            break
        if cs.n >= config.max_n:
            decision = "max_n"
            break
    final_lower = max(cs.p_lower, first_lower)
    abstained = final_lower < 0.5
    out_label = ABSTAIN if abstained else label
    cert = Certificate(
        label=out_label,
        p_lower=final_lower,
        radius=0.0 if abstained else engine.sound_radius(radius_from_p_lower(final_lower, sigma)),
        n0=int(config.n0),
        n=cs.n,
        alpha=float(config.alpha),
        sigma=sigma,
        abstained=abstained,
        provider=engine.provider,
        latency_ms=(time.perf_counter() - start) * 1e3,
        count=cs.count,
        label_name=engine.spec.class_name(out_label),
    )
    assert clean is not None and clean.clean_logits is not None
    return SequentialResult(
        certificate=cert,
        clean_logits=clean.clean_logits,
        clean_features=clean.clean_features,
        decision=decision,
        looks=cs.looks,
        p_upper=cs.p_upper,
        p_required=p_required,
        bands_decided=_bands_decided(p_bands, final_lower, cs.p_upper),
    )


@functools.lru_cache(maxsize=64)
def _targets(
    config: SequentialConfig, sigma: float, margin: float
) -> tuple[float, tuple[float, ...], float]:
    """``(p_required, p_bands, ceiling)`` of a configuration: the same for every frame, so
    worked out once (scipy's distribution functions cost a noticeable share of a clear
    frame's time). The lattice margin (engine.py) comes off every radius, so each radius is
    certified with the margin on top; the ceiling is a radius after the margin."""
    p_required = required_p(config.r_required + margin, sigma)
    p_bands = tuple(
        sorted({required_p(t + margin, sigma) for t in config.bands if t < config.r_required})
    )
    best = max_certifiable_radius(sigma, config.alpha, config.max_n, config.first_look_share)
    return p_required, p_bands, max(0.0, best - margin)


def _bands_decided(p_bands: tuple[float, ...], p_lower: float, p_upper: float) -> bool:
    """Each band's probability is either certified (``p_lower`` at or above it, with
    ``p_lower >= 1/2`` as a certificate needs) or ruled out (``p_upper`` below it)."""
    return all((p_lower >= p and p_lower >= 0.5) or p_upper < p for p in p_bands)
