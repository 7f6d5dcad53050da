"""Half-precision classifiers for the smoothing graph.

``to_fp16`` rewrites a float32 classifier so that its weights and arithmetic are float16 while
its interface stays float32: a Cast to float16 after each float input and a Cast back to float32
before each float output. The smoothing graph (``graph.py``) inlines it unchanged, so the noise,
the lattice and the vote count stay float32, and only the classifier runs in half precision.

Why the certificate stays sound: Cohen's theorem holds for any deterministic base classifier.
The half-precision model reads each noisy input after a fixed rounding (float32 to float16), so
it is ``f16 = f' o round``, one fixed function of the exact Gaussian translate of the frame on
the lattice; the smoothed ``f16`` is certified, and it is what the monitor then runs. What
changes is the classifier: its votes and clean logits differ a little from the float32 model's,
so an OOD calibration made with float32 logits is close to, not exactly, right for it
(recalibrate with the precision you deploy).

Only operators whose float16 kernels are plain arithmetic on the same tensors are converted
(``FP16_OPS``); any other operator, a float64 tensor, a weight beyond float16's range or a
subgraph is refused with a ModelError, rather than silently converted wrong.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from robust_monitor.core.errors import ModelError

PRECISIONS = ("fp32", "fp16")
FP16_OPS = frozenset(
    {
        "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Conv", "Div", "Flatten",
        "Gemm", "GlobalAveragePool", "Identity", "LeakyRelu", "MatMul", "MaxPool", "Mul",
        "Relu", "Reshape", "Sigmoid", "Softmax", "Sub", "Tanh", "Transpose",
    }
)  # fmt: skip
"""Operators converted to float16: the same computation on float16 tensors (shape inputs such
as Reshape's stay int64)."""
_FP16_MAX = float(np.finfo(np.float16).max)
_SUFFIX = "/fp16"


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with float16 weights and arithmetic and the same float32 inputs and
    outputs (names, shapes and types unchanged). Raises ModelError for what it cannot convert
    exactly (see the module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    unsupported = sorted({n.op_type for n in graph.node} - FP16_OPS)
    if unsupported:
        raise ModelError(
            f"cannot convert to fp16: operator(s) {unsupported} are not in the supported set "
            f"{sorted(FP16_OPS)}; run this model in fp32"
        )
    for node in graph.node:
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            raise ModelError(f"cannot convert to fp16: node {node.name!r} has a subgraph")
    for init in graph.initializer:
        if init.data_type == TensorProto.DOUBLE:
            raise ModelError(f"cannot convert to fp16: initializer {init.name!r} is float64")
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        if values.size and float(np.abs(values).max()) > _FP16_MAX:
            raise ModelError(
                f"cannot convert to fp16: initializer {init.name!r} holds values beyond "
                f"float16's range ({_FP16_MAX:g})"
            )
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), init.name))
    weights = {init.name for init in graph.initializer}
    casts_in: list[onnx.NodeProto] = []
    renamed: dict[str, str] = {}
    for value in graph.input:
        if value.name in weights:
            continue
        kind = value.type.tensor_type.elem_type
        if kind == TensorProto.DOUBLE:
            raise ModelError(f"cannot convert to fp16: input {value.name!r} is float64")
        if kind == TensorProto.FLOAT:
            renamed[value.name] = value.name + _SUFFIX
            casts_in.append(
                helper.make_node(
                    "Cast",
                    [value.name],
                    [value.name + _SUFFIX],
                    to=TensorProto.FLOAT16,
                    name=f"{value.name}{_SUFFIX}/cast_in",
                )
            )
    produced: dict[str, str] = {}
    for value in graph.output:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            produced[value.name] = value.name + _SUFFIX
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [produced.get(name, name) for name in node.output]
    # A float output that is also read inside the graph: its readers take the float16 value.
    for node in graph.node:
        node.input[:] = [produced.get(name, name) for name in node.input]
    casts_out = [
        helper.make_node(
            "Cast", [half], [name], to=TensorProto.FLOAT, name=f"{name}{_SUFFIX}/cast_out"
        )
        for name, half in produced.items()
    ]
    nodes = [*casts_in, *graph.node, *casts_out]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # intermediate types changed; onnxruntime infers them again
    try:
        onnx.checker.check_model(out)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the fp16 conversion produced an invalid model: {exc}") from exc
    return out
