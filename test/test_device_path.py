"""The device path of the smoothing graph: I/O binding, node placement, fresh noise per frame.

Each check runs on the CPU provider everywhere, and on CUDA where a GPU and onnxruntime-gpu are
present (the ``cuda`` cases skip, saying why, on machines without one, such as this project's
CI). The CPU cases are real checks of the same code: they would fail if noise were replayed
across frames, if a bound frame changed the votes, or if the placement reader missed nodes.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from scipy.stats import binomtest, chi2, norm

from robust_monitor.core.certify.engine import BoundFrame, SmoothingEngine
from robust_monitor.core.certify.placement import parse_profile, profile_placement
from robust_monitor.core.errors import InputError, ModelError

SIGMA = 0.25
CUDA = "CUDAExecutionProvider"
PROVIDERS = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            CUDA not in ort.get_available_providers(),
            reason="this onnxruntime has no CUDA provider (CPU-only build or no GPU)",
        ),
    ),
]


def _engine_or_skip(path, provider: str, **kwargs) -> SmoothingEngine:  # type: ignore[no-untyped-def]
    engine = SmoothingEngine(path, SIGMA, providers=provider, **kwargs)
    if engine.provider != provider:
        pytest.skip(f"asked for {provider}, the session got {engine.provider}: {engine.fallback}")
    return engine


# -- placement ------------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_node_of_the_smoothing_graph_runs_on_the_sessions_provider(
    small_cnn_path, provider: str
) -> None:
    _engine_or_skip(small_cnn_path, provider)  # skips when CUDA falls back to the CPU
    placement = profile_placement(small_cnn_path, SIGMA, providers=provider)
    assert placement.off_provider() == [], placement.counts()
    ops = {op for op, _ in placement.nodes.values()}
    noise_op = "RandomUniformLike" if provider == "cpu" else "RandomNormalLike"
    assert {noise_op, "Conv", "ArgMax"} <= ops, ops  # noise, classifier and vote all seen
    assert any(name.startswith("base/") for name in placement.nodes)  # the inlined model


def test_the_placement_check_lists_every_node_that_is_not_on_the_gpu(small_cnn_path) -> None:
    """On the CPU every node is off CUDA: the GPU assertion above can fail."""
    placement = profile_placement(small_cnn_path, SIGMA, providers="cpu")
    off = placement.off_provider(CUDA)
    assert len(off) == len(placement.nodes) >= 20
    assert any("RandomUniformLike on CPUExecutionProvider" in line for line in off)
    assert placement.counts() == {"CPUExecutionProvider": len(placement.nodes)}


def test_a_profile_without_node_events_is_refused() -> None:
    with pytest.raises(ModelError, match="no node events"):
        parse_profile([{"cat": "Session", "name": "model_run"}], "CPUExecutionProvider")


# -- I/O binding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_bound_frame_lives_on_the_sessions_device(small_cnn_path, provider: str) -> None:
    engine = _engine_or_skip(small_cnn_path, provider, seed=31)
    bound = engine.bind(np.full((3, 64, 64), 0.5, np.float32))
    assert isinstance(bound, BoundFrame) and bound.device == engine.device == provider
    assert engine.bind(bound) is bound
    assert engine.sample(bound, 100).n == 100


def test_binding_a_frame_once_changes_nothing_but_where_it_lives(small_cnn_path) -> None:
    """Two engines with one seed draw the same noise: votes from a frame bound once and reused
    equal votes from the array passed (and bound) anew at every call."""
    frame = np.random.default_rng(5).random((3, 64, 64), dtype=np.float32)
    by_array = SmoothingEngine(small_cnn_path, SIGMA, batch_size=128, seed=32)
    by_binding = SmoothingEngine(small_cnn_path, SIGMA, batch_size=128, seed=32)
    bound = by_binding.bind(frame)
    for num in (50, 300, 7):
        a, b = by_array.sample(frame, num), by_binding.sample(bound, num)
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_array_equal(a.clean_logits, b.clean_logits)


def test_bind_checks_the_frame(small_cnn_path) -> None:
    engine = SmoothingEngine(small_cnn_path, SIGMA, seed=33)
    with pytest.raises(InputError, match="rank 3"):
        engine.bind(np.zeros((64, 64), np.float32))
    with pytest.raises(InputError, match="NaN or Inf"):
        engine.bind(np.full((3, 64, 64), np.nan, np.float32))


# -- fresh noise for every frame ------------------------------------------------------------------
FRAMES, PER_FRAME = 300, 40


def _dispersion_pvalues(counts: np.ndarray, n: int) -> tuple[float, float]:
    """``(two-sided p-value, statistic)`` of the binomial dispersion test (Cochran): for
    independent frames ``sum (k_i - k_bar)^2 / (k_bar (1 - k_bar / n))`` is about chi-square
    with m - 1 degrees of freedom; replayed noise sits in the lower tail, correlated noise
    (overdispersion) in the upper one."""
    k_bar = counts.mean()
    stat = float(((counts - k_bar) ** 2).sum() / (k_bar * (1.0 - k_bar / n)))
    dof = counts.size - 1
    return float(2 * min(chi2.cdf(stat, dof), chi2.sf(stat, dof))), stat


@pytest.mark.parametrize("provider", PROVIDERS)
def test_successive_frames_get_fresh_noise_with_the_binomial_spread(
    linear_setup, provider: str
) -> None:
    """300 frames of 40 samples each at true probability Phi(0.5) = 0.69: per-frame counts
    spread as independent binomials would (neither replayed nor correlated noise), and their
    total matches the closed form."""
    engine = _engine_or_skip(linear_setup.path, provider, batch_size=PER_FRAME, seed=34)
    t = 0.5 * SIGMA
    bound = engine.bind(linear_setup.frame(t))
    counts = np.array(
        [engine.sample(bound, PER_FRAME, with_clean=False).counts[1] for _ in range(FRAMES)]
    )
    assert len(set(counts.tolist())) > 5
    p_value, _ = _dispersion_pvalues(counts, PER_FRAME)
    assert p_value > 0.001, f"per-frame counts do not spread as independent binomials: {p_value}"
    total = binomtest(int(counts.sum()), FRAMES * PER_FRAME, float(norm.cdf(t / SIGMA)))
    assert total.pvalue > 0.001


def test_the_spread_test_catches_noise_replayed_every_frame(linear_setup) -> None:
    """Negative control: an engine rebuilt with the same seed for every frame replays the same
    noise (what a captured random node would do); the dispersion test rejects it."""
    t = 0.5 * SIGMA
    frame = linear_setup.frame(t)
    counts = np.array(
        [
            SmoothingEngine(linear_setup.path, SIGMA, batch_size=PER_FRAME, seed=35)
            .sample(frame, PER_FRAME, with_clean=False)
            .counts[1]
            for _ in range(30)
        ]
    )
    assert len(set(counts.tolist())) == 1
    # All equal: the statistic is 0, far in the lower tail of chi-square(29).
    p_value, stat = _dispersion_pvalues(counts, PER_FRAME)
    assert stat == 0.0 and p_value < 1e-6
