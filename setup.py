"""Build script for robust_monitor: an ament_python ROS 2 package that also installs with plain pip.

Two ways in, one source of truth:
- colcon (ROS 2 workspace): ament_python runs this file; the data_files below put package.xml,
  the resource marker, launch/ and config/ under share/robust_monitor the ament way, and setup.cfg
  puts the node executables under lib/robust_monitor where `ros2 run` looks.
- pip (a virtualenv, no ROS installed): the same data files land under <venv>/share, runtime
  dependencies come from PyPI, and the `ros` extra brings ROS 2 (kilted) itself from PyPI.
"""

from __future__ import annotations

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "robust_monitor"


def _tree(source_dir: str, dest_root: str) -> list[tuple[str, list[str]]]:
    """Every file under source_dir as data_files entries that keep the folder layout."""
    entries: list[tuple[str, list[str]]] = []
    for folder, _dirs, files in os.walk(source_dir):
        paths = [os.path.join(folder, f) for f in sorted(files) if not f.startswith(".")]
        if paths:
            entries.append((os.path.join(dest_root, folder), paths))
    return entries


share = os.path.join("share", PACKAGE)

data_files = [
    ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
    (share, ["package.xml"]),
    (os.path.join(share, "launch"), sorted(glob("launch/*.py"))),
    (os.path.join(share, "config"), sorted(glob("config/*.yaml"))),
    (os.path.join(share, "config", "sros2"), sorted(glob("config/sros2/*.xml"))),
]

ROS_FROM_PYPI = [
    "ros-kilted-rclpy==9.1.2",
    "ros-kilted-sensor-msgs==5.5.1",
    "ros-kilted-std-msgs==5.5.1",
    "ros-kilted-geometry-msgs==5.5.1",
    "ros-kilted-diagnostic-msgs==5.5.1",
    "ros-kilted-std-srvs==5.5.1",
    "ros-kilted-rmw-fastrtps-cpp==9.3.3",
    "ros-kilted-fastdds==3.2.3",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Runtime safety monitor: randomized-smoothing certification, OOD checks, fail-safe arbiter",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # Shipped models, calibration files and the sample drive travel inside the Python package so a
    # pip install and a colcon install find them the same way (importlib.resources).
    package_data={PACKAGE: ["assets/*", "assets/**/*"]},
    include_package_data=True,
    data_files=data_files,
    install_requires=[
        "setuptools",
        "numpy>=1.26,<3",
        "scipy>=1.12",  # scipy.stats.binomtest (binom_test was removed in 1.12)
        "onnx>=1.16,<1.30",
        # onnxruntime-gpu runs on the CPU provider too and reports the providers it really got.
        # It has no PyPI wheels for aarch64 (Jetson users install NVIDIA's build), so the plain
        # CPU build stands in there.
        "onnxruntime-gpu==1.31.1; platform_machine == 'x86_64' and sys_platform == 'linux'",
        "onnxruntime==1.31.1; platform_machine != 'x86_64' or sys_platform != 'linux'",
        "opencv-python-headless>=4.8",
        "PyYAML>=6",
        "rosbags>=0.10",
        "matplotlib>=3.8",
    ],
    extras_require={
        "ros": ROS_FROM_PYPI,
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "mypy>=1.10",
            "types-PyYAML",
            "ray==2.60.0",  # test/test_fleet.py runs a loopback Ray cluster
        ],
        # `robust-monitor fleet-replay --ray`: Ray tasks (the process pool needs nothing).
        "fleet": ["ray==2.60.0"],
        # Development only: retraining the shipped models (see `make model`).
        "train": ["torch==2.13.0", "onnxscript>=0.5"],
    },
    tests_require=["pytest"],
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "robust-monitor = robust_monitor.tools.cli:main",
            # ROS 2 executables (`ros2 run robust_monitor monitor_node`).
            "monitor_node = robust_monitor.ros.monitor_node:main",
            "arbiter_node = robust_monitor.ros.arbiter_node:main",
            "robust_monitor_all = robust_monitor.ros.combined:main",
        ],
    },
)
