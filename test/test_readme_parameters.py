"""The README's parameter table is the nodes' own parameter declarations, rendered."""

from __future__ import annotations

from pathlib import Path

import pytest

from robust_monitor.core.errors import ConfigError
from robust_monitor.ros.parameters import ParamSpec, Tuning, float_range
from robust_monitor.tools import param_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_table_is_up_to_date() -> None:
    text = README.read_text()
    block = text[text.index(param_table.BEGIN) : text.index(param_table.END) + len(param_table.END)]
    assert block == param_table.render_block(), (
        "README parameter table is stale: python -m robust_monitor.tools.param_table --write "
        "README.md"
    )


def test_every_declared_parameter_has_a_row() -> None:
    table = param_table.render_block()
    for node, specs in param_table.node_sections().items():
        for spec in specs:
            assert f"| {node} | `{spec.name}` |" in table
            assert spec.description, f"{node}.{spec.name} has no description"


def test_a_row_says_default_range_tuning_and_meaning() -> None:
    spec = ParamSpec("stale_after_s", 0.5, "Evidence | older than this, seconds.", Tuning.GUARDED,
                     float_range(0.0, 60.0), "> 0")  # fmt: skip
    row = param_table.markdown_table({"arbiter": [spec]}).splitlines()[-1]
    assert row == (
        "| arbiter | `stale_after_s` | 0.5 | [0, 60]; > 0 | guarded | "
        "Evidence \\| older than this, seconds. |"
    )


def test_missing_markers_are_an_error() -> None:
    with pytest.raises(ConfigError, match="markers"):
        param_table.replace_block("no markers here", "x")
