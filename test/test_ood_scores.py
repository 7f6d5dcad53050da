"""Model-based OOD scores: MSP and energy against closed forms, Mahalanobis against numpy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.core.ood import scores as S
from robust_monitor.core.ood.input_stats import InputStatsModel, input_features

FloatArray = npt.NDArray[np.float64]


# --- softmax, MSP, energy -----------------------------------------------------------------------
@pytest.mark.parametrize("a", [-30.0, -2.0, 0.0, 0.7, 5.0, 40.0])
def test_msp_of_two_classes_is_the_logistic_function(a: float) -> None:
    p = 1.0 / (1.0 + math.exp(-abs(a)))
    assert float(S.max_softmax_probability([a, 0.0])) == pytest.approx(p, rel=1e-12)
    assert float(S.msp_score([0.0, a])) == pytest.approx(1.0 - p, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("k", [2, 3, 10, 1000])
@pytest.mark.parametrize("c", [-500.0, 0.0, 3.0, 800.0])
def test_equal_logits_have_closed_forms(k: int, c: float) -> None:
    logits = np.full(k, c)
    assert float(S.max_softmax_probability(logits)) == pytest.approx(1.0 / k)
    assert float(S.energy(logits)) == pytest.approx(-(c + math.log(k)), rel=1e-12)


def test_energy_matches_the_definition_and_is_stable() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 8)) * 3
    direct = -np.log(np.exp(logits).sum(axis=1))
    np.testing.assert_allclose(S.energy(logits), direct, rtol=1e-12)
    t = 2.5
    direct_t = -t * np.log(np.exp(logits / t).sum(axis=1))
    np.testing.assert_allclose(S.energy(logits, temperature=t), direct_t, rtol=1e-12)
    # Huge logits overflow exp() but not the stable form.
    huge = np.array([1000.0, 999.0, -1000.0])
    assert float(S.energy(huge)) == pytest.approx(-(1000.0 + math.log1p(math.exp(-1.0))))
    assert float(S.max_softmax_probability(huge)) == pytest.approx(1.0 / (1.0 + math.exp(-1.0)))


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 5), st.integers(2, 12)),
        elements=st.floats(-1e4, 1e4),
    )
)
def test_softmax_scores_are_consistent(logits: FloatArray) -> None:
    p = S.softmax(logits)
    assert np.all(p >= 0) and np.allclose(p.sum(axis=1), 1.0)
    msp = S.max_softmax_probability(logits)
    np.testing.assert_allclose(msp, p.max(axis=1), rtol=1e-9)
    assert np.all(msp >= 1.0 / logits.shape[1] - 1e-12)
    # energy <= -max(logits): the log-sum-exp is at least the largest term
    assert np.all(S.energy(logits) <= -logits.max(axis=1) + 1e-9)
    assert np.all(np.isfinite(S.energy(logits)))


@pytest.mark.parametrize(
    "bad", [[1.0], [[np.nan, 1.0]], [np.inf, 0.0], 3.0], ids=["one-class", "nan", "inf", "scalar"]
)
def test_bad_logits_raise_input_error(bad: Any) -> None:
    with pytest.raises(InputError, match="logits"):
        S.energy(bad)


def test_bad_temperature_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        S.energy([1.0, 2.0], temperature=0.0)


def test_smoothing_scores() -> None:
    assert S.abstention_score(True) == 1.0 and S.abstention_score(False) == 0.0
    assert S.p_lower_score(0.8) == pytest.approx(0.2)
    assert S.p_lower_score(1.0) == 0.0
    with pytest.raises(InputError, match="p_lower"):
        S.p_lower_score(1.2)


# --- Mahalanobis --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gaussian_classes() -> tuple[FloatArray, npt.NDArray[np.int64], FloatArray]:
    """Three classes with a shared, correlated covariance in 6 dimensions."""
    rng = np.random.default_rng(1)
    d = 6
    a = rng.normal(size=(d, d))
    cov = a @ a.T + 0.5 * np.eye(d)
    means = rng.normal(scale=4.0, size=(3, d))
    labels = rng.integers(0, 3, 900)
    features = means[labels] + rng.multivariate_normal(np.zeros(d), cov, size=900)
    return features, labels, cov


def direct_mahalanobis(x: FloatArray, means: FloatArray, cov: FloatArray) -> FloatArray:
    """Min over classes of sqrt((x - m)^T cov^-1 (x - m)), one sample and class at a time."""
    inv = np.linalg.inv(cov)
    out = np.empty(len(x))
    for i, row in enumerate(x):
        out[i] = min(math.sqrt(float((row - m) @ inv @ (row - m))) for m in means)
    return out


def test_mahalanobis_matches_a_direct_computation(gaussian_classes: Any) -> None:
    features, labels, _ = gaussian_classes
    model = S.MahalanobisModel.fit(features, labels, shrinkage=0.1)
    # The fitted statistics are the class means and the shrunk pooled covariance.
    for k, label in enumerate(model.class_labels):
        np.testing.assert_allclose(model.means[k], features[labels == label].mean(axis=0))
    residuals = features - model.means[np.searchsorted(model.class_labels, labels)]
    pooled = residuals.T @ residuals / len(features)
    mu = np.trace(pooled) / pooled.shape[0]
    expected_cov = 0.9 * pooled + 0.1 * mu * np.eye(6) + 1e-6 * mu * np.eye(6)
    np.testing.assert_allclose(model.covariance, expected_cov, rtol=1e-10)
    probe = np.random.default_rng(2).normal(scale=6.0, size=(40, 6))
    np.testing.assert_allclose(
        model.score(probe), direct_mahalanobis(probe, model.means, model.covariance), rtol=1e-8
    )
    one = float(model.score(probe[3]))
    assert one == pytest.approx(direct_mahalanobis(probe[3:4], model.means, model.covariance)[0])
    assert model.distances(probe).shape == (40, 3)


def test_mahalanobis_separates_far_points(gaussian_classes: Any) -> None:
    features, labels, _ = gaussian_classes
    model = S.MahalanobisModel.fit(features, labels)
    inside = model.score(features[:200])
    far = model.score(features[:200] + 40.0)
    assert np.median(far) > 3 * np.median(inside)


def ledoit_wolf_reference(x: FloatArray) -> float:
    """Ledoit & Wolf (2004), Lemma 3.2-3.4 in the paper's own notation, term by term."""
    n, p = x.shape
    s = x.T @ x / n
    m = np.trace(s) / p
    d2 = np.sum((s - m * np.eye(p)) ** 2) / p
    b_bar2 = sum(np.sum((np.outer(row, row) - s) ** 2) / p for row in x) / n**2
    b2 = min(b_bar2, d2)
    return float(b2 / d2)


def test_ledoit_wolf_shrinkage_matches_the_paper() -> None:
    rng = np.random.default_rng(3)
    for n, p in ((30, 10), (200, 5), (8, 20)):
        x = rng.normal(size=(n, p)) * rng.uniform(0.5, 3.0, size=p)
        x -= x.mean(axis=0)
        assert S.ledoit_wolf_shrinkage(x) == pytest.approx(ledoit_wolf_reference(x), rel=1e-9)


def test_fewer_samples_than_dimensions_still_give_a_well_conditioned_model() -> None:
    rng = np.random.default_rng(4)
    features = rng.normal(size=(20, 64))
    labels = np.repeat(np.arange(4), 5)
    model = S.MahalanobisModel.fit(features, labels)  # the raw covariance is singular
    assert 0.0 < model.shrinkage <= 1.0
    assert np.linalg.cond(model.covariance) < 1e6
    assert np.all(np.isfinite(model.score(rng.normal(size=(5, 64)))))


def test_mahalanobis_yaml_round_trip(gaussian_classes: Any) -> None:
    features, labels, _ = gaussian_classes
    model = S.MahalanobisModel.fit(features, labels)
    text = yaml.safe_dump(model.as_dict())
    back = S.MahalanobisModel.from_dict(yaml.safe_load(text))
    assert back.as_dict() == model.as_dict()
    np.testing.assert_array_equal(back.score(features[:10]), model.score(features[:10]))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.pop("covariance"), "missing keys"),
        (lambda d: d.update(extra=1), "unknown keys"),
        (lambda d: d.update(covariance=[[1.0, 0.0], [0.0, 1.0]]), "covariance must be"),
        (lambda d: d.update(covariance=np.zeros((6, 6)).tolist()), "positive definite"),
        (lambda d: d.update(means="zero"), "means must be"),
        (lambda d: d.update(means=[[0.0] * 6, [0.0] * 5]), "same length"),
        (lambda d: d.update(class_labels=[0, 0, 1]), "distinct"),
        (lambda d: d.update(class_labels=["a", "b", "c"]), "integers"),
        (lambda d: d.update(shrinkage=2.0), "shrinkage"),
        (lambda d: d.update(num_samples=-1), "num_samples"),
    ],
)
def test_bad_serialised_model_raises_config_error(
    gaussian_classes: Any, edit: Any, match: str
) -> None:
    features, labels, _ = gaussian_classes
    data = S.MahalanobisModel.fit(features, labels).as_dict()
    edit(data)
    with pytest.raises(ConfigError, match=match):
        S.MahalanobisModel.from_dict(data)


def test_bad_fit_inputs_raise_input_error() -> None:
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(InputError, match="labels must be 10 integers"):
        S.MahalanobisModel.fit(x, np.zeros(9, int))
    with pytest.raises(InputError, match="labels must be"):
        S.MahalanobisModel.fit(x, np.zeros(10))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="finite"):
        S.MahalanobisModel.fit(bad, np.zeros(10, int))
    with pytest.raises(InputError, match="more samples"):
        S.MahalanobisModel.fit(x, np.arange(10))
    with pytest.raises(InputError, match="do not vary"):
        S.MahalanobisModel.fit(np.ones((10, 3)), np.zeros(10, int))
    with pytest.raises(ConfigError, match="shrinkage"):
        S.MahalanobisModel.fit(x, np.zeros(10, int), shrinkage=1.5)
    model = S.MahalanobisModel.fit(x, np.zeros(10, int))
    with pytest.raises(InputError, match=r"features must be \(3,\) or \(N, 3\)"):
        model.score(np.zeros(4))


def test_model_scores_of_one_frame(gaussian_classes: Any) -> None:
    features, labels, _ = gaussian_classes
    model = S.MahalanobisModel.fit(features, labels)
    rng = np.random.default_rng(5)
    inputs = rng.uniform(0.2, 0.8, (30, 3, 16, 16))
    stats = InputStatsModel.fit(np.stack([input_features(x) for x in inputs]))
    out = S.model_scores(
        logits=[2.0, 0.0, 0.0],
        features=features[0],
        mahalanobis=model,
        abstained=False,
        p_lower=0.9,
        model_input=inputs[0],
        input_stats=stats,
    )
    assert set(out) == set(S.DETECTORS)
    assert out["input_stats"] == pytest.approx(stats.score(inputs[0]))
    assert out["abstain"] == 0.0 and out["p_lower"] == pytest.approx(0.1)
    assert out["mahalanobis"] == pytest.approx(float(model.score(features[0])))
    assert S.model_scores(logits=[1.0, 2.0]).keys() == {"msp", "energy"}
    assert S.model_scores(features=features[0]) == {}  # features alone need a model
    with pytest.raises(InputError, match="one frame"):
        S.model_scores(logits=[[1.0, 2.0]])
