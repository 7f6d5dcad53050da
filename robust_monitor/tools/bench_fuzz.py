"""Fuzzing every input the product parses: the generators and the ``bench --fuzz`` runner.

Parsers (the names used in the report and in ``test/test_fuzz_parsers.py``):

- ``image``: ``sensor_msgs/Image`` through ``ros.image_conversion.image_to_rgb``: wrong step,
  truncated data, huge declared sizes with a few bytes of data, unknown encodings, NaN/Inf in
  32FC1/32FC3, zero sizes, either ``is_bigendian``.
- ``compressed_image``: ``sensor_msgs/CompressedImage`` through ``compressed_image_to_rgb``:
  random bytes, truncated or bit-flipped JPEG/PNG, a valid header followed by garbage, headers
  patched to declare a huge frame, odd ``format`` strings (``compressedDepth`` among them).
- ``model_metadata``: the ``model.json`` beside a valid tiny ONNX model through
  ``core.certify.model.load_model_spec``: random JSON, and a valid file with keys replaced,
  removed or added.
- ``calibration``: OOD calibration YAML through ``core.ood.calibration.Calibration.load`` and
  ``from_mapping``: random YAML text and a valid mapping with keys replaced, removed or added.

The property, for each: the parser returns a valid result or raises the project's own
``RobustMonitorError`` with a non-empty message; never another exception type, never a hang,
never a huge allocation. The strategies are hypothesis strategies, shared with the tests, so
hypothesis (the ``test`` extra) is needed to run ``bench --fuzz`` but not to use the product.
"""

from __future__ import annotations

import json
import math
import resource
import struct
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from robust_monitor.core.errors import RobustMonitorError

PARSERS = ("image", "compressed_image", "model_metadata", "calibration")
FIRST_FAILURES = 5
"""Unexpected exceptions kept (with their input) per parser in the report."""


# --- sensor_msgs/Image ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RawImageCase:
    """The fields of one ``sensor_msgs/Image`` (built into a message by ``to_image_msg``)."""

    encoding: str
    height: int
    width: int
    step: int
    data: bytes
    is_bigendian: bool
    kind: str
    """Which generator made it (for the report)."""


_KNOWN = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "yuv422", "uyvy", "yuyv",
          "yuv422_yuy2", "32FC1", "32FC3")  # fmt: skip
_BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2,
                    "yuv422": 2, "uyvy": 2, "yuyv": 2, "yuv422_yuy2": 2, "32fc1": 4,
                    "32fc3": 12}  # fmt: skip
_UINT32 = st.integers(0, 2**32 - 1)
_SPECIALS = (math.nan, math.inf, -math.inf, -0.0, 1e38, -1.0, 2.0)


@st.composite
def _plausible_images(draw: st.DrawFn) -> RawImageCase:
    """A known encoding and a small size, with the step and the data length a little off."""
    encoding = draw(st.sampled_from(_KNOWN))
    height, width = draw(st.integers(0, 12)), draw(st.integers(0, 12))
    row = width * _BYTES_PER_PIXEL[encoding.lower()]
    step = max(0, row + draw(st.sampled_from((0, 0, 0, 1, 3, 8, -1, -3))))
    need = step * max(height - 1, 0) + row
    length = max(0, need + draw(st.sampled_from((0, 0, 0, 1, 64, -1, -5))))
    seed = draw(st.integers(0, 2**32 - 1))
    data = bytearray(np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8))
    if encoding.startswith("32FC") and length >= 4:
        # In-range floats with specials (NaN, Inf, out of [0, 1]) at a few places.
        values = np.random.default_rng(seed).random(length // 4, dtype=np.float32)
        for index, special in draw(
            st.lists(
                st.tuples(st.integers(0, length // 4 - 1), st.sampled_from(_SPECIALS)), max_size=3
            )
        ):
            values[index] = special
        data[: values.nbytes] = values.astype("<f4").tobytes()
    return RawImageCase(
        encoding, height, width, step, bytes(data), draw(st.booleans()), "plausible"
    )


@st.composite
def _huge_images(draw: st.DrawFn) -> RawImageCase:
    """A frame declared up to 4e9 x 4e9 (any step) with at most 64 bytes of data."""
    encoding = draw(st.sampled_from(_KNOWN))
    height = draw(st.one_of(_UINT32, st.sampled_from((10**9, 2**32 - 1, 4096, 4097))))
    width = draw(st.one_of(_UINT32, st.sampled_from((10**9, 2**32 - 1, 4096, 4097))))
    return RawImageCase(
        encoding, height, width, draw(_UINT32), draw(st.binary(max_size=64)),
        draw(st.booleans()), "huge",
    )  # fmt: skip


@st.composite
def _odd_encodings(draw: st.DrawFn) -> RawImageCase:
    """An unknown (or oddly spelled) encoding over a plausible payload."""
    encoding = draw(
        st.one_of(
            st.text(max_size=16),
            st.sampled_from(("bayer_rggb8", "16UC1", "8UC3", "RGB8 ", " mono8", "jpeg", "")),
        )
    )
    height, width = draw(st.integers(0, 8)), draw(st.integers(0, 8))
    step = draw(st.integers(0, 64))
    return RawImageCase(
        encoding, height, width, step, draw(st.binary(max_size=512)), draw(st.booleans()),
        "encoding",
    )  # fmt: skip


def raw_images() -> st.SearchStrategy[RawImageCase]:
    """Every kind of bad (and some good) ``sensor_msgs/Image`` payload."""
    return st.one_of(_plausible_images(), _huge_images(), _odd_encodings())


def to_image_msg(case: RawImageCase) -> Any:
    """The ``sensor_msgs/Image`` of ``case`` (stamp 1.5 s)."""
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1, 500_000_000
    msg.encoding = case.encoding
    msg.height, msg.width, msg.step = case.height, case.width, case.step
    msg.is_bigendian = int(case.is_bigendian)
    msg.data = case.data
    return msg


# --- sensor_msgs/CompressedImage ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CompressedCase:
    """The fields of one ``sensor_msgs/CompressedImage``."""

    format: str
    data: bytes
    kind: str


def _encode(kind: str, height: int, width: int, seed: int) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg" if kind == "jpeg" else ".png", rgb)
    assert ok
    return encoded.tobytes()


def set_png_chunk_length(data: bytes, index: int, length: int) -> bytes:
    """``data`` with the length field of its ``index``-th chunk (0: IHDR) set to ``length``."""
    i = 8
    for _ in range(index):
        if i + 12 > len(data):
            return data
        i += 12 + struct.unpack(">I", data[i : i + 4])[0]
    if i + 4 > len(data):
        return data
    return data[:i] + struct.pack(">I", length) + data[i + 4 :]


def _patch_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with the frame size in its PNG IHDR or its first JPEG SOF replaced."""
    if data.startswith(b"\x89PNG"):
        return data[:16] + struct.pack(">II", width, height) + data[24:]
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xC2:
            h, w = min(height, 0xFFFF), min(width, 0xFFFF)
            return data[: i + 5] + struct.pack(">HH", h, w) + data[i + 9 :]
        i += 2 + length
    return data


@st.composite
def _mutated_codecs(draw: st.DrawFn) -> CompressedCase:
    """A valid small JPEG or PNG, then truncated, bit-flipped, padded or re-headed."""
    kind = draw(st.sampled_from(("jpeg", "png")))
    data = _encode(kind, draw(st.integers(1, 24)), draw(st.integers(1, 24)), draw(_UINT32))
    how = draw(st.sampled_from(("as_is", "truncate", "flip", "garbage_after_header", "append",
                                "huge_header", "zero_header", "chunk_length")))  # fmt: skip
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        buf = bytearray(data)
        for pos, value in draw(
            st.lists(
                st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255)), min_size=1, max_size=8
            )
        ):
            buf[pos] = value
        data = bytes(buf)
    elif how == "garbage_after_header":
        cut = draw(st.integers(2, min(len(data), 200)))
        data = data[:cut] + draw(st.binary(min_size=1, max_size=512))
    elif how == "append":
        data += draw(st.binary(min_size=1, max_size=256))
    elif how == "huge_header":
        big = draw(st.sampled_from((4097, 65535, 10**9, 2**31 - 1, 2**32 - 1)))
        data = _patch_size(data, big, draw(st.sampled_from((1, 4097, big))))
    elif how == "chunk_length" and kind == "png":  # a chunk claiming more bytes than follow
        data = set_png_chunk_length(data, draw(st.integers(0, 2)), draw(_UINT32))
    elif how == "zero_header":
        data = _patch_size(data, draw(st.sampled_from((0, 5))), 0)
    fmt = draw(st.sampled_from((kind, "rgb8; jpeg compressed bgr8", "png", "")))
    return CompressedCase(fmt, data, f"{kind}:{how}")


@st.composite
def _random_payloads(draw: st.DrawFn) -> CompressedCase:
    """Random bytes, sometimes behind a JPEG or PNG magic, with any format string."""
    png = b"\x89PNG\r\n\x1a\n"
    prefixes = (b"", b"\xff\xd8\xff", png, png + b"\x00\x00\x00\x0dIHDR", b"BM", b"GIF89a")
    prefix = draw(st.sampled_from(prefixes))
    fmt = draw(st.one_of(st.text(max_size=24), st.just("16UC1; compressedDepth png")))
    return CompressedCase(fmt, prefix + draw(st.binary(max_size=512)), "random")


def compressed_images() -> st.SearchStrategy[CompressedCase]:
    """Every kind of bad (and some good) ``sensor_msgs/CompressedImage`` payload."""
    return st.one_of(_mutated_codecs(), _random_payloads())


def to_compressed_msg(case: CompressedCase) -> Any:
    """The ``sensor_msgs/CompressedImage`` of ``case`` (stamp 1.5 s)."""
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1, 500_000_000
    msg.format = case.format
    msg.data = case.data
    return msg


# --- JSON and YAML documents ----------------------------------------------------------------------
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=12,
)
"""Any JSON value (NaN and Inf too: Python's json reads them)."""


@st.composite
def mutated_mappings(draw: st.DrawFn, base: dict[str, Any], nested: tuple[str, ...]) -> Any:
    """``base`` with a few keys (top level or in the ``nested`` sub-mappings) replaced by random
    values, removed, or added; sometimes a random value instead."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    doc = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(("", *nested)))
        target = doc if where == "" else doc.get(where)
        if not isinstance(target, dict):
            continue
        action = draw(st.sampled_from(("replace", "replace", "delete", "add")))
        keys = sorted(target)
        if action == "add" or not keys:
            target[draw(st.text(max_size=10))] = draw(JSON_VALUES)
        elif action == "delete":
            del target[draw(st.sampled_from(keys))]
        else:
            target[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
    return doc


def metadata_documents(base: dict[str, Any]) -> st.SearchStrategy[str]:
    """Text of a ``model.json``: mutations of ``base``, random JSON, or not JSON at all."""
    as_json = mutated_mappings(base, ("input", "outputs")).map(json.dumps)
    broken = st.one_of(
        st.text(max_size=64),
        st.just('{"format": "robust_monitor.model/1", "input": ' + "[" * 100_000),
        as_json.map(lambda text: text[: len(text) // 2]),
    )
    return st.one_of(as_json, as_json, as_json, broken)


DEEP_YAML = "[" * 10_000
"""A YAML document nested 10,000 deep (PyYAML recurses once per level)."""


def calibration_documents(base: dict[str, Any], deep: bool = True) -> st.SearchStrategy[str]:
    """Text of a calibration YAML file: mutations of ``base``, random YAML, or not YAML
    (``deep``: also ``DEEP_YAML``)."""
    as_yaml = mutated_mappings(base, ("thresholds", "mahalanobis", "input_stats")).map(
        lambda doc: yaml.safe_dump(doc, sort_keys=False)
    )
    broken = st.one_of(
        st.text(max_size=64),
        st.sampled_from(
            ("!!python/object:os.system {}", "a: &x [*x]", "{a: b", *([DEEP_YAML] if deep else []))
        ),
        as_yaml.map(lambda text: text[: len(text) // 2]),
    )
    return st.one_of(as_yaml, as_yaml, as_yaml, broken)


# --- fixtures the document parsers need -----------------------------------------------------------
TINY_SHAPE = (1, 4, 4)


def write_tiny_model(folder: Path) -> Path:
    """A two-class linear ONNX classifier of (1, 4, 4) frames at ``folder/tiny.onnx``."""
    from robust_monitor.tools import reference_models

    d = int(np.prod(TINY_SHAPE))
    weights = np.stack([np.zeros(d), np.ones(d) / d]).astype(np.float32)
    bias = np.array([0.0, -0.5], dtype=np.float32)
    path = folder / "tiny.onnx"
    reference_models.save(reference_models.linear_classifier(weights, bias, TINY_SHAPE), path)
    return path


def valid_metadata(model_path: Path) -> dict[str, Any]:
    """A ``model.json`` that ``load_model_spec`` accepts for ``write_tiny_model``'s model."""
    from robust_monitor.core.certify.model import METADATA_FORMAT, sha256_file

    return {
        "format": METADATA_FORMAT,
        "name": "tiny",
        "classes": ["off", "on"],
        "input": {
            "name": "image",
            "shape": list(TINY_SHAPE),
            "channel_order": "rgb",
            "value_range": [0.0, 1.0],
        },
        "outputs": {"logits": "logits"},
        "sigma": 0.25,
        "sha256": sha256_file(model_path),
    }


def valid_calibration() -> dict[str, Any]:
    """The plain form of a small valid calibration (with a 4-D Mahalanobis model)."""
    from robust_monitor.core.ood.calibration import calibrate
    from robust_monitor.core.ood.scores import MahalanobisModel

    rng = np.random.default_rng(0)
    maha = MahalanobisModel.fit(rng.standard_normal((40, 4)), rng.integers(0, 2, 40))
    scores = {name: rng.random(200) for name in ("msp", "energy", "mahalanobis")}
    calibration = calibrate(
        scores, model_sha256="ab" * 32, target_false_alarm_rate=0.05, mahalanobis=maha
    )
    return calibration.as_dict()


# --- the runner -----------------------------------------------------------------------------------
@dataclass
class ParserReport:
    """What one parser did with its fuzzed inputs."""

    cases: int = 0
    ok: int = 0
    clean_errors: int = 0
    unexpected: int = 0
    first_unexpected: list[str] = field(default_factory=list)
    max_case_ms: float = 0.0
    peak_rss_growth_kib: int = 0
    wall_s: float = 0.0
    skipped: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "skipped" or v}
        out["max_case_ms"] = round(self.max_case_ms, 3)
        out["wall_s"] = round(self.wall_s, 2)
        return out


def classify(parse: Callable[[], object]) -> tuple[str, str]:
    """Run ``parse``: ("ok", ""), ("clean", message) or ("unexpected", traceback)."""
    try:
        parse()
    except RobustMonitorError as exc:
        if str(exc).strip():
            return "clean", str(exc)
        return "unexpected", f"{type(exc).__name__} with an empty message"
    except Exception as exc:  # the very thing the fuzzer looks for
        return "unexpected", "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return "ok", ""


def _rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


@contextmanager
def _folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rm_fuzz_") as name:
        yield Path(name)


def fuzz_parser(
    strategy: st.SearchStrategy[Any], parse: Callable[[Any], object], cases: int
) -> ParserReport:
    """Feed ``cases`` generated inputs to ``parse`` and count what happened."""
    report = ParserReport()

    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run_one(case: Any) -> None:
        start = time.perf_counter()
        outcome, detail = classify(lambda: parse(case))
        report.max_case_ms = max(report.max_case_ms, (time.perf_counter() - start) * 1e3)
        report.cases += 1
        if outcome == "ok":
            report.ok += 1
        elif outcome == "clean":
            report.clean_errors += 1
        else:
            report.unexpected += 1
            if len(report.first_unexpected) < FIRST_FAILURES:
                report.first_unexpected.append(f"{detail} <- {_summary(case)}")

    rss, begin = _rss_kib(), time.perf_counter()
    run_one()
    report.wall_s = time.perf_counter() - begin
    report.peak_rss_growth_kib = _rss_kib() - rss
    return report


def _summary(case: Any) -> str:
    if isinstance(case, RawImageCase):
        return (
            f"Image({case.kind}: {case.encoding!r} {case.width}x{case.height} step {case.step} "
            f"{len(case.data)} bytes big-endian {case.is_bigendian})"
        )
    if isinstance(case, CompressedCase):
        return f"CompressedImage({case.kind}: {case.format!r}, {case.data[:16].hex()}...)"
    text = repr(case)
    return text if len(text) <= 200 else text[:200] + "..."


def image_parser() -> Callable[[RawImageCase], object]:
    from robust_monitor.ros.image_conversion import image_to_rgb

    return lambda case: image_to_rgb(to_image_msg(case))


def compressed_parser() -> Callable[[CompressedCase], object]:
    from robust_monitor.ros.image_conversion import compressed_image_to_rgb

    return lambda case: compressed_image_to_rgb(to_compressed_msg(case))


def metadata_parser(model_path: Path) -> Callable[[str], object]:
    """Writes the document beside the model and loads the spec (the graph is parsed once)."""
    from robust_monitor.core.certify.model import load_model_spec, load_onnx

    graph = load_onnx(model_path)
    meta_path = model_path.with_suffix(".json")

    def parse(text: str) -> object:
        meta_path.write_text(text, encoding="utf-8")
        return load_model_spec(model_path, graph)

    return parse


def calibration_parser(folder: Path) -> Callable[[str], object]:
    """Writes the document to a file and loads it (``load`` calls ``from_mapping``)."""
    from robust_monitor.core.ood.calibration import Calibration

    path = folder / "fuzz.calibration.yaml"

    def parse(text: str) -> object:
        path.write_text(text, encoding="utf-8")
        return Calibration.load(path, model_sha256="ab" * 32)

    return parse


def bench_fuzz(cases: int, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``cases`` fuzzed inputs per parser; the report per parser (see ``ParserReport``)."""
    out: dict[str, Any] = {"cases_per_parser": cases, "parsers": {}}
    with _folder() as folder:
        model = write_tiny_model(folder)
        jobs: list[tuple[str, Callable[[], tuple[st.SearchStrategy[Any], Any]]]] = [
            ("image", lambda: (raw_images(), image_parser())),
            ("compressed_image", lambda: (compressed_images(), compressed_parser())),
            (
                "model_metadata",
                lambda: (metadata_documents(valid_metadata(model)), metadata_parser(model)),
            ),
            (
                "calibration",
                lambda: (calibration_documents(valid_calibration()), calibration_parser(folder)),
            ),
        ]
        for name, make in jobs:
            if progress is not None:
                progress(f"fuzzing {name}: {cases} cases")
            try:
                strategy, parse = make()
            except ImportError as exc:  # sensor_msgs without a ROS environment
                out["parsers"][name] = ParserReport(skipped=f"not importable: {exc}").as_dict()
                continue
            out["parsers"][name] = fuzz_parser(strategy, parse, cases).as_dict()
    out["unexpected_total"] = sum(p.get("unexpected", 0) for p in out["parsers"].values())
    return out
