"""The smoothing graph: one ONNX graph that turns a frame into vote counts.

For one frame ``x`` [C, H, W] and a sample count ``n`` it computes, on the execution provider::

    batch  = concat(x if num_clean else [], x + eps_1, ..., x + eps_n),  eps_i ~ N(0, sigma^2 I)
    logits = f(batch)                                # the user's classifier, inlined
    counts[k] = #{noisy rows i : argmax logits_i = k}   # int64 [K]
    clean_logits = logits[:num_clean]; clean_features = features[:num_clean]   # OOD scoring

so nothing but the frame and two scalars go in and nothing but counts and the clean outputs come
out. The clean frame rides along as row 0 of the first run of a frame (``num_clean = 1``), and
is left out of the others (``num_clean = 0``), which keeps it to one graph.

Noise: ``"normal"`` uses ONNX RandomNormalLike; ``"box_muller"`` builds normals from one
RandomUniformLike stream (``z = sqrt(-2 ln(1-u1)) * (cos, sin)(2 pi u2)``), which on
onnxruntime's CPU provider is about 1.6x faster than RandomNormalLike (whose kernel draws each
value serially through std::normal_distribution). Both are exact Gaussian transforms of their
uniform source; ``1 - u1`` keeps the logarithm's argument in (0, 1].

Seeding: ONNX random ops take a float ``seed`` attribute and, in onnxruntime, keep one generator
per kernel that advances on every run, so successive runs of one session draw fresh noise. The
seed is baked into the graph when it is built (see ``engine.py`` for where it comes from).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from robust_monitor.core.certify.model import ModelSpec
from robust_monitor.core.errors import ModelError

FRAME = "frame"
NUM_NOISY = "num_noisy"
NUM_CLEAN = "num_clean"
COUNTS = "counts"
CLEAN_LOGITS = "clean_logits"
CLEAN_FEATURES = "clean_features"
NOISE_KINDS = ("box_muller", "normal")
_PREFIX = "base/"
_MIN_OPSET = 13  # Unsqueeze/Slice/ReduceSum with tensor inputs


def _const(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(value, name)


def _noise_nodes(
    sigma: float, seed: float, noise: str
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """Nodes that read FRAME and NUM_NOISY and produce ``noise`` [n, C, H, W] ~ N(0, sigma^2)."""
    nodes: list[onnx.NodeProto] = [helper.make_node("Shape", [FRAME], ["frame_shape"])]
    inits: list[TensorProto] = []
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    if noise == "normal":
        nodes += [
            helper.make_node("Concat", [NUM_NOISY, "frame_shape"], ["noise_shape"], axis=0),
            helper.make_node("ConstantOfShape", ["noise_shape"], ["noise_zeros"], value=zero),
            helper.make_node(
                "RandomNormalLike", ["noise_zeros"], ["noise"], mean=0.0, scale=sigma, seed=seed
            ),
        ]
        return nodes, inits
    inits += [
        _const("one_i64", np.array([1], np.int64)),
        _const("two_i64", np.array([2], np.int64)),
        _const("zero_i64", np.array([0], np.int64)),
        _const("one_f", np.array(1.0, np.float32)),
        _const("minus_two_sigma_sq", np.array(-2.0 * sigma * sigma, np.float32)),
        _const("two_pi", np.array(2.0 * math.pi, np.float32)),
    ]
    nodes += [
        # pairs = ceil(n / 2); uniforms shaped [2 * pairs, C, H, W], split into u1 and u2.
        helper.make_node("Add", [NUM_NOISY, "one_i64"], ["n_plus_one"]),
        helper.make_node("Div", ["n_plus_one", "two_i64"], ["pairs"]),
        helper.make_node("Mul", ["pairs", "two_i64"], ["twice_pairs"]),
        helper.make_node("Concat", ["twice_pairs", "frame_shape"], ["uniform_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["uniform_shape"], ["uniform_zeros"], value=zero),
        helper.make_node(
            "RandomUniformLike", ["uniform_zeros"], ["u"], low=0.0, high=1.0, seed=seed
        ),
        helper.make_node("Split", ["u"], ["u1", "u2"], axis=0),
        helper.make_node("Sub", ["one_f", "u1"], ["one_minus_u1"]),
        helper.make_node("Log", ["one_minus_u1"], ["log_u"]),
        helper.make_node("Mul", ["log_u", "minus_two_sigma_sq"], ["r_sq"]),
        helper.make_node("Sqrt", ["r_sq"], ["r"]),
        helper.make_node("Mul", ["u2", "two_pi"], ["theta"]),
        helper.make_node("Cos", ["theta"], ["cos_t"]),
        helper.make_node("Sin", ["theta"], ["sin_t"]),
        helper.make_node("Mul", ["r", "cos_t"], ["z1"]),
        helper.make_node("Mul", ["r", "sin_t"], ["z2"]),
        helper.make_node("Concat", ["z1", "z2"], ["z"], axis=0),
        helper.make_node("Slice", ["z", "zero_i64", NUM_NOISY, "zero_i64"], ["noise"]),
    ]
    return nodes, inits


NOISE_SUM = "noise_sum"


def build_noise_graph(
    shape: tuple[int, int, int], sigma: float, seed: float, noise: str = "box_muller"
) -> onnx.ModelProto:
    """The smoothing graph's noise generation alone, for benchmarks: inputs FRAME [C, H, W] and
    NUM_NOISY, output NOISE_SUM (a scalar, so the noise is made but only 4 bytes leave)."""
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    nodes, inits = _noise_nodes(sigma, seed, noise)
    nodes.append(helper.make_node("ReduceSum", ["noise"], [NOISE_SUM], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "smoothing_noise",
        [
            helper.make_tensor_value_info(FRAME, TensorProto.FLOAT, list(shape)),
            helper.make_tensor_value_info(NUM_NOISY, TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info(NOISE_SUM, TensorProto.FLOAT, [])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # onnxruntime 1.31 reads up to 13
    onnx.checker.check_model(model)
    return model


def build_smoothing_graph(
    base: onnx.ModelProto, spec: ModelSpec, sigma: float, seed: float, noise: str = "box_muller"
) -> onnx.ModelProto:
    """Wrap the classifier ``base`` (described by ``spec``) in the smoothing graph.

    ``seed`` must be a float in [0, 2**31) (the ONNX attribute type); ``noise`` one of
    NOISE_KINDS. The result has inputs FRAME float32 [C, H, W], NUM_NOISY int64 [1] and
    NUM_CLEAN int64 [1] (0 or 1), and outputs COUNTS int64 [K], CLEAN_LOGITS float32
    [num_clean, K] and, when the model has a feature output, CLEAN_FEATURES [num_clean, D].
    """
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    opset = next((o.version for o in base.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < _MIN_OPSET:
        try:
            base = onnx.version_converter.convert_version(base, _MIN_OPSET)
        except Exception as exc:
            raise ModelError(
                f"{spec.path}: opset {opset} could not be converted to {_MIN_OPSET}: {exc}"
            ) from exc
        opset = _MIN_OPSET
    prefixed = onnx.compose.add_prefix(base, _PREFIX)
    g = prefixed.graph
    k = spec.num_classes
    c, h, w = spec.input_shape

    nodes, inits = _noise_nodes(sigma, seed, noise)
    inits += [
        _const("axis0", np.array([0], np.int64)),
        _const("row0_start", np.array([0], np.int64)),
        _const("rest_end", np.array([np.iinfo(np.int64).max], np.int64)),
        _const("depth", np.array(k, np.int64)),
        _const("onehot_values", np.array([0.0, 1.0], np.float32)),
    ]
    base_logits = _PREFIX + spec.logits_name
    nodes += [
        helper.make_node("Unsqueeze", [FRAME, "axis0"], ["clean"]),
        helper.make_node("Add", ["noise", "clean"], ["noisy"]),
        # 0 or 1 clean rows in front of the noisy ones.
        helper.make_node("Slice", ["clean", "row0_start", NUM_CLEAN, "axis0"], ["clean_rows"]),
        helper.make_node("Concat", ["clean_rows", "noisy"], [_PREFIX + spec.input_name], axis=0),
    ]
    nodes += list(g.node)
    nodes += [
        helper.make_node("Slice", [base_logits, "row0_start", NUM_CLEAN, "axis0"], [CLEAN_LOGITS]),
        helper.make_node("Slice", [base_logits, NUM_CLEAN, "rest_end", "axis0"], ["noisy_logits"]),
        helper.make_node("ArgMax", ["noisy_logits"], ["votes"], axis=1, keepdims=0),
        helper.make_node("OneHot", ["votes", "depth", "onehot_values"], ["onehot"], axis=-1),
        helper.make_node("ReduceSum", ["onehot", "axis0"], ["counts_f"], keepdims=0),
        helper.make_node("Cast", ["counts_f"], [COUNTS], to=TensorProto.INT64),
    ]
    outputs = [
        helper.make_tensor_value_info(COUNTS, TensorProto.INT64, [k]),
        helper.make_tensor_value_info(CLEAN_LOGITS, TensorProto.FLOAT, ["num_clean", k]),
    ]
    if spec.features_name is not None:
        feats = _PREFIX + spec.features_name
        nodes.append(
            helper.make_node("Slice", [feats, "row0_start", NUM_CLEAN, "axis0"], [CLEAN_FEATURES])
        )
        dims = [
            d.dim_value if d.HasField("dim_value") else "feature_dim"
            for out in g.output
            if out.name == feats
            for d in out.type.tensor_type.shape.dim[1:]
        ]
        outputs.append(
            helper.make_tensor_value_info(CLEAN_FEATURES, TensorProto.FLOAT, ["num_clean", *dims])
        )
    graph = helper.make_graph(
        nodes,
        "randomized_smoothing",
        [
            helper.make_tensor_value_info(FRAME, TensorProto.FLOAT, [c, h, w]),
            helper.make_tensor_value_info(NUM_NOISY, TensorProto.INT64, [1]),
            helper.make_tensor_value_info(NUM_CLEAN, TensorProto.INT64, [1]),
        ],
        outputs,
        initializer=list(g.initializer) + inits,
        value_info=list(g.value_info),
    )
    opsets = [o for o in prefixed.opset_import if o.domain not in ("", "ai.onnx")]
    opsets.append(helper.make_opsetid("", max(opset, _MIN_OPSET)))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="robust_monitor")
    model.functions.extend(prefixed.functions)
    # onnxruntime 1.31 reads IR versions up to 13; onnx >= 1.20 writes 14 by default.
    model.ir_version = min(max(base.ir_version, 8), 10)
    onnx.checker.check_model(model)
    return model
