"""``robust-monitor fleet-replay``: replay a whole fleet of recordings in parallel, report on all.

    robust-monitor fleet-replay BAGS... | --list FILE --out DIR [--workers N] [--threads T]
                                [--ray ADDRESS|local] [--retries R] [replay's options]

Every recording goes through ``replay.replay`` (the same pipeline, arbiter, configuration and
report folder as ``robust-monitor replay``), **one task per recording**: the arbiter's state at a
frame is a function of the recording's whole history (dwell times, trigger and release counts,
the ramps of the limit, the operator's release), so a recording cut into time slices would need
that state handed from slice to slice (sequential again) or overlapping slices whose warm-up
changes the answer near every cut. Parallelism comes from the fleet: hundreds of recordings.

Where the work runs:

- default: a local ``concurrent.futures.ProcessPoolExecutor`` with ``--workers`` processes
  (default: ``os.cpu_count()``), in the ``forkserver`` context: workers fork from a server
  process that has only imported the modules (an onnxruntime session or thread pool never
  crosses a ``fork``), so they start at once without importing everything again;
- ``--ray local``: a Ray cluster started on this machine with every address on 127.0.0.1 (Ray's
  single-machine mode, no dashboard, no usage statistics; the node's address is checked), shut
  down at the end; ``--ray ADDRESS``: an existing cluster; a Ray session already initialised in
  the calling process (a test, a notebook) is used as it is. The model (and its
  metadata and calibration files) and the parameter file are put into Ray's object store once
  (``ray.put``) and each worker writes them to a local cache folder; results stream back with
  ``ray.wait`` as tasks finish. The recordings and ``--out`` must be on storage every node sees.

Each worker runs onnxruntime with ``--threads`` intra-op threads (default ``cores // workers``,
at least 1) so that workers x threads is about the number of cores (``replay(threads=...)``,
``CertifyConfig.intra_op_threads``); ``configure_worker`` sets ``OMP_NUM_THREADS`` and
OpenCV's thread count to the same share.

Results are keyed by the recording's sha256 (every file of the bag, and the ``episodes.yaml``
beside it) and the configuration's sha256 (the resolved monitor and arbiter configuration, the
model's and its sidecar files' sha256, ``--seed``, ``--every``, ``--operator``, ``--topic``,
video and the package version). Each recording's report goes to
``DIR/recordings/<name>-<short key>/`` (what ``replay`` writes) and is marked done by a
``fleet_task.json`` beside ``summary.json``; a run into the same DIR skips the recordings whose
key is done (resume) and retries the rest. Identical recordings are replayed once.

A recording that fails (corrupt, truncated, a worker lost) is retried ``--retries`` times (default
1), then reported under ``failed`` with its error; the rest of the fleet completes and the fleet
report is still written, and the exit status is 1. Invalid options or parameter file: exit 2.

Determinism: with ``--seed K`` each recording is certified with a seed derived from K and the
recording's sha256, so the pool, Ray, and a resumed run give the same fleet summary (apart from
its ``run`` section: timing, what was replayed or skipped). Without ``--seed`` the noise comes
from the OS entropy source, as in ``replay``.

The fleet report (``fleet_report.py``): ``fleet_summary.json``, ``fleet_report.md`` and plots.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import fcntl
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from robust_monitor import __version__
from robust_monitor.core.errors import ConfigError

RECORDINGS_DIR = "recordings"
TASK_FILE = "fleet_task.json"
LOCK_FILE = ".fleet.lock"
TASK_FORMAT = "robust_monitor.fleet.task/1"
CONFIG_FORMAT = "robust_monitor.fleet.config/1"
EPISODES_FILE = "episodes.yaml"
MODEL_CACHE = "robust_monitor_fleet_models"
"""Folder under the system temp dir where Ray workers keep the shipped model files."""
RAY_OBJECT_STORE_BYTES = 256 * 2**20
"""Object store of a ``--ray local`` cluster: the model and small results need little."""
_HASH_CHUNK = 2**20


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line."""
    return " ".join(str(exc).split())


# --- options and the fleet's entries --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FleetOptions:
    """How to replay the fleet: replay's options, the backend and the retry policy."""

    params_file: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Monitor parameters over the file (``n0``, ``n``, ``model_path``, the sequential ones), as
    ``replay``'s (``replay.config_overrides``)."""
    seed: int | None = None
    """Base seed; each recording's seed derives from it and the recording's sha256."""
    operator: str = "auto-release"
    every: int = 1
    topic: str | None = None
    video: bool = True
    workers: int | None = None
    """Parallel tasks (default: ``os.cpu_count()``; with ``--ray ADDRESS`` the cluster's CPUs)."""
    threads: int | None = None
    """onnxruntime intra-op threads per worker (default: ``cores // workers``, at least 1)."""
    ray: str | None = None
    """None: local process pool; ``"local"``: a loopback Ray cluster; else a Ray address."""
    retries: int = 1
    top_episodes: int = 20


@dataclass(frozen=True, slots=True)
class FleetEntry:
    """One recording of the fleet, hashed and placed."""

    path: Path
    name: str
    sha256: str
    size: int
    """Bytes of the recording's files (the weight of the time-left estimate)."""
    key: str
    """sha256 of (recording sha256, configuration sha256): what a result is stored under."""
    folder: str
    """``recordings/<name>-<key[:12]>``, relative to the fleet's output folder."""
    seed: int | None


@dataclass(frozen=True, slots=True)
class ReplayTask:
    """What a worker needs for one recording (small and picklable)."""

    bag: str
    out: str
    key: str
    params_file: str | None
    overrides: dict[str, Any]
    seed: int | None
    operator: str
    every: int
    topic: str | None
    video: bool
    threads: int


ModelBundle = dict[str, Any]
"""``{"sha256", "model": file name, "files": {name: bytes}, "params": (name, bytes) | None}``;
``sha256`` covers the model files (names and contents): the name of the workers' cache folder."""


# --- hashing --------------------------------------------------------------------------------------
def _recording_files(path: Path) -> list[Path]:
    """The files a recording's result depends on: the bag's files and an episodes file beside."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"recording not found: {path}")
    beside = path.parent / EPISODES_FILE
    if beside.is_file():
        files.append(beside)
    return files


def recording_sha256(path: Path) -> tuple[str, int]:
    """(sha256, bytes) of a recording: every file's relative name, size and content, in order."""
    digest = hashlib.sha256(b"robust_monitor.recording/1\0")
    total = 0
    for f in _recording_files(path):
        rel = f.relative_to(path).as_posix() if f.is_relative_to(path) else f"../{f.name}"
        size = f.stat().st_size
        total += size
        digest.update(f"{rel}\0{size}\0".encode())
        with f.open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest(), total


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def derive_seed(seed: int | None, recording_sha: str) -> int | None:
    """A recording's noise seed from the fleet's ``--seed`` and its sha256 (None stays None)."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"robust_monitor.fleet.seed/1:{seed}:{recording_sha}".encode())
    return int.from_bytes(digest.digest()[:4], "big") % 2**31


def model_files(model_path: Path) -> dict[str, Path]:
    """The model and the sidecars a replay reads beside it (metadata, calibration)."""
    from robust_monitor.core.pipeline import default_calibration_path

    files = {model_path.name: model_path}
    for sidecar in (model_path.with_suffix(".json"), default_calibration_path(model_path)):
        if sidecar.is_file():
            files[sidecar.name] = sidecar
    return files


@dataclass(frozen=True, slots=True)
class ResolvedConfig:
    """The configuration every task runs with, and its sha256."""

    sha256: str
    description: dict[str, Any]
    model_path: Path
    params_file: Path


def resolve_config(options: FleetOptions) -> ResolvedConfig:
    """Validate the configuration once, in the driver, and hash what decides the results."""
    from robust_monitor.core.certify.model import sha256_file
    from robust_monitor.tools.replay import OperatorMode, default_params_file, load_config

    if options.every < 1:
        raise ConfigError(f"--every must be >= 1, got {options.every}")
    if options.retries < 0:
        raise ConfigError(f"--retries must be >= 0, got {options.retries}")
    if options.workers is not None and options.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {options.workers}")
    if options.threads is not None and options.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {options.threads}")
    try:
        OperatorMode(options.operator)
    except ValueError:
        allowed = [m.value for m in OperatorMode]
        raise ConfigError(f"--operator must be one of {allowed}, got {options.operator}") from None
    params = Path(options.params_file) if options.params_file is not None else default_params_file()
    config = load_config(params, overrides=options.overrides)
    model_path = Path(config.model_path).resolve()
    if not model_path.is_file():
        raise ConfigError(f"model not found: {model_path}")
    monitor = {k: v for k, v in config.monitor_values.items() if k != "model_path"}
    c = config.certify
    description: dict[str, Any] = {
        "format": CONFIG_FORMAT,
        "robust_monitor": __version__,
        "certify": {
            "sigma": c.sigma,
            "n0": c.n0,
            "n": c.n,
            "alpha": c.alpha,
            "batch_size": c.batch_size,
            "providers": c.providers,
        },
        "roi": None
        if config.roi is None
        else [config.roi.x, config.roi.y, config.roi.width, config.roi.height],
        "arbiter_policy": config.policy.as_dict(),
        "tick_hz": config.tick_hz,
        "monitor_values": monitor,
        "model": {name: sha256_file(p) for name, p in sorted(model_files(model_path).items())},
        "model_name": model_path.name,
        "seed": options.seed,
        "every": options.every,
        "operator": options.operator,
        "topic": options.topic,
        "video": options.video,
    }
    text = json.dumps(description, sort_keys=True, default=str)
    return ResolvedConfig(_sha256_bytes(text.encode()), description, model_path, params.resolve())


def _folder_name(name: str, key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "recording"
    return f"{RECORDINGS_DIR}/{safe[:60]}-{key[:12]}"


def read_list(path: Path) -> list[Path]:
    """A ``--list`` file: one recording per line; blank lines and ``#`` comments are skipped;
    relative paths are relative to the list file's folder."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read --list {path}: {exc}") from exc
    out = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            p = Path(text).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out


@dataclass
class FleetPlan:
    """The fleet's entries after hashing: unique recordings, duplicates, unreadable paths."""

    entries: list[FleetEntry] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)
    unreadable: list[dict[str, Any]] = field(default_factory=list)


def display_names(paths: Sequence[Path]) -> list[str]:
    """Short unique names: the recording's own name, with as many parent folders as it takes
    to tell recordings of the same name apart (``drive_a/roadside_drive``)."""

    def name(p: Path, depth: int) -> str:
        own = p.stem if p.suffix == ".bag" else p.name
        parents = [q.name for q in list(p.parents)[:depth] if q.name][::-1]
        return "/".join([*parents, own])

    depth = [0] * len(paths)
    for _ in range(64):
        names = [name(p, d) for p, d in zip(paths, depth, strict=True)]
        seen: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            seen.setdefault(n, []).append(i)
        clashes = [i for group in seen.values() if len(group) > 1 for i in group]
        if not clashes:
            return names
        for i in clashes:
            depth[i] += 1
    return [str(p) for p in paths]


def plan_fleet(paths: Sequence[Path], config: ResolvedConfig, seed: int | None) -> FleetPlan:
    """Hash every recording (in threads: hashlib releases the GIL) and name its folder."""
    unique: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        resolved = Path(os.path.abspath(p))
        if resolved not in seen:
            seen.add(resolved)
            unique.append(resolved)

    def hash_one(p: Path) -> tuple[str, int] | str:
        try:
            return recording_sha256(p)
        except (OSError, ConfigError) as exc:
            return _one_line(exc)

    with cf.ThreadPoolExecutor(max_workers=min(8, max(1, len(unique)))) as pool:
        hashed = list(pool.map(hash_one, unique))
    plan = FleetPlan()
    by_sha: dict[str, FleetEntry] = {}
    names = display_names(unique)
    for p, h, name in zip(unique, hashed, names, strict=True):
        if isinstance(h, str):
            plan.unreadable.append(
                {"name": name, "path": str(p), "error": h, "attempts": 0, "recording_sha256": None}
            )
            continue
        sha, size = h
        if sha in by_sha:
            plan.duplicates.append({"path": str(p), "same_as": str(by_sha[sha].path)})
            continue
        key = _sha256_bytes(f"{sha}:{config.sha256}".encode())
        # The folder takes the recording's own name only, so it does not depend on the rest of the
        # fleet (a resumed run with more recordings finds it again).
        folder = _folder_name(p.stem if p.suffix == ".bag" else p.name, key)
        entry = FleetEntry(p, name, sha, size, key, folder, derive_seed(seed, sha))
        by_sha[sha] = entry
        plan.entries.append(entry)
    return plan


# --- resume ---------------------------------------------------------------------------------------
def read_marker(out: Path, entry: FleetEntry) -> dict[str, Any] | None:
    """The ``fleet_task.json`` of a finished recording with this key, else None."""
    from robust_monitor.tools.report import SUMMARY_FILE

    folder = out / entry.folder
    try:
        marker = json.loads((folder / TASK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != TASK_FORMAT:
        return None
    if marker.get("key") != entry.key or marker.get("recording_sha256") != entry.sha256:
        return None
    return marker if (folder / SUMMARY_FILE).is_file() else None


def _write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One fleet run writes a DIR at a time (a second one is refused, not interleaved)."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / LOCK_FILE).open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"another fleet-replay is writing {out}") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove_leftovers(folder: Path) -> None:
    """Half-built report folders of an interrupted run (replay's ``.<name>.partial-*``)."""
    for p in folder.glob(".*"):
        if p.is_dir() and (".partial-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)


# --- the worker side ------------------------------------------------------------------------------
_configured_threads: int | None = None


def configure_worker(threads: int) -> None:
    """Limit a worker process's other compute libraries to ``threads`` threads (pool
    initializer; Ray per task): OpenMP/BLAS and OpenCV. onnxruntime's share goes to
    ``replay(threads=...)``. Only worker processes are changed.
    """
    global _configured_threads
    if _configured_threads == threads:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import cv2

    cv2.setNumThreads(threads)
    _configured_threads = threads


def materialize_bundle(bundle: ModelBundle) -> tuple[Path, Path | None]:
    """Write a shipped model bundle into this machine's cache; (model path, params path).

    The cache folder is named by the model files' sha256 and each file is written beside and
    renamed into place, so concurrent workers on a node share one copy and never see a half
    file; the parameter file's name carries its own sha256.
    """
    folder = Path(tempfile.gettempdir()) / MODEL_CACHE / str(bundle["sha256"])[:32]
    folder.mkdir(parents=True, exist_ok=True)
    named: dict[str, bytes] = dict(bundle["files"])
    if bundle.get("params") is not None:
        pname, ptext = bundle["params"]
        named[pname] = ptext
    for name, data in named.items():
        target = folder / name
        if target.is_file() and target.stat().st_size == len(data):
            continue
        tmp = folder / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.write_bytes(data)
        os.replace(tmp, target)
    params = folder / bundle["params"][0] if bundle.get("params") is not None else None
    return folder / str(bundle["model"]), params


def run_task(task: ReplayTask, bundle: ModelBundle | None = None) -> dict[str, Any]:
    """Replay one recording with ``replay.replay``; a result dict, never an exception.

    ``bundle``: the model and parameter file shipped through Ray's object store (written to a
    local cache first); None: use the paths in ``task`` (same machine).
    """
    began = time.perf_counter()
    try:
        configure_worker(task.threads)
        from robust_monitor.tools.replay import OperatorMode, replay

        overrides = dict(task.overrides)
        params_file = Path(task.params_file) if task.params_file else None
        source = "path"
        if bundle is not None:
            model_path, shipped_params = materialize_bundle(bundle)
            overrides["model_path"] = str(model_path)
            params_file = shipped_params
            source = "object-store"
        _, summary = replay(
            task.bag,
            task.out,
            topic=task.topic,
            params_file=params_file,
            overrides=overrides,
            seed=task.seed,
            operator=OperatorMode(task.operator),
            every=task.every,
            progress=None,
            video=task.video,
            threads=task.threads,
        )
    except Exception as exc:
        return {
            "status": "failed",
            "key": task.key,
            "error": f"{type(exc).__name__}: {_one_line(exc)}",
            "wall_s": time.perf_counter() - began,
        }
    return {
        "status": "done",
        "key": task.key,
        "frames": summary["frames"],
        "recording_frames": summary["recording"]["frames"],
        "duration_s": summary["recording"]["duration_s"],
        "wall_s": time.perf_counter() - began,
        "model_source": source,
        "model_path": summary["configuration"]["model"]["path"],
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def _ray_entry(task: ReplayTask, bundle: ModelBundle) -> dict[str, Any]:
    """The Ray task: ``bundle`` arrives from the object store (Ray resolves the reference)."""
    return run_task(task, bundle)


# --- backends -------------------------------------------------------------------------------------
Outcome = tuple[ReplayTask, dict[str, Any] | None, str | None]
"""(task, result or None, error of a lost task or None)."""


PRELOAD = ["robust_monitor.tools.fleet", "robust_monitor.tools.replay"]
"""Modules the pool's fork server imports once for every worker."""


class Backend(Protocol):
    """Where tasks run: ``slots`` at a time, outcomes as they finish."""

    slots: int

    def submit(self, task: ReplayTask) -> None:
        """Start one task."""

    def next_done(self) -> list[Outcome]:
        """Block until at least one task has finished; their outcomes."""

    def close(self) -> None:
        """Stop what still runs and free the workers."""


class PoolBackend:
    """A local ``ProcessPoolExecutor`` (forkserver): tasks read the model from its path."""

    name = "process-pool"

    def __init__(self, workers: int, threads: int) -> None:
        self.slots = workers
        """Tasks in flight at once: one per worker process."""
        self.threads = threads
        self._pool: cf.ProcessPoolExecutor | None = None
        self._futures: dict[cf.Future[dict[str, Any]], ReplayTask] = {}

    def _ensure(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: workers fork from a clean server process that has imported the
            # replay modules once (no onnxruntime session, no thread pool of ours: nothing
            # that fork breaks), so a worker starts in milliseconds instead of re-importing.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.slots,
                mp_context=context,
                initializer=configure_worker,
                initargs=(self.threads,),
            )
        return self._pool

    def submit(self, task: ReplayTask) -> None:
        self._futures[self._ensure().submit(run_task, task)] = task

    def next_done(self) -> list[Outcome]:
        done, _ = cf.wait(self._futures, return_when=cf.FIRST_COMPLETED)
        out: list[Outcome] = []
        broken = False
        for fut in done:
            task = self._futures.pop(fut)
            try:
                out.append((task, fut.result(), None))
            except BrokenProcessPool as exc:
                broken = True
                out.append((task, None, f"worker lost: {type(exc).__name__}: {_one_line(exc)}"))
            except Exception as exc:
                out.append((task, None, f"{type(exc).__name__}: {_one_line(exc)}"))
        if broken and self._pool is not None:
            # A dead worker breaks the whole pool: every task in flight is lost with it. A new
            # pool takes the retries.
            for fut, task in list(self._futures.items()):
                out.append((task, None, "worker lost: the process pool broke"))
                del self._futures[fut]
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


@contextlib.contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
"""Ray's single-machine mode (its default on macOS and Windows): the node takes 127.0.0.1 as
its address, so the GCS, raylet, object manager, agents and workers listen on loopback only.
Read by Ray when it is imported, so set before ``import ray``."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--ray needs Ray, which comes with the fleet extra: pip install -e '.[fleet]'"
        ) from exc
    return ray


@contextlib.contextmanager
def _single_machine_mode() -> Iterator[None]:
    """Ray imported before ``LOOPBACK_ENV`` was set read the switch already: set it again.

    (The node's address is checked after start-up in any case.)
    """
    constants = sys.modules.get("ray._private.ray_constants")
    old = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if constants is not None and old is not None:
        setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010
    try:
        yield
    finally:
        if constants is not None and old is not None:
            setattr(constants, "ENABLE_RAY_CLUSTER", old)  # noqa: B010


@contextlib.contextmanager
def local_ray(
    num_cpus: int, *, temp_dir: str | None = None, env: Mapping[str, str] | None = None
) -> Iterator[Any]:
    """Start a Ray cluster on this machine with every address on 127.0.0.1; shut it down after.

    Yields the ``ray`` module. Refuses (ConfigError) when the node did not come up on loopback.
    """
    with _env(LOOPBACK_ENV), _single_machine_mode():
        ray = _import_ray()
        if ray.is_initialized():
            raise ConfigError("Ray is already initialised in this process")
        kwargs: dict[str, Any] = {
            "address": "local",
            "num_cpus": num_cpus,
            "include_dashboard": False,
            "_node_ip_address": "127.0.0.1",
            "object_store_memory": RAY_OBJECT_STORE_BYTES,
            "log_to_driver": False,
            "logging_level": "WARNING",
            "runtime_env": {"env_vars": dict(env or {})},
        }
        if temp_dir is not None:
            kwargs["_temp_dir"] = temp_dir
        ray.init(**kwargs)
        try:
            addresses = {n["NodeManagerAddress"] for n in ray.nodes()}
            if addresses != {"127.0.0.1"}:
                raise ConfigError(f"the local Ray node did not stay on loopback: {addresses}")
            yield ray
        finally:
            ray.shutdown()


class RayBackend:
    """Ray tasks: the model bundle goes into the object store once, results come back by
    ``ray.wait`` as they finish. A lost worker or node is an error like any other (retried by
    the scheduler, not silently by Ray, so every attempt is counted)."""

    name = "ray"

    def __init__(self, ray: Any, slots: int, threads: int, bundle: ModelBundle) -> None:
        self.ray = ray
        self.slots = slots
        """Tasks in flight at once (Ray queues no more: results stream, retries stay in order)."""
        self.threads = threads
        self._bundle_ref = ray.put(bundle)
        self._remote = ray.remote(num_cpus=threads, max_retries=0)(_ray_entry)
        self._refs: dict[Any, ReplayTask] = {}

    def submit(self, task: ReplayTask) -> None:
        self._refs[self._remote.remote(task, self._bundle_ref)] = task

    def next_done(self) -> list[Outcome]:
        ready, _ = self.ray.wait(list(self._refs), num_returns=1)
        out: list[Outcome] = []
        for ref in ready:
            task = self._refs.pop(ref)
            try:
                out.append((task, self.ray.get(ref), None))
            except Exception as exc:  # RayError: worker crashed, node died, object lost
                out.append((task, None, f"{type(exc).__name__}: {_one_line(exc)}"[:2000]))
        return out

    def close(self) -> None:
        for ref in self._refs:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        self._refs.clear()


def make_bundle(config: ResolvedConfig) -> ModelBundle:
    """The model, its sidecars and the parameter file, as bytes (what ``ray.put`` ships)."""
    files = {name: p.read_bytes() for name, p in model_files(config.model_path).items()}
    params_text = config.params_file.read_bytes()
    params_name = f"params-{_sha256_bytes(params_text)[:12]}.yaml"
    content = "".join(f"{n}\0{_sha256_bytes(b)}\0" for n, b in sorted(files.items()))
    return {
        "sha256": _sha256_bytes(content.encode()),
        "model": config.model_path.name,
        "files": files,
        "params": (params_name, params_text),
    }


# --- progress -------------------------------------------------------------------------------------
class FleetProgress:
    """One line on a stream (stderr): recordings done, failed, frames per second, time left.

    Time left is estimated from the bytes of the recordings still to do at the rate bytes have
    been done so far (recordings vary in length; their size is known before any replay).
    """

    WIDTH = 20

    def __init__(self, total: int, skipped: int, todo_bytes: int, stream: TextIO | None) -> None:
        self.total = total
        self.skipped = skipped
        self.todo_bytes = max(1, todo_bytes)
        self.stream = stream
        # A terminal redraws one line at every recording; a log gets a line every 10 s at most.
        self.tty = stream is not None and hasattr(stream, "isatty") and stream.isatty()
        self.min_interval_s = 0.0 if self.tty else 10.0
        self._last = -math.inf
        self.start = time.perf_counter()
        self.done = 0
        self.failed = 0
        self.frames = 0
        self.done_bytes = 0
        self._width = 0

    def finished(self, ok: bool, frames: int, size: int) -> None:
        if ok:
            self.done += 1
            self.frames += frames
        else:
            self.failed += 1
        self.done_bytes += size
        self.show()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        finished = self.skipped + self.done + self.failed
        filled = int(self.WIDTH * finished / max(1, self.total))
        bar = "#" * filled + "." * (self.WIDTH - filled)
        rate = self.done_bytes / elapsed
        left = (self.todo_bytes - self.done_bytes) / rate if rate > 0 else math.inf
        eta = "--:--" if not math.isfinite(left) else f"{int(left) // 60:02d}:{int(left) % 60:02d}"
        return (
            f"fleet [{bar}] {finished}/{self.total} recordings ({self.skipped} skipped, "
            f"{self.failed} failed)  {self.frames / elapsed:6.1f} frames/s  left {eta}"
        )

    def show(self, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.perf_counter()
        if not final and now - self._last < self.min_interval_s:
            return
        self._last = now
        text = self.line()
        if self.tty:
            self._width = max(self._width, len(text))
            self.stream.write("\r" + text.ljust(self._width) + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


# --- the driver -----------------------------------------------------------------------------------
@dataclass
class FleetResult:
    """What a fleet run produced: the summary (also in ``fleet_summary.json``) and exit status."""

    summary: dict[str, Any]
    out: Path
    exit_code: int


def _schedule(
    backend: Backend,
    tasks: Sequence[ReplayTask],
    sizes: Mapping[str, int],
    retries: int,
    on_done: Callable[[ReplayTask, dict[str, Any], int], None],
    progress: FleetProgress,
) -> tuple[dict[str, dict[str, Any]], int]:
    """Run tasks with at most ``backend.slots`` in flight, retry failures; (failures, attempts)."""
    queue = list(tasks)
    queue.reverse()  # pop() from the end keeps the input order
    attempts: dict[str, int] = {}
    failures: dict[str, dict[str, Any]] = {}
    in_flight = 0
    submitted = 0
    while queue or in_flight:
        while queue and in_flight < backend.slots:
            task = queue.pop()
            attempts[task.key] = attempts.get(task.key, 0) + 1
            backend.submit(task)
            submitted += 1
            in_flight += 1
        for task, result, lost in backend.next_done():
            in_flight -= 1
            if result is not None and result.get("status") == "done":
                on_done(task, result, attempts[task.key])
                progress.finished(True, int(result["recording_frames"]), sizes[task.key])
                continue
            error = lost if lost is not None else str((result or {}).get("error", "unknown"))
            if attempts[task.key] <= retries:
                queue.append(task)  # next in line: a retry is not starved behind the rest
                continue
            failures[task.key] = {"error": error, "attempts": attempts[task.key]}
            progress.finished(False, 0, sizes[task.key])
    return failures, submitted


def default_workers(options: FleetOptions) -> int:
    """``--workers``, else the cores of this machine."""
    return options.workers or os.cpu_count() or 1


def run_fleet(
    recordings: Sequence[Path],
    out: Path,
    options: FleetOptions,
    *,
    progress: TextIO | None = None,
    ray_temp_dir: str | None = None,
) -> FleetResult:
    """Replay every recording into ``out`` and write the fleet report (module docstring)."""
    from robust_monitor.tools import fleet_report

    if not recordings:
        raise ConfigError("no recordings: give BAGS or --list FILE")
    config = resolve_config(options)
    plan = plan_fleet(recordings, config, options.seed)
    out = Path(out)
    run_id = uuid.uuid4().hex[:12]
    started = time.time()
    wall0 = time.perf_counter()
    with _locked(out):
        (out / RECORDINGS_DIR).mkdir(parents=True, exist_ok=True)
        _remove_leftovers(out / RECORDINGS_DIR)
        markers: dict[str, dict[str, Any]] = {}
        skipped: list[str] = []
        todo: list[FleetEntry] = []
        for entry in plan.entries:
            marker = read_marker(out, entry)
            if marker is not None:
                markers[entry.key] = marker
                skipped.append(entry.key)
            else:
                todo.append(entry)
        workers = default_workers(options)
        cores = os.cpu_count() or 1
        by_key = {e.key: e for e in plan.entries}
        failures: dict[str, dict[str, Any]] = {}
        replayed: list[str] = []
        submitted = 0
        backend_name = "ray" if options.ray is not None else "process-pool"
        threads = options.threads or max(1, cores // workers)
        meter = FleetProgress(
            len(plan.entries) + len(plan.unreadable),
            len(skipped),
            sum(e.size for e in todo),
            progress,
        )
        meter.failed = len(plan.unreadable)

        def on_done(task: ReplayTask, result: dict[str, Any], attempts: int) -> None:
            entry = by_key[task.key]
            marker = {
                "format": TASK_FORMAT,
                "key": entry.key,
                "recording_sha256": entry.sha256,
                "config_sha256": config.sha256,
                "recording": str(entry.path),
                "seed": entry.seed,
                "attempts": attempts,
                "run_id": run_id,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **{k: v for k, v in result.items() if k not in ("status", "key")},
            }
            _write_json_atomic(out / entry.folder / TASK_FILE, marker)
            markers[entry.key] = marker
            replayed.append(entry.key)

        tasks = [
            ReplayTask(
                bag=str(e.path),
                out=str(out / e.folder),
                key=e.key,
                params_file=str(config.params_file),
                overrides={**dict(options.overrides), "model_path": str(config.model_path)},
                seed=e.seed,
                operator=options.operator,
                every=options.every,
                topic=options.topic,
                video=options.video,
                threads=threads,
            )
            for e in todo
        ]
        sizes = {e.key: e.size for e in plan.entries}
        ray_address: str | None = None
        meter.show()
        if tasks:
            env = {v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
            with contextlib.ExitStack() as stack:
                backend: Backend
                if options.ray is None:
                    backend = PoolBackend(min(workers, len(tasks)), threads)
                else:
                    ray = _ray_session(stack, options, workers, threads, env, ray_temp_dir)
                    ray_address = options.ray
                    if options.workers is None and options.ray != "local":
                        workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
                    backend = RayBackend(ray, workers, threads, make_bundle(config))
                stack.callback(backend.close)
                failures, submitted = _schedule(
                    backend, tasks, sizes, options.retries, on_done, meter
                )
        meter.show(final=True)
        wall_s = time.perf_counter() - wall0
        failed = [
            {
                "name": by_key[k].name,
                "path": str(by_key[k].path),
                "recording_sha256": by_key[k].sha256,
                **v,
            }
            for k, v in failures.items()
        ] + plan.unreadable
        done_entries = [e for e in plan.entries if e.key in markers]
        frames_now = sum(int(markers[k].get("recording_frames", 0)) for k in replayed)
        certified_now = sum(int(markers[k].get("frames", 0)) for k in replayed)
        run = {
            "run_id": run_id,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "backend": backend_name,
            "ray_address": ray_address,
            "workers": workers,
            "threads_per_worker": threads,
            "cores": cores,
            "replayed": len(replayed),
            "skipped": len(skipped),
            "failed": len(failed),
            "attempts": submitted,
            "retries": submitted - len(replayed) - len(failures),
            "recordings": {
                by_key[k].name: ("replayed" if k in replayed else "skipped") for k in markers
            },
            "wall_s": wall_s,
            "recording_frames_replayed": frames_now,
            "certified_frames_replayed": certified_now,
            "frames_per_s": frames_now / wall_s if wall_s > 0 else None,
            "certified_frames_per_s": certified_now / wall_s if wall_s > 0 else None,
        }
        summary = fleet_report.write_fleet_report(
            out,
            entries=[
                fleet_report.EntryInfo(
                    name=e.name,
                    path=str(e.path),
                    recording_sha256=e.sha256,
                    key=e.key,
                    folder=e.folder,
                    seed=e.seed,
                )
                for e in done_entries
            ],
            failed=sorted(failed, key=lambda f: f["path"]),
            duplicates=plan.duplicates,
            configuration={
                "sha256": config.sha256,
                **config.description,
                "model_path": str(config.model_path),
                "params_file": str(config.params_file),
            },
            run=run,
            top_episodes=options.top_episodes,
        )
    return FleetResult(summary, out, 1 if failed else 0)


def _ray_session(
    stack: contextlib.ExitStack,
    options: FleetOptions,
    workers: int,
    threads: int,
    env: Mapping[str, str],
    temp_dir: str | None,
) -> Any:
    """The ``ray`` module, initialised for this run: an existing session in this process, a new
    loopback cluster (``local``), or a connection to ``options.ray``."""
    imported = sys.modules.get("ray")  # not imported here: `local` must set its switch first
    if imported is not None and imported.is_initialized():
        return imported  # started by the caller (a test, a notebook): theirs to shut down
    if options.ray == "local":
        return stack.enter_context(local_ray(workers * threads, temp_dir=temp_dir, env=env))
    ray = _import_ray()
    ray.init(address=options.ray, runtime_env={"env_vars": dict(env)}, log_to_driver=False)
    stack.callback(ray.shutdown)
    return ray


def comparable(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A fleet summary without what differs between runs of the same fleet (its ``run`` part)."""
    return {k: v for k, v in summary.items() if k != "run"}


# --- the command ----------------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from robust_monitor.tools.replay import add_config_args

    parser = sub.add_parser(
        "fleet-replay",
        help="replay many recordings in parallel (process pool or Ray), write a fleet report",
        description=__doc__.split("\n\n", 2)[0] if __doc__ else None,
    )
    parser.add_argument("bags", type=Path, nargs="*", help="rosbag2 folders or ROS 1 .bag files")
    parser.add_argument(
        "--list", type=Path, default=None, help="file with one recording per line (# comments)"
    )
    parser.add_argument("--out", type=Path, required=True, help="fleet output folder")
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel tasks (default: the cores)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="onnxruntime threads per worker (default: cores // workers)",
    )
    parser.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS|local",
        help="run on Ray: 'local' starts a loopback cluster here, else a cluster address",
    )
    parser.add_argument(
        "--retries", type=int, default=1, help="retries of a failed recording (default 1)"
    )
    add_config_args(parser)  # replay's: topic, params file, operator, every, n0/n/model, mode
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="base noise seed (per recording: derived from it and the recording's sha256); "
        "default: OS entropy",
    )
    parser.add_argument("--no-video", action="store_true", help="skip annotated.mp4")
    parser.add_argument(
        "--top-episodes", type=int, default=20, help="worst episodes listed in the report"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    paths = list(args.bags)
    if args.list is not None:
        paths += read_list(args.list)
    from robust_monitor.tools.replay import config_overrides

    options = FleetOptions(
        params_file=args.params_file,
        overrides=config_overrides(args),
        seed=args.seed,
        operator=args.operator,
        every=args.every,
        topic=args.topic,
        video=not args.no_video,
        workers=args.workers,
        threads=args.threads,
        ray=args.ray,
        retries=args.retries,
        top_episodes=args.top_episodes,
    )
    result = run_fleet(paths, args.out, options, progress=None if args.quiet else sys.stderr)
    print(format_fleet(result))
    return result.exit_code


def format_fleet(result: FleetResult) -> str:
    """A few lines for people: recordings, hours, rates, failures, where the report is."""
    s = result.summary
    f, r = s["fleet"], s["run"]
    duplicates = f", {f['duplicates']} duplicates" if f["duplicates"] else ""
    lines = [
        f"fleet: {f['recordings']} recordings done ({r['replayed']} replayed, {r['skipped']} "
        f"skipped), {len(s['failed'])} failed{duplicates}, {f['driving_h']:.2f} h of driving, "
        f"{f['recording_frames']} frames",
        f"run: {r['backend']}, {r['workers']} workers x {r['threads_per_worker']} threads, "
        f"{r['wall_s']:.1f} s, {r['frames_per_s'] or 0:.1f} frames/s",
        f"per hour: {f['handovers_per_h'] or 0:.2f} handover requests, "
        f"{f['minimal_risk_entries_per_h'] or 0:.2f} minimal-risk entries",
    ]
    for item in s["failed"]:
        lines.append(f"FAILED {item['path']}: {item['error']}")
    lines.append(f"report: {result.out / 'fleet_report.md'}")
    return "\n".join(lines)
