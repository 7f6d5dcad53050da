"""Soundness of the whole engine against the closed form of a two-class linear model.

For ``f(x) = argmax(W x + b)`` with two classes, the smoothed probability of the base class is
``Phi(d / sigma)`` and the exact certified radius is ``d``, the L2 distance from ``x`` to the
decision hyperplane. A certificate is *unsound* when it claims a radius larger than ``d`` for
the right class, or any radius for the wrong class. CERTIFY promises that this happens with
probability at most alpha per frame.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from robust_monitor.core.certify.engine import SmoothingEngine
from robust_monitor.tools.reference_models import linear_truth

SIGMA = 0.25


@pytest.mark.parametrize("n0", [100, 0], ids=["votes-select", "clean-selects"])
def test_certified_radius_exceeds_the_true_radius_at_most_alpha_of_the_time(
    linear_setup, n0: int
) -> None:
    """Cohen's CERTIFY, and the variant whose class is the clean prediction (n0 = 0)."""
    alpha, trials = 0.01, 600
    engine = SmoothingEngine(linear_setup.path, SIGMA, batch_size=5000, seed=11)
    rng = np.random.default_rng(5)
    unsound = certified = 0
    for t in rng.uniform(-2 * SIGMA, 2 * SIGMA, size=trials):
        x = linear_setup.frame(float(t))
        label, _, distance = linear_truth(linear_setup.weights, linear_setup.bias, x, SIGMA)
        cert = engine.certify(x, n0=n0, n=1000, alpha=alpha).certificate
        assert cert.n0 == n0
        if cert.abstained:
            continue
        certified += 1
        if cert.label != label or cert.radius > distance:
            unsound += 1
    assert certified > trials // 2, "the test must exercise certificates, not abstentions"
    # H0: unsound rate <= alpha. Reject (fail) when the excess is significant at 1%.
    assert binomtest(unsound, trials, alpha, alternative="greater").pvalue > 0.01


def test_radius_is_tight_at_n_10000(linear_setup) -> None:
    """Mean reported/true radius >= 0.9 for true radii in [0.25 sigma, 2 sigma]."""
    engine = SmoothingEngine(linear_setup.path, SIGMA, batch_size=10000, seed=12)
    rng = np.random.default_rng(6)
    ratios = []
    for t in rng.uniform(0.25 * SIGMA, 2 * SIGMA, size=60) * rng.choice([-1, 1], size=60):
        x = linear_setup.frame(float(t))
        _, _, distance = linear_truth(linear_setup.weights, linear_setup.bias, x, SIGMA)
        cert = engine.certify(x, n0=100, n=10000, alpha=0.01).certificate
        ratios.append(cert.radius / distance)
    assert np.mean(ratios) >= 0.9
    assert max(ratios) <= 1.05  # an upper sanity check: never far beyond the truth


def test_vote_counts_follow_the_closed_form_probability(linear_setup) -> None:
    """Counts of class 1 are Binomial(n, Phi(t / sigma)) for both in-graph noise kinds."""
    n = 200_000
    for noise in ("box_muller", "normal"):
        engine = SmoothingEngine(linear_setup.path, SIGMA, batch_size=20000, seed=13, noise=noise)
        for t in (-0.2, 0.05, 0.3):
            p = float(norm.cdf(t / SIGMA))
            ones = int(engine.sample(linear_setup.frame(t), n).counts[1])
            z = (ones - n * p) / np.sqrt(n * p * (1 - p))
            assert abs(z) < 4.5, f"{noise}: t={t} count {ones} vs expected {n * p:.0f} (z={z:.1f})"
