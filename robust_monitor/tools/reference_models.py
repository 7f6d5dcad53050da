"""Small ONNX models built by the project, for tests and benchmarks.

- ``linear_classifier``: ``f(x) = argmax(W flatten(x) + b)``. For two classes its smoothed
  class probability and its exact certified radius have closed forms (see ``linear_truth``),
  which is what the soundness tests compare against.
- ``small_cnn``: a compact convolutional classifier with a feature output and random weights
  (throughput and count distributions do not depend on the weights being trained).

Every model is written with ``ir_version`` 10: onnx >= 1.20 writes IR 14 by default and
onnxruntime 1.31 reads up to 13.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from scipy.stats import norm

IR_VERSION = 10
OPSET = 17


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(p))
    return p


def linear_classifier(
    weights: np.ndarray, bias: np.ndarray, input_shape: tuple[int, int, int]
) -> onnx.ModelProto:
    """``logits = flatten(x) @ weights.T + bias`` for x of shape [B, C, H, W]."""
    w = np.asarray(weights, np.float32)
    b = np.asarray(bias, np.float32)
    k, d = w.shape
    if d != math.prod(input_shape):
        raise ValueError(f"weights have {d} columns, input has {math.prod(input_shape)} values")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "b"], ["logits"], transB=1),
        ],
        "linear",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    return _finish(graph)


def linear_truth(
    weights: np.ndarray, bias: np.ndarray, x: np.ndarray, sigma: float
) -> tuple[int, float, float]:
    """Closed forms for a two-class linear model at input ``x``.

    Returns ``(label, p_smoothed, true_radius)``: the base (= smoothed) class, the smoothed
    probability of that class ``Phi(|margin| / (sigma ||w1 - w0||))``, and the exact certified
    L2 radius ``|margin| / ||w1 - w0||`` (the distance to the decision hyperplane).
    """
    w = np.asarray(weights, np.float64)
    b = np.asarray(bias, np.float64)
    if w.shape[0] != 2:
        raise ValueError("closed forms hold for two classes")
    dw = w[1] - w[0]
    margin = float(dw @ np.asarray(x, np.float64).ravel() + (b[1] - b[0]))
    scale = float(np.linalg.norm(dw))
    label = 1 if margin > 0 else 0
    distance = abs(margin) / scale
    return label, float(norm.cdf(distance / sigma)), distance


def _conv(name: str, x: str, cin: int, cout: int, rng: np.random.Generator, stride: int = 1):  # type: ignore[no-untyped-def]
    w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * np.float32(
        math.sqrt(2.0 / (cin * 9))
    )
    b = (rng.standard_normal(cout) * 0.05).astype(np.float32)
    node = helper.make_node(
        "Conv", [x, f"{name}_w", f"{name}_b"], [name], pads=[1, 1, 1, 1], strides=[stride, stride]
    )
    return node, [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]


def small_cnn(
    num_classes: int = 8,
    input_shape: tuple[int, int, int] = (3, 64, 64),
    widths: tuple[int, ...] = (16, 32, 64),
    seed: int = 0,
    logit_scale: float = 1.0,
    head_bias: np.ndarray | None = None,
) -> onnx.ModelProto:
    """Conv-ReLU-MaxPool blocks, global average pool, a linear head.

    Outputs ``logits`` [B, K] and ``features`` [B, widths[-1]] (the pooled penultimate layer).
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    x, cin = "image", input_shape[0]
    for i, cout in enumerate(widths):
        node, params = _conv(f"conv{i}", x, cin, cout, rng)
        nodes += [
            node,
            helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]),
            helper.make_node(
                "MaxPool", [f"relu{i}"], [f"pool{i}"], kernel_shape=[2, 2], strides=[2, 2]
            ),
        ]
        inits += params
        x, cin = f"pool{i}", cout
    head_w = rng.standard_normal((cin, num_classes)).astype(np.float32) * np.float32(logit_scale)
    head_b = (rng.standard_normal(num_classes) * 0.1).astype(np.float32)
    if head_bias is not None:
        head_b = np.asarray(head_bias, np.float32).reshape(num_classes)
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["features"], axis=1),
        helper.make_node("Gemm", ["features", "head_w", "head_b"], ["logits"]),
    ]
    inits += [numpy_helper.from_array(head_w, "head_w"), numpy_helper.from_array(head_b, "head_b")]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", *input_shape])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", cin]),
        ],
        inits,
    )
    return _finish(graph)
