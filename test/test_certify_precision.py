"""The fp16 classifier variant and the TensorRT provider options (the GPU path's options).

fp16 runs on onnxruntime's CPU provider too, so its conversion is checked here end to end:
structure, logits against float32, and the smoothing graph's votes against float32's in
distribution. TensorRT itself needs a GPU; its options are a pure function, checked as such.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from scipy.stats import chi2_contingency

from robust_monitor.assets import DEFAULT_MODEL
from robust_monitor.core.certify.engine import (
    RANDOM_OPS,
    SmoothingEngine,
    default_tensorrt_cache,
    provider_options,
    resolve_providers,
)
from robust_monitor.core.certify.precision import to_fp16
from robust_monitor.core.errors import ConfigError, ModelError
from robust_monitor.tools import reference_models

SIGMA = 0.25
GREY = np.full((3, 64, 64), 0.5, np.float32)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_fp16_keeps_the_float32_interface_and_halves_the_weights() -> None:
    model = onnx.load(str(DEFAULT_MODEL))
    half = to_fp16(model)
    assert [(v.name, v.type.tensor_type.elem_type) for v in half.graph.input] == [
        (v.name, v.type.tensor_type.elem_type) for v in model.graph.input
    ]
    assert [v.name for v in half.graph.output] == [v.name for v in model.graph.output]
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in half.graph.output)
    assert {i.data_type for i in half.graph.initializer} == {TensorProto.FLOAT16}
    size = sum(i.ByteSize() for i in model.graph.initializer)
    assert sum(i.ByteSize() for i in half.graph.initializer) < 0.6 * size
    assert half.ir_version == model.ir_version <= 13
    assert model.graph.initializer[0].data_type == TensorProto.FLOAT  # the input is untouched


def test_fp16_logits_follow_the_float32_model() -> None:
    model = onnx.load(str(DEFAULT_MODEL))
    name = model.graph.input[0].name
    rng = np.random.default_rng(3)
    x = np.clip(0.5 + 0.25 * rng.standard_normal((256, 3, 64, 64)), 0, 1).astype(np.float32)
    full = _session(model).run(None, {name: x})[0]
    half = _session(to_fp16(model)).run(None, {name: x})[0]
    assert half.dtype == np.float32
    scale = float(np.abs(full).max())
    assert float(np.abs(half - full).max()) < 0.02 * scale
    assert float(np.mean(half.argmax(1) == full.argmax(1))) >= 0.98


def test_fp16_votes_match_float32_votes_in_distribution(small_cnn_path: Path) -> None:
    n = 6000
    full = SmoothingEngine(small_cnn_path, SIGMA, seed=41).sample(GREY, n).counts
    half_engine = SmoothingEngine(small_cnn_path, SIGMA, seed=42, precision="fp16")
    half = half_engine.sample(GREY, n).counts
    assert half_engine.precision == "fp16" and (full > 0).sum() >= 4
    keep = (full + half) > 0
    assert chi2_contingency(np.stack([full[keep], half[keep]]))[1] > 0.001


def test_fp16_certifies_the_shipped_model_like_float32() -> None:
    frame = np.random.default_rng(4).random((3, 64, 64), dtype=np.float32) * 0.2 + 0.4
    full = SmoothingEngine(DEFAULT_MODEL, seed=43).certify(frame, n0=0, n=500)
    half = SmoothingEngine(DEFAULT_MODEL, seed=44, precision="fp16").certify(frame, n0=0, n=500)
    assert half.certificate.label == full.certificate.label
    assert abs(half.certificate.radius - full.certificate.radius) < 0.1
    np.testing.assert_allclose(half.clean_logits, full.clean_logits, atol=0.05, rtol=0.02)


def _tiny(op: str, **attrs: object) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_what_fp16_cannot_convert_exactly_is_refused() -> None:
    with pytest.raises(ModelError, match=r"operator\(s\) \['Erf'\]"):
        to_fp16(_tiny("Erf"))
    big = reference_models.linear_classifier(
        np.full((2, 12), 1e6, np.float32), np.zeros(2, np.float32), (3, 2, 2)
    )
    with pytest.raises(ModelError, match="beyond float16's range"):
        to_fp16(big)
    with pytest.raises(ConfigError, match="precision must be one of"):
        SmoothingEngine(DEFAULT_MODEL, precision="int8")


# -- TensorRT options -----------------------------------------------------------------------------
def test_tensorrt_caches_its_engines_and_never_compiles_the_random_ops(tmp_path: Path) -> None:
    names = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt, cuda, cpu = provider_options(names, tensorrt_cache=tmp_path, fp16=True)
    assert trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == str(tmp_path)
    assert trt["trt_fp16_enable"] == "True"
    assert set(trt["trt_op_types_to_exclude"].split(",")) == set(RANDOM_OPS)
    assert {"RandomNormalLike", "RandomUniformLike"} <= set(RANDOM_OPS)
    assert cuda == {} and cpu == {}
    assert provider_options(names[:1])[0]["trt_fp16_enable"] == "False"
    assert provider_options(names[:1])[0]["trt_engine_cache_path"] == str(default_tensorrt_cache())


def test_the_default_tensorrt_cache_follows_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/me")
    assert default_tensorrt_cache() == Path("/var/cache/me/robust_monitor/tensorrt")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_tensorrt_cache() == Path.home() / ".cache" / "robust_monitor" / "tensorrt"


def test_tensorrt_on_a_build_without_it_is_a_clear_error() -> None:
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        names = resolve_providers("tensorrt")
        assert names[0] == "TensorrtExecutionProvider" and names[-1] == "CPUExecutionProvider"
        if "CUDAExecutionProvider" in ort.get_available_providers():
            assert names[1] == "CUDAExecutionProvider"  # the random ops run there
        return
    with pytest.raises(ConfigError, match="not in this onnxruntime build"):
        resolve_providers("tensorrt")
