"""Where the smoothing graph's nodes run, read from onnxruntime's profiler.

The product's promise on a GPU is that nothing but the frame goes to the device and nothing but
counts and clean outputs come back: every node of the smoothing graph (noise generation, the
lattice, the classifier, the vote count) runs on the GPU's execution provider. onnxruntime
places a node on the CPU when the provider has no kernel for it (or for its input types), and
says so only in its profile. ``profile_placement`` builds a profiling engine, runs a few
frames, and returns, for each node that ran, its operator and its provider; ``off_provider``
lists the nodes that did not run where the session's first provider is. The GPU test
(``test/test_device_path.py``) asserts that list is empty on CUDA; on this project's CPU
machines the same code shows every node on the CPU.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robust_monitor.core.errors import ModelError

_KERNEL_SUFFIX = "_kernel_time"


@dataclass(frozen=True, slots=True)
class Placement:
    """The provider each node of a session ran on (from one profile)."""

    provider: str
    """The session's first provider (the one every node should be on)."""
    nodes: Mapping[str, tuple[str, str]]
    """Node name -> (operator type, provider that ran it)."""

    def off_provider(self, provider: str | None = None) -> list[str]:
        """Nodes that ran somewhere other than ``provider`` (default: ``self.provider``),
        as ``"name (OpType on Provider)"``, sorted."""
        want = provider or self.provider
        return sorted(
            f"{name} ({op} on {where})" for name, (op, where) in self.nodes.items() if where != want
        )

    def counts(self) -> dict[str, int]:
        """Nodes per provider."""
        return dict(Counter(where for _, where in self.nodes.values()))

    def report(self) -> dict[str, object]:
        """For a JSON report: the session's provider, nodes per provider, the nodes off it."""
        return {
            "provider": self.provider,
            "nodes_per_provider": self.counts(),
            "off_provider": self.off_provider(),
        }


def parse_profile(events: Sequence[Mapping[str, object]], provider: str) -> Placement:
    """A ``Placement`` from onnxruntime's profile events (the JSON list it writes): each
    ``Node`` event named ``<node>_kernel_time`` carries the operator and the provider."""
    nodes: dict[str, tuple[str, str]] = {}
    for event in events:
        name = str(event.get("name", ""))
        args = event.get("args")
        if event.get("cat") != "Node" or not name.endswith(_KERNEL_SUFFIX):
            continue
        if not isinstance(args, Mapping) or "provider" not in args:
            continue
        nodes[name[: -len(_KERNEL_SUFFIX)]] = (str(args.get("op_name", "?")), str(args["provider"]))
    if not nodes:
        raise ModelError("the profile has no node events (was profiling enabled?)")
    return Placement(provider, nodes)


def profile_placement(
    model_path: str | Path,
    sigma: float | None = None,
    *,
    providers: str | Sequence[str] = "auto",
    num: int = 64,
    runs: int = 2,
) -> Placement:
    """Run the smoothing graph of ``model_path`` ``runs`` times on a mid-grey frame (``num``
    noisy samples each, the first with the clean pass) under onnxruntime's profiler, and
    return where each node ran. The profile file goes to a temporary folder and is removed."""
    from robust_monitor.core.certify.engine import SmoothingEngine

    with tempfile.TemporaryDirectory(prefix="rm_profile_") as folder:
        engine = SmoothingEngine(
            model_path,
            sigma,
            batch_size=num,
            providers=providers,
            seed=1,
            profile_prefix=Path(folder) / "smoothing",
        )
        grey = engine.bind(np.full(engine.spec.input_shape, 0.5, np.float32))
        for i in range(runs):
            engine.sample(grey, num, with_clean=i == 0)
        path = engine.end_profiling()
        events = json.loads(path.read_text(encoding="utf-8"))
    return parse_profile(events, engine.providers[0])
