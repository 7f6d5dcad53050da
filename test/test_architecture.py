"""The tree keeps its promises: the core never imports ROS; the package card is complete."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import robust_monitor.core

ROOT = Path(__file__).resolve().parents[1]


def test_core_imports_no_rclpy() -> None:
    modules = [
        m.name for m in pkgutil.walk_packages(robust_monitor.core.__path__, "robust_monitor.core.")
    ]
    assert len(modules) >= 5
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "roots = ('rclpy', 'rosidl_runtime_py', 'torch')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in roots)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core pulled in: {out.stdout.strip()}"


def test_package_xml_declares_the_ros_dependencies() -> None:
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "robust_monitor"
    exec_deps = {e.text for e in root.findall("exec_depend")}
    for dep in ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "diagnostic_msgs", "std_srvs"):
        assert dep in exec_deps, dep
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}
    assert root.find("export/build_type").text == "ament_python"  # type: ignore[union-attr]


def test_ament_layout_files_exist() -> None:
    assert (ROOT / "resource" / "robust_monitor").is_file()
    cfg = (ROOT / "setup.cfg").read_text()
    assert "script_dir=$base/lib/robust_monitor" in cfg
    assert "install_scripts=$base/lib/robust_monitor" in cfg
    setup = (ROOT / "setup.py").read_text()
    for needle in (
        "share/ament_index/resource_index/packages",
        '"package.xml"',
        "launch",
        "config",
    ):
        assert needle in setup


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    head = readme.split("\n## ", 1)[0]
    assert "make test" in head and "make demo" in head
