"""Small ONNX models built by the project, for tests and benchmarks.

- ``linear_classifier``: ``f(x) = argmax(W flatten(x) + b)``. For two classes its smoothed
  class probability and its exact certified radius have closed forms (see ``linear_truth``),
  which is what the soundness tests compare against.
- ``small_cnn``: a compact convolutional classifier with a feature output and random weights
  (throughput and count distributions do not depend on the weights being trained).
- ``resnet_cifar`` (ResNet-110 at 32x32) and ``resnet18`` (224x224): the reference sizes of the
  GPU issue, random He-initialised weights with BatchNorm folded into the convolutions; written
  by ``python -m robust_monitor.tools.reference_models --out DIR`` for ``bench --model``.

Every model is written with ``ir_version`` 10: onnx >= 1.20 writes IR 14 by default and
onnxruntime 1.31 reads up to 13.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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


# -- reference ResNets for GPU and CPU measurement (random weights) -------------------------------
class _Builder:
    """Collects nodes and He-initialised weights (BatchNorm folded into the convolutions, as an
    inference export does); throughput does not depend on the weights being trained."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}{self._count}"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, gain: float = 1.0) -> str:
        name = self._name("conv")
        std = gain * math.sqrt(2.0 / (cin * k * k))
        w = (self.rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32)
        b = np.zeros(cout, np.float32)
        self.inits += [
            numpy_helper.from_array(w, f"{name}_w"),
            numpy_helper.from_array(b, f"{name}_b"),
        ]
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}_w", f"{name}_b"],
                [name],
                pads=[pad] * 4,
                strides=[stride, stride],
                kernel_shape=[k, k],
            )
        )
        return name

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        name = self._name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [name], **attrs))
        return name

    def basic_block(self, x: str, cin: int, cout: int, stride: int) -> str:
        """Two 3x3 convolutions and the identity (or a strided 1x1 projection) added back. The
        second convolution is scaled down so that random deep stacks keep finite activations."""
        h = self.op("Relu", [self.conv(x, cin, cout, 3, stride)])
        h = self.conv(h, cout, cout, 3, 1, gain=0.2)
        skip = x if (stride == 1 and cin == cout) else self.conv(x, cin, cout, 1, stride)
        return self.op("Relu", [self.op("Add", [h, skip])])

    def head(
        self, x: str, width: int, num_classes: int, input_shape: tuple[int, int, int], name: str
    ) -> onnx.ModelProto:
        gap = self.op("GlobalAveragePool", [x])
        self.nodes.append(helper.make_node("Flatten", [gap], ["features"], axis=1))
        w = (self.rng.standard_normal((width, num_classes)) / math.sqrt(width)).astype(np.float32)
        self.inits += [
            numpy_helper.from_array(w, "head_w"),
            numpy_helper.from_array(np.zeros(num_classes, np.float32), "head_b"),
        ]
        self.nodes.append(helper.make_node("Gemm", ["features", "head_w", "head_b"], ["logits"]))
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", *input_shape])],
            [
                helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes]),
                helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", width]),
            ],
            self.inits,
        )
        return _finish(graph)


def resnet_cifar(depth: int = 110, num_classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """He et al. (2016)'s CIFAR ResNet of ``depth = 6 n + 2`` layers (110: n = 18 basic blocks
    per stage, widths 16/32/64, about 1.7 M parameters), input [B, 3, 32, 32]: the size of the
    model Cohen et al. certify on CIFAR-10."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6 n + 2 with n >= 1, got {depth}")
    blocks = (depth - 2) // 6
    b = _Builder(seed)
    x, cin = b.op("Relu", [b.conv("image", 3, 16, 3, 1)]), 16
    for stage, width in enumerate((16, 32, 64)):
        for i in range(blocks):
            stride = 2 if (stage > 0 and i == 0) else 1
            x, cin = b.basic_block(x, cin, width, stride), width
    return b.head(x, cin, num_classes, (3, 32, 32), f"resnet{depth}_cifar")


def resnet18(num_classes: int = 1000, input_size: int = 224, seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 (He et al. 2016): 7x7 stem, max-pool, four stages of two basic blocks (widths
    64-512), about 11.7 M parameters at 1,000 classes; input [B, 3, input_size, input_size]."""
    b = _Builder(seed)
    x = b.op("Relu", [b.conv("image", 3, 64, 7, 2)])
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for i in range(2):
            stride = 2 if (stage > 0 and i == 0) else 1
            x, cin = b.basic_block(x, cin, width, stride), width
    return b.head(x, cin, num_classes, (3, input_size, input_size), "resnet18")


def parameter_count(model: onnx.ModelProto) -> int:
    """Number of weights in the model's initialisers."""
    return int(sum(np.prod(t.dims) for t in model.graph.initializer))


def main(argv: list[str] | None = None) -> int:
    """``python -m robust_monitor.tools.reference_models --out DIR``: write the reference ResNets
    (``resnet110_cifar.onnx``, 32x32; ``resnet18.onnx``, 224x224) for ``robust-monitor bench
    --model``. They are built, not shipped: ResNet-18 is 47 MB."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the models to")
    parser.add_argument("--seed", type=int, default=0, help="weight seed")
    args = parser.parse_args(argv)
    for name, model in (
        ("resnet110_cifar.onnx", resnet_cifar(110, seed=args.seed)),
        ("resnet18.onnx", resnet18(seed=args.seed)),
    ):
        path = save(model, args.out / name)
        print(f"{path}: {parameter_count(model):,} parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
