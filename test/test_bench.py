"""``robust-monitor bench``'s certification throughput report, run small on the real engine."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from scipy import stats

from robust_monitor.core.certify.graph import (
    FRAME,
    LATTICE_STEP,
    NOISE_KINDS,
    NOISE_SUM,
    NUM_NOISY,
    build_noise_graph,
    build_uniform_draw_graph,
)
from robust_monitor.core.certify.sequential import min_unanimous_cp_n, required_p
from robust_monitor.tools.bench import bench_throughput


@pytest.mark.parametrize("noise", NOISE_KINDS)
def test_the_noise_graph_makes_n_sigma_squared_variance(noise: str) -> None:
    """The benchmark's noise-only contender makes the noise the smoothing graph makes: the sum
    of its C*H*W*n values is N(0, C*H*W*n*sigma^2) (chi-square test of the variance)."""
    shape, sigma, n, runs = (3, 8, 8), 0.5, 2, 400
    session = ort.InferenceSession(
        build_noise_graph(shape, sigma, 7.0, noise).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    feed = {FRAME: np.zeros(shape, np.float32), NUM_NOISY: np.array([n], np.int64)}
    sums = np.array([float(session.run([NOISE_SUM], feed)[0]) for _ in range(runs)])
    expected_var = np.prod(shape) * n * sigma**2
    statistic = float(np.sum(sums**2) / expected_var)  # chi-square with `runs` dof
    assert stats.chi2.sf(statistic, runs) > 1e-3 and stats.chi2.cdf(statistic, runs) > 1e-3
    assert len(set(sums.tolist())) == runs  # fresh noise on every run


def test_throughput_report_has_every_contender_and_consistent_ratios(
    small_cnn_path: Path,
) -> None:
    report = bench_throughput(small_cnn_path, 0.25, "cpu", 0, rounds=1, samples=64, seed=3)
    rates = report["samples_per_s"]
    assert set(rates) == {"bare", "smoothing", "host_reference", "noise_only"}
    assert all(v > 0 for v in rates.values())
    bound = 1.0 / (1.0 / rates["bare"] + 1.0 / rates["noise_only"])
    assert report["noise_bound_samples_per_s"] == pytest.approx(bound, rel=1e-3)
    assert report["ratio_smoothing_over_bare"] == pytest.approx(
        rates["smoothing"] / rates["bare"], abs=2e-3
    )
    assert report["provider"] == "cpu"
    assert report["max_samples_per_frame"] == (2**31 - 2) // (3 * 64 * 64)
    core = report["core_time"]
    one = core["samples_per_s_one_thread"]
    assert set(one) == {"bare", "noise_only", "generator_only"}
    copies = core["samples_per_s_single_thread_copies"]
    assert set(copies) == {"bare", "smoothing"} and all(v > 0 for v in copies.values())
    best = max(rates["bare"], copies["bare"])
    assert core["best_bare_samples_per_s"] == pytest.approx(best, rel=1e-3)
    assert core["ratio_copies_smoothing_over_best_bare"] == pytest.approx(
        copies["smoothing"] / best, abs=2e-3
    )
    assert core["cores"] >= 1
    for other, key in (
        ("noise_only", "ceiling_any_schedule"),
        ("generator_only", "ceiling_generator_only"),
    ):
        rate = core["cores"] / (1.0 / one["bare"] + 1.0 / one[other])
        assert core[key] == pytest.approx(rate / best, abs=2e-3)


def test_the_generator_graph_is_the_noise_graphs_own_uniform_draw() -> None:
    """``ceiling_generator_only`` bounds the Box-Muller graph only if the graph timed alone is
    the draw that graph runs: every node of it but the final sum is a node of the noise graph.
    (Which of the two runs faster is a timing, for ``bench``, not for a unit test.)"""
    shape = (3, 8, 8)
    draw = build_uniform_draw_graph(shape, 7.0).graph
    noise = build_noise_graph(shape, 0.5, 7.0, "box_muller").graph
    noise_nodes = {n.SerializeToString() for n in noise.node}
    *drawing, total = draw.node
    assert total.op_type == "ReduceSum" and total.output == [NOISE_SUM]
    assert all(n.SerializeToString() in noise_nodes for n in drawing)
    assert any(n.op_type == "RandomUniformLike" for n in drawing)
    noise_inits = {i.SerializeToString() for i in noise.initializer}
    assert all(i.SerializeToString() in noise_inits for i in draw.initializer)


def test_the_generator_graph_draws_one_fresh_uniform_per_noise_value() -> None:
    shape, n = (3, 8, 8), 50
    session = ort.InferenceSession(
        build_uniform_draw_graph(shape, 7.0).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    values = n * 3 * 8 * 8
    feed = {FRAME: np.zeros(shape, np.float32), NUM_NOISY: np.array([n], np.int64)}
    sums = [float(session.run([NOISE_SUM], feed)[0]) for _ in range(20)]
    # The sum of `values` U(0, 1) draws: mean values / 2, sd sqrt(values / 12), fresh per run.
    z = (np.mean(sums) - values / 2) / math.sqrt(values / 12 / len(sums))
    assert abs(z) < 4.5
    assert np.std(sums) == pytest.approx(math.sqrt(values / 12), rel=0.5)
    assert len(set(sums)) == len(sums)


def test_the_batch_sweep_stops_at_max_batch(small_cnn_path: Path) -> None:
    report = bench_throughput(
        small_cnn_path, 0.25, "cpu", 0, rounds=1, samples=64, seed=3, max_batch=64
    )
    assert set(report["batch_sweep_samples_per_s"]) == {"32", "64"} and report["batch"] <= 64


def test_fp16_throughput_compares_against_the_fp16_bare_model(small_cnn_path: Path) -> None:
    report = bench_throughput(
        small_cnn_path, 0.25, "cpu", 0, rounds=1, samples=64, seed=3, precision="fp16"
    )
    assert report["precision"] == "fp16" and all(v > 0 for v in report["samples_per_s"].values())


def test_sequential_bench_compares_both_modes_on_the_sample_drive() -> None:
    from robust_monitor.assets import DEFAULT_MODEL
    from robust_monitor.tools.bench_sequential import FIXED_NS, bench_sequential

    report = bench_sequential(DEFAULT_MODEL, provider="cpu", every=300, limit=3, seed=4)
    assert report["frames"] == 3
    agreement = report["fixed"]["agreement_with_sequential"]
    assert set(agreement) == {str(n) for n in FIXED_NS}
    matched = report["fixed"]["matched_n"]
    if matched is not None:  # the smallest n that agrees on >= 99% of the frames
        assert agreement[str(matched)] >= 0.99
        assert all(agreement[str(n)] < 0.99 for n in FIXED_NS if n < matched)
        ratio = (report["n0"] + matched) / report["sequential"]["samples_per_frame"]["mean"]
        assert report["ratio_fixed_over_sequential_samples"] == pytest.approx(ratio, abs=0.01)
    # The sequential mode selects with the clean prediction (no samples) by default; the fixed
    # decisions are also taken that way, so the two savings can be told apart.
    assert (report["n0"], report["seq_n0"]) == (64, 0)
    same = report["fixed_same_selection"]
    assert set(same["agreement_with_sequential"]) == {str(n) for n in FIXED_NS}
    if same["matched_n"] is not None:
        ratio = same["matched_n"] / report["sequential"]["samples_per_frame"]["mean"]
        assert report["ratio_same_selection"] == pytest.approx(ratio, abs=0.01)
    # Capped at each fixed n in turn until the decisions agree; never more samples than it.
    capped = report["sequential_capped"]
    tried = [int(n) for n in capped["agreement_tried"]]
    assert tried == sorted(tried) and set(tried) <= set(FIXED_NS)
    if capped["max_n"] is not None:
        assert capped["max_n"] == tried[-1] and capped["agreement_with_fixed"] >= 0.99
        assert all(a < 0.99 for a in list(capped["agreement_tried"].values())[:-1])
        assert capped["samples_per_frame"]["max"] <= capped["max_n"]
        ratio = (64 + capped["max_n"]) / capped["samples_per_frame"]["mean"]
        assert capped["ratio_fixed_over_sequential"] == pytest.approx(ratio, abs=0.01)
        assert report["targets_met"]["sample_ratio_min"] == (ratio >= 5.0)
        # No valid procedure beats the ideal ceiling; the shipped one is valid.
        ideal = report["ideal_ratio_ceiling"]
        assert ideal["fixed_n"] == capped["max_n"]
        if ideal["ratio_max"] is not None:
            assert ideal["ratio_max"] == pytest.approx(
                (64 + capped["max_n"]) / ideal["samples_per_frame_min"], rel=1e-3
            )
            assert capped["ratio_fixed_over_sequential"] <= ideal["ratio_max"]
    seq = report["sequential"]
    assert sum(seq["decisions"].values()) == 3
    assert 0.0 <= seq["certified_fraction"] <= 1.0
    assert report["sequential_budget"]["budget_ms"] == 33.0


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05])
def test_no_valid_stopping_rule_certifies_a_clear_frame_in_fewer_samples(alpha: float) -> None:
    """The bench's per-frame floor ``log(alpha) / log(p)``: a procedure that certifies a frame
    whose votes are all for c_A after N samples (N drawn from any distribution w, so stopping
    may be randomised) errs at the worst case p_A = p with probability sum_n w_n p^n, which
    must stay <= alpha; every such w has E[N] >= the floor, and whole-sample rules need its
    ceiling, which is what Clopper-Pearson's alpha^(1/n) asks for."""
    p = required_p(0.30 + LATTICE_STEP * math.sqrt(3 * 64 * 64), 0.25)
    floor = math.log(alpha) / math.log(p)
    assert min_unanimous_cp_n(alpha, p, 10_000) == math.ceil(floor)
    ns = np.arange(1, 400)
    rng = np.random.default_rng(8)
    valid = 0
    for _ in range(20_000):
        support = rng.choice(ns, size=rng.integers(1, 4), replace=False)
        w = rng.dirichlet(np.ones(len(support)))
        if float(np.sum(w * p ** support.astype(float))) <= alpha:
            valid += 1
            assert float(np.sum(w * support)) >= floor - 1e-9
    assert valid > 1_000  # the check ran on many valid rules
    # And the floor is tight: the rule stopping at ceil(floor) is valid, one sample less is not.
    assert p ** math.ceil(floor) <= alpha < p ** (math.ceil(floor) - 1)
