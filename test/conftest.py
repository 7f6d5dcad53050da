"""Test-wide set-up.

DDS traffic must stay on loopback: before anything can import rclpy, pin discovery to localhost,
give this test session its own domain id, and point Fast DDS at a profile that only allows
127.0.0.1 (and shared memory). Subprocesses started by tests inherit these variables.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

_HERE = Path(__file__).resolve().parent

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(_HERE / "fastdds_loopback.xml")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
