"""The reference ResNets the GPU benchmarks use (random weights): the sizes the issue names, valid
ONNX that onnxruntime runs with finite outputs, and certifiable by the smoothing engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from robust_monitor.core.certify.engine import SmoothingEngine
from robust_monitor.tools.reference_models import (
    main,
    parameter_count,
    resnet18,
    resnet_cifar,
    save,
)


def _run(model, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    logits, features = session.run(None, {"image": x})
    return logits, features


def test_resnet110_has_the_cifar_architecture_and_runs() -> None:
    model = resnet_cifar(110)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    # 1 stem + 3 stages x 18 blocks x 2 convolutions + 2 strided 1x1 projections.
    assert len(convs) == 1 + 3 * 18 * 2 + 2
    assert abs(parameter_count(model) - 1.73e6) / 1.73e6 < 0.02  # He et al.: 1.7 M
    logits, features = _run(model, (3, 3, 32, 32))
    assert logits.shape == (3, 10) and features.shape == (3, 64)
    assert np.isfinite(logits).all() and 0.1 < float(logits.std()) < 100.0


def test_resnet18_has_imagenet_size_and_runs() -> None:
    model = resnet18()
    assert (
        abs(parameter_count(model) - 11.69e6) / 11.69e6 < 0.01
    )  # torchvision: 11,689,512, with the BatchNorm weights folded here
    logits, features = _run(model, (1, 3, 224, 224))
    assert logits.shape == (1, 1000) and features.shape == (1, 512)
    assert np.isfinite(logits).all()


def test_bad_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="6 n \\+ 2"):
        resnet_cifar(100)


def test_the_engine_certifies_a_frame_of_the_resnet110(tmp_path: Path) -> None:
    path = save(resnet_cifar(20, seed=1), tmp_path / "resnet20.onnx")  # same family, faster
    engine = SmoothingEngine(path, 0.25, providers="cpu", seed=3, batch_size=64)
    frame = np.random.default_rng(1).random((3, 32, 32), dtype=np.float32)
    result = engine.certify(frame, n0=16, n=64, alpha=0.01)
    assert result.certificate.provider == "cpu" and result.certificate.n == 64
    assert result.clean_features is not None and result.clean_features.shape == (64,)
    assert int(engine.sample(frame, 50, with_clean=False).counts.sum()) == 50


def test_the_command_writes_both_models(tmp_path: Path, capsys) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "resnet110_cifar.onnx").is_file() and (tmp_path / "resnet18.onnx").is_file()
    assert "11,684,712 parameters" in capsys.readouterr().out
