"""The message contract of ``~/certificate``: one frame's certificate and OOD verdict on the wire.

This module is part of the product: the monitor writes it (``certificate_to_diagnostics``), the
arbiter and any other consumer read it back (``diagnostics_to_evidence``). Pure conversions, no
node.

Message: ``diagnostic_msgs/DiagnosticArray``, one per certified frame.

- ``header.stamp`` is the camera image's header stamp, copied exactly (not the time of
  publication); ``header.frame_id`` is the image's frame id.
- ``status`` holds ONE ``DiagnosticStatus``: ``name`` = ``"robust_monitor/certificate"``,
  ``hardware_id`` = the model's name, ``message`` = a human-readable summary, ``level`` = OK
  when certified and the OOD verdict is OK (or there is none), WARN when the certificate
  abstained or the OOD verdict is WARN, ERROR when the OOD verdict is ERROR. The level is for
  people and dashboards: consumers decide from the values below, never from the level.
- ``values`` are the key/value pairs below. All values are strings: integers in ASCII decimal,
  floats in Python's shortest round-trip form (``repr``), booleans ``true``/``false``.

======================  =======  ==========================  =====================================
key                     type     unit                        meaning
======================  =======  ==========================  =====================================
``format``              str      --                          ``robust_monitor.certificate/1``; a
                                                             reader refuses other versions
``label``               int      class index                 certified class; -1 when abstained
``label_name``          str      --                          the class's name (``abstain`` when
                                                             abstained)
``p_lower``             float    probability in [0, 1]       one-sided (1 - alpha) lower bound on
                                                             P(f(x + eps) = label): Clopper-
                                                             Pearson from ``count`` of ``n``
                                                             (fixed mode), at most that in
                                                             sequential mode (an anytime-valid
                                                             confidence sequence's bound)
``radius``              float    L2, model-input units       certified radius sigma * Phi^-1(
                                                             p_lower); 0 when abstained. Units:
                                                             pixel values scaled to [0, 1] after
                                                             ROI crop and resize, L2 over C*H*W
``n0``                  int      samples                     noisy samples that chose the class;
                                                             0: the clean frame's prediction did
``n``                   int      samples                     noisy samples that estimated p_lower;
                                                             0 only in an abstention (sequential:
                                                             the budget ran out in selection)
``count``               int      samples                     votes for ``label`` among the ``n``
``alpha``               float    probability in (0, 1)       the certificate fails with
                                                             probability at most alpha
``sigma``               float    model-input units           std of the Gaussian smoothing noise
``abstained``           bool     --                          true when p_lower < 1/2: no class
                                                             certified (label -1, radius 0)
``latency_ms``          float    milliseconds                wall time of the certification
``provider``            str      --                          onnxruntime provider that ran it
                                                             (``cpu``, ``cuda``, ``tensorrt``)
``model_sha256``        str      hex                         sha256 of the model file
``certify_mode``        str      --                          ``fixed`` (n0 + n samples) or
                                                             ``sequential`` (stopped once decided)
``decision``            str      --                          sequential only: why sampling
                                                             stopped: ``certified`` (radius >=
                                                             r_required), ``unreachable``,
                                                             ``budget`` or ``max_n``
``looks``               int      batches                     sequential only: estimation batches
``r_required``          float    L2, model-input units       sequential only: the radius the
                                                             frame was decided against
``ood_level``           str      --                          ``ok``, ``warn``, ``error``, or
                                                             ``none`` (no OOD verdict for this
                                                             frame)
``ood_reasons``         str      --                          comma-separated names of the OOD /
                                                             camera-health checks that fired
                                                             (empty when none)
``ood.<score_name>``    float    check-specific              raw score of every check that ran,
                                                             fired or not (``nan``/``inf`` allowed)
======================  =======  ==========================  =====================================

Reading it back (``diagnostics_to_evidence``) never raises. It returns the stamp (seconds; NaN
when the header is unreadable), the certificate, the OOD verdict and the list of problems found.
A part that is missing or malformed comes back as None (missing evidence, which a consumer
treats cautiously) with the reason in ``problems``:

- the certificate is None when any of its keys is missing, repeated, not a number of the right
  kind, out of range (NaN, negative radius, alpha outside (0, 1), count > n, ...) or
  inconsistent (label -1 exactly when abstained; radius 0 when abstained; n 0 only when
  abstained);
- the certificate is checked against its own statistics: the reader recomputes the
  Clopper-Pearson bound from ``count``, ``n``, ``alpha`` and the radius from ``sigma``; a
  message claiming more (beyond rounding) is refused, and the returned ``p_lower`` and
  ``radius`` are the smaller of the claimed and the recomputed values, so a corrupted field can
  lower a radius but never raise it. (Deliberate forgery of several consistent fields is out of
  reach of any reader; secure the DDS graph with SROS 2 against that.)
- the verdict is None when ``ood_level`` is ``none``, missing or unknown, or a score is not a
  number.

``certify_mode``, ``decision``, ``looks`` and ``r_required`` describe how the frame was
certified; the reader does not need them (the certificate is checked from its counts in both
modes) and ignores them, so writers without them (older monitors) stay readable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from robust_monitor.core.certify.certificate import ABSTAIN, Certificate
from robust_monitor.core.certify.stats import clopper_pearson_lower, radius_from_p_lower
from robust_monitor.core.ood.verdict import OodLevel, OodVerdict
from robust_monitor.core.pipeline import FrameResult
from robust_monitor.ros.contract_fields import (
    FORMAT,
    MODE_KEYS,
    NO_OOD,
    OOD_SCORE_PREFIX,
    SEQUENTIAL_KEYS,
    STATUS_NAME,
    certificate_level,
    certificate_message_text,
    certificate_pairs,
)

CERTIFICATE_KEYS = (
    "label", "label_name", "p_lower", "radius", "n0", "n", "alpha", "sigma", "abstained",
    "count", "latency_ms", "provider",
)  # fmt: skip
"""Keys that make up the certificate (besides ``format``)."""
__all__ = [
    "CERTIFICATE_KEYS",
    "FORMAT",
    "MAX_SAMPLES",
    "MODE_KEYS",
    "SEQUENTIAL_KEYS",
    "STATUS_NAME",
    "certificate_to_diagnostics",
    "diagnostics_to_evidence",
    "status_level",
]
MAX_SAMPLES = 10**9
"""Largest ``n0`` / ``n`` a reader accepts (guards the statistics against absurd values)."""
_REL_TOL = 1e-6
_MAX_NUMBER_CHARS = 64

_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf}
_LEVEL_NAMES = {level.name.lower(): level for level in OodLevel}


# --- writing -------------------------------------------------------------------------------------
def status_level(result: FrameResult) -> bytes:
    """The DiagnosticStatus level of a frame (for people; consumers read the values)."""
    return bytes([certificate_level(result)])


def certificate_to_diagnostics(
    result: FrameResult, stamp: Any, model_name: str, model_sha256: str, frame_id: str = ""
) -> DiagnosticArray:
    """One frame's result -> the ``~/certificate`` message (see the module docstring).

    ``stamp`` is the image's ``builtin_interfaces/Time`` (copied exactly into the header). The
    fields come from ``contract_fields`` (shared with the replay's results bag).
    """
    status = DiagnosticStatus(
        level=status_level(result),
        name=STATUS_NAME,
        message=certificate_message_text(result),
        hardware_id=str(model_name),
        values=[KeyValue(key=k, value=v) for k, v in certificate_pairs(result, model_sha256)],
    )
    msg = DiagnosticArray()
    msg.header.stamp = Time(sec=int(stamp.sec), nanosec=int(stamp.nanosec))
    msg.header.frame_id = str(frame_id)
    msg.status = [status]
    return msg


# --- reading -------------------------------------------------------------------------------------
def diagnostics_to_evidence(
    msg: Any,
) -> tuple[float, Certificate | None, OodVerdict | None, list[str]]:
    """A ``~/certificate`` message -> (stamp_s, certificate, verdict, problems). Never raises.

    Parts that are missing, malformed or inconsistent come back as None, each with a line in
    ``problems`` saying why (see the module docstring for the rules). ``stamp_s`` is NaN when the
    header cannot be read.
    """
    problems: list[str] = []
    stamp_s = math.nan
    try:
        stamp_s = _read_stamp(msg, problems)
        status = _find_status(msg, problems)
        if status is None:
            return stamp_s, None, None, problems
        values = _read_values(status, problems)
        certificate = _read_certificate(values, problems)
        verdict = _read_verdict(values, stamp_s, problems)
    except Exception as exc:  # a reader at a trust boundary must not raise, whatever arrives
        problems.append(f"unreadable message ({type(exc).__name__}: {exc})")
        return stamp_s, None, None, problems
    return stamp_s, certificate, verdict, problems


def _read_stamp(msg: Any, problems: list[str]) -> float:
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    sec, nanosec = getattr(stamp, "sec", None), getattr(stamp, "nanosec", None)
    if not isinstance(sec, int) or not isinstance(nanosec, int):
        problems.append("header stamp is missing or unreadable")
        return math.nan
    if not 0 <= nanosec < 1_000_000_000:
        problems.append(f"header stamp nanosec {nanosec} is outside [0, 1e9)")
        return math.nan
    if sec == 0 and nanosec == 0:
        problems.append("header stamp is zero (the frame was not stamped)")
    return sec + nanosec * 1e-9


def _find_status(msg: Any, problems: list[str]) -> Any | None:
    statuses = getattr(msg, "status", None)
    if statuses is None:
        problems.append("message has no status list")
        return None
    matches = [s for s in statuses if getattr(s, "name", None) == STATUS_NAME]
    if len(matches) != 1:
        problems.append(
            f"expected one DiagnosticStatus named {STATUS_NAME!r}, found {len(matches)}"
        )
        return None
    return matches[0]


def _read_values(status: Any, problems: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    repeated: set[str] = set()
    for pair in getattr(status, "values", None) or []:
        key, value = getattr(pair, "key", None), getattr(pair, "value", None)
        if not isinstance(key, str) or not isinstance(value, str):
            problems.append("a key/value pair is not a pair of strings")
            continue
        if key in values:
            repeated.add(key)
        values[key] = value
    for key in sorted(repeated):
        problems.append(f"key {key!r} appears more than once")
        del values[key]
    return values


def _parse_int(text: str) -> int | None:
    text = text.strip()
    if len(text) > _MAX_NUMBER_CHARS or not _INT.fullmatch(text):
        return None
    return int(text)


def _parse_float(text: str, allow_non_finite: bool = False) -> float | None:
    text = text.strip()
    if allow_non_finite and text.lower() in _NON_FINITE:
        return _NON_FINITE[text.lower()]
    if len(text) > _MAX_NUMBER_CHARS or not _FLOAT.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _parse_bool(text: str) -> bool | None:
    return {"true": True, "false": False}.get(text.strip().lower())


class _Reader:
    """Reads typed fields from the key/value map, noting each problem instead of raising."""

    def __init__(self, values: Mapping[str, str], problems: list[str]) -> None:
        self.values = values
        self.problems = problems

    def _text(self, key: str) -> str | None:
        text = self.values.get(key)
        if text is None:
            self.problems.append(f"{key}: missing")
        return text

    def _bad(self, key: str, text: str, kind: str) -> None:
        self.problems.append(f"{key}: {text[:40]!r} is not {kind}")

    def string(self, key: str) -> str | None:
        return self._text(key)

    def boolean(self, key: str) -> bool | None:
        text = self._text(key)
        value = None if text is None else _parse_bool(text)
        if text is not None and value is None:
            self._bad(key, text, "true or false")
        return value

    def integer(self, key: str, low: int, high: int) -> int | None:
        text = self._text(key)
        if text is None:
            return None
        value = _parse_int(text)
        if value is None:
            self._bad(key, text, "an integer")
            return None
        if not low <= value <= high:
            self.problems.append(f"{key}: {value} is outside [{low}, {high}]")
            return None
        return value

    def number(
        self,
        key: str,
        low: float,
        high: float = math.inf,
        open_low: bool = False,
        open_high: bool = False,
    ) -> float | None:
        text = self._text(key)
        if text is None:
            return None
        value = _parse_float(text)
        if value is None:
            self._bad(key, text, "a finite number")
            return None
        below = value <= low if open_low else value < low
        above = value >= high if open_high else value > high
        if below or above:
            interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
            self.problems.append(f"{key}: {value!r} is outside {interval}")
            return None
        return value


def _read_certificate(values: Mapping[str, str], problems: list[str]) -> Certificate | None:
    before = len(problems)
    fmt = values.get("format")
    if fmt != FORMAT:
        problems.append(f"format: expected {FORMAT!r}, got {fmt!r}")
    read = _Reader(values, problems)
    label = read.integer("label", low=ABSTAIN, high=MAX_SAMPLES)
    n0 = read.integer("n0", low=0, high=MAX_SAMPLES)
    n = read.integer("n", low=0, high=MAX_SAMPLES)
    count = read.integer("count", low=0, high=MAX_SAMPLES)
    p_lower = read.number("p_lower", 0.0, 1.0)
    radius = read.number("radius", 0.0)
    alpha = read.number("alpha", 0.0, 1.0, open_low=True, open_high=True)
    sigma = read.number("sigma", 0.0, open_low=True)
    latency_ms = read.number("latency_ms", 0.0)
    abstained = read.boolean("abstained")
    label_name = read.string("label_name")
    provider = read.string("provider")
    if len(problems) > before:
        problems.append("certificate dropped: malformed")
        return None
    # Every field is present and well-formed here; the asserts narrow the types for mypy.
    assert label is not None and n0 is not None and n is not None and count is not None
    assert p_lower is not None and radius is not None and alpha is not None
    assert sigma is not None and latency_ms is not None and abstained is not None
    assert label_name is not None and provider is not None

    if count > n:
        problems.append(f"count {count} exceeds n {n}")
    if abstained != (label == ABSTAIN):
        problems.append(f"abstained={abstained} contradicts label {label}")
    if abstained and radius != 0.0:
        problems.append(f"an abstained certificate has radius {radius!r}, expected 0")
    if n == 0 and not abstained:
        problems.append("n: 0 estimation samples, but the certificate did not abstain")
    if len(problems) > before:
        problems.append("certificate dropped: inconsistent")
        return None
    # No estimation sample (a sequential budget spent in selection): the bound is 0.
    p_check = clopper_pearson_lower(count, n, alpha) if n > 0 else 0.0
    radius_check = radius_from_p_lower(p_check, sigma)
    if p_lower > p_check + _REL_TOL:
        problems.append(
            f"p_lower {p_lower!r} exceeds the Clopper-Pearson bound {p_check!r} of "
            f"count={count}, n={n}, alpha={alpha!r}"
        )
    if radius > radius_check * (1.0 + _REL_TOL) + 1e-12:
        problems.append(
            f"radius {radius!r} exceeds sigma * Phi^-1(p_lower) = {radius_check!r} "
            f"(sigma={sigma!r}, count={count}, n={n}, alpha={alpha!r})"
        )
    if not abstained and p_check < 0.5 - _REL_TOL:
        problems.append(f"not abstained, but the counts give p_lower {p_check!r} < 0.5")
    if len(problems) > before:
        problems.append("certificate dropped: claims more than its statistics support")
        return None
    return Certificate(
        label=label,
        p_lower=min(p_lower, p_check),
        radius=min(radius, radius_check),
        n0=n0,
        n=n,
        alpha=alpha,
        sigma=sigma,
        abstained=abstained,
        provider=provider,
        latency_ms=latency_ms,
        count=count,
        label_name=label_name,
    )


def _read_verdict(
    values: Mapping[str, str], stamp_s: float, problems: list[str]
) -> OodVerdict | None:
    text = values.get("ood_level")
    if text is None:
        problems.append("ood_level: missing (verdict dropped)")
        return None
    name = text.strip().lower()
    if name == NO_OOD:
        return None
    level = _LEVEL_NAMES.get(name)
    if level is None:
        problems.append(
            f"ood_level: {text[:40]!r} is not one of ok, warn, error, none (verdict dropped)"
        )
        return None
    reasons = tuple(r.strip() for r in values.get("ood_reasons", "").split(",") if r.strip())
    scores: dict[str, float] = {}
    for key, raw in values.items():
        if not key.startswith(OOD_SCORE_PREFIX):
            continue
        score = _parse_float(raw, allow_non_finite=True)
        score_name = key[len(OOD_SCORE_PREFIX) :]
        if score is None or not score_name:
            problems.append(f"{key}: {raw[:40]!r} is not a number (verdict dropped)")
            return None
        scores[score_name] = score
    return OodVerdict(level, reasons, MappingProxyType(scores), stamp_s)
