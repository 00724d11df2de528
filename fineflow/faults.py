"""Deterministic fault points for the fault-tolerance tests (and for chaos drills by hand).

Off unless ``FINEFLOW_FAULTS_DIR`` names a folder. A fault is armed by creating a file in it
named ``<stage>-<step>-<shard>.<kind>`` (the task's name plus the kind), e.g.
``dedup-signatures-00003.transient``. The first shard task that finds its file takes it (an
atomic rename, so exactly one process fires it, once) and then:

- ``transient``: raises ``ConnectionError`` (what a dropped S3 connection looks like), which
  the shard task retries;
- ``error``: raises ``RuntimeError`` (a bug or bad data: not retried, the run fails);
- ``kill``: kills its own process with SIGKILL (a Dask worker lost mid-task);
- ``hang``: sleeps for the number of seconds written in the file (default 600), e.g. to
  cancel a run while its tasks are busy.

The folder must be visible to the processes that run tasks (every process of the local
stack and of a LocalCluster inherits the environment it was started with).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

KINDS = ("transient", "error", "kill", "hang")
FIRED_SUFFIX = ".fired"


class InjectedFault(RuntimeError):
    """A permanent failure injected by an ``error`` fault."""


def arm(folder: str | Path, task_name: str, kind: str, content: str = "") -> Path:
    """Arm a fault for one task (``<stage>-<step>-<shard:05d>``); return the file."""
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}: one of {', '.join(KINDS)}")
    path = Path(folder) / f"{task_name}.{kind}"
    path.write_text(content)
    return path


def maybe_fire(task_name: str) -> None:
    """Fire the fault armed for this task, if any (a no-op unless FINEFLOW_FAULTS_DIR is set)."""
    folder = os.environ.get("FINEFLOW_FAULTS_DIR")
    if not folder:
        return
    for kind in KINDS:
        armed = Path(folder) / f"{task_name}.{kind}"
        fired = armed.with_name(armed.name + FIRED_SUFFIX)
        try:
            armed.rename(fired)  # atomic: only one process gets it
        except FileNotFoundError:
            continue
        if kind == "transient":
            raise ConnectionError(f"injected transient fault in {task_name}")
        if kind == "error":
            raise InjectedFault(f"injected permanent fault in {task_name}")
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "hang":
            seconds = float(fired.read_text().strip() or 600)
            time.sleep(seconds)
