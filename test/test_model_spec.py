"""Model metadata: optional, checked against the graph, with errors that say what differs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from robust_monitor.core.certify.model import METADATA_FORMAT, load_model_spec, sha256_file
from robust_monitor.core.errors import ModelError


@pytest.fixture()
def model(tmp_path: Path, small_cnn_path: Path) -> Path:
    target = tmp_path / "m.onnx"
    shutil.copy(small_cnn_path, target)
    return target


def write_meta(model: Path, **overrides: object) -> None:
    meta: dict[str, object] = {
        "format": METADATA_FORMAT,
        "name": "m",
        "classes": [f"c{i}" for i in range(8)],
        "input": {
            "name": "image",
            "shape": [3, 64, 64],
            "channel_order": "rgb",
            "value_range": [0.0, 1.0],
        },
        "outputs": {"logits": "logits", "features": "features"},
        "sigma": 0.25,
        "sha256": sha256_file(model),
    }
    meta.update(overrides)
    model.with_suffix(".json").write_text(json.dumps(meta))


def test_bare_model_gets_defaults_from_its_graph(model: Path) -> None:
    spec = load_model_spec(model)
    assert spec.input_shape == (3, 64, 64) and spec.num_classes == 8
    assert spec.features_name == "features" and spec.sigma is None
    assert spec.classes[0] == "class_0" and spec.channel_order == "rgb"


def test_metadata_is_read(model: Path) -> None:
    write_meta(model, channel_order="rgb")
    spec = load_model_spec(model)
    assert spec.classes[3] == "c3" and spec.sigma == 0.25 and spec.class_name(-1) == "abstain"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"classes": ["a", "b"]}, "2 class names for a model with 8 logits"),
        ({"input": {"name": "pixels"}}, "does not match the graph input"),
        ({"input": {"name": "image", "shape": [3, 32, 32]}}, "does not match the graph's"),
        ({"outputs": {"logits": "scores"}}, "logits output 'scores' not among"),
        ({"outputs": {"logits": "logits", "features": "embedding"}}, "features output 'embedding'"),
        ({"sha256": "0" * 64}, "sha256"),
        ({"format": "something/else"}, "format"),
        ({"input": {"name": "image", "channel_order": "yuv"}}, "channel_order"),
    ],
)
def test_metadata_that_does_not_match_the_graph(
    model: Path, overrides: dict[str, object], message: str
) -> None:
    write_meta(model, **overrides)
    with pytest.raises(ModelError, match=message):
        load_model_spec(model)


def test_unreadable_metadata(model: Path) -> None:
    model.with_suffix(".json").write_text("{ not json")
    with pytest.raises(ModelError, match="unreadable model metadata"):
        load_model_spec(model)
