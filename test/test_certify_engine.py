"""The smoothing graph against a host-side reference, and the engine's noise and outputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from scipy.stats import chi2_contingency

from robust_monitor.core.certify.engine import SmoothingEngine
from robust_monitor.core.certify.reference import HostReferenceSmoother

SIGMA = 0.25
GREY = np.full((3, 64, 64), 0.5, np.float32)


def _homogeneity_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    keep = (a + b) > 0
    return float(chi2_contingency(np.stack([a[keep], b[keep]]))[1])


@pytest.mark.parametrize("noise", ["box_muller", "normal"])
def test_graph_counts_match_host_reference_in_distribution(small_cnn_path, noise: str) -> None:
    n = 6000
    engine = SmoothingEngine(small_cnn_path, SIGMA, batch_size=500, seed=21, noise=noise)
    graph_counts = engine.sample(GREY, n).counts
    host_counts = HostReferenceSmoother(small_cnn_path, SIGMA, seed=22).sample_counts(GREY, n, 500)
    assert (graph_counts > 0).sum() >= 4, "the model must spread votes for the test to mean much"
    assert _homogeneity_pvalue(graph_counts, host_counts) > 0.001


def test_the_distribution_test_has_power(small_cnn_path) -> None:
    """Negative control: the same chi-square test tells sigma 0.25 from sigma 0.35."""
    n = 6000
    graph_counts = SmoothingEngine(small_cnn_path, SIGMA, seed=23).sample(GREY, n).counts
    wrong = HostReferenceSmoother(small_cnn_path, 0.35, seed=24).sample_counts(GREY, n, 500)
    assert _homogeneity_pvalue(graph_counts, wrong) < 0.001


def test_successive_runs_draw_fresh_noise(small_cnn_path) -> None:
    engine = SmoothingEngine(small_cnn_path, SIGMA, batch_size=500, seed=25)
    runs = [engine.sample(GREY, 500).counts for _ in range(4)]
    assert len({tuple(r) for r in runs}) == 4


def test_a_fixed_seed_reproduces_and_different_seeds_differ(small_cnn_path) -> None:
    def counts(seed: int | None) -> tuple[int, ...]:
        return tuple(SmoothingEngine(small_cnn_path, SIGMA, seed=seed).sample(GREY, 1000).counts)

    assert counts(7) == counts(7)
    assert counts(7) != counts(8)


def test_unseeded_engines_in_two_processes_draw_different_noise(small_cnn_path) -> None:
    code = (
        "import numpy as np, sys;"
        "from robust_monitor.core.certify.engine import SmoothingEngine;"
        f"e = SmoothingEngine(sys.argv[1], {SIGMA});"
        "print(list(e.sample(np.full((3, 64, 64), 0.5, np.float32), 1000).counts))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code, str(small_cnn_path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(3)
    }
    assert len(outs) == 3


def test_clean_outputs_are_the_base_model_on_the_clean_frame(small_cnn_path) -> None:
    engine = SmoothingEngine(small_cnn_path, SIGMA, seed=26)
    frame = np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)
    result = engine.certify(frame, n0=50, n=200, alpha=0.01)
    base = ort.InferenceSession(str(small_cnn_path), providers=["CPUExecutionProvider"])
    logits, features = base.run(["logits", "features"], {"image": frame[None]})
    np.testing.assert_allclose(result.clean_logits, logits[0], rtol=1e-5, atol=1e-5)
    assert result.clean_features is not None
    np.testing.assert_allclose(result.clean_features, features[0], rtol=1e-5, atol=1e-5)


def test_certificate_fields_and_sample_counts(small_cnn_path) -> None:
    engine = SmoothingEngine(small_cnn_path, SIGMA, batch_size=128, seed=27)
    cert = engine.certify(GREY, n0=64, n=300, alpha=0.001).certificate
    assert (cert.n0, cert.n, cert.alpha, cert.sigma) == (64, 300, 0.001, SIGMA)
    assert cert.provider == "cpu" and engine.provider == "cpu"
    assert cert.latency_ms > 0
    # With votes spread over 8 classes nothing can be certified: it must abstain, radius 0.
    assert cert.abstained and cert.radius == 0.0 and cert.label == -1
    # Odd sample counts and batch remainders are counted exactly.
    assert engine.sample(GREY, 257).n == 257


def test_the_provider_reported_is_the_one_the_session_got(small_cnn_path) -> None:
    engine = SmoothingEngine(small_cnn_path, SIGMA, providers="auto", seed=1)
    assert engine.providers == engine._session.get_providers()
    if "CUDAExecutionProvider" not in engine.providers:
        assert engine.provider == "cpu"
        if engine.requested_providers[0] != "CPUExecutionProvider":
            assert engine.fallback is not None and "running on cpu" in engine.fallback
