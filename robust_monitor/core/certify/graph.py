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

Floating point (Voracek & Hein, ICLR 2023): in float32, ``x + eps`` is rounded, and how it is
rounded depends on where ``x`` sits, so the noisy inputs around two frames are not exact
translates of each other, which the Neyman-Pearson argument behind the radius assumes; a
classifier can read the rounding pattern and earn a false certificate. With ``lattice_step``
(the default, ``LATTICE_STEP`` = 2^-16) the graph puts both on one dyadic lattice: the frame is
snapped, ``q(x) = round(x / s) * s``, and so is every noise draw, ``q(eps)``. Powers of two
scale exactly and the sum of two lattice points below 2^8 in magnitude is exact in float32, so
``q(x) + q(eps) = q(q(x) + eps)`` holds bit for bit: the classifier sees ``f(q(q(x) + eps))``,
a fixed function of the exact Gaussian translate of ``q(x)``, and Cohen's theorem applies to
``f o q`` with nothing left to round. Snapping moves the frame by at most ``s/2`` per
coordinate, so the engine subtracts ``s * sqrt(d)`` from every radius (0.0017 for 3x64x64) to
cover any frame within the radius of the original one (``SmoothingEngine.radius_margin``).
What stays: the Gaussian itself comes from onnxruntime's float32 generator, not from exact
sampling (the paper's fair-coin construction); its imperfections do not depend on the frame.

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
LATTICE_STEP = 2.0**-16
"""Default lattice step (model-input units): fine against sigma, exact sums below 2^8."""
_PREFIX = "base/"
_MIN_OPSET = 13  # Unsqueeze/Slice/ReduceSum with tensor inputs


def _const(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(value, name)


def check_lattice_step(step: float | None) -> None:
    """A lattice step must be a power of two in [2^-24, 2^-8] (exact scaling, exact sums)."""
    if step is None:
        return
    if not (isinstance(step, float) and math.isfinite(step) and step > 0):
        raise ValueError(f"lattice_step must be None or a power of two > 0, got {step!r}")
    mantissa, exponent = math.frexp(step)
    if mantissa != 0.5 or not -24 <= exponent - 1 <= -8:
        raise ValueError(f"lattice_step must be a power of two in [2^-24, 2^-8], got {step!r}")


def _lattice_nodes(
    source: str, target: str, step: float
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """``target = round(source / step) * step`` (exact: ``step`` is a power of two)."""
    inits = [
        _const(f"{target}_inv_step", np.array(1.0 / step, np.float32)),
        _const(f"{target}_step", np.array(step, np.float32)),
    ]
    nodes = [
        helper.make_node("Mul", [source, f"{target}_inv_step"], [f"{target}_scaled"]),
        helper.make_node("Round", [f"{target}_scaled"], [f"{target}_rounded"]),
        helper.make_node("Mul", [f"{target}_rounded", f"{target}_step"], [target]),
    ]
    return nodes, inits


def _noise_nodes(
    sigma: float, seed: float, noise: str, lattice_step: float | None = None
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """Nodes that read FRAME and NUM_NOISY and produce ``noise`` [n, C, H, W] ~ N(0, sigma^2),
    snapped to the lattice when ``lattice_step`` is given."""
    raw = "noise_raw" if lattice_step is not None else "noise"
    nodes, inits = _raw_noise_nodes(sigma, seed, noise, raw)
    if lattice_step is not None:
        more_nodes, more_inits = _lattice_nodes(raw, "noise", lattice_step)
        nodes += more_nodes
        inits += more_inits
    return nodes, inits


def _uniform_nodes(seed: float) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """Nodes that read NUM_NOISY and ``frame_shape`` and draw ``u`` [2 * ceil(n / 2), C, H, W]
    ~ U(0, 1): the uniforms Box-Muller transforms, one per noise value (one more when n is odd)."""
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    inits = [
        _const("one_i64", np.array([1], np.int64)),
        _const("two_i64", np.array([2], np.int64)),
    ]
    nodes = [
        helper.make_node("Add", [NUM_NOISY, "one_i64"], ["n_plus_one"]),
        helper.make_node("Div", ["n_plus_one", "two_i64"], ["pairs"]),
        helper.make_node("Mul", ["pairs", "two_i64"], ["twice_pairs"]),
        helper.make_node("Concat", ["twice_pairs", "frame_shape"], ["uniform_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["uniform_shape"], ["uniform_zeros"], value=zero),
        helper.make_node(
            "RandomUniformLike", ["uniform_zeros"], ["u"], low=0.0, high=1.0, seed=seed
        ),
    ]
    return nodes, inits


def _raw_noise_nodes(
    sigma: float, seed: float, noise: str, out: str
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    nodes: list[onnx.NodeProto] = [helper.make_node("Shape", [FRAME], ["frame_shape"])]
    inits: list[TensorProto] = []
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    if noise == "normal":
        nodes += [
            helper.make_node("Concat", [NUM_NOISY, "frame_shape"], ["noise_shape"], axis=0),
            helper.make_node("ConstantOfShape", ["noise_shape"], ["noise_zeros"], value=zero),
            helper.make_node(
                "RandomNormalLike", ["noise_zeros"], [out], mean=0.0, scale=sigma, seed=seed
            ),
        ]
        return nodes, inits
    uniform_nodes, inits = _uniform_nodes(seed)
    nodes += uniform_nodes
    inits += [
        _const("zero_i64", np.array([0], np.int64)),
        _const("one_f", np.array(1.0, np.float32)),
        _const("minus_two_sigma_sq", np.array(-2.0 * sigma * sigma, np.float32)),
        _const("two_pi", np.array(2.0 * math.pi, np.float32)),
    ]
    nodes += [
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
        helper.make_node("Slice", ["z", "zero_i64", NUM_NOISY, "zero_i64"], [out]),
    ]
    return nodes, inits


NOISE_SUM = "noise_sum"
NOISY = "noisy"


def _noisy_nodes(
    sigma: float, seed: float, noise: str, lattice_step: float | None
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """Nodes that read FRAME and NUM_NOISY and produce ``clean`` [1, C, H, W] (the frame as
    given, for the clean pass) and NOISY [n, C, H, W]: the frame (snapped to the lattice when
    there is one) plus noise, what the classifier sees."""
    nodes, inits = _noise_nodes(sigma, seed, noise, lattice_step)
    inits.append(_const("clean_axis", np.array([0], np.int64)))
    nodes.append(helper.make_node("Unsqueeze", [FRAME, "clean_axis"], ["clean"]))
    centre = "clean"
    if lattice_step is not None:
        centre = "clean_on_lattice"
        more_nodes, more_inits = _lattice_nodes("clean", centre, lattice_step)
        nodes += more_nodes
        inits += more_inits
    nodes.append(helper.make_node("Add", ["noise", centre], [NOISY]))
    return nodes, inits


def _check_kinds(noise: str, lattice_step: float | None) -> None:
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    check_lattice_step(lattice_step)


def _noise_only_model(
    name: str,
    shape: tuple[int, int, int],
    nodes: list[onnx.NodeProto],
    inits: list[TensorProto],
    output: onnx.ValueInfoProto,
) -> onnx.ModelProto:
    """A checked model with inputs FRAME [C, H, W] and NUM_NOISY and the one ``output``."""
    graph = helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info(FRAME, TensorProto.FLOAT, list(shape)),
            helper.make_tensor_value_info(NUM_NOISY, TensorProto.INT64, [1]),
        ],
        [output],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # onnxruntime 1.31 reads up to 13
    onnx.checker.check_model(model)
    return model


def build_noisy_inputs_graph(
    shape: tuple[int, int, int],
    sigma: float,
    seed: float,
    noise: str = "box_muller",
    lattice_step: float | None = LATTICE_STEP,
) -> onnx.ModelProto:
    """The smoothing graph up to the classifier's input: inputs FRAME [C, H, W] and NUM_NOISY,
    output NOISY [n, C, H, W], the noisy copies exactly as the classifier receives them (for
    inspection and for the floating-point tests)."""
    _check_kinds(noise, lattice_step)
    nodes, inits = _noisy_nodes(sigma, seed, noise, lattice_step)
    output = helper.make_tensor_value_info(NOISY, TensorProto.FLOAT, ["n", *shape])
    return _noise_only_model("smoothing_noisy_inputs", shape, nodes, inits, output)


def build_noise_graph(
    shape: tuple[int, int, int],
    sigma: float,
    seed: float,
    noise: str = "box_muller",
    lattice_step: float | None = LATTICE_STEP,
) -> onnx.ModelProto:
    """The smoothing graph's noise generation alone, for benchmarks: inputs FRAME [C, H, W] and
    NUM_NOISY, output NOISE_SUM (a scalar, so the noise is made but only 4 bytes leave)."""
    _check_kinds(noise, lattice_step)
    nodes, inits = _noise_nodes(sigma, seed, noise, lattice_step)
    nodes.append(helper.make_node("ReduceSum", ["noise"], [NOISE_SUM], keepdims=0))
    output = helper.make_tensor_value_info(NOISE_SUM, TensorProto.FLOAT, [])
    return _noise_only_model("smoothing_noise", shape, nodes, inits, output)


def build_uniform_draw_graph(shape: tuple[int, int, int], seed: float) -> onnx.ModelProto:
    """The Box-Muller noise graph's uniform draw alone, for benchmarks: inputs and output as
    ``build_noise_graph``; NOISE_SUM is the sum of the uniforms (what the transform costs is
    the noise graph's time less this one's)."""
    nodes, inits = _uniform_nodes(seed)
    nodes.insert(0, helper.make_node("Shape", [FRAME], ["frame_shape"]))
    nodes.append(helper.make_node("ReduceSum", ["u"], [NOISE_SUM], keepdims=0))
    output = helper.make_tensor_value_info(NOISE_SUM, TensorProto.FLOAT, [])
    return _noise_only_model("smoothing_uniform_draw", shape, nodes, inits, output)


def build_smoothing_graph(
    base: onnx.ModelProto,
    spec: ModelSpec,
    sigma: float,
    seed: float,
    noise: str = "box_muller",
    lattice_step: float | None = LATTICE_STEP,
) -> onnx.ModelProto:
    """Wrap the classifier ``base`` (described by ``spec``) in the smoothing graph.

    ``seed`` must be a float in [0, 2**31) (the ONNX attribute type); ``noise`` one of
    NOISE_KINDS; ``lattice_step`` a power of two (frame and noise on one lattice, see the module
    docstring) or None (plain float32 ``x + eps``, unsound in floating point). The result has
    inputs FRAME float32 [C, H, W], NUM_NOISY int64 [1] and NUM_CLEAN int64 [1] (0 or 1), and
    outputs COUNTS int64 [K], CLEAN_LOGITS float32 [num_clean, K] and, when the model has a
    feature output, CLEAN_FEATURES [num_clean, D].
    """
    _check_kinds(noise, lattice_step)
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

    nodes, inits = _noisy_nodes(sigma, seed, noise, lattice_step)
    inits += [
        _const("axis0", np.array([0], np.int64)),
        _const("row0_start", np.array([0], np.int64)),
        _const("rest_end", np.array([np.iinfo(np.int64).max], np.int64)),
        _const("depth", np.array(k, np.int64)),
        _const("onehot_values", np.array([0.0, 1.0], np.float32)),
    ]
    base_logits = _PREFIX + spec.logits_name
    nodes += [
        # 0 or 1 clean rows in front of the noisy ones.
        helper.make_node("Slice", ["clean", "row0_start", NUM_CLEAN, "axis0"], ["clean_rows"]),
        helper.make_node("Concat", ["clean_rows", NOISY], [_PREFIX + spec.input_name], axis=0),
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
