"""The synthetic data: road-sign renders and driving scenes are deterministic, labelled and sane."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from robust_monitor.core.errors import ConfigError, InputError
from robust_monitor.synth.roadsigns import (
    CLASSES,
    NO_SIGN,
    image_rng,
    label_of,
    render_dataset,
    render_item,
    render_sign,
    sign_canvas,
)
from robust_monitor.synth.scene import (
    DEFAULT_ROI,
    RoadScene,
    Roi,
    SignPlacement,
    crop_roi,
    default_signs,
)


def test_class_list_is_the_contract() -> None:
    assert CLASSES == (
        "stop",
        "yield",
        "no_entry",
        "speed_limit_30",
        "speed_limit_50",
        "pedestrian_crossing",
        "priority_road",
        "no_sign",
    )
    assert CLASSES[NO_SIGN] == "no_sign"


def test_same_seed_and_index_give_the_same_image() -> None:
    a, la = render_item(seed=11, index=5)
    b, lb = render_item(seed=11, index=5)
    assert la == lb == label_of(5)
    np.testing.assert_array_equal(a, b)


def test_other_index_or_seed_gives_another_image() -> None:
    base, _ = render_item(seed=11, index=5)
    other_index, _ = render_item(seed=11, index=13)  # same class (13 % 8 == 5)
    other_seed, _ = render_item(seed=12, index=5)
    assert not np.array_equal(base, other_index)
    assert not np.array_equal(base, other_seed)


def test_dataset_shapes_dtypes_and_balance() -> None:
    images, labels = render_dataset(40, seed=3)
    assert images.shape == (40, 64, 64, 3) and images.dtype == np.uint8
    assert labels.shape == (40,) and labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels, minlength=len(CLASSES)), [5] * len(CLASSES))
    odd, odd_labels = render_dataset(13, seed=3, start=3)
    counts = np.bincount(odd_labels, minlength=len(CLASSES))
    assert counts.max() - counts.min() <= 1
    # A slice of a data set is the same images as the whole set's slice.
    np.testing.assert_array_equal(odd[:5], images[3:8])


def test_parallel_rendering_gives_the_same_images() -> None:
    serial, serial_labels = render_dataset(96, seed=4)
    parallel, parallel_labels = render_dataset(96, seed=4, workers=2)
    np.testing.assert_array_equal(serial, parallel)
    np.testing.assert_array_equal(serial_labels, parallel_labels)


@pytest.mark.parametrize("class_id", range(len(CLASSES)))
def test_every_class_renders(class_id: int) -> None:
    image = render_sign(image_rng(21, class_id), class_id)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 5.0, "a render should not be flat"
    big = render_sign(image_rng(21, class_id), class_id, size=96)
    assert big.shape == (96, 96, 3)


# Minimum fraction of each paint inside each sign's mask: catches a sign drawn as the wrong class.
_PAINT = {
    "stop": {"red": 0.6, "white": 0.15},
    "yield": {"red": 0.5, "white": 0.3},
    "no_entry": {"red": 0.75, "white": 0.1},
    "speed_limit_30": {"red": 0.3, "white": 0.4, "black": 0.05},
    "speed_limit_50": {"red": 0.3, "white": 0.4, "black": 0.05},
    "pedestrian_crossing": {"blue": 0.5, "white": 0.2, "black": 0.03},
    "priority_road": {"yellow": 0.35, "white": 0.4, "black": 0.03},
}


@pytest.mark.parametrize("name", list(_PAINT))
def test_sign_canvas_shape_and_colours(name: str) -> None:
    rgba = sign_canvas(CLASSES.index(name))
    mask = rgba[..., 3] > 0.5
    assert 0.3 < mask.mean() < 0.95, "the sign should fill a good part of its canvas"
    r, g, b = rgba[..., :3][mask].T
    paint = {
        "red": (r > 0.5) & (g < 0.3) & (b < 0.3),
        "white": np.minimum(np.minimum(r, g), b) > 0.8,
        "blue": (b > 0.5) & (r < 0.3),
        "yellow": (r > 0.8) & (g > 0.6) & (b < 0.3),
        "black": np.maximum(np.maximum(r, g), b) < 0.2,
    }
    for colour, minimum in _PAINT[name].items():
        assert paint[colour].mean() >= minimum, f"{name}: too little {colour}"
    for colour in set(paint) - set(_PAINT[name]):
        assert paint[colour].mean() < 0.01, f"{name}: unexpected {colour}"


def test_speed_limits_differ_only_in_the_digits() -> None:
    a = sign_canvas(CLASSES.index("speed_limit_30"))
    b = sign_canvas(CLASSES.index("speed_limit_50"))
    np.testing.assert_array_equal(a[..., 3], b[..., 3])
    assert np.abs(a - b).max() > 0.5


def test_invalid_arguments_are_config_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="class_id"):
        render_sign(rng, len(CLASSES))
    with pytest.raises(ConfigError, match="size"):
        render_sign(rng, 0, size=4)
    with pytest.raises(ConfigError, match="sign class"):
        sign_canvas(NO_SIGN)
    with pytest.raises(ConfigError, match="seed"):
        image_rng(-1, 0)


# ------------------------------------------------------------------------------------- scenes


@pytest.fixture(scope="module")
def one_sign_scene() -> RoadScene:
    return RoadScene(seed=5, speed_mps=6.0, signs=(SignPlacement(class_id=0, position_m=40.0),))


def test_scene_frame_shape_and_determinism(one_sign_scene: RoadScene) -> None:
    frame = one_sign_scene.render(2.0)
    assert frame.image.shape == (240, 320, 3) and frame.image.dtype == np.uint8
    again = RoadScene(seed=5, speed_mps=6.0, signs=one_sign_scene.signs).render(2.0)
    np.testing.assert_array_equal(frame.image, again.image)
    other = RoadScene(seed=6, speed_mps=6.0, signs=one_sign_scene.signs).render(2.0)
    assert not np.array_equal(frame.image, other.image)
    assert frame.odometer_m == pytest.approx(12.0)


def test_sign_grows_and_moves_to_the_edge_as_it_approaches(one_sign_scene: RoadScene) -> None:
    times = np.arange(0.0, 6.0, 0.5)
    views = [one_sign_scene.sign_views(one_sign_scene.odometer_at(t)) for t in times]
    seen = [v[0] for v in views if v]
    assert len(seen) >= 8
    widths = [s.width_px for s in seen]
    centres = [(s.bbox_xyxy[0] + s.bbox_xyxy[2]) / 2 for s in seen]
    assert all(b > a for a, b in itertools.pairwise(widths)), widths
    assert all(b > a for a, b in itertools.pairwise(centres)), centres
    assert widths[0] < 10 < 30 < widths[-1]
    assert any(s.in_roi for s in seen), "the sign should pass through the ROI"
    assert not one_sign_scene.sign_views(one_sign_scene.odometer_at(8.0)), "passed by then"


def test_rendered_sign_is_where_its_bbox_says(one_sign_scene: RoadScene) -> None:
    t = next(t for t in np.arange(0, 7, 1 / 15) if one_sign_scene.render(t).sign_in_roi)
    frame = one_sign_scene.render(t)
    view = frame.sign_in_roi
    assert view is not None and view.class_name == "stop"
    x0, y0, x1, y1 = (round(v) for v in view.bbox_xyxy)
    patch = frame.image[y0:y1, x0:x1].astype(int)
    red = (patch[..., 0] > 120) & (patch[..., 1] < 80) & (patch[..., 2] < 80)
    assert red.mean() > 0.3, "the stop sign's red should fill its box"


def test_roi_crop_is_model_input_sized(one_sign_scene: RoadScene) -> None:
    frame = one_sign_scene.render(1.0)
    crop = crop_roi(frame.image)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    x0, y0, x1, y1 = DEFAULT_ROI.box_for(320, 240)
    assert (x1 - x0, y1 - y0) == (DEFAULT_ROI.width, DEFAULT_ROI.height)
    # Proportional for other frame sizes: a 2x frame maps to the 2x box.
    assert DEFAULT_ROI.box_for(640, 480) == (2 * x0, 2 * y0, 2 * x1, 2 * y1)
    with pytest.raises(InputError):
        crop_roi(frame.image[..., 0])


def test_roi_metadata_fractions_match_pixels() -> None:
    meta = DEFAULT_ROI.as_metadata()
    x, y, w, h = meta["normalized_xywh"]
    assert round(x * 320) == DEFAULT_ROI.x and round(w * 320) == DEFAULT_ROI.width
    assert round(y * 240) == DEFAULT_ROI.y and round(h * 240) == DEFAULT_ROI.height
    with pytest.raises(ConfigError, match="leaves"):
        Roi(x=300, y=0, width=64, height=64)


def test_default_signs_cycle_through_every_sign_class() -> None:
    signs = default_signs(seed=1, length_m=400.0)
    assert {s.class_id for s in signs[:NO_SIGN]} == set(range(NO_SIGN))
    gaps = np.diff([s.position_m for s in signs])
    assert gaps.min() >= 30.0 and gaps.max() <= 40.0
