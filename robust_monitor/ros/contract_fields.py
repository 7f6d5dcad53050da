"""The ``~/certificate`` message's fields as plain Python: keys, values, level and text.

``contract.py`` wraps these in ``diagnostic_msgs`` messages for the nodes; ``tools/report.py``
writes the very same key/value pairs into a results bag with ``rosbags``, without rclpy. One
builder for both, so an offline replay's bag and a live node's messages cannot drift apart.
Nothing here imports rclpy or a message package.
"""

from __future__ import annotations

import math

from robust_monitor.core.ood.verdict import OodLevel
from robust_monitor.core.pipeline import FrameResult

STATUS_NAME = "robust_monitor/certificate"
FORMAT = "robust_monitor.certificate/1"
OOD_SCORE_PREFIX = "ood."
NO_OOD = "none"
MODE_KEYS = ("certify_mode",)
"""How the frame was certified (``fixed`` or ``sequential``); written for every frame."""
SEQUENTIAL_KEYS = ("decision", "looks", "r_required")
"""Written only for sequential frames: why sampling stopped, the looks, the target radius."""
LEVEL_OK, LEVEL_WARN, LEVEL_ERROR = 0, 1, 2
"""``diagnostic_msgs/DiagnosticStatus`` levels (OK, WARN, ERROR)."""


def float_text(value: float) -> str:
    """Floats travel as ``repr`` text: exact round trip, and NaN/inf stay readable."""
    return repr(float(value))


def certificate_pairs(result: FrameResult, model_sha256: str) -> list[tuple[str, str]]:
    """The key/value pairs of one frame's certificate status (see ``contract.py``)."""
    cert = result.certificate
    pairs: list[tuple[str, str]] = [
        ("format", FORMAT),
        ("label", str(int(cert.label))),
        ("label_name", str(cert.label_name)),
        ("p_lower", float_text(cert.p_lower)),
        ("radius", float_text(cert.radius)),
        ("n0", str(int(cert.n0))),
        ("n", str(int(cert.n))),
        ("alpha", float_text(cert.alpha)),
        ("sigma", float_text(cert.sigma)),
        ("abstained", "true" if cert.abstained else "false"),
        ("count", str(int(cert.count))),
        ("latency_ms", float_text(cert.latency_ms)),
        ("provider", str(cert.provider)),
        ("model_sha256", str(model_sha256)),
        ("certify_mode", str(result.mode)),
    ]
    if result.mode == "sequential":
        r_required = math.nan if result.r_required is None else result.r_required
        pairs += [
            ("decision", str(result.decision or "")),
            ("looks", str(int(result.looks))),
            ("r_required", float_text(r_required)),
        ]
    verdict = result.verdict
    if verdict is None:
        return [*pairs, ("ood_level", NO_OOD), ("ood_reasons", "")]
    # A reason is a check's name; a comma inside one would split it on the way back.
    reasons = ",".join(r.replace(",", ";").strip() for r in verdict.reasons)
    pairs += [("ood_level", verdict.level.name.lower()), ("ood_reasons", reasons)]
    pairs += [
        (OOD_SCORE_PREFIX + name, float_text(score))
        for name, score in sorted(verdict.scores.items())
    ]
    return pairs


def certificate_level(result: FrameResult) -> int:
    """Status level of a frame (for people; consumers read the values): ERROR on an OOD error,
    WARN on an abstention or an OOD warning, else OK."""
    verdict = result.verdict
    if verdict is not None and verdict.level >= OodLevel.ERROR:
        return LEVEL_ERROR
    if result.certificate.abstained or (verdict is not None and verdict.level >= OodLevel.WARN):
        return LEVEL_WARN
    return LEVEL_OK


def certificate_message_text(result: FrameResult) -> str:
    """The human-readable ``message`` of the certificate status."""
    cert = result.certificate
    if cert.abstained:
        text = f"abstained (p_lower {cert.p_lower:.3g} < 0.5)"
    else:
        text = f"certified {cert.label_name} (radius {cert.radius:.3g}, p_lower {cert.p_lower:.3g})"
    verdict = result.verdict
    if verdict is None:
        return text + "; no OOD verdict"
    reasons = ", ".join(verdict.reasons)
    return text + f"; OOD {verdict.level.name.lower()}" + (f": {reasons}" if reasons else "")
