"""The statistics of CERTIFY and PREDICT, against closed forms and by coverage over many trials."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from robust_monitor.core.certify.stats import (
    ABSTAIN,
    certify_from_counts,
    clopper_pearson_lower,
    clopper_pearson_upper,
    predict_from_counts,
    radius_from_p_lower,
)
from robust_monitor.core.errors import ConfigError


def test_lower_bound_closed_form_when_every_vote_agrees() -> None:
    # With K = n the exact one-sided bound solves p^n = alpha.
    for n, alpha in [(10, 0.05), (100, 0.001), (1000, 0.01)]:
        assert clopper_pearson_lower(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-9)


def test_upper_bound_closed_form_when_no_vote_agrees() -> None:
    for n, alpha in [(10, 0.05), (100, 0.001)]:
        assert clopper_pearson_upper(0, n, alpha) == pytest.approx(1 - alpha ** (1 / n), rel=1e-9)


@pytest.mark.parametrize("p", [0.3, 0.55, 0.9, 0.99])
def test_lower_bound_covers_at_level_alpha(p: float) -> None:
    """P(p_lower > p) <= alpha, checked over 4000 seeded binomial draws per p."""
    rng = np.random.default_rng(int(p * 1000))
    alpha, n, trials = 0.05, 200, 4000
    counts = rng.binomial(n, p, size=trials)
    misses = sum(clopper_pearson_lower(int(k), n, alpha) > p for k in counts)
    assert binomtest(misses, trials, alpha, alternative="greater").pvalue > 0.01
    # ... and it is not vacuous: the bound is close to p for this n.
    median_gap = np.median([p - clopper_pearson_lower(int(k), n, alpha) for k in counts[:200]])
    assert 0 < median_gap < 3 * np.sqrt(p * (1 - p) / n) + 0.02


def test_radius_is_sigma_times_inverse_normal() -> None:
    assert radius_from_p_lower(0.5, 0.25) == 0.0
    assert radius_from_p_lower(0.3, 0.25) == 0.0
    assert radius_from_p_lower(norm.cdf(1.0), 0.5) == pytest.approx(0.5)


def test_certify_abstains_below_one_half_and_keeps_selection_label() -> None:
    selection = np.array([10, 80, 10])
    strong = certify_from_counts(selection, np.array([5, 990, 5]), 0.001, 0.25)
    assert strong.label == 1 and not strong.abstained and strong.radius > 0.45
    weak = certify_from_counts(selection, np.array([300, 450, 250]), 0.001, 0.25)
    assert weak.abstained and weak.label == ABSTAIN and weak.radius == 0.0


def test_certify_uses_the_selection_class_not_the_estimation_argmax() -> None:
    # Cohen's procedure: c_A comes from the n0 selection samples only.
    outcome = certify_from_counts(np.array([90, 10]), np.array([100, 900]), 0.001, 0.25)
    assert outcome.count == 100 and outcome.abstained


def test_predict_abstains_on_a_tie_and_answers_on_a_clear_majority() -> None:
    assert predict_from_counts(np.array([50, 50, 0]), 0.01) == ABSTAIN
    assert predict_from_counts(np.array([5, 90, 5]), 0.01) == 1


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, float("nan")])
def test_alpha_outside_the_open_unit_interval_is_refused(alpha: float) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        clopper_pearson_lower(5, 10, alpha)


def test_sigma_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="sigma"):
        certify_from_counts(np.array([1, 9]), np.array([1, 9]), 0.01, 0.0)
