"""What the engine needs to know about a perception model, and where it comes from.

A model is an ONNX classifier: input NCHW float32 in [0, 1] pixel scale, output logits [B, K],
optionally a second output of penultimate features [B, D] for Mahalanobis OOD scoring.

The description travels in an optional metadata file beside the model (``model.json`` next to
``model.onnx``)::

    {"format": "robust_monitor.model/1", "name": "roadsigns_s025",
     "classes": ["stop", ...],
     "input": {"name": "image", "shape": [3, 64, 64], "channel_order": "rgb",
               "value_range": [0.0, 1.0]},
     "outputs": {"logits": "logits", "features": "features"},
     "sigma": 0.25, "sha256": "<hex of the .onnx file>"}

Without the file, a bare ONNX classifier still certifies: the input is its only graph input, the
logits its first output, the features an output named ``features`` if there is one, the class
names ``class_0..class_{K-1}``, channel order RGB.
The metadata is checked against the graph; a mismatch is a ModelError that says what differs.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from robust_monitor.core.errors import ModelError

METADATA_FORMAT = "robust_monitor.model/1"
CHANNEL_ORDERS = ("rgb", "bgr")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A classifier's interface: input tensor, outputs, classes and preprocessing."""

    path: Path
    sha256: str
    input_name: str
    input_shape: tuple[int, int, int]
    """(C, H, W) of one frame."""
    logits_name: str
    num_classes: int
    features_name: str | None = None
    classes: tuple[str, ...] = ()
    channel_order: str = "rgb"
    name: str = ""
    sigma: float | None = None
    """The noise level the model was trained for (Cohen et al.: certify at the training sigma)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def class_name(self, label: int) -> str:
        if 0 <= label < len(self.classes):
            return self.classes[label]
        return "abstain" if label < 0 else f"class_{label}"


def _static_dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    return dims


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and check an ONNX file; any failure is a ModelError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    try:
        model = onnx.load(str(p))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ... for corrupt files
        raise ModelError(f"{p} is not a valid ONNX model: {exc}") from exc
    return model


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def load_model_spec(path: str | Path, model: onnx.ModelProto | None = None) -> ModelSpec:
    """Describe the model at ``path`` from its metadata file (if any) and its graph.

    Raises ModelError when the file is missing or corrupt, when the graph is not a single-input
    NCHW classifier, or when the metadata names inputs/outputs/shapes the graph does not have.
    """
    p = Path(path)
    model = model if model is not None else load_onnx(p)
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        raise ModelError(f"{p}: expected exactly one graph input, found {len(inputs)}")
    outputs = {o.name: _static_dims(o) for o in model.graph.output}
    if not outputs:
        raise ModelError(f"{p}: the graph has no outputs")
    meta_path = p.with_suffix(".json")
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: deep nesting
            raise ModelError(f"{meta_path}: unreadable model metadata: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT:
            raise ModelError(f"{meta_path}: 'format' must be {METADATA_FORMAT!r}")

    graph_input = inputs[0]
    in_dims = _static_dims(graph_input)
    meta_input = _object(meta, "input", meta_path)
    input_name = str(meta_input.get("name", graph_input.name))
    if input_name != graph_input.name:
        raise ModelError(
            f"{meta_path}: input name {input_name!r} does not match the graph input "
            f"{graph_input.name!r}"
        )
    if graph_input.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ModelError(f"{p}: input {graph_input.name!r} must be float32")
    if len(in_dims) != 4:
        raise ModelError(f"{p}: input must be NCHW (rank 4), graph has shape {in_dims}")
    chw: list[int | str] = in_dims[1:]
    if "shape" in meta_input:
        want = _int_list(meta_input["shape"], "input.shape", meta_path)
        clash = any(isinstance(g, int) and g != w for g, w in zip(chw, want, strict=False))
        if len(want) != 3 or clash:
            raise ModelError(
                f"{meta_path}: input shape {want} does not match the graph's (C,H,W) {chw}"
            )
        chw = list(want)
    if not all(isinstance(v, int) and v > 0 for v in chw):
        raise ModelError(
            f"{p}: the input's C, H, W must be fixed in the graph or given in the metadata, "
            f"got {chw}"
        )
    c, h, w = (int(v) for v in chw)

    meta_outputs = _object(meta, "outputs", meta_path)
    logits_name = str(meta_outputs.get("logits", model.graph.output[0].name))
    if logits_name not in outputs:
        raise ModelError(f"{p}: logits output {logits_name!r} not among outputs {list(outputs)}")
    logits_dims = outputs[logits_name]
    if len(logits_dims) != 2 or not isinstance(logits_dims[1], int):
        raise ModelError(f"{p}: logits must have shape [B, K] with K fixed, got {logits_dims}")
    num_classes = int(logits_dims[1])
    if num_classes < 2:
        raise ModelError(f"{p}: a classifier needs at least 2 classes, logits have {num_classes}")
    # A bare model's second output counts as features when it is literally named "features".
    default_features = "features" if "features" in outputs and logits_name != "features" else None
    features_name = meta_outputs.get("features", default_features)
    if features_name is not None and not isinstance(features_name, str):
        raise ModelError(f"{meta_path}: outputs.features must be a string, got {features_name!r}")
    if features_name is not None and features_name not in outputs:
        raise ModelError(f"{p}: features output {features_name!r} not among {list(outputs)}")

    raw_classes = meta.get("classes", [])
    if not (isinstance(raw_classes, list) and all(isinstance(x, str) for x in raw_classes)):
        raise ModelError(f"{meta_path}: classes must be a list of strings, got {raw_classes!r}")
    classes = tuple(raw_classes)
    if classes and len(classes) != num_classes:
        raise ModelError(
            f"{meta_path}: {len(classes)} class names for a model with {num_classes} logits"
        )
    channel_order = str(meta_input.get("channel_order", "rgb")).lower()
    if channel_order not in CHANNEL_ORDERS:
        raise ModelError(f"{meta_path}: channel_order must be one of {CHANNEL_ORDERS}")
    value_range = meta_input.get("value_range", [0.0, 1.0])
    if not (isinstance(value_range, list) and all(_is_number(v) for v in value_range)) or [
        float(v) for v in value_range
    ] != [0.0, 1.0]:
        raise ModelError(f"{meta_path}: only value_range [0.0, 1.0] is supported")
    sha = sha256_file(p)
    if "sha256" in meta and str(meta["sha256"]).lower() != sha:
        raise ModelError(
            f"{p}: sha256 {sha} does not match the metadata's {meta['sha256']} "
            "(the model file changed or belongs to other metadata)"
        )
    sigma = meta.get("sigma")
    if sigma is not None and not (_is_number(sigma) and math.isfinite(sigma) and sigma > 0):
        raise ModelError(f"{meta_path}: sigma must be a finite number > 0, got {sigma!r}")
    known = {"format", "name", "classes", "input", "outputs", "sigma", "sha256"}
    return ModelSpec(
        path=p,
        sha256=sha,
        input_name=input_name,
        input_shape=(c, h, w),
        logits_name=logits_name,
        num_classes=num_classes,
        features_name=str(features_name) if features_name is not None else None,
        classes=classes or tuple(f"class_{i}" for i in range(num_classes)),
        channel_order=channel_order,
        name=str(meta.get("name", p.stem)),
        sigma=float(sigma) if sigma is not None else None,
        extra={k: v for k, v in meta.items() if k not in known},
    )


# --- metadata field types: a wrong type is a ModelError that names the key ----------------------
def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _object(meta: dict[str, Any], key: str, meta_path: Path) -> dict[str, Any]:
    value = meta.get(key, {})
    if not isinstance(value, dict):
        raise ModelError(f"{meta_path}: {key!r} must be a JSON object, got {value!r}")
    return value


def _int_list(value: object, key: str, meta_path: Path) -> list[int]:
    if not (
        isinstance(value, list)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ModelError(f"{meta_path}: {key} must be a list of integers, got {value!r}")
    return list(value)
