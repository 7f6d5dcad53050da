"""Node processes for the tools that drive the real nodes (soak, ``sim --ros``, arbiter bench).

``node_process`` starts ``python -m <module> <argv>`` in a session of its own and stops it the
way a terminal's Ctrl-C would: SIGINT, then, if it has not exited within ``stop_timeout_s``,
SIGKILL to its whole process group. ``ros_args`` builds the ``--ros-args`` part for a namespace
and ``-p`` parameters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any


def ros_args(namespace: str, params: Mapping[str, Any] | None = None) -> list[str]:
    """``--ros-args -r __ns:=/<namespace> -p key:=value ...``."""
    argv = ["--ros-args", "-r", f"__ns:=/{namespace}"]
    for key, value in (params or {}).items():
        argv += ["-p", f"{key}:={value}"]
    return argv


@contextmanager
def node_process(
    module: str,
    argv: Sequence[str],
    *,
    stderr: int = subprocess.PIPE,
    stop_timeout_s: float = 10.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """The node ``module`` running with ``argv`` (stdout discarded, ``stderr`` as given)."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *argv],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=dict(os.environ),
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def exit_report(process: subprocess.Popen[bytes], name: str) -> str | None:
    """None while ``process`` runs; once it has exited, a line with its status and the tail of
    its stderr (when that was piped)."""
    if process.poll() is None:
        return None
    tail = ""
    if process.stderr is not None:
        tail = process.stderr.read().decode(errors="replace")[-2000:]
    return f"the {name} node exited ({process.returncode})" + (f":\n{tail}" if tail else "")
