"""The CPU noise source: what onnxruntime's random kernels are, and the per-frame limit it sets.

onnxruntime's CPU RandomUniform(Like) kernels use ``std::default_random_engine``, which in
libstdc++ is ``minstd_rand0``. Its stream repeats after 2^31 - 2 uniforms, and a 3x224x224 frame
uses 150,528 of them per noisy copy: past about 14,000 copies the noise of one frame would
repeat, the copies would not be independent, and Clopper-Pearson would not bound anything. The
engine refuses such frames on the CPU provider; these tests pin down the generator the limit
rests on (they fail if onnxruntime changes it) and the accounting of draws.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from robust_monitor.assets import DEFAULT_MODEL
from robust_monitor.core.certify.engine import CPU_GENERATOR_PERIOD, SmoothingEngine
from robust_monitor.core.certify.graph import FRAME, NOISY, NUM_NOISY, build_noisy_inputs_graph
from robust_monitor.core.certify.sequential import SequentialConfig, certify_sequential
from robust_monitor.core.errors import ConfigError
from robust_monitor.core.pipeline import CertifyConfig, FramePipeline

MODULUS = 2**31 - 1
MULTIPLIER = 16807
GREY = np.full((3, 64, 64), 0.5, np.float32)


def _minstd_uniforms(seed: int, count: int) -> np.ndarray:
    """What libstdc++ makes of minstd_rand0 for uniform_real_distribution<float>(0, 1):
    ``generate_canonical`` divides float(x - 1) by float(2^31 - 2) = 2^31, kept below 1."""
    x = seed % MODULUS or 1
    below_one = np.nextafter(np.float32(1.0), np.float32(0.0))
    out = np.empty(count, np.float32)
    for i in range(count):
        x = MULTIPLIER * x % MODULUS
        out[i] = min(np.float32(x - 1) * np.float32(2.0**-31), below_one)
    return out


def _uniform_session(op: str, seed: float, count: int) -> tuple[ort.InferenceSession, dict]:
    if op == "RandomUniform":
        node = helper.make_node(
            op, [], ["u"], shape=[count], low=0.0, high=1.0, seed=seed, dtype=TensorProto.FLOAT
        )
        inputs, feeds = [], {}
    else:
        node = helper.make_node(op, ["z"], ["u"], low=0.0, high=1.0, seed=seed)
        inputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, [count])]
        feeds = {"z": np.zeros(count, np.float32)}
    graph = helper.make_graph(
        [node], "uniforms", inputs, [helper.make_tensor_value_info("u", TensorProto.FLOAT, [count])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session, feeds


@pytest.mark.parametrize("op", ["RandomUniform", "RandomUniformLike"])
@pytest.mark.parametrize("seed", [1, 12345, 987654, 2**30 + 2**7])
def test_cpu_random_kernels_are_minstd_rand0(op: str, seed: int) -> None:
    """Bit for bit, over two successive runs of one session (the kernel's generator carries on
    from one run to the next): onnxruntime's output is the minstd_rand0 recurrence."""
    count = 3000
    session, feeds = _uniform_session(op, float(seed), count)
    drawn = np.concatenate([session.run(None, feeds)[0] for _ in range(2)])
    expected = _minstd_uniforms(seed, 2 * count)
    assert np.array_equal(drawn, expected)
    # The control: another seed's stream differs everywhere but by chance.
    assert np.mean(drawn == _minstd_uniforms(seed + 1, 2 * count)) < 0.01


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return factors


def test_the_generator_period_is_one_full_cycle_of_2_31_minus_2() -> None:
    """16807 is a primitive root modulo the prime 2^31 - 1, so every nonzero seed runs through
    all 2^31 - 2 states before one recurs: the period the engine's limit uses, no more."""
    assert _prime_factors(MODULUS) == [MODULUS]
    order = MODULUS - 1
    assert pow(MULTIPLIER, order, MODULUS) == 1
    for q in set(_prime_factors(order)):
        assert pow(MULTIPLIER, order // q, MODULUS) != 1, f"order divides {order // q}"
    assert order == CPU_GENERATOR_PERIOD


def _second_run(first: int, second: int, seed: float = 77.0) -> np.ndarray:
    """The noisy copies of a run of ``second`` after a run of ``first`` in one session."""
    model = build_noisy_inputs_graph((1, 4, 4), 0.25, seed, "box_muller")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    frame = np.full((1, 4, 4), 0.5, np.float32)
    for num in (first, second):
        out = session.run([NOISY], {FRAME: frame, NUM_NOISY: np.array([num], np.int64)})[0]
    return out


def test_an_odd_run_draws_one_copy_more_as_frame_draws_counts(small_cnn_path) -> None:
    """Box-Muller makes normals in pairs: a run of 3 copies leaves the generator where a run
    of 4 does, and a run of 2 does not; ``frame_draws`` counts the same."""
    assert np.array_equal(_second_run(3, 2), _second_run(4, 2))
    assert not np.array_equal(_second_run(2, 2), _second_run(4, 2))
    engine = SmoothingEngine(small_cnn_path, 0.25, providers="cpu", seed=1)
    d = 3 * 64 * 64
    assert engine.frame_draws(3, odd_runs=1) == engine.frame_draws(4) == 4 * d


def test_the_cpu_engine_caps_samples_per_frame_at_the_period(small_cnn_path) -> None:
    engine = SmoothingEngine(small_cnn_path, 0.25, providers="cpu", seed=2)
    assert engine.draw_period == CPU_GENERATOR_PERIOD
    cap = engine.max_samples_per_frame
    assert cap == CPU_GENERATOR_PERIOD // (3 * 64 * 64) == 174_762
    engine.check_certify_samples(0, cap, batch_size=2)  # even runs: exactly at the cap
    with pytest.raises(ConfigError, match="repeats after 2,147,483,646"):
        engine.check_certify_samples(0, cap + 1, batch_size=2)
    with pytest.raises(ConfigError, match="n0 \\+ n = 174763"):
        engine.certify(GREY, n0=100, n=cap - 99)  # refused before any sample is drawn
    with pytest.raises(ConfigError, match="at most 174,762 samples per frame"):
        engine.predict(GREY, n=cap + 1)
    # 224x224 (Cohen et al.'s ImageNet setting, n = 100,000) is over the cap by far.
    assert CPU_GENERATOR_PERIOD // (3 * 224 * 224) == 14_266


def test_a_bound_frame_refuses_runs_that_add_up_past_the_period(small_cnn_path) -> None:
    """The backstop behind the up-front checks: draws are counted on the bound frame across
    runs (the limit is made small here so the test draws little)."""
    engine = SmoothingEngine(small_cnn_path, 0.25, providers="cpu", batch_size=64, seed=3)
    d = 3 * 64 * 64
    engine.draw_period = 10 * d
    frame = engine.bind(GREY)
    engine.sample(frame, 4)
    engine.sample(frame, 5)  # odd: counts 6 copies, 10 in all
    assert frame.draws == 10 * d
    with pytest.raises(ConfigError, match="past the CPU generator's period"):
        engine.sample(frame, 1)
    assert frame.draws == 10 * d, "a refused run draws nothing"
    assert engine.sample(GREY, 10).n == 10, "a new frame starts from zero"
    # Sequential mode checks its worst case (n0 + max_n and the look count) up front.
    engine.draw_period = 100 * d
    config = SequentialConfig(r_required=0.1, max_n=120, alpha=0.001)
    with pytest.raises(ConfigError, match="n0 \\+ max_n"):
        certify_sequential(engine, GREY, config)


def test_a_gpu_provider_sets_no_limit(small_cnn_path) -> None:
    """The limit follows the provider the session got: on this CPU-only onnxruntime a request
    for CUDA falls back to the CPU and keeps the CPU's limit; only a real GPU session lifts it."""
    engine = SmoothingEngine(small_cnn_path, 0.25, providers="cuda", seed=4)
    if engine.providers[0] == "CPUExecutionProvider":
        assert engine.draw_period == CPU_GENERATOR_PERIOD
    else:
        assert engine.draw_period is None and engine.max_samples_per_frame is None


def test_the_pipeline_refuses_a_configuration_past_the_period_when_it_loads() -> None:
    with pytest.raises(ConfigError, match="n0 \\+ n = 200064"):
        FramePipeline(DEFAULT_MODEL, CertifyConfig(n=200_000, providers="cpu"))
    with pytest.raises(ConfigError, match="n0 \\+ max_n"):
        FramePipeline(
            DEFAULT_MODEL, CertifyConfig(mode="sequential", max_n=200_000, providers="cpu")
        )


def test_the_certify_command_says_why_it_refuses(tmp_path) -> None:
    frame = tmp_path / "frame.npy"
    np.save(frame, GREY)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "robust_monitor.tools.cli",
            "certify",
            "--model",
            str(DEFAULT_MODEL),
            "--input",
            str(frame),
            "--provider",
            "cpu",
            "--n",
            "200000",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "would not be independent" in proc.stderr
    assert f"at most {CPU_GENERATOR_PERIOD // math.prod(GREY.shape):,} samples" in proc.stderr


def test_box_muller_pairs_of_some_run_sizes_lie_on_a_coarse_lattice() -> None:
    """What minstd_rand0's lattice means here (README, "Noise and seeds"): the graph pairs the
    first half of a run's uniforms with the second, ``pairs * d`` states apart. At 322 pairs (a
    643- or 644-sample run) of a 3x64x64 input, 16807^lag mod (2^31 - 1) has the short dual
    vector (-405, 181): every pair satisfies ``-405 u1 + 181 u2`` = an integer (to float32
    rounding), so u2 given u1 takes 181 values. Each copy's marginal is untouched; this pins
    the structure the README describes."""
    d, pairs = 3 * 64 * 64, 322
    multiplier = pow(MULTIPLIER, pairs * d, MODULUS)
    assert (-405 + 181 * multiplier) % MODULUS == 0
    count = 2 * pairs * d
    session, feeds = _uniform_session("RandomUniformLike", 4321.0, count)
    u = session.run(None, feeds)[0].astype(np.float64)
    u1, u2 = u[: pairs * d], u[pairs * d :]
    residue = -405.0 * u1 + 181.0 * u2
    off = np.abs(residue - np.round(residue))
    assert np.quantile(off, 0.999) < 1e-4  # float32 rounding of u1 and u2, nothing more
    # Control: pairs at a lag of one state further are on no such lattice.
    shifted = -405.0 * u1[:-1] + 181.0 * u2[1:]
    assert np.median(np.abs(shifted - np.round(shifted))) > 0.2
