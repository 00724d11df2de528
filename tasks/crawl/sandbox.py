"""Run an extractor in a long-lived subprocess with a per-document time limit.

Dask runs tasks in worker threads, where SIGALRM cannot interrupt a stuck parser, and Dask's
daemonic worker processes may not use multiprocessing children. A plain subprocess per worker
thread, killed and restarted when a document runs past its limit, works everywhere.

The limit counts the CPU seconds the subprocess spends on the document, not wall-clock time:
on a loaded machine, time spent waiting for a core must not turn a slow page into a timeout,
or a run's output would depend on what else the machine was doing. A wall-clock cap of
``WALL_CAP_FACTOR`` times the limit still catches a process that hangs without using CPU.
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import threading
import time

import psutil

from fineflow.tasks.crawl.extract_worker import OP_EXTRACT, OP_RESET, STATUS_OK

STARTUP_TIMEOUT_S = 120.0
WALL_CAP_FACTOR = 10.0
_POLL_S = 0.1


class ExtractionTimeout(Exception):
    pass


class ExtractionFailed(Exception):
    pass


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process: /proc/PID/stat read directly on Linux (twice per
    document, so not through psutil's heavier object), psutil elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        pass
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


class _Budget:
    """The time a request may take: CPU seconds of the subprocess, and a wall-clock cap."""

    def __init__(self, process: subprocess.Popen, cpu_limit_s: float | None, wall_s: float | None = None):
        self.cpu_limit_s = cpu_limit_s
        self.wall_s = wall_s if wall_s is not None else (cpu_limit_s or 30.0) * WALL_CAP_FACTOR
        self._process = process
        self._started = time.monotonic()
        self._cpu_start = self._cpu() if cpu_limit_s is not None else 0.0

    def _cpu(self) -> float:
        return process_cpu_seconds(self._process.pid)

    def exceeded(self) -> str | None:
        if self.cpu_limit_s is not None and self._cpu() - self._cpu_start > self.cpu_limit_s:
            return f"extraction used more than {self.cpu_limit_s}s of CPU"
        if time.monotonic() - self._started > self.wall_s:
            return f"extraction did not answer within {self.wall_s:.0f}s"
        return None


class SandboxedExtractor:
    def __init__(self, extractor: str, timeout_s: float):
        self.extractor = extractor
        self.timeout_s = timeout_s
        self._process: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "fineflow.tasks.crawl.extract_worker", self.extractor],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        self._process = process
        # Wait for the ready frame so import time never counts against a document's limit.
        self._read(process, 5, _Budget(process, None, wall_s=STARTUP_TIMEOUT_S))
        return process

    def _running(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            self.close()
            return self._start()
        return self._process

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream:
                stream.close()

    def _abandon(self) -> None:
        self.close()
        self.restarts += 1

    def _request(self, opcode: bytes, payload: bytes, cpu_limit_s: float | None) -> tuple[bytes, bytes]:
        process = self._running()
        budget = _Budget(process, cpu_limit_s)
        try:
            process.stdin.write(opcode + struct.pack(">I", len(payload)) + payload)
            process.stdin.flush()
        except BrokenPipeError as exc:
            self._abandon()
            raise ExtractionFailed("extraction process died") from exc
        header = self._read(process, 5, budget)
        status, length = header[:1], struct.unpack(">I", header[1:])[0]
        body = self._read(process, length, budget) if length else b""
        return status, body

    def _read(self, process: subprocess.Popen, n: int, budget: _Budget) -> bytes:
        fd = process.stdout.fileno()
        data = b""
        while len(data) < n:
            ready, _, _ = select.select([fd], [], [], _POLL_S)
            if not ready:
                exceeded = budget.exceeded()
                if exceeded:
                    self._abandon()
                    raise ExtractionTimeout(exceeded)
                continue
            chunk = os.read(fd, n - len(data))
            if not chunk:
                self._abandon()
                raise ExtractionFailed("extraction process died")
            data += chunk
        return data

    def __enter__(self) -> SandboxedExtractor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def peak_rss_mb(self) -> float | None:
        """Peak resident memory of the extraction subprocess (Linux: VmHWM), if it runs."""
        if self._process is None or self._process.poll() is not None:
            return None
        try:
            with open(f"/proc/{self._process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
        try:
            return round(psutil.Process(self._process.pid).memory_info().rss / 2**20, 1)
        except psutil.Error:
            return None

    def reset(self) -> None:
        """Clear the extractor's cross-document state (start of a shard)."""
        if self._process is not None and self._process.poll() is None:
            self._request(OP_RESET, b"", cpu_limit_s=None)

    def extract(self, html: str) -> str:
        status, body = self._request(OP_EXTRACT, html.encode("utf-8", errors="replace"), self.timeout_s)
        if status != STATUS_OK:
            raise ExtractionFailed(body.decode("utf-8", errors="replace"))
        return body.decode("utf-8")


_local = threading.local()


def thread_extractor(extractor: str, timeout_s: float) -> SandboxedExtractor:
    """The calling thread's extraction subprocess (started on first use, then reused)."""
    cache: dict = getattr(_local, "extractors", None) or {}
    _local.extractors = cache
    key = (extractor, timeout_s)
    if key not in cache:
        cache[key] = SandboxedExtractor(extractor, timeout_s)
    return cache[key]
