"""The certification engine: randomized smoothing of an ONNX classifier, one frame at a time.

``SmoothingEngine`` wraps a classifier in the smoothing graph (``graph.py``), runs it on the
best execution provider it can get (CUDA or TensorRT where present and asked for, CPU
everywhere else) and turns vote counts into certificates (``stats.py``).

Providers: onnxruntime-gpu lists CUDA as *available* even on a machine without a GPU, then
silently falls back to the CPU when a session is made. The engine therefore reports the
provider the session actually got (``provider``), never the one it asked for.

Noise is unpredictable by default: the graph's random ops are seeded from the operating
system's entropy source once per engine (``secrets``). A fixed seed is used only when a caller
passes one (tests, reproducible experiments). Exposure (see README, "Noise and seeds"):
onnxruntime's CPU random kernels use ``std::default_random_engine`` (a 31-bit linear
congruential generator in libstdc++, ``minstd_rand0``) and take the seed as a float32
attribute, so an engine's seed carries about 25 bits of entropy: fine for statistics, not a
cryptographic secret. The generator's period (``CPU_GENERATOR_PERIOD``, 2^31 - 2 uniforms) also
caps the samples of one frame on the CPU: past it the noise repeats within the frame and the
samples are no longer independent, so the engine refuses such a frame
(``SmoothingEngine.max_samples_per_frame``).
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from robust_monitor.core.certify.certificate import ABSTAIN, Certificate
from robust_monitor.core.certify.graph import (
    CLEAN_FEATURES,
    CLEAN_LOGITS,
    COUNTS,
    FRAME,
    LATTICE_STEP,
    NOISE_KINDS,
    NUM_CLEAN,
    NUM_NOISY,
    build_smoothing_graph,
)
from robust_monitor.core.certify.model import ModelSpec, load_model_spec, load_onnx
from robust_monitor.core.certify.precision import PRECISIONS, to_fp16
from robust_monitor.core.certify.stats import (
    certify_from_counts,
    predict_from_counts,
    select_clean,
    validate_alpha,
)
from robust_monitor.core.errors import ConfigError, InputError, ModelError

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_SEED_LIMIT = 2**31 - 2

CPU_GENERATOR_PERIOD = 2**31 - 2
"""Uniforms one onnxruntime CPU random kernel draws before its stream repeats. The kernels use
``std::default_random_engine``, libstdc++'s ``minstd_rand0``: ``x <- 16807 x mod (2^31 - 1)``,
one cycle through all 2^31 - 2 nonzero states (16807 is a primitive root), each uniform one step
(``test_certify_noise_source.py`` checks both against onnxruntime's output). Within that many
draws no state recurs, so the noise of one frame is made of distinct draws only while the frame
needs fewer; the CUDA provider's generator (Philox, 64-bit offsets) has no such limit here."""
NORMAL_DRAWS_PER_VALUE = 1.5
"""Uniforms per value counted for RandomNormalLike on the CPU: ``std::normal_distribution``
(Marsaglia's polar method) draws 4/pi = 1.27 on average; over the millions of values of even a
small frame, 1.5 is exceeded with negligible probability."""


def random_seed() -> float:
    """A graph seed drawn from the OS entropy source (a float, as ONNX random ops take it)."""
    return float(np.float32(secrets.randbelow(_SEED_LIMIT) + 1))


def resolve_providers(request: str | Sequence[str] = "auto") -> list[str]:
    """Providers to ask onnxruntime for, best first, always ending with the CPU.

    ``"auto"`` asks for CUDA when this onnxruntime build has it (the session may still fall back
    to the CPU; read ``SmoothingEngine.provider``). TensorRT is used only when asked for.
    """
    available = ort.get_available_providers()
    if isinstance(request, str):
        if request == "auto":
            names = ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []
        else:
            names = [PROVIDER_ALIASES.get(p.strip().lower(), p.strip()) for p in request.split(",")]
    else:
        names = [PROVIDER_ALIASES.get(p.lower(), p) for p in request]
    unknown = [p for p in names if p not in PROVIDER_ALIASES.values()]
    if unknown:
        raise ConfigError(f"unknown provider(s) {unknown}; allowed: auto, cpu, cuda, tensorrt")
    missing = [p for p in names if p not in available]
    if missing:
        raise ConfigError(
            f"provider(s) {missing} are not in this onnxruntime build (it has {available})"
        )
    trt, cuda = "TensorrtExecutionProvider", "CUDAExecutionProvider"
    if trt in names and cuda not in names and cuda in available:
        # The random ops are kept out of TensorRT engines (provider_options); CUDA runs them,
        # so that they do not fall through to the CPU.
        names.insert(names.index(trt) + 1, cuda)
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return names


RANDOM_OPS = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike")
"""ONNX random operators: never compiled into a TensorRT engine (see ``provider_options``)."""


def default_tensorrt_cache() -> Path:
    """Where TensorRT engines are cached: ``$XDG_CACHE_HOME/robust_monitor/tensorrt`` (default
    ``~/.cache/robust_monitor/tensorrt``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "robust_monitor" / "tensorrt"


def provider_options(
    providers: Sequence[str], *, tensorrt_cache: Path | None = None, fp16: bool = False
) -> list[dict[str, str]]:
    """onnxruntime provider options, one dict per provider of ``providers``.

    TensorRT: engines and timing caches under ``tensorrt_cache`` (``default_tensorrt_cache``),
    so a restart loads the built engine instead of spending minutes building it; fp16 engines
    with ``fp16``; and the random ops excluded (``trt_op_types_to_exclude``): TensorRT builds
    its engine from one graph and, like a replayed CUDA graph, an engine that captured a random
    node with its seed could hand every process, or every frame, the same noise. Those nodes
    run on CUDA (``resolve_providers`` adds it after TensorRT). CUDA and CPU: defaults.
    """
    out: list[dict[str, str]] = []
    for name in providers:
        if name == "TensorrtExecutionProvider":
            cache = tensorrt_cache or default_tensorrt_cache()
            out.append(
                {
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": "True",
                    "trt_timing_cache_path": str(cache),
                    "trt_fp16_enable": "True" if fp16 else "False",
                    "trt_op_types_to_exclude": ",".join(RANDOM_OPS),
                }
            )
        else:
            out.append({})
    return out


def _noise_for(provider: str) -> str:
    """RandomNormalLike is one kernel on GPUs; on the CPU, Box-Muller is faster (graph.py)."""
    return "box_muller" if provider == "CPUExecutionProvider" else "normal"


def _device_for(provider: str) -> str:
    """The onnxruntime device name a provider's inputs live on."""
    return "cuda" if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"


def short_provider(name: str) -> str:
    """``"CUDAExecutionProvider"`` -> ``"cuda"``."""
    for alias, full in PROVIDER_ALIASES.items():
        if full == name:
            return alias
    return name


@dataclass(frozen=True, slots=True)
class Samples:
    """Vote counts over ``n`` noisy copies of a frame, plus the clean frame's outputs."""

    counts: np.ndarray
    """int64 [K]: votes per class."""
    clean_logits: np.ndarray | None
    """float32 [K] (None when the clean pass was not asked for)."""
    clean_features: np.ndarray | None
    """float32 [D], when the model has a feature output."""

    @property
    def n(self) -> int:
        return int(self.counts.sum())


class BoundFrame:
    """A checked frame, copied once to the execution provider's device (``SmoothingEngine.bind``).

    Every graph run of the frame (selection, estimation, each sequential look) binds this one
    device copy through onnxruntime's I/O binding, so on a GPU the frame goes to the device
    once per frame and only the counts and the clean outputs come back.
    """

    __slots__ = ("array", "draws", "value")

    def __init__(self, array: np.ndarray, value: ort.OrtValue) -> None:
        self.array = array
        """The frame on the host: contiguous float32 [C, H, W], checked."""
        self.value = value
        """The same values on the session's device."""
        self.draws = 0
        """Uniforms the frame's noise has drawn so far (counted where the generator's period
        limits a frame: ``SmoothingEngine.draw_period``)."""

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda"``: where the graph reads the frame from."""
        return str(self.value.device_name()).lower()


@dataclass(frozen=True, slots=True)
class SmoothingResult:
    """A certificate together with the clean pass's outputs (for OOD scoring)."""

    certificate: Certificate
    clean_logits: np.ndarray
    clean_features: np.ndarray | None


def check_params(sigma: float, n0: int, n: int, alpha: float, batch_size: int) -> None:
    """Raise ConfigError with the allowed range for the first invalid certification parameter."""
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"sigma must be a finite number > 0, got {sigma!r}")
    if int(n0) < 0:
        raise ConfigError(
            f"n0 must be an integer >= 0 (0: the clean frame's prediction selects), got {n0!r}"
        )
    if int(n) < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}")
    validate_alpha(alpha)
    if int(batch_size) < 1:
        raise ConfigError(f"batch size must be an integer >= 1, got {batch_size!r}")


def _odd_runs(num: int, batch_size: int) -> int:
    """How many of the graph runs that draw ``num`` samples in batches have an odd size."""
    full, rest = divmod(max(0, num), batch_size)
    return full * (batch_size % 2) + rest % 2


class SmoothingEngine:
    """Randomized smoothing (Cohen et al. 2019) around one ONNX classifier.

    ``certify(frame)`` returns a Certificate: unless it abstains, with probability at least
    ``1 - alpha`` the smoothed classifier ``g(x) = argmax_c P(f(x + eps) = c)``,
    ``eps ~ N(0, sigma^2 I)``, predicts ``label`` everywhere within L2 distance ``radius`` of
    ``frame`` (in model-input space: [0, 1]-scaled pixels after preprocessing).
    """

    def __init__(
        self,
        model_path: str | Path,
        sigma: float | None = None,
        *,
        batch_size: int = 500,
        providers: str | Sequence[str] = "auto",
        seed: int | None = None,
        noise: str = "auto",
        intra_op_threads: int = 0,
        lattice: bool = True,
        profile_prefix: str | Path | None = None,
        precision: str = "fp32",
        tensorrt_cache: str | Path | None = None,
    ) -> None:
        """``lattice``: put frame and noise on one dyadic lattice so the noisy inputs are exact
        translates in float32 (graph.py, Voracek & Hein 2023); radii then shrink by
        ``radius_margin``. ``False`` gives the plain float32 sum, for comparison only.
        ``profile_prefix``: record onnxruntime's profile (which provider ran each node, and
        for how long) to a JSON file with this prefix; ``end_profiling`` returns its path
        (``placement.py`` reads it). ``precision``: ``"fp32"``, or ``"fp16"`` to run the
        classifier in half precision (``precision.to_fp16``: noise, lattice and vote count stay
        float32; TensorRT then builds fp16 engines). ``tensorrt_cache``: folder of TensorRT's
        engine and timing caches (default ``default_tensorrt_cache()``)."""
        base = load_onnx(model_path)
        self.spec: ModelSpec = load_model_spec(model_path, base)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        if precision == "fp16":
            base = to_fp16(base)
        self.tensorrt_cache = (
            Path(tensorrt_cache) if tensorrt_cache is not None else default_tensorrt_cache()
        )
        chosen_sigma = sigma if sigma is not None else self.spec.sigma
        if chosen_sigma is None:
            raise ConfigError(
                f"no sigma given and {self.spec.path.name} has no metadata sigma; pass sigma > 0"
            )
        check_params(chosen_sigma, 1, 1, 0.5, batch_size)
        self.sigma = float(chosen_sigma)
        self.batch_size = int(batch_size)
        self.lattice_step: float | None = LATTICE_STEP if lattice else None
        self.radius_margin = 0.0
        if self.lattice_step is not None:
            # Sums of lattice points are exact below 2^24 steps; frames lie in [0, 1] and a
            # draw beyond 64 sigma has probability below 1e-800.
            if 1.0 + 64.0 * self.sigma >= 2.0**24 * self.lattice_step:
                raise ConfigError(
                    f"sigma={self.sigma} is too large for the float32 lattice (step "
                    f"{self.lattice_step:g}); sigma must be below "
                    f"{(2.0**24 * self.lattice_step - 1.0) / 64.0:.4g}"
                )
            # Snapping moves any frame by at most step/2 per coordinate: two frames' snapped
            # images are at most step * sqrt(d) farther apart than the frames themselves.
            self.radius_margin = self.lattice_step * math.sqrt(math.prod(self.spec.input_shape))
        requested = resolve_providers(providers)
        if noise != "auto" and noise not in NOISE_KINDS:
            raise ConfigError(f"noise must be auto or one of {NOISE_KINDS}, got {noise!r}")
        self.seeded = seed is not None
        graph_seed = (
            float(np.float32(int(seed) % _SEED_LIMIT + 1)) if seed is not None else random_seed()
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_threads)
        options.log_severity_level = 3
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_prefix)
        self.requested_providers = requested
        # With noise="auto" the graph is built for the provider asked for first; if the session
        # falls back to the CPU it is rebuilt once with the noise kind that suits the CPU.
        chosen = noise if noise != "auto" else _noise_for(requested[0])
        self._session = self._make_session(base, graph_seed, chosen, options, requested)
        actual = self._session.get_providers()[0]
        if noise == "auto" and _noise_for(actual) != chosen:
            chosen = _noise_for(actual)
            self._session = self._make_session(base, graph_seed, chosen, options, [actual])
        self.noise = chosen
        self.providers: list[str] = list(self._session.get_providers())
        self.provider: str = short_provider(self.providers[0])
        self.fallback: str | None = None
        if self.providers[0] != requested[0]:
            self.fallback = (
                f"asked for {short_provider(requested[0])}, running on {self.provider} "
                "(its libraries or device are not available)"
            )
        self._outputs = [COUNTS, CLEAN_LOGITS]
        if self.spec.features_name is not None:
            self._outputs.append(CLEAN_FEATURES)
        self.device = _device_for(self.providers[0])
        """Where bound frames live: ``"cuda"`` for the CUDA and TensorRT providers, else
        ``"cpu"``."""
        self.draw_period: int | None = (
            CPU_GENERATOR_PERIOD if self.providers[0] == "CPUExecutionProvider" else None
        )
        """Most uniforms one frame's noise may draw (``CPU_GENERATOR_PERIOD`` on the CPU
        provider), None where the generator sets no limit."""

    def _make_session(
        self,
        base: onnx.ModelProto,
        seed: float,
        noise: str,
        options: ort.SessionOptions,
        providers: list[str],
    ) -> ort.InferenceSession:
        graph = build_smoothing_graph(base, self.spec, self.sigma, seed, noise, self.lattice_step)
        extra = provider_options(
            providers, tensorrt_cache=self.tensorrt_cache, fp16=self.precision == "fp16"
        )
        if "TensorrtExecutionProvider" in providers:
            self.tensorrt_cache.mkdir(parents=True, exist_ok=True)
        # A CUDA build on a machine without CUDA libraries logs a loud error and falls back to
        # the CPU; we report the fallback ourselves (``fallback``) instead of that log line.
        ort.set_default_logger_severity(4)
        try:
            return ort.InferenceSession(
                graph.SerializeToString(), options, providers=providers, provider_options=extra
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(
                f"{self.spec.path}: onnxruntime could not load the model: {exc}"
            ) from exc
        finally:
            ort.set_default_logger_severity(2)

    # -- the generator's period -----------------------------------------------------------
    def frame_draws(self, samples: int, odd_runs: int = 0) -> int:
        """Uniforms the noise of ``samples`` noisy copies draws, in graph runs of which
        ``odd_runs`` have an odd size: Box-Muller makes normals in pairs, so an odd run draws
        one copy's worth more; RandomNormalLike is counted at ``NORMAL_DRAWS_PER_VALUE``."""
        d = math.prod(self.spec.input_shape)
        if self.noise == "box_muller":
            return (int(samples) + int(odd_runs)) * d
        return math.ceil(NORMAL_DRAWS_PER_VALUE * int(samples) * d)

    @property
    def max_samples_per_frame(self) -> int | None:
        """Most noisy copies of one frame whose noise stays within ``draw_period`` (in runs of
        even size), or None where there is no limit: 174,762 for a 3x64x64 input on the CPU
        provider, 14,266 for 3x224x224."""
        if self.draw_period is None:
            return None
        per_copy = self.frame_draws(1)
        return self.draw_period // per_copy

    def check_frame_samples(self, samples: int, odd_runs: int = 0, what: str = "") -> None:
        """ConfigError when one frame's ``samples`` noisy copies (``odd_runs`` as in
        ``frame_draws``) would draw more uniforms than ``draw_period``: the generator would
        repeat within the frame, the copies would not be independent, and the binomial bounds
        behind the radius would not hold."""
        if self.draw_period is None:
            return
        draws = self.frame_draws(samples, odd_runs)
        if draws <= self.draw_period:
            return
        shape = "x".join(str(v) for v in self.spec.input_shape)
        label = f"{what} = {samples}" if what else f"{samples}"
        raise ConfigError(
            f"{label} samples of one {shape} frame would draw {draws:,} uniforms from "
            f"onnxruntime's CPU generator, whose stream repeats after {self.draw_period:,} "
            "(minstd_rand0): the noisy copies would not be independent and the certificate "
            f"would not hold. On the CPU provider use at most {self.max_samples_per_frame:,} "
            "samples per frame, or run on a GPU provider"
        )

    def check_certify_samples(self, n0: int, n: int, batch_size: int | None = None) -> None:
        """``check_frame_samples`` for CERTIFY with ``n0`` and ``n`` (``certify`` checks it;
        callers that configure it early, like the pipeline, check it when they start)."""
        bs = self.batch_size if batch_size is None else int(batch_size)
        odd = _odd_runs(int(n0), bs) + _odd_runs(int(n), bs)
        self.check_frame_samples(int(n0) + int(n), odd, "n0 + n")

    # -- frames ---------------------------------------------------------------------------
    def check_frame(self, frame: np.ndarray) -> np.ndarray:
        """Return ``frame`` as contiguous float32 [C, H, W], or raise InputError saying why."""
        if not isinstance(frame, np.ndarray):
            raise InputError(f"frame must be a numpy array, got {type(frame).__name__}")
        if frame.ndim != 3:
            raise InputError(
                f"frame must have rank 3 [C, H, W] = {list(self.spec.input_shape)}, "
                f"got shape {list(frame.shape)}"
            )
        if tuple(frame.shape) != self.spec.input_shape:
            raise InputError(
                f"frame shape {list(frame.shape)} does not match the model input "
                f"[C, H, W] = {list(self.spec.input_shape)}"
            )
        if not np.issubdtype(frame.dtype, np.floating):
            raise InputError(
                f"frame dtype must be floating point with values in [0, 1], got {frame.dtype} "
                "(scale integer images by 1/255 first)"
            )
        x = np.ascontiguousarray(frame, dtype=np.float32)
        if not np.isfinite(x).all():
            raise InputError("frame contains NaN or Inf values")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-6 or hi > 1.0 + 1e-6:
            raise InputError(f"frame values must lie in [0, 1], got min {lo:.4g}, max {hi:.4g}")
        return x

    def bind(self, frame: np.ndarray | BoundFrame) -> BoundFrame:
        """Check ``frame`` (``check_frame``) and copy it once to the session's device; a
        ``BoundFrame`` is returned as it is. Pass the result to ``sample`` for every run of
        the frame."""
        if isinstance(frame, BoundFrame):
            return frame
        x = self.check_frame(frame)
        return BoundFrame(x, ort.OrtValue.ortvalue_from_numpy(x, self.device, 0))

    # -- sampling -------------------------------------------------------------------------
    def sample(
        self,
        frame: np.ndarray | BoundFrame,
        num: int,
        batch_size: int | None = None,
        with_clean: bool = True,
    ) -> Samples:
        """Counts of the base classifier's votes over ``num`` fresh noisy copies of ``frame``
        (plus the clean frame's outputs when ``with_clean``). ``frame``: an array, checked and
        bound for this call, or a ``BoundFrame`` (``bind``) reused across calls."""
        bs = self.batch_size if batch_size is None else int(batch_size)
        if bs < 1:
            raise ConfigError(f"batch size must be an integer >= 1, got {batch_size!r}")
        return self._sample_checked(self.bind(frame), int(num), bs, with_clean)

    def _run(self, x: BoundFrame, num_noisy: int, num_clean: int) -> list[np.ndarray]:
        """One graph run through I/O binding: the frame from its device copy, the two sizes
        from the host (onnxruntime reads shape inputs there), the outputs back to the host."""
        if self.draw_period is not None:
            draws = self.frame_draws(num_noisy, num_noisy % 2)
            if x.draws + draws > self.draw_period:
                # Callers check their plan up front (certify, sequential); this catches any
                # sequence of runs of one bound frame that adds up past the period.
                raise ConfigError(
                    f"this run would bring the frame's noise to {x.draws + draws:,} uniforms, "
                    f"past the CPU generator's period of {self.draw_period:,} (minstd_rand0): "
                    "the noisy copies would repeat within the frame; at most "
                    f"{self.max_samples_per_frame:,} samples per frame on the CPU provider"
                )
            x.draws += draws
        binding = self._session.io_binding()
        binding.bind_ortvalue_input(FRAME, x.value)
        binding.bind_cpu_input(NUM_NOISY, np.array([num_noisy], np.int64))
        binding.bind_cpu_input(NUM_CLEAN, np.array([num_clean], np.int64))
        for name in self._outputs:
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def _sample_checked(
        self, x: BoundFrame, num: int, batch_size: int, with_clean: bool = True
    ) -> Samples:
        if num < 1:
            raise ConfigError(f"number of samples must be >= 1, got {num}")
        counts = np.zeros(self.spec.num_classes, dtype=np.int64)
        clean_logits: np.ndarray | None = None
        clean_features: np.ndarray | None = None
        remaining = num
        while remaining > 0:
            this = min(batch_size, remaining)
            # Only the first run of a frame carries the clean frame (for the OOD scores).
            first = clean_logits is None and with_clean
            out = self._run(x, this, 1 if first else 0)
            counts += out[0]
            if first:
                clean_logits = np.asarray(out[1][0], dtype=np.float32)
                if len(out) > 2:
                    clean_features = np.asarray(out[2][0], dtype=np.float32)
            remaining -= this
        if int(counts.sum()) != num:
            raise ModelError(f"vote counts sum to {int(counts.sum())}, expected {num}")
        return Samples(counts, clean_logits, clean_features)

    def sound_radius(self, radius: float) -> float:
        """A radius from the vote statistics, less the lattice margin (never below 0)."""
        return max(0.0, radius - self.radius_margin)

    # -- Cohen et al. ---------------------------------------------------------------------
    def predict(self, frame: np.ndarray, n: int = 1000, alpha: float = 0.001) -> int:
        """PREDICT: the smoothed class, or ABSTAIN (-1).

        With probability at least ``1 - alpha`` the returned class (when not ABSTAIN) is the
        smoothed classifier's prediction ``g(frame)``.
        """
        check_params(self.sigma, 1, n, alpha, self.batch_size)
        self.check_frame_samples(int(n), _odd_runs(int(n), self.batch_size), "n")
        return predict_from_counts(self.sample(frame, n).counts, alpha)

    def certify(
        self,
        frame: np.ndarray | BoundFrame,
        n0: int = 100,
        n: int = 1000,
        alpha: float = 0.001,
        batch_size: int | None = None,
    ) -> SmoothingResult:
        """CERTIFY one frame (Cohen et al. 2019).

        ``n0`` selection samples choose the candidate class; ``n`` fresh samples estimate its
        probability. Guarantee: unless the certificate abstains, with probability at least
        ``1 - alpha`` the smoothed classifier returns ``label`` for every input within L2
        distance ``radius`` of ``frame``. Abstains (label -1, radius 0) when ``p_lower < 1/2``.
        The radius is ``sigma * Phi^-1(p_lower) - radius_margin`` (see ``lattice``).

        ``n0 = 0`` selects the base model's prediction on the clean frame instead (see
        ``stats.select_clean``): no selection samples, same guarantee.
        """
        bs = self.batch_size if batch_size is None else int(batch_size)
        check_params(self.sigma, n0, n, alpha, bs)
        self.check_certify_samples(n0, n, bs)
        start = time.perf_counter()
        x = self.bind(frame)
        if int(n0) == 0:
            estimation = self._sample_checked(x, int(n), bs, with_clean=True)
            assert estimation.clean_logits is not None
            selection = Samples(
                select_clean(estimation.clean_logits, self.spec.num_classes),
                estimation.clean_logits,
                estimation.clean_features,
            )
        else:
            selection = self._sample_checked(x, int(n0), bs)
            estimation = self._sample_checked(x, int(n), bs, with_clean=False)
        outcome = certify_from_counts(selection.counts, estimation.counts, alpha, self.sigma)
        latency_ms = (time.perf_counter() - start) * 1e3
        cert = Certificate(
            label=outcome.label,
            p_lower=outcome.p_lower,
            radius=self.sound_radius(outcome.radius),
            n0=int(n0),
            n=int(n),
            alpha=float(alpha),
            sigma=self.sigma,
            abstained=outcome.abstained,
            provider=self.provider,
            latency_ms=latency_ms,
            count=outcome.count,
            label_name=self.spec.class_name(outcome.label if outcome.label != ABSTAIN else -1),
        )
        assert selection.clean_logits is not None
        return SmoothingResult(cert, selection.clean_logits, selection.clean_features)

    def end_profiling(self) -> Path:
        """Stop onnxruntime's profiler (``profile_prefix``) and return the JSON file's path."""
        return Path(self._session.end_profiling())

    def warmup(self) -> None:
        """Run the graph once so the first real frame does not pay for allocation."""
        c, h, w = self.spec.input_shape
        grey = self.bind(np.full((c, h, w), 0.5, np.float32))
        self._sample_checked(grey, min(self.batch_size, 64), 64)
