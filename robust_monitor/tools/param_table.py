"""The README's parameter reference, generated from the nodes' own parameter tables.

Every parameter of the monitor and the arbiter is declared from a ``ParamSpec`` row (name,
default, description with the unit, range, tuning class); this module renders those rows as the
Markdown table between the ``<!-- parameters:begin -->`` and ``<!-- parameters:end -->`` markers of
README.md, so the reference cannot drift from the code (``test/test_readme_parameters.py``
fails when it does)::

    python -m robust_monitor.tools.param_table --write README.md
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from rclpy.parameter import Parameter

from robust_monitor.core.errors import ConfigError
from robust_monitor.ros.parameters import ParamSpec, Tuning

BEGIN = "<!-- parameters:begin -->"
END = "<!-- parameters:end -->"
_TUNING = {
    Tuning.STARTUP: "start-up",
    Tuning.GUARDED: "guarded",
    Tuning.RUNTIME: "run time",
}


def _number(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:g}"


def _range(spec: ParamSpec) -> str:
    parts = []
    if spec.value_range is not None:
        low, high = spec.value_range.from_value, spec.value_range.to_value
        parts.append(f"[{_number(low)}, {_number(high)}]")
    if spec.constraints:
        parts.append(spec.constraints)
    return "; ".join(parts)


def _default(spec: ParamSpec) -> str:
    value = spec.default
    if isinstance(value, Parameter.Type):  # an IntEnum: before the number case
        return "unset"
    if isinstance(value, str) and Path(value).is_absolute():  # a file inside the install
        return f"shipped `{Path(value).name}`"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, list):
        return "[" + ", ".join(_number(v) for v in value) + "]"
    if isinstance(value, (int, float)):
        return _number(value)
    return "unset"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(sections: Mapping[str, Iterable[ParamSpec]]) -> str:
    """One table: node, name, default, allowed values, when it may change, meaning."""
    lines = [
        "| node | parameter | default | allowed | changes | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for node, specs in sections.items():
        for spec in specs:
            cells = (
                node,
                f"`{spec.name}`",
                _default(spec),
                _range(spec),
                _TUNING[spec.tuning],
                spec.description,
            )
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def node_sections() -> dict[str, list[ParamSpec]]:
    """Both nodes' parameter tables, in declaration order."""
    from robust_monitor.ros import arbiter_node, monitor_node

    return {
        "monitor": list(monitor_node.SPECS.values()),
        "arbiter": list(arbiter_node.SPECS.values()),
    }


def render_block() -> str:
    return f"{BEGIN}\n{markdown_table(node_sections())}\n{END}"


def replace_block(text: str, block: str) -> str:
    """``text`` with the marked block replaced; ConfigError when the markers are missing."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ConfigError(f"README markers {BEGIN} ... {END} not found")
    return text[:start] + block + text[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="update the marked block of this file")
    args = parser.parse_args(argv)
    block = render_block()
    if args.write is None:
        print(block)
        return 0
    args.write.write_text(replace_block(args.write.read_text(), block))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
