"""Run an extractor in a long-lived subprocess with a per-document time limit.

Dask runs tasks in worker threads, where SIGALRM cannot interrupt a stuck parser, and Dask's
daemonic worker processes may not use multiprocessing children. A plain subprocess per worker
thread, killed and restarted when a document runs past its limit, works everywhere.
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import threading

from fineflow.tasks.crawl.extract_worker import OP_EXTRACT, OP_RESET, STATUS_OK

STARTUP_TIMEOUT_S = 120.0


class ExtractionTimeout(Exception):
    pass


class ExtractionFailed(Exception):
    pass


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
        self._read(process, 5, STARTUP_TIMEOUT_S)
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

    def _request(self, opcode: bytes, payload: bytes, timeout_s: float) -> tuple[bytes, bytes]:
        process = self._running()
        try:
            process.stdin.write(opcode + struct.pack(">I", len(payload)) + payload)
            process.stdin.flush()
        except BrokenPipeError as exc:
            self._abandon()
            raise ExtractionFailed("extraction process died") from exc
        header = self._read(process, 5, timeout_s)
        status, length = header[:1], struct.unpack(">I", header[1:])[0]
        body = self._read(process, length, timeout_s) if length else b""
        return status, body

    def _read(self, process: subprocess.Popen, n: int, timeout_s: float) -> bytes:
        fd = process.stdout.fileno()
        data = b""
        while len(data) < n:
            ready, _, _ = select.select([fd], [], [], timeout_s)
            if not ready:
                self._abandon()
                raise ExtractionTimeout(f"extraction took longer than {timeout_s}s")
            chunk = os.read(fd, n - len(data))
            if not chunk:
                self._abandon()
                raise ExtractionFailed("extraction process died")
            data += chunk
        return data

    def reset(self) -> None:
        """Clear the extractor's cross-document state (start of a shard)."""
        if self._process is not None and self._process.poll() is None:
            self._request(OP_RESET, b"", timeout_s=max(self.timeout_s, 30.0))

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
