"""Floating-point soundness of the smoothing graph (Voracek & Hein, ICLR 2023).

Cohen's radius rests on the noisy inputs around two frames being exact translates of each
other. In float32, ``x + eps`` is rounded in a way that depends on ``x``, so they are not, and a
classifier can exploit it. The graph puts the frame and the noise on one dyadic lattice
(graph.py), which makes the translation exact; these tests check it bit for bit, show that the
plain float32 sum breaks it, and check the radius margin that pays for snapping the frame.
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest

from robust_monitor.core.certify.engine import SmoothingEngine
from robust_monitor.core.certify.graph import (
    FRAME,
    LATTICE_STEP,
    NOISY,
    NUM_NOISY,
    build_noisy_inputs_graph,
    check_lattice_step,
)
from robust_monitor.core.certify.stats import radius_from_p_lower
from robust_monitor.core.errors import ConfigError

SHAPE = (3, 16, 16)
SIGMA = 0.25
N = 64


def _noisy(frame: np.ndarray, lattice_step: float | None, noise: str, seed: float) -> np.ndarray:
    """The noisy copies the classifier would see, from a fresh session (same seed, same draws)."""
    graph = build_noisy_inputs_graph(SHAPE, SIGMA, seed, noise, lattice_step)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run([NOISY], {FRAME: frame, NUM_NOISY: np.array([N], np.int64)})[0]
    return np.asarray(out, dtype=np.float32)


def _frames(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A camera frame (8-bit levels scaled to [0, 1]) and a nearby continuous one."""
    x = (rng.integers(0, 256, SHAPE) / 255.0).astype(np.float32)
    x2 = np.clip(x + rng.normal(0, 0.05, SHAPE), 0, 1).astype(np.float32)
    return x, x2


def _snap(x: np.ndarray, step: float) -> np.ndarray:
    return (np.round(x.astype(np.float64) / step) * step).astype(np.float32)


@pytest.mark.parametrize("noise", ["box_muller", "normal"])
def test_on_the_lattice_noisy_inputs_are_exact_translates(noise: str) -> None:
    rng = np.random.default_rng(0)
    for trial in range(5):
        x, x2 = _frames(rng)
        seed = 101.0 + trial
        a = _noisy(x, LATTICE_STEP, noise, seed).astype(np.float64)
        b = _noisy(x2, LATTICE_STEP, noise, seed).astype(np.float64)
        shift = _snap(x2, LATTICE_STEP).astype(np.float64) - _snap(x, LATTICE_STEP)
        # Bit for bit: every noisy copy of x2 is the same copy of x moved by q(x2) - q(x).
        np.testing.assert_array_equal(b - a, np.broadcast_to(shift, a.shape))
        # ...and every value the classifier sees is a lattice point.
        assert np.all(np.round(a / LATTICE_STEP) * LATTICE_STEP == a)
        # The noise is still the Gaussian it was: lattice rounding is far below sigma.
        centred = a - _snap(x, LATTICE_STEP)
        assert abs(centred.std() - SIGMA) < 0.02


@pytest.mark.parametrize("noise", ["box_muller", "normal"])
def test_the_plain_float32_sum_is_not_a_translate(noise: str) -> None:
    """The exposure the lattice removes: without it the rounding depends on the frame."""
    rng = np.random.default_rng(1)
    x, x2 = _frames(rng)
    a = _noisy(x, None, noise, 7.0).astype(np.float64)
    b = _noisy(x2, None, noise, 7.0).astype(np.float64)
    shift = x2.astype(np.float64) - x
    broken = float(np.mean(b - a != shift))
    assert broken > 0.3, f"only {broken:.1%} of coordinates differ from an exact translate"


def test_the_engine_takes_the_lattice_margin_off_every_radius(linear_setup) -> None:
    engine = SmoothingEngine(linear_setup.path, SIGMA, seed=3)
    d = math.prod(engine.spec.input_shape)
    assert engine.lattice_step == LATTICE_STEP
    assert engine.radius_margin == pytest.approx(LATTICE_STEP * math.sqrt(d))
    frame = linear_setup.frame(0.5)
    cert = engine.certify(frame, n0=32, n=400, alpha=0.001).certificate
    assert not cert.abstained
    assert cert.radius == pytest.approx(
        radius_from_p_lower(cert.p_lower, SIGMA) - engine.radius_margin
    )
    plain = SmoothingEngine(linear_setup.path, SIGMA, seed=3, lattice=False)
    assert plain.lattice_step is None and plain.radius_margin == 0.0
    plain_cert = plain.certify(frame, n0=32, n=400, alpha=0.001).certificate
    assert plain_cert.radius == pytest.approx(radius_from_p_lower(plain_cert.p_lower, SIGMA))


def test_the_margin_is_cheap_for_the_shipped_models(small_cnn_path) -> None:
    """3 x 64 x 64 inputs: 2^-16 * sqrt(12288) = 0.0017, under 1% of either sigma."""
    engine = SmoothingEngine(small_cnn_path, SIGMA, seed=4)
    assert engine.radius_margin == pytest.approx(2.0**-16 * math.sqrt(12288))
    assert engine.radius_margin < 0.01 * SIGMA


def test_a_sigma_too_large_for_exact_sums_is_refused(small_cnn_path) -> None:
    with pytest.raises(ConfigError, match="too large for the float32 lattice"):
        SmoothingEngine(small_cnn_path, 4.0)
    SmoothingEngine(small_cnn_path, 1.0)  # the largest sigma anyone trains with still fits


@pytest.mark.parametrize("step", [0.0, -(2.0**-16), 3e-5, 2.0**-4, 2.0**-30, float("nan")])
def test_lattice_steps_must_be_powers_of_two_in_range(step: float) -> None:
    with pytest.raises(ValueError, match="lattice_step"):
        check_lattice_step(step)
