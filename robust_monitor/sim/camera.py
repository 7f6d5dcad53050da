"""The simulated camera: RoadScene frames at the vehicle's odometer, with the scenario's effects.

Per frame time ``t``: no frame while a ``dropout`` is active; the last delivered frame, byte for
byte, while ``frozen`` is active; otherwise the road (or ``render_tunnel`` while a ``tunnel`` is
active) seen from the vehicle's odometer, the active corruptions applied in file order, then
Gaussian read noise (``read_noise_dn``, default 3 DN; the camera-health check averages the frame
down to 160x120 grey, which divides the noise by about 3.5). A real sensor never gives two
identical frames, so a stopped vehicle must not look like a frozen driver.

Randomness: each effect draws from a generator seeded by (scenario seed, effect index); the
placement of fog, frost, mud and glare is the same in every frame of the effect, while the noise
corruptions (and the black frame's read noise) get a fresh draw per frame.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from robust_monitor.sim.scenario import Effect, Scenario
from robust_monitor.synth import corruptions
from robust_monitor.synth.scene import RoadScene, render_tunnel

ImageU8 = npt.NDArray[np.uint8]

_PER_FRAME_NOISE = frozenset({*corruptions.FAMILIES["noise"], "black_frame", "snow"})


class SimCamera:
    """Renders the frames of one scenario (stateful: remembers the last delivered frame)."""

    def __init__(self, scenario: Scenario, length_m: float) -> None:
        self.scenario = scenario
        self.scene = RoadScene(seed=scenario.seed, length_m=max(length_m, 50.0))
        self._last: ImageU8 | None = None

    def _rng(self, *stream: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.scenario.seed, *stream]))

    def active(self, t_s: float) -> list[Effect]:
        return [e for e in self.scenario.effects if e.active(t_s)]

    def frame(self, index: int, t_s: float, odometer_m: float) -> ImageU8 | None:
        """The frame at ``t_s`` taken from ``odometer_m``, or None when no frame arrives."""
        active = self.active(t_s)
        kinds = {e.type for e in active}
        if "dropout" in kinds:
            return None
        if "frozen" in kinds and self._last is not None:
            return self._last
        if "tunnel" in kinds:
            image = render_tunnel(odometer_m, self.scene.camera)
        else:
            image = self.scene.render_at(odometer_m, t_s).image
        for e in active:
            if e.severity is None:
                continue
            k = self.scenario.effects.index(e)
            per_frame = e.type in _PER_FRAME_NOISE
            rng = self._rng(1, k, index) if per_frame else self._rng(1, k)
            image = corruptions.corrupt(image, e.type, e.severity.at(t_s - e.start_s), rng)
        if self.scenario.read_noise_dn > 0:
            noise = self._rng(2, index).standard_normal(image.shape, dtype=np.float32)
            noisy = image + noise * np.float32(self.scenario.read_noise_dn)
            image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        self._last = image
        return image
