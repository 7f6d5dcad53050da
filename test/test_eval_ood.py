"""``robust-monitor eval-ood``: the metrics against closed forms, the fused score, the OOD sets,
and one end-to-end run on the small random-weight CNN (tiny counts, fitted calibration).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robust_monitor.core.errors import InputError
from robust_monitor.synth.corruptions import CORRUPTIONS
from robust_monitor.tools import ood_sets
from robust_monitor.tools.calibrate_cmd import DEFAULT_DETECTORS, Normaliser
from robust_monitor.tools.cli import main
from robust_monitor.tools.eval_ood import (
    auroc,
    fpr_at_tpr,
    fused_score,
    model_statistic,
    roc_curve,
)


# --- AUROC --------------------------------------------------------------------------------------
def _pairwise_auroc(a: np.ndarray, b: np.ndarray) -> float:
    """The definition: P(ood > id) + P(ood == id) / 2 over all pairs."""
    diff = b[None, :] - a[:, None]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def test_auroc_closed_forms() -> None:
    a = np.arange(10.0)
    assert auroc(a, a + 100) == 1.0
    assert auroc(a, a - 100) == 0.0
    assert auroc(a, a) == 0.5
    assert auroc(np.zeros(7), np.zeros(3)) == 0.5
    # ID 0..9, OOD 5..14: P(ood > id) = 1 - P(ood <= id); exact value 0.5 + 0.5 * 0.75 + ...
    assert auroc(a, a + 5) == pytest.approx(_pairwise_auroc(a, a + 5))
    assert auroc(a, a + 5) == pytest.approx(1.0 - (5 * 6 / 2 - 0.5 * 5) / 100)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=25),
    st.lists(st.integers(0, 6), min_size=1, max_size=25),
)
def test_auroc_matches_the_pairwise_definition_with_ties(a: list[int], b: list[int]) -> None:
    x, y = np.asarray(a, float), np.asarray(b, float)
    assert auroc(x, y) == pytest.approx(_pairwise_auroc(x, y), abs=1e-12)
    fpr, tpr = roc_curve(x, y)
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0
    # the area under the ROC polygon (ties drawn as diagonals) is the AUROC
    area = float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(auroc(x, y), abs=1e-12)


def test_metrics_refuse_empty_or_nan_scores() -> None:
    with pytest.raises(InputError):
        auroc([], [1.0])
    with pytest.raises(InputError):
        fpr_at_tpr([1.0, math.nan], [1.0])


# --- FPR at 95 % TPR ----------------------------------------------------------------------------
def _reference_fpr(a: np.ndarray, b: np.ndarray, tpr: float = 0.95) -> float:
    """Smallest FPR of "alarm when score >= h" over every h that reaches the TPR."""
    best = 1.0
    for h in np.unique(np.concatenate([a, b, [np.inf]])):
        if np.mean(b >= h) >= tpr:
            best = min(best, float(np.mean(a >= h)))
    return best


def test_fpr_at_95_tpr_closed_forms() -> None:
    a = np.arange(100.0)
    assert fpr_at_tpr(a, a + 1000) == 0.0
    assert fpr_at_tpr(a, a) == 0.95  # the threshold is the 95th largest OOD score, 5
    for shift in (0, 10, 40, 95):
        assert fpr_at_tpr(a, a + shift) == pytest.approx((95 - shift) / 100)
    assert fpr_at_tpr(a, a - 1000) == 1.0


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 8), min_size=1, max_size=30),
    st.lists(st.integers(0, 8), min_size=1, max_size=30),
)
def test_fpr_at_tpr_is_the_best_operating_point(a: list[int], b: list[int]) -> None:
    x, y = np.asarray(a, float), np.asarray(b, float)
    assert fpr_at_tpr(x, y) == pytest.approx(_reference_fpr(x, y))


# --- fused score --------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(-5, 5), min_size=2, max_size=40),
    st.lists(st.floats(-8, 8), min_size=1, max_size=10),
    st.integers(0, 2),
)
def test_fused_score_keeps_the_verdict_levels(
    norm: list[float], probe: list[float], level: int
) -> None:
    normalisers = {"energy": Normaliser.fit(norm), "msp": Normaliser.fit(np.asarray(norm) / 10)}
    scores = {"energy": np.asarray(probe), "msp": np.zeros(len(probe))}
    t = model_statistic(normalisers, scores)
    assert np.all((t > 0) & (t < 1))
    fused = [fused_score(level, f) for f in t]
    assert all(level < f < level + 1 for f in fused)  # thresholds at 1 and 2 are the verdict
    higher = model_statistic(normalisers, {**scores, "energy": np.asarray(probe) + 1.0})
    assert np.all(higher >= t)  # a more unusual score never ranks lower


def test_fused_score_refuses_a_tie_breaker_outside_0_1() -> None:
    with pytest.raises(InputError):
        fused_score(1, 1.0)


# --- OOD sets -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ood_sets.available_far_ood_sets())
def test_far_ood_frames_are_whole_frames_and_reproducible(name: str) -> None:
    frames = ood_sets.far_ood_frames(name, 3, 5)
    assert [f.shape for f in frames] == [(240, 320, 3)] * 3
    assert all(f.dtype == np.uint8 for f in frames)
    assert np.array_equal(ood_sets.far_ood_frames(name, 2, 5)[1], frames[1])
    assert not np.array_equal(frames[0], frames[1])


def test_paste_into_roi_shows_the_render_in_the_region() -> None:
    frame = np.zeros((240, 320, 3), np.uint8)
    out = ood_sets.paste_into_roi(frame, np.full((64, 64, 3), 200, np.uint8))
    assert out[36:124, 222:310].min() == 200
    assert out.sum() == 200 * 88 * 88 * 3
    assert frame.sum() == 0


# --- end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report(small_cnn_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("eval")
    argv = [
        "eval-ood",
        "--model",
        str(small_cnn_path),
        "--sigma",
        "0.25",
        "--quick",
        "--json",
        "--quiet",
        "--seed",
        "3",
        "--n-id",
        "12",
        "--n-far",
        "3",
        "--n-norm",
        "6",
        "--n-corrupt",
        "2",
        "--calib-renders",
        "45",
        "--target-fpr",
        "0.2",
        "--error-fpr",
        "0.1",
        "--out",
        str(out / "report.json"),
        "--plot",
        str(out / "report.png"),
        "--scores",
        str(out / "scores.npz"),
    ]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    printed: dict[str, Any] = json.loads(stdout.getvalue())
    written = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert printed == written
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(out / "scores.npz") as scores:
        assert scores["in_distribution|fused"].shape == (12,)
        assert scores["normalise|p_lower"].shape == (6,)
    return printed


def test_eval_reports_every_set_and_score(report: dict[str, Any]) -> None:
    sets = report["sets"]
    expected = {f"far_ood/{s}" for s in ood_sets.available_far_ood_sets()} | {"far_ood/all"}
    expected |= {f"corruption/{c}@{s}" for c in CORRUPTIONS for s in (3, 5)}
    expected |= {"corruption/all@3", "corruption/all@5", "in_distribution"}
    assert set(sets) == expected
    scores = {*DEFAULT_DETECTORS, "camera", "fused", "model_fused"}
    assert "input_stats" in scores  # the per-detector table includes the new detector
    for name, entry in sets.items():
        if name == "in_distribution":
            continue
        assert set(entry["auroc"]) == scores, name
        for metric in ("auroc", "fpr_at_95_tpr"):
            assert all(0.0 <= v <= 1.0 for v in entry[metric].values()), (name, metric)
        if entry["kind"].startswith("corruption"):
            assert 0.0 <= entry["dangerous_miss_rate"] <= entry["wrong_rate"] <= 1.0
    assert sets["corruption/all@5"]["n"] == 2 * len(CORRUPTIONS)
    assert sets["far_ood/all"]["n"] == 3 * len(ood_sets.available_far_ood_sets())


def test_eval_report_describes_the_run(report: dict[str, Any]) -> None:
    assert report["format"] == "robust_monitor.ood_eval/1"
    assert report["calibration"]["origin"] == "fitted in this run"
    assert report["certification"]["n"] == 48  # --quick with a fitted calibration
    assert report["plan"]["n_id"] == 12
    assert report["plan"]["n_norm"] == 6
    assert "verdict level" in report["fused_score"]
    summary = report["summary"]
    assert set(summary["targets_met"]) == {
        "far_ood_fused_auroc_min",
        "corruption_sev5_fused_auroc_min",
        "dangerous_miss_rate_sev5_max",
    }
    assert 0.0 <= summary["id_false_alarm_rate"] <= 1.0
