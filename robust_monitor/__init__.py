"""robust_monitor: a runtime safety monitor for camera perception.

Layers (data flows one way: frame -> tensor -> certificate -> decision -> command):
- ``robust_monitor.core``: certification, OOD scoring, arbiter logic, image decoding. No ROS import.
- ``robust_monitor.synth``: procedural road-sign data, scenes and image corruptions.
- ``robust_monitor.ros``: thin rclpy nodes over the core.
- ``robust_monitor.tools``: the ``robust-monitor`` command (certify, bench, ...).
"""

__version__ = "0.1.0"
