"""Test-wide set-up.

DDS traffic must stay on loopback: before anything can import rclpy, pin discovery to localhost,
give this test session its own domain id, and point Fast DDS at a profile that only allows
127.0.0.1 (and shared memory). Subprocesses started by tests inherit these variables.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

_HERE = Path(__file__).resolve().parent

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(_HERE / "fastdds_loopback.xml")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


# --- shared fixtures ----------------------------------------------------------------------------
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from robust_monitor.tools import reference_models  # noqa: E402

LINEAR_SHAPE = (1, 8, 8)


class LinearSetup:
    """A two-class linear model whose smoothed probability and radius have closed forms.

    Frames are ``x(t) = 0.5 + t * u`` with ``u`` the unit normal of the decision hyperplane,
    which passes through 0.5 * ones; so the signed distance to the boundary is exactly ``t``.
    """

    def __init__(self, path: Path, weights: np.ndarray, bias: np.ndarray, u: np.ndarray) -> None:
        self.path = path
        self.weights = weights
        self.bias = bias
        self.u = u

    def frame(self, t: float) -> np.ndarray:
        x = (0.5 + t * self.u).reshape(LINEAR_SHAPE).astype(np.float32)
        assert x.min() >= 0.0 and x.max() <= 1.0, "t too large for the [0, 1] box"
        return x

    @property
    def max_t(self) -> float:
        return float(0.5 / np.abs(self.u).max())


@pytest.fixture(scope="session")
def linear_setup(tmp_path_factory: pytest.TempPathFactory) -> LinearSetup:
    rng = np.random.default_rng(20190101)
    d = int(np.prod(LINEAR_SHAPE))
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    weights = np.stack([np.zeros(d), u]).astype(np.float32)
    bias = np.array([0.0, -0.5 * float(u.sum())], dtype=np.float32)
    path = tmp_path_factory.mktemp("models") / "linear.onnx"
    reference_models.save(reference_models.linear_classifier(weights, bias, LINEAR_SHAPE), path)
    return LinearSetup(path, weights, bias, u.astype(np.float64))


SPREAD_SIGMA = 0.25


@pytest.fixture(scope="session")
def small_cnn_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight 8-class CNN (64x64 RGB) with logits and a feature output.

    The head's bias centres the logits of a mid-grey frame under N(0, 0.25^2) noise, so the
    noise alone decides the vote and the counts spread over all classes (what a distribution
    test needs).
    """
    import onnxruntime as ort

    folder = tmp_path_factory.mktemp("models")
    probe = reference_models.save(
        reference_models.small_cnn(num_classes=8, seed=3, head_bias=np.zeros(8)),
        folder / "probe.onnx",
    )
    session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    grey = np.full((1, 3, 64, 64), 0.5, np.float32)
    noisy = grey + rng.standard_normal((400, 3, 64, 64), dtype=np.float32) * SPREAD_SIGMA
    mean_logits = session.run(["logits"], {"image": noisy})[0].mean(axis=0)
    return reference_models.save(
        reference_models.small_cnn(num_classes=8, seed=3, head_bias=-mean_logits),
        folder / "small_cnn.onnx",
    )
