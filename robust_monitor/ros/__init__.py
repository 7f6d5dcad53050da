"""The ROS 2 layer: thin nodes over the core (rclpy lives here and nowhere in ``core``).

- ``contract.py``: the ``~/certificate`` message contract (certificate <-> DiagnosticArray).
- ``image_conversion.py``: sensor_msgs Image / CompressedImage -> RGB frames.
- ``qos.py``: the QoS profiles, each chosen on purpose.
- ``parameters.py``: parameters declared from a table (descriptors, ranges, read-only rules).
- ``monitor_node.py``: the monitor node (camera in, certificates and /diagnostics out).

Nothing is imported here, so ``import robust_monitor.ros`` does not pull in rclpy.
"""
