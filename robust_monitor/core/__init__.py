"""The core: certification, OOD scoring, arbiter logic and image decoding.

Nothing under ``robust_monitor.core`` imports rclpy (a test checks it), so the core runs in a
notebook, a batch job or a test without ROS.
"""
