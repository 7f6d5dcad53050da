"""Property-based fuzzing of every input the product parses, and the arbiter on bad frames.

The generators are ``robust_monitor.tools.bench_fuzz``'s (``robust-monitor bench --fuzz`` runs
the same ones at 10,000 cases per parser). The property, for each parser: a valid result, or
the project's own error (``RobustMonitorError``) with a message; never another exception type,
never a hang (the hypothesis deadline), never a huge allocation (checked where a message
declares a huge frame). ``diagnostics_to_evidence`` is fuzzed in ``test_ros_contract.py``.

Profiles: ``fuzz-ci`` (default, ~150 examples per test) and ``fuzz-long`` (2,000); pick one with
``RM_FUZZ_PROFILE=fuzz-long``.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image

from robust_monitor.core.arbiter import Arbiter, ArbiterPolicy, Evidence, OperatorRequest
from robust_monitor.core.certify.certificate import Certificate
from robust_monitor.core.certify.model import ModelSpec, load_model_spec, load_onnx
from robust_monitor.core.errors import ConfigError, InputError, ModelError, RobustMonitorError
from robust_monitor.core.imaging.decode import decode_image_bytes
from robust_monitor.core.ood.calibration import Calibration
from robust_monitor.ros.image_conversion import (
    compressed_image_to_rgb,
    declared_size,
    image_to_rgb,
)
from robust_monitor.tools import bench_fuzz
from robust_monitor.tools.bench_fuzz import (
    DEEP_YAML,
    CompressedCase,
    RawImageCase,
    calibration_documents,
    classify,
    compressed_images,
    metadata_documents,
    mutated_mappings,
    raw_images,
    to_compressed_msg,
    to_image_msg,
    valid_calibration,
    valid_metadata,
    write_tiny_model,
)

_COMMON = {
    "deadline": 2000,  # ms per example: a hang (or a decoder busy for seconds) fails the test
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}
# CI runs the same examples every time (a red build names a real regression, not a lucky draw);
# ``bench --fuzz`` and the fuzz-long profile explore at random.
settings.register_profile("fuzz-ci", max_examples=150, derandomize=True, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("fuzz-long", max_examples=2000, **_COMMON)  # type: ignore[arg-type]
FUZZ = settings(settings.get_profile(os.environ.get("RM_FUZZ_PROFILE", "fuzz-ci")))
SMALL_ALLOCATION_BYTES = 1 << 20
"""Most a refused huge-frame message may make us allocate (it carries a few bytes)."""


@pytest.fixture(autouse=True, scope="module")
def quiet_opencv() -> Iterator[None]:
    """Corrupt JPEG/PNG bytes make OpenCV log an error line per case; the tests look at the
    outcome instead."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    yield
    cv2.utils.logging.setLogLevel(previous)


def check_clean(parse: Callable[[], object]) -> str:
    """Run ``parse``; fail on anything but a result or a RobustMonitorError with a message."""
    outcome, detail = classify(parse)
    assert outcome != "unexpected", detail
    return outcome


# --- sensor_msgs/Image ----------------------------------------------------------------------------
@FUZZ
@given(raw_images())
def test_image_messages_decode_or_fail_cleanly(case: RawImageCase) -> None:
    msg = to_image_msg(case)
    result: list[np.ndarray] = []
    outcome = check_clean(lambda: result.append(image_to_rgb(msg)[0]))
    if outcome == "ok":
        rgb = result[0]
        assert rgb.dtype == np.uint8 and rgb.shape == (case.height, case.width, 3)
        assert rgb.flags.c_contiguous and rgb.flags.writeable


@pytest.mark.parametrize("encoding", ["rgb8", "mono16", "32FC3", "yuv422", "bgra8"])
@pytest.mark.parametrize(
    ("height", "width", "step"),
    [(10**9, 10**9, 10**9), (2**32 - 1, 1, 2**32 - 1), (4096, 4097, 12291), (1, 2**32 - 1, 0)],
)
def test_a_huge_declared_frame_is_refused_before_anything_is_allocated(
    encoding: str, height: int, width: int, step: int
) -> None:
    msg = Image(encoding=encoding, height=height, width=width, step=step, data=b"0123456789")
    tracemalloc.start()
    begin = time.perf_counter()
    try:
        with pytest.raises(InputError, match=r"pixel limit|step|needs"):
            image_to_rgb(msg)
        elapsed_s = time.perf_counter() - begin
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < SMALL_ALLOCATION_BYTES, peak
    assert elapsed_s < 0.05


@pytest.mark.parametrize("encoding", ["32FC1", "32FC3"])
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("big_endian", [False, True])
def test_non_finite_float_pixels_are_refused(
    encoding: str, special: float, big_endian: bool
) -> None:
    channels = 3 if encoding == "32FC3" else 1
    values = np.full((4, 6, channels), 0.5, np.float32)
    values[2, 3, channels - 1] = special
    data = values.astype(">f4" if big_endian else "<f4").tobytes()
    msg = Image(encoding=encoding, height=4, width=6, step=6 * channels * 4, data=data)
    msg.is_bigendian = int(big_endian)
    with pytest.raises(InputError, match="NaN or Inf"):
        image_to_rgb(msg)
    values[2, 3, channels - 1] = 0.5  # the same frame without the special value decodes
    msg.data = values.astype(">f4" if big_endian else "<f4").tobytes()
    assert image_to_rgb(msg)[0].shape == (4, 6, 3)


# --- sensor_msgs/CompressedImage ------------------------------------------------------------------
@FUZZ
@given(compressed_images())
def test_compressed_images_decode_or_fail_cleanly(case: CompressedCase) -> None:
    msg = to_compressed_msg(case)
    result: list[np.ndarray] = []
    outcome = check_clean(lambda: result.append(compressed_image_to_rgb(msg)[0]))
    if outcome == "ok":
        rgb = result[0]
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert declared_size(case.data) == (rgb.shape[1], rgb.shape[0])


@pytest.mark.parametrize(
    ("fmt", "size"),
    [("png", (10**9, 10**9)), ("png", (2**31 - 1, 1)), ("png", (65535, 65535)),
     ("jpeg", (65535, 65535)), ("jpeg", (65535, 4097))],  # a JPEG holds at most 65535 x 65535
)  # fmt: skip
def test_a_compressed_frame_declaring_a_huge_size_is_refused_before_decoding(
    fmt: str, size: tuple[int, int]
) -> None:
    small = bench_fuzz._encode(fmt, 8, 8, seed=1)
    patched = bench_fuzz._patch_size(small, *size)
    assert declared_size(patched) == size
    msg = CompressedImage(format=fmt, data=patched)
    tracemalloc.start()
    begin = time.perf_counter()
    try:
        with pytest.raises(InputError, match="pixel limit"):
            compressed_image_to_rgb(msg)
        elapsed_s = time.perf_counter() - begin
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < SMALL_ALLOCATION_BYTES, peak
    assert elapsed_s < 0.05


@pytest.mark.parametrize("length", [167_772_431, 2**32 - 1, 10**6])
def test_a_png_chunk_longer_than_the_message_is_refused_before_decoding(length: int) -> None:
    # Found by bench --fuzz: OpenCV trusted a flipped IDAT length (160 MB in a 264-byte
    # message) and took ~9 s and up to 3 GB of RSS per frame before giving up.
    data = bench_fuzz.set_png_chunk_length(bench_fuzz._encode("png", 4, 16, seed=2), 1, length)
    msg = CompressedImage(format="png", data=data)
    begin = time.perf_counter()
    with pytest.raises(InputError, match="IDAT' declares"):
        compressed_image_to_rgb(msg)
    assert time.perf_counter() - begin < 0.05
    with pytest.raises(InputError, match="IDAT' declares"):
        decode_image_bytes(data)  # files too (robust-monitor certify image.png)


def test_a_png_without_iend_is_refused_and_trailing_bytes_after_iend_are_fine() -> None:
    data = bench_fuzz._encode("png", 5, 7, seed=3)
    with pytest.raises(InputError, match="truncated"):
        decode_image_bytes(data[:-12])
    assert decode_image_bytes(data + b"trailing").shape == (5, 7, 3)


# --- model metadata (model.json beside a valid tiny ONNX model) -----------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("fuzz_model"))


def _load_with(model: Path, text: str) -> ModelSpec:
    model.with_suffix(".json").write_text(text, encoding="utf-8")
    return load_model_spec(model)


def test_the_valid_tiny_metadata_loads(tiny_model: Path) -> None:
    spec = _load_with(tiny_model, json.dumps(valid_metadata(tiny_model)))
    assert spec.classes == ("off", "on") and spec.sigma == 0.25


@FUZZ
@given(data=st.data())
def test_model_metadata_loads_or_fails_cleanly(tiny_model: Path, data: st.DataObject) -> None:
    text = data.draw(metadata_documents(valid_metadata(tiny_model)))
    graph = load_onnx(tiny_model)
    tiny_model.with_suffix(".json").write_text(text, encoding="utf-8")
    result: list[ModelSpec] = []
    outcome, detail = classify(lambda: result.append(load_model_spec(tiny_model, graph)))
    assert outcome != "unexpected", detail
    if outcome == "clean":
        with pytest.raises(ModelError):  # the loader's errors are ModelErrors, not any subclass
            load_model_spec(tiny_model, graph)
    else:
        spec = result[0]
        assert spec.input_shape == bench_fuzz.TINY_SHAPE and spec.num_classes == 2
        assert spec.sigma is None or (np.isfinite(spec.sigma) and spec.sigma > 0)
        assert len(spec.classes) == 2 and all(isinstance(c, str) for c in spec.classes)


# Each was an AttributeError, TypeError, ValueError or RecursionError before the fix.
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input": [1, 2]}, "'input' must be a JSON object"),
        ({"outputs": "logits"}, "'outputs' must be a JSON object"),
        ({"input": {"name": "image", "shape": [1, None, 4]}}, "input.shape must be a list"),
        ({"input": {"name": "image", "shape": "144"}}, "input.shape must be a list"),
        ({"input": {"name": "image", "value_range": "01"}}, "value_range"),
        ({"classes": None}, "classes must be a list of strings"),
        ({"classes": 7}, "classes must be a list of strings"),
        ({"outputs": {"logits": "logits", "features": ["x"]}}, "features must be a string"),
        ({"sigma": "0.25"}, "sigma must be a finite number > 0"),
        ({"sigma": float("nan")}, "sigma must be a finite number > 0"),
        ({"sigma": -1.0}, "sigma must be a finite number > 0"),
    ],
)
def test_metadata_of_the_wrong_type_is_a_model_error_naming_the_key(
    tiny_model: Path, change: dict[str, Any], message: str
) -> None:
    meta = {**valid_metadata(tiny_model), **change}
    with pytest.raises(ModelError, match=message):
        _load_with(tiny_model, json.dumps(meta))


def test_deeply_nested_metadata_is_a_model_error(tiny_model: Path) -> None:
    with pytest.raises(ModelError, match="unreadable model metadata"):
        _load_with(tiny_model, '{"format": "robust_monitor.model/1", "x": ' + "[" * 100_000)


# --- OOD calibration YAML -------------------------------------------------------------------------
BASE_CALIBRATION = valid_calibration()
SHA = "ab" * 32


def test_the_valid_calibration_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(BASE_CALIBRATION), encoding="utf-8")
    assert Calibration.load(path, model_sha256=SHA).detectors == ("msp", "energy", "mahalanobis")


@FUZZ
@given(mutated_mappings(BASE_CALIBRATION, ("thresholds", "mahalanobis", "input_stats")))
def test_calibration_mappings_load_or_fail_cleanly(doc: Any) -> None:
    result: list[Calibration] = []
    outcome = check_clean(lambda: result.append(Calibration.from_mapping(doc)))
    if outcome == "ok":
        calibration = result[0]
        assert all(np.isfinite([t.warn, t.error]).all() for t in calibration.thresholds.values())
        assert Calibration.from_mapping(calibration.as_dict()).as_dict() == calibration.as_dict()


@FUZZ
@given(text=calibration_documents(BASE_CALIBRATION, deep=False))
def test_calibration_files_load_or_fail_cleanly(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.calibration.yaml"
    path.write_text(text, encoding="utf-8")
    outcome, detail = classify(lambda: Calibration.load(path, model_sha256=SHA))
    assert outcome != "unexpected", detail
    if outcome == "clean":
        with pytest.raises((ConfigError, ModelError)):
            Calibration.load(path, model_sha256=SHA)


def test_a_deeply_nested_calibration_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(DEEP_YAML, encoding="utf-8")
    with pytest.raises(ConfigError):
        Calibration.load(path)


@pytest.mark.parametrize("key", ["means", "covariance"])
def test_a_non_numeric_mahalanobis_entry_is_a_config_error(key: str) -> None:
    doc = json.loads(json.dumps(BASE_CALIBRATION))
    doc["mahalanobis"][key] = [""]
    with pytest.raises(ConfigError):
        Calibration.from_mapping(doc)


# --- the safety property: a bad frame never raises the speed limit --------------------------------
POLICY = ArbiterPolicy(
    require_ood_verdict=False,  # the stream carries certificates only
    recovery_time_s=0.2,
    ramp_up_mps2=5.0,
    stale_after_s=0.5,
    release_frames=2,
    degraded_min_dwell_s=0.1,
)
FRAME_PERIOD_S = 0.05


def healthy_certificate() -> Certificate:
    return Certificate(
        label=1, p_lower=0.99, radius=1.0, n0=16, n=64, alpha=0.001, sigma=0.25,
        abstained=False, provider="cpu", latency_ms=1.0,
    )  # fmt: skip


def _decode(frame: RawImageCase | CompressedCase) -> None:
    if isinstance(frame, RawImageCase):
        image_to_rgb(to_image_msg(frame))
    else:
        compressed_image_to_rgb(to_compressed_msg(frame))


@FUZZ
@given(
    st.lists(
        st.one_of(st.none(), raw_images(), compressed_images()),
        min_size=5,
        max_size=40,
    )
)
def test_bad_frames_through_decode_never_raise_the_speed_limit(
    stream: list[RawImageCase | CompressedCase | None],
) -> None:
    """Good frames (None in the stream) carry a healthy certificate; a fuzzed frame goes through
    the decoder, and a decode error means no evidence (what the monitor node does: it publishes
    no certificate). A fuzzed frame that decodes is skipped: certifying it is the engine's job."""
    arbiter = Arbiter(POLICY)
    t = 0.0
    for _ in range(8):  # healthy evidence for the recovery time, then an operator release
        t += FRAME_PERIOD_S
        arbiter.step(t, Evidence(t, healthy_certificate()))
    response, decision = arbiter.request(t, OperatorRequest.RELEASE)
    assert response.accepted, response.reason
    limit, bad_frames = decision.speed_limit_mps, 0
    for frame in stream:
        t += FRAME_PERIOD_S
        if frame is None:
            limit = arbiter.step(t, Evidence(t, healthy_certificate())).speed_limit_mps
            continue
        try:
            _decode(frame)
        except RobustMonitorError:
            bad_frames += 1
            decision = arbiter.step(t, None)  # no certificate for a frame that did not decode
            assert decision.speed_limit_mps <= limit, (frame, decision)
            limit = decision.speed_limit_mps


# --- robust-monitor bench --fuzz ------------------------------------------------------------------
def test_bench_fuzz_reports_every_parser(tmp_path: Path) -> None:
    from robust_monitor.tools import cli

    out = tmp_path / "fuzz.json"
    argv = ["bench", "--fuzz", "--fuzz-cases", "15", "--no-certify", "--json", "--out", str(out)]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text(encoding="utf-8"))["fuzz"]
    assert report["cases_per_parser"] == 15
    assert set(report["parsers"]) == set(bench_fuzz.PARSERS)
    for name, parser in report["parsers"].items():
        assert parser["cases"] == 15, name
        assert parser["ok"] + parser["clean_errors"] + parser["unexpected"] == 15, name
        assert len(parser["first_unexpected"]) == min(parser["unexpected"], 5)
        assert parser["max_case_ms"] >= 0.0 and parser["peak_rss_growth_kib"] >= 0
    assert report["unexpected_total"] == sum(p["unexpected"] for p in report["parsers"].values())


def test_bench_fuzz_without_hypothesis_says_so_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from robust_monitor.tools import cli

    monkeypatch.setitem(sys.modules, "hypothesis", None)  # import hypothesis -> ImportError
    monkeypatch.delitem(sys.modules, "robust_monitor.tools.bench_fuzz")
    assert cli.main(["bench", "--fuzz", "--no-certify"]) == 2
    assert "needs hypothesis" in capsys.readouterr().err
