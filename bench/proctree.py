"""Measure a command's whole process tree: wall time, exact CPU seconds, and CPU per process.

The measuring process makes itself a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``), so
every descendant, even one whose parent exits first (Dask's workers, datatrove's forkserver
children), is re-parented to it and reaped by it: ``RUSAGE_CHILDREN`` then holds the exact CPU
seconds of the whole tree. A poller samples each process's CPU time and command line (every
0.1 s) to split that total by role; a process that lives less than one interval goes unseen
there, and the difference is reported as ``unattributed_cpu_s``.
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class TreeRun:
    returncode: int
    wall_s: float
    cpu_s: float  # exact: every reaped descendant
    processes: dict[int, dict] = field(default_factory=dict)  # pid -> {"cmd", "cpu_s", "started", "role"}

    def by_role(self) -> dict[str, float]:
        roles: dict[str, float] = {}
        for process in self.processes.values():
            roles[process["role"]] = roles.get(process["role"], 0.0) + process["cpu_s"]
        roles["unattributed"] = self.cpu_s - sum(roles.values())
        return {role: round(cpu, 2) for role, cpu in roles.items()}


def _reap_all(deadline_s: float = 30.0) -> None:
    """Wait for every remaining descendant (orphans included) so its CPU is counted."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def run_tree(
    command: list[str],
    env: dict[str, str] | None = None,
    role: Callable[[str], str] = lambda cmd: "process",
    stdout=None,  # noqa: ANN001
    stderr=None,  # noqa: ANN001
) -> TreeRun:
    """Run ``command`` to its end and measure its process tree (see the module docstring)."""
    become_subreaper()
    _reap_all(0.1)  # leftovers of an earlier run must not count here
    me = psutil.Process()
    seen: dict[int, dict] = {}
    done = threading.Event()

    existing = {process.pid for process in me.children(recursive=True)}  # e.g. a server started earlier
    own_cmd = " ".join(me.cmdline())[:300]  # what a child shows between fork and exec

    def poll() -> None:
        while not done.is_set():
            for process in me.children(recursive=True):
                if process.pid in existing:
                    continue
                try:
                    with process.oneshot():
                        times = process.cpu_times()
                        cpu = times.user + times.system  # its own; reaped children count as themselves
                        entry = seen.get(process.pid)
                        # read again until the child has exec'd: an empty or borrowed command
                        # line would give it the wrong role for good
                        if entry is None or entry["create_time"] != process.create_time() or entry["cmd"] in ("", own_cmd):
                            cmd = " ".join(process.cmdline())
                            entry = seen[process.pid] = {"cmd": cmd[:300], "role": role(cmd), "create_time": process.create_time()}
                        entry["cpu_s"] = cpu
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            done.wait(0.1)

    before = _children_cpu()
    poller = threading.Thread(target=poll, daemon=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)
    poller.start()
    returncode = process.wait()
    wall = time.perf_counter() - started
    _reap_all()
    done.set()
    poller.join()
    return TreeRun(returncode, round(wall, 3), round(_children_cpu() - before, 3), seen)


def process_cpu(pid: int) -> float:
    """CPU seconds so far of a process that is not ours (e.g. a detached server) and its children."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total
