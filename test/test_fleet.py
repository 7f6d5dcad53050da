"""``robust-monitor fleet-replay``: a generated fleet (with one corrupt recording) replayed on
the local process pool and on a loopback Ray cluster started here; both must give the same
fleet summary, report the corrupt recording, and a resumed run must redo nothing."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from robust_monitor.tools import fleet_report
from robust_monitor.tools.bench_fleet import write_fleet
from robust_monitor.tools.cli import main
from robust_monitor.tools.fleet import (
    TASK_FILE,
    FleetOptions,
    FleetProgress,
    FleetResult,
    ReplayTask,
    _schedule,
    comparable,
    derive_seed,
    local_ray,
    read_list,
    recording_sha256,
    run_fleet,
)

FAST_PARAMS = """\
/**/robust_monitor:
  ros__parameters:
    n0: 16
    n: 64
    provider: cpu
/**/robust_monitor_arbiter:
  ros__parameters:
    recovery_time_s: 0.2
    ood_warn_as: ignore
"""
"""Small n for CI (n = 64 still certifies up to r = 0.318 > 0.30 at alpha 0.001); a short
recovery so that a 12-frame recording gets released and drives. The second recording starts in
the last half second of the tunnel, whose frames raise the camera's dim WARN; ignoring WARNs
lets that recording be released before the blocked lens (an ERROR) asks for the handover."""
FRAMES = 12
OFFSETS_S = (0.0, 45.5, 27.0)
"""Clear road; the blocked lens comes at 46.0 s (a handover request); before the glare."""
SEED = 7


@dataclass
class Fleet:
    good: list[Path]
    corrupt: Path
    params: Path
    root: Path

    def options(self, **kwargs: Any) -> FleetOptions:
        base: dict[str, Any] = {
            "params_file": self.params,
            "seed": SEED,
            "video": False,
            "workers": 2,
            "threads": 1,
            "retries": 1,
        }
        return FleetOptions(**{**base, **kwargs})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    root = tmp_path_factory.mktemp("fleet")
    *good, corrupt = write_fleet(root / "bags", 4, FRAMES, offsets_s=(*OFFSETS_S, 10.0))
    (data,) = [p for p in corrupt.iterdir() if p.suffix in (".mcap", ".db3")]
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) // 3])  # truncated mid-recording
    params = root / "fast.yaml"
    params.write_text(FAST_PARAMS, encoding="utf-8")
    return Fleet(good, corrupt, params, root)


@dataclass
class PoolRuns:
    first: FleetResult
    second: FleetResult
    mtimes_after_first: dict[str, int]


def _summary_mtimes(result: FleetResult) -> dict[str, int]:
    return {
        r["name"]: (result.out / r["summary"]).stat().st_mtime_ns
        for r in result.summary["recordings"]
    }


@pytest.fixture(scope="module")
def pool_runs(fleet: Fleet) -> PoolRuns:
    """Two of the fleet's good recordings and the corrupt one, then the whole fleet into the
    same folder (a resumed run that has one new recording)."""
    out = fleet.root / "pool"
    a, b, _ = fleet.good
    first = run_fleet([a, b, fleet.corrupt], out, fleet.options())
    mtimes = _summary_mtimes(first)
    second = run_fleet([*fleet.good, fleet.corrupt], out, fleet.options())
    return PoolRuns(first, second, mtimes)


# --- the local pool -------------------------------------------------------------------------------
def test_pool_replays_the_fleet_and_reports_the_corrupt_recording(
    fleet: Fleet, pool_runs: PoolRuns
) -> None:
    result = pool_runs.second
    s = result.summary
    assert result.exit_code == 1, "a failed recording makes the exit status 1"
    assert [r["name"] for r in s["recordings"]] == [p.name for p in fleet.good]
    (failed,) = s["failed"]
    assert failed["path"] == str(fleet.corrupt)
    assert failed["attempts"] == 2, "retried once, then reported"
    assert failed["error"].startswith("RecordingError: ") and str(fleet.corrupt) in failed["error"]
    f = s["fleet"]
    assert f["recordings"] == 3 and f["failed"] == 1
    assert f["recording_frames"] == 3 * FRAMES == f["certified_frames"]
    assert f["driving_s"] == pytest.approx(3 * FRAMES / 15.0, rel=1e-3)
    # The fleet's distributions pool every frame of every recording.
    assert sum(f["p_lower_histogram"]["counts"]) == 3 * FRAMES
    assert 0.0 < f["p_lower"]["p50"] <= 1.0 and f["radius_l2"]["max"] > 0.0
    assert sum(f["time_in_state_s"].values()) == pytest.approx(f["driving_s"], rel=1e-6)
    assert f["handovers_requested"] == sum(r["handovers_requested"] for r in s["recordings"])
    assert f["handovers_per_h"] == pytest.approx(f["handovers_requested"] / f["driving_h"])
    # The blocked lens asks for a handover: the worst episode, linked to its report.
    blocked = s["recordings"][1]
    assert blocked["handovers_requested"] >= 1
    worst = s["worst_episodes"][0]
    assert worst["recording"] == blocked["name"] and worst["rank"] == 1
    assert worst["worst_state"] in ("HANDOVER_REQUESTED", "MINIMAL_RISK")
    assert "blocked" in worst["ood_reasons"]
    assert (result.out / worst["summary"]).is_file() and (result.out / worst["plot"]).is_file()
    # The clear road drives without an episode.
    assert s["recordings"][0]["final_state"] == "NOMINAL"
    assert all(ep["recording"] != s["recordings"][0]["name"] for ep in s["worst_episodes"])
    # Every per-recording report is replay's, under recordings/<name>-<short key>/.
    for r in s["recordings"]:
        folder = result.out / r["report"]
        assert folder.parent.name == "recordings" and folder.name.startswith(r["name"] + "-")
        replay_summary = json.loads((folder / "summary.json").read_text())
        assert replay_summary["format"] == "robust_monitor.replay/1"
        assert replay_summary["configuration"]["certify"]["seed"] == r["seed"]
        assert r["seed"] == derive_seed(SEED, r["recording_sha256"])
    # The fleet report: JSON on disk equal to the returned one, markdown with links, plots.
    on_disk = json.loads((result.out / fleet_report.SUMMARY_FILE).read_text())
    assert on_disk == s
    md = (result.out / fleet_report.REPORT_FILE).read_text()
    assert f"]({worst['summary']})" in md and str(fleet.corrupt) in md
    for plot in (fleet_report.DISTRIBUTIONS_PLOT, fleet_report.STATES_PLOT):
        assert (result.out / plot).stat().st_size > 10_000
    assert not [p for p in (result.out / "recordings").iterdir() if p.name.startswith(".")]


def test_resumed_run_does_no_work_twice(fleet: Fleet, pool_runs: PoolRuns) -> None:
    first, second = pool_runs.first.summary, pool_runs.second.summary
    assert first["run"]["replayed"] == 2 and first["run"]["skipped"] == 0
    # Second run: only the new recording is replayed (and the failed one tried again).
    assert second["run"]["replayed"] == 1 and second["run"]["skipped"] == 2
    assert second["run"]["attempts"] == 1 + 2
    a, b, c = (p.name for p in fleet.good)
    assert second["run"]["recordings"] == {a: "skipped", b: "skipped", c: "replayed"}
    mtimes = _summary_mtimes(pool_runs.second)
    for name, before in pool_runs.mtimes_after_first.items():
        assert mtimes[name] == before, f"{name} was replayed again"
    for r in second["recordings"]:
        marker = json.loads((pool_runs.second.out / r["report"] / TASK_FILE).read_text())
        expected = second["run"]["run_id"] if r["name"] == c else first["run"]["run_id"]
        assert marker["run_id"] == expected
        assert marker["model_source"] == "path"


def test_the_key_follows_the_recording_and_the_configuration(fleet: Fleet, tmp_path: Path) -> None:
    """Another n is another configuration: nothing is skipped; a changed byte is another
    recording. (Hash level only: no replay.)"""
    from robust_monitor.tools.fleet import plan_fleet, resolve_config

    base = resolve_config(fleet.options())
    assert resolve_config(fleet.options()).sha256 == base.sha256
    other = resolve_config(fleet.options(overrides={"n": 65}))
    assert other.sha256 != base.sha256
    assert resolve_config(fleet.options(seed=SEED + 1)).sha256 != base.sha256
    copy = tmp_path / "copy"
    shutil.copytree(fleet.good[0], copy)
    assert recording_sha256(copy) == recording_sha256(fleet.good[0])
    plan = plan_fleet([fleet.good[0], copy, tmp_path / "missing"], base, SEED)
    assert [e.path for e in plan.entries] == [fleet.good[0]]
    assert plan.duplicates == [{"path": str(copy), "same_as": str(fleet.good[0])}]
    assert plan.unreadable[0]["error"].startswith("recording not found")
    (data,) = [p for p in copy.iterdir() if p.suffix in (".mcap", ".db3")]
    raw = bytearray(data.read_bytes())
    raw[-100] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert recording_sha256(copy) != recording_sha256(fleet.good[0])
    assert derive_seed(None, "x") is None
    assert derive_seed(1, "x") != derive_seed(2, "x")


# --- Ray ------------------------------------------------------------------------------------------
def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _decode_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    import ipaddress

    return str(ipaddress.IPv6Address(b"".join(words)))


def listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets those processes listen on (from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # 0A: LISTEN
                out.add(_decode_address(parts[1].split(":")[0]))
    return out


def _is_loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@dataclass
class RayCluster:
    ray: Any
    pids: set[int]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """A Ray cluster on this machine, every address on 127.0.0.1, shut down at the end."""
    temp_dir = tempfile.mkdtemp(prefix="rmray", dir="/tmp")  # short: Ray's socket paths
    before = _descendants(os.getpid())  # e.g. multiprocessing's resource tracker: not Ray's
    try:
        with local_ray(2, temp_dir=temp_dir) as ray:
            cluster = RayCluster(ray, set())

            @ray.remote(num_cpus=1)
            def pid() -> int:
                return os.getpid()

            ray.get([pid.remote() for _ in range(2)])  # the workers are up
            cluster.pids = _descendants(os.getpid()) - before
            yield cluster
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and any(
            Path(f"/proc/{p}").exists() for p in cluster.pids
        ):
            time.sleep(0.2)
        alive = [p for p in cluster.pids if Path(f"/proc/{p}").exists()]
        assert not alive, f"Ray processes left after shutdown: {alive}"
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_cluster_listens_on_loopback_only(ray_cluster: RayCluster) -> None:
    ray = ray_cluster.ray
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    addresses = listening_addresses(ray_cluster.pids)
    assert addresses, "found no listening socket of the Ray processes"
    assert all(_is_loopback(a) for a in addresses), addresses


def test_ray_gives_the_same_fleet_summary_as_the_pool(
    fleet: Fleet, pool_runs: PoolRuns, ray_cluster: RayCluster
) -> None:
    out = fleet.root / "ray"
    options = fleet.options(ray="local")
    result = run_fleet([*fleet.good, fleet.corrupt], out, options)
    s = result.summary
    assert result.exit_code == 1
    assert s["run"]["backend"] == "ray" and s["run"]["replayed"] == 3
    assert comparable(s) == comparable(pool_runs.second.summary)
    # The model came through the object store, not from the package's path.
    for r in s["recordings"]:
        marker = json.loads((out / r["report"] / TASK_FILE).read_text())
        assert marker["model_source"] == "object-store"
        assert Path(marker["model_path"]).is_relative_to(tempfile.gettempdir())
    # Resumed on Ray: no recording replayed again.
    again = run_fleet([*fleet.good, fleet.corrupt], out, options)
    assert again.summary["run"]["replayed"] == 0 and again.summary["run"]["skipped"] == 3
    assert comparable(again.summary) == comparable(s)


# --- the command ----------------------------------------------------------------------------------
def test_cli_with_a_list_file(
    fleet: Fleet, pool_runs: PoolRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command on the pool's folder: everything done is skipped, the corrupt recording is
    reported on stdout, exit status 1; the list file's relative paths and comments work."""
    listing = fleet.root / "fleet.txt"
    rel = [os.path.relpath(p, fleet.root) for p in (*fleet.good, fleet.corrupt)]
    listing.write_text("# the fleet\n\n" + "\n".join(f"{r}  # drive" for r in rel) + "\n")
    assert read_list(listing) == [fleet.root / r for r in rel]
    argv = ["fleet-replay", "--list", str(listing), "--out", str(pool_runs.second.out)]
    argv += ["--params-file", str(fleet.params), "--seed", str(SEED), "--workers", "2"]
    argv += ["--threads", "1", "--no-video"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1
    assert "3 recordings done (0 replayed, 3 skipped), 1 failed" in out
    assert f"FAILED {fleet.corrupt}: RecordingError" in out
    assert "fleet [" in err and "4/4 recordings" in err and "frames/s" in err
    summary = json.loads((pool_runs.second.out / fleet_report.SUMMARY_FILE).read_text())
    assert comparable(summary) == comparable(pool_runs.second.summary)


def test_cli_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet-replay", "--out", str(tmp_path / "o")]) == 2
    assert "no recordings" in capsys.readouterr().err
    assert main(["fleet-replay", str(tmp_path), "--out", str(tmp_path / "o"), "--every", "0"]) == 2
    assert "--every" in capsys.readouterr().err


# --- episodes, without a replay -------------------------------------------------------------------
def test_episodes_skip_the_start_up_and_rank_by_severity() -> None:
    import numpy as np

    def summary(transitions: list[tuple[float, str, str]], end: float) -> dict[str, Any]:
        return {
            "recording": {"duration_s": end},
            "arbiter": {
                "final_state": transitions[-1][2] if transitions else "MINIMAL_RISK",
                "transitions": [
                    {"t_s": t, "from": a, "to": b, "reasons": [f"{a}->{b}"]}
                    for t, a, b in transitions
                ],
            },
            "episodes": [{"name": "fog", "start_s": 4.0, "end_s": 6.0}],
        }

    t = np.arange(0.0, 10.0, 0.5)
    frames = fleet_report._Frames(
        t, np.where((t >= 4) & (t < 5), 0.05, 0.4), np.full(t.size, 0.9), t < 0, t, [""] * t.size
    )
    s = summary(
        [
            (1.0, "MINIMAL_RISK", "NOMINAL"),  # the release: start-up, not an episode
            (2.0, "NOMINAL", "DEGRADED"),
            (3.0, "DEGRADED", "NOMINAL"),
            (4.0, "NOMINAL", "DEGRADED"),
            (4.5, "DEGRADED", "HANDOVER_REQUESTED"),
        ],
        10.0,
    )
    eps = fleet_report.degradation_episodes(s, frames)
    assert [(e["start_s"], e["end_s"], e["worst_state"]) for e in eps] == [
        (2.0, 3.0, "DEGRADED"),
        (4.0, 10.0, "HANDOVER_REQUESTED"),
    ]
    assert eps[1]["unresolved"] and eps[1]["min_radius"] == 0.05
    assert eps[1]["labelled_episodes"] == ["fog"] and eps[0]["labelled_episodes"] == []
    never = fleet_report.degradation_episodes(summary([], 10.0), frames)
    assert [e["kind"] for e in never] == ["never_nominal"]
    assert fleet_report.degradation_episodes(summary([], 10.0), frames, False) == []
    ranked = sorted([{**e, "recording": "r"} for e in eps + never], key=fleet_report._rank_key)
    assert [e["worst_state"] for e in ranked] == ["MINIMAL_RISK", "HANDOVER_REQUESTED", "DEGRADED"]


# --- scheduling and progress, without a replay ----------------------------------------------------
def _task(key: str) -> ReplayTask:
    return ReplayTask(key, f"/out/{key}", key, None, {}, None, "auto-release", 1, None, False, 1)


class FakeBackend:
    """Answers each submitted task with the next scripted outcome for its key."""

    slots = 2

    def __init__(self, script: dict[str, list[tuple[dict[str, Any] | None, str | None]]]) -> None:
        self.script = script
        self.pending: list[ReplayTask] = []
        self.submitted: list[str] = []

    def submit(self, task: ReplayTask) -> None:
        assert len(self.pending) < self.slots, "more tasks in flight than slots"
        self.pending.append(task)
        self.submitted.append(task.key)

    def next_done(self) -> list[tuple[ReplayTask, dict[str, Any] | None, str | None]]:
        task = self.pending.pop(0)
        result, lost = self.script[task.key].pop(0)
        return [(task, result, lost)]

    def close(self) -> None:
        self.pending.clear()


def test_lost_and_failed_tasks_are_retried_then_reported() -> None:
    done = {"status": "done", "recording_frames": 5, "frames": 5}
    backend = FakeBackend(
        {
            "lost-once": [(None, "WorkerCrashedError: the worker died"), (done, None)],
            "always-lost": [(None, "worker lost: the process pool broke")] * 2,
            "fails": [({"status": "failed", "error": "RecordingError: bad"}, None)] * 2,
            "fine": [(done, None)],
        }
    )
    finished: list[tuple[str, int]] = []
    meter = FleetProgress(4, 0, 4, None)
    failures, attempts = _schedule(
        backend,
        [_task(k) for k in ("lost-once", "always-lost", "fails", "fine")],
        dict.fromkeys(("lost-once", "always-lost", "fails", "fine"), 1),
        1,
        lambda task, result, n: finished.append((task.key, n)),
        meter,
    )
    assert sorted(finished) == [("fine", 1), ("lost-once", 2)]
    assert failures == {
        "always-lost": {"error": "worker lost: the process pool broke", "attempts": 2},
        "fails": {"error": "RecordingError: bad", "attempts": 2},
    }
    assert attempts == 2 + 2 + 2 + 1 == len(backend.submitted)
    assert (meter.done, meter.failed, meter.frames) == (2, 2, 10)


def test_progress_line_shows_recordings_rate_and_time_left() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    meter = FleetProgress(4, 1, 300, stream)
    meter.start -= 10.0  # ten seconds in
    meter.finished(True, 100, 100)
    line = stream.getvalue()
    assert line.startswith("\rfleet [")
    assert "2/4 recordings (1 skipped, 0 failed)" in line
    assert " 10.0 frames/s" in line  # 100 frames in 10 s
    assert re.search(r"left 00:(19|20)\b", line), line  # 200 bytes left at 10 bytes/s


def test_without_ray_the_pool_still_works_and_ray_asks_for_the_extra(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Ray is imported only for --ray: a package without it says which extra to install."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from robust_monitor.tools.cli import main\n"
        f"sys.exit(main(['fleet-replay', {str(fleet.good[0])!r}, '--out', {str(tmp_path)!r}, "
        f"'--params-file', {str(fleet.params)!r}, '--ray', 'local', '--quiet']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "pip install -e '.[fleet]'" in out.stderr
    assert "Traceback" not in out.stderr
