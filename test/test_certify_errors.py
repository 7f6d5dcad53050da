"""Bad inputs to the API and the CLI: one clear error each, a non-zero exit, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import norm

from robust_monitor.core.certify.engine import SmoothingEngine
from robust_monitor.core.errors import ConfigError, InputError, ModelError

SIGMA = 0.25


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "robust_monitor.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def engine(small_cnn_path: Path) -> SmoothingEngine:
    return SmoothingEngine(small_cnn_path, SIGMA, seed=1)


# --- API ---------------------------------------------------------------------------------------
def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        SmoothingEngine(tmp_path / "absent.onnx", SIGMA)


def test_corrupt_model(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf" * 10)
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        SmoothingEngine(bad, SIGMA)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((64, 64), np.float32), "rank 3"),
        (np.zeros((1, 3, 64, 64), np.float32), "rank 3"),
        (np.zeros((3, 32, 32), np.float32), "does not match the model input"),
        (np.zeros((3, 64, 64), np.uint8), "dtype must be floating point"),
        (np.full((3, 64, 64), np.nan, np.float32), "NaN or Inf"),
        (np.full((3, 64, 64), 255.0, np.float32), r"\[0, 1\]"),
    ],
)
def test_bad_frames(engine: SmoothingEngine, frame: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        engine.certify(frame, n0=10, n=10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be"),
        ({"n0": -1}, "n0 must be"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"batch_size": 0}, "batch size"),
    ],
)
def test_bad_parameters(engine: SmoothingEngine, kwargs: dict[str, float], message: str) -> None:
    frame = np.full((3, 64, 64), 0.5, np.float32)
    with pytest.raises(ConfigError, match=message):
        engine.certify(frame, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("sigma", [0.0, -0.25, float("inf")])
def test_bad_sigma(small_cnn_path: Path, sigma: float) -> None:
    with pytest.raises(ConfigError, match="sigma"):
        SmoothingEngine(small_cnn_path, sigma)


def test_unknown_provider(small_cnn_path: Path) -> None:
    with pytest.raises(ConfigError, match="allowed: auto, cpu, cuda, tensorrt"):
        SmoothingEngine(small_cnn_path, SIGMA, providers="quantum")


# --- CLI ---------------------------------------------------------------------------------------
def test_cli_certifies_with_the_fp16_classifier(small_cnn_path: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "frame.npy", np.full((3, 64, 64), 0.5, np.float32))
    args = ["--model", str(small_cnn_path), "--input", str(tmp_path / "frame.npy")]
    args += ["--sigma", "0.25", "--n0", "0", "--n", "50", "--seed", "3", "--json"]
    result = cli("certify", *args, "--precision", "fp16")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 50
    refused = cli("certify", *args, "--precision", "int8")
    assert refused.returncode == 2 and "invalid choice: 'int8'" in refused.stderr


def test_cli_json_one_line_per_frame(small_cnn_path: Path, tmp_path: Path) -> None:
    batch = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    np.save(tmp_path / "batch.npy", batch)
    result = cli(
        "certify",
        "--model",
        str(small_cnn_path),
        "--input",
        str(tmp_path / "batch.npy"),
        "--sigma",
        "0.25",
        "--n0",
        "20",
        "--n",
        "50",
        "--alpha",
        "0.01",
        "--batch",
        "32",
        "--seed",
        "3",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["frame"] for line in lines] == [0, 1, 2]
    fields = {
        "label",
        "p_lower",
        "radius",
        "n0",
        "n",
        "alpha",
        "sigma",
        "abstained",
        "provider",
        "latency_ms",
    }
    assert all(fields <= set(line) for line in lines)
    assert all(line["n"] == 50 and line["n0"] == 20 for line in lines)


def test_cli_image_file(small_cnn_path: Path, tmp_path: Path) -> None:
    image = (np.random.default_rng(1).random((120, 160, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "frame.png"), image)
    result = cli(
        "certify",
        "--model",
        str(small_cnn_path),
        "--input",
        str(tmp_path / "frame.png"),
        "--sigma",
        "0.25",
        "--n0",
        "10",
        "--n",
        "20",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sigma", "0"], "sigma must be"),
        (["--sigma", "-1"], "sigma must be"),
        (["--n", "0"], "n must be"),
        (["--alpha", "1"], "alpha must be in (0, 1)"),
        (["--alpha", "0"], "alpha must be in (0, 1)"),
    ],
)
def test_cli_bad_parameters(
    small_cnn_path: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    np.save(tmp_path / "x.npy", np.full((3, 64, 64), 0.5, np.float32))
    result = cli(
        "certify",
        "--model",
        str(small_cnn_path),
        "--input",
        str(tmp_path / "x.npy"),
        "--sigma",
        "0.25",
        *extra,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 2), np.float32), "expected one frame"),
        (np.zeros((1, 3, 32, 32), np.float32), "does not match the model input"),
        (np.zeros((3, 64, 64), np.int64), "expected float values"),
        (np.full((3, 64, 64), np.inf, np.float32), "NaN or Inf"),
    ],
)
def test_cli_bad_inputs(
    small_cnn_path: Path, tmp_path: Path, array: np.ndarray, message: str
) -> None:
    np.save(tmp_path / "x.npy", array)
    result = cli(
        "certify",
        "--model",
        str(small_cnn_path),
        "--input",
        str(tmp_path / "x.npy"),
        "--sigma",
        "0.25",
    )
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_missing_and_corrupt_files(small_cnn_path: Path, tmp_path: Path) -> None:
    missing = cli(
        "certify", "--model", str(tmp_path / "none.onnx"), "--input", "x.npy", "--sigma", "0.25"
    )
    assert missing.returncode == 2 and "model file not found" in missing.stderr
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    broken = cli(
        "certify",
        "--model",
        str(small_cnn_path),
        "--input",
        str(tmp_path / "broken.png"),
        "--sigma",
        "0.25",
    )
    assert broken.returncode == 2 and "could not be decoded" in broken.stderr
    absent = cli(
        "certify",
        "--model",
        str(small_cnn_path),
        "--input",
        str(tmp_path / "no.npy"),
        "--sigma",
        "0.25",
    )
    assert absent.returncode == 2 and "input file not found" in absent.stderr


# --- sequential mode on the command line ---------------------------------------------------------
def test_cli_sequential_mode_reports_its_decision(linear_setup, tmp_path: Path) -> None:
    frames = np.stack([linear_setup.frame(0.5), linear_setup.frame(0.02)])
    path = tmp_path / "two.npy"
    np.save(path, frames)
    done = cli(
        "certify", "--model", str(linear_setup.path), "--input", str(path), "--sigma", "0.25",
        "--seed", "5", "--n0", "32", "--mode", "sequential", "--r-required", "0.25", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    far, near = (json.loads(line) for line in done.stdout.splitlines())
    assert far["decision"] == "certified" and far["radius"] >= 0.25 and far["n"] < 1000
    assert near["decision"] == "unreachable" and near["radius"] < 0.25
    # Without the lattice margin (2^-16 * sqrt(d), d the frame's size) this would be
    # Phi(1) = 0.8413447; the margin is certified on top of r_required.
    margin = 2.0**-16 * np.sqrt(np.prod(frames.shape[1:]))
    assert far["p_required"] == pytest.approx(norm.cdf((0.25 + margin) / 0.25), abs=1e-7)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--budget-ms", "0"], "budget_ms"),
        (["--r-required", "-1"], "r_required"),
        (["--max-n", "0"], "max_n"),
        (["--r-required", "5"], "cannot be certified"),
    ],
)
def test_cli_sequential_mode_refuses_bad_settings(
    linear_setup, tmp_path: Path, flags: list[str], message: str
) -> None:
    path = tmp_path / "one.npy"
    np.save(path, linear_setup.frame(0.1))
    done = cli(
        "certify", "--model", str(linear_setup.path), "--input", str(path), "--sigma", "0.25",
        "--mode", "sequential", *flags,
    )  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
