"""Quality-of-service profiles of the ROS layer, each chosen on purpose.

- Camera input (``camera_qos``): ``qos_profile_sensor_data`` by default (best effort, keep last
  5, volatile). A best-effort subscriber matches both best-effort and reliable camera drivers, and
  an old frame is worth nothing to a monitor that only certifies the newest one. ``reliable`` is
  there for drivers or bag players that need it; ``depth`` only sizes the DDS reader queue (the
  node itself keeps one frame, see ``monitor_node.py``).
- Evidence streams (``evidence_qos``): reliable, keep last 10, volatile. Each certificate is one
  frame's evidence; a reliable publisher still matches best-effort subscribers.
- State topics (``latched_qos``): reliable + transient local, depth 1, so a late subscriber (an
  arbiter or a launch check started after the monitor) gets the current state at once.
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from robust_monitor.core.errors import ConfigError

RELIABILITY_CHOICES = ("best_effort", "reliable")
"""Values of the ``qos_reliability`` parameter."""
DEFAULT_CAMERA_DEPTH = int(qos_profile_sensor_data.depth)
MAX_CAMERA_DEPTH = 100


def camera_qos(reliability: str = "best_effort", depth: int = DEFAULT_CAMERA_DEPTH) -> QoSProfile:
    """The camera subscription's profile: sensor data QoS with the given reliability and depth."""
    if reliability not in RELIABILITY_CHOICES:
        raise ConfigError(
            f"qos_reliability must be one of {RELIABILITY_CHOICES}, got {reliability!r}"
        )
    if not 1 <= int(depth) <= MAX_CAMERA_DEPTH:
        raise ConfigError(f"qos_depth must be in [1, {MAX_CAMERA_DEPTH}], got {depth}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=(
            ReliabilityPolicy.BEST_EFFORT
            if reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE
        ),
        durability=qos_profile_sensor_data.durability,
    )


def evidence_qos(depth: int = 10) -> QoSProfile:
    """Per-frame evidence (certificates, radii, diagnostics): reliable, volatile."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> QoSProfile:
    """State topics: reliable + transient local, depth 1 (late joiners get the last value)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
