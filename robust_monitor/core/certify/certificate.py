"""The per-frame certificate: what randomized smoothing says about one frame."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

ABSTAIN = -1
"""Label value of a certificate that abstained (no class could be certified)."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """Result of CERTIFY (Cohen, Rosenfeld & Kolter 2019) for one frame.

    Guarantee: unless ``abstained``, with probability at least ``1 - alpha`` over the noise drawn
    for this frame, the smoothed classifier ``g(x) = argmax_c P(f(x + eps) = c)``,
    ``eps ~ N(0, sigma^2 I)``, returns ``label`` for every input within L2 distance ``radius`` of
    this frame.

    Units: ``radius`` and ``sigma`` are in model-input space, i.e. on pixel values scaled to
    [0, 1] *after* preprocessing (resize, region of interest, channel order), as an L2 norm over
    all C*H*W input values. ``latency_ms`` is wall time for the whole certification of the frame.

    Abstention: ``abstained`` is True when the one-sided Clopper-Pearson lower bound ``p_lower``
    of the top class probability is below 1/2; then ``label`` is ``ABSTAIN`` and ``radius`` is 0.
    """

    label: int
    p_lower: float
    radius: float
    n0: int
    n: int
    alpha: float
    sigma: float
    abstained: bool
    provider: str
    latency_ms: float
    count: int = 0
    """Votes for ``label`` (the selected class) among the ``n`` estimation samples."""
    label_name: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form (the CLI's ``--json`` line and the ROS message fields)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out
