"""``robust-monitor model-card``: a tiny run writes the card into a folder that did not exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from robust_monitor.assets import DEFAULT_MODEL


def test_a_small_card_lands_in_a_new_out_folder(tmp_path: Path) -> None:
    out = tmp_path / "cards" / "nested"
    cmd = [
        sys.executable, "-m", "robust_monitor.tools.cli", "model-card",
        "--model", str(DEFAULT_MODEL),
        "--images", "2", "--chunk", "2", "--clean-images", "20", "--n0", "10", "--n", "100",
        "--work", str(tmp_path / "work"), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    card = json.loads((out / f"{DEFAULT_MODEL.stem}.card.json").read_text())
    assert card["certified_accuracy"]["images"] == 2
    assert 0.0 <= card["clean_accuracy"]["value"] <= 1.0
    assert (out / f"{DEFAULT_MODEL.stem}.card.md").is_file()
    assert (out / f"{DEFAULT_MODEL.stem}.card.png").stat().st_size > 1000


def test_an_out_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "card.json"
    out.write_text("{}")
    cmd = [
        sys.executable, "-m", "robust_monitor.tools.cli", "model-card",
        "--model", str(DEFAULT_MODEL),
        "--images", "2", "--chunk", "2", "--out", str(out), "--work", str(tmp_path / "work"),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "is not a folder" in done.stderr
