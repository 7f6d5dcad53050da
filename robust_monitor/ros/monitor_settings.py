"""The monitor's settings built from its parameter values, without rclpy.

``monitor_node.settings_from_values`` checks each value against the node's parameter table
(which needs rclpy) and then builds the settings here; ``tools/replay.py`` builds them here too
when rclpy is not installed, so both read the same keys the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from robust_monitor.core.imaging.preprocess import Roi
from robust_monitor.core.pipeline import SHIPPED, CertifyConfig


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """What the worker needs to build a pipeline."""

    model_path: str
    certify: CertifyConfig
    roi: Roi | None
    model_sha256: str = ""
    """Pinned hash of the model file ('' = not pinned)."""


def build_settings(values: Mapping[str, Any]) -> MonitorSettings:
    """Parameter values (already checked, defaults filled in) -> MonitorSettings.

    ``sigma`` 0 takes the model metadata's; an empty or unset ``roi`` takes the metadata's ROI.
    The sequential keys may be missing and then take the shipped values
    (``pipeline.SHIPPED``): ``certify_mode``, ``budget_ms`` (0: no deadline) and ``max_n``;
    ``r_required`` 0 or unset is the arbiter policy's (``pipeline.default_r_required``), and an
    unset or empty ``bands_l2`` its thresholds (``pipeline.default_bands``). The dataclasses'
    own checks still apply (ConfigError).
    """
    sigma = float(values["sigma"])
    roi_values = list(values.get("roi") or [])
    band_values = list(values.get("bands_l2") or [])
    # 0 is the "not set" sentinel; any other value (negative included) goes to the checks.
    r_required = float(values.get("r_required") or 0.0)
    budget_ms = float(values.get("budget_ms", SHIPPED.budget_ms) or 0.0)
    mode, max_n = values.get("certify_mode"), values.get("max_n")
    config = CertifyConfig(
        sigma=sigma if sigma > 0.0 else None,
        n0=int(values["n0"]),
        n=int(values["n"]),
        alpha=float(values["alpha"]),
        batch_size=int(values["batch_size"]),
        providers=str(values["provider"]),
        mode=SHIPPED.mode if mode is None else str(mode),
        r_required=None if r_required == 0.0 else r_required,
        budget_ms=None if budget_ms == 0.0 else budget_ms,
        max_n=SHIPPED.max_n if max_n is None else int(max_n),
        bands=tuple(float(v) for v in band_values) if band_values else None,
    )
    roi = Roi(*(float(v) for v in roi_values)) if roi_values else None
    pinned = str(values.get("model_sha256") or "").strip().lower()
    return MonitorSettings(str(values["model_path"]), config, roi, pinned)
