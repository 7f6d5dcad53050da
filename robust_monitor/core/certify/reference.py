"""A host-side reference smoother, shaped like Cohen et al.'s ``code/core.py``.

Noise is made on the host with numpy, the *bare* classifier runs on noisy batches, and votes
are counted in a Python loop. It exists to check the in-graph engine (same distribution of
counts) and to show in ``robust-monitor bench`` what the in-graph design saves. It is not used
on the per-frame path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from robust_monitor.core.certify.model import ModelSpec, load_model_spec


class HostReferenceSmoother:
    """Cohen-style sampling: numpy noise, bare-model inference, Python counting."""

    def __init__(
        self,
        model_path: str | Path,
        sigma: float,
        *,
        seed: int | None = None,
        intra_op_threads: int = 0,
    ) -> None:
        self.spec: ModelSpec = load_model_spec(model_path)
        self.sigma = float(sigma)
        self.rng = np.random.default_rng(seed)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_threads)
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )

    def sample_counts(self, frame: np.ndarray, num: int, batch_size: int) -> np.ndarray:
        counts = np.zeros(self.spec.num_classes, dtype=np.int64)
        remaining = num
        while remaining > 0:
            this = min(batch_size, remaining)
            batch = np.repeat(frame[None].astype(np.float32), this, axis=0)
            noise = self.rng.standard_normal(batch.shape, dtype=np.float32) * self.sigma
            logits = self.session.run(
                [self.spec.logits_name], {self.spec.input_name: batch + noise}
            )[0]
            for prediction in logits.argmax(axis=1):  # Cohen's count_arr, on purpose
                counts[int(prediction)] += 1
            remaining -= this
        return counts
