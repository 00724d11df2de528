"""A local Prefect API server that outlives runs, started on demand and reused.

``fineflow run`` uses ``PREFECT_API_URL`` when it is set. Otherwise it starts (or finds) a
``prefect server start`` on 127.0.0.1 whose SQLite database, logs and address live in one state
folder (``$FINEFLOW_HOME/prefect``, default ``~/.fineflow/prefect``), so the UI can be opened after
the run ends. Prefect's ephemeral mode is never used: it times out on slow machines.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 4200
STARTUP_TIMEOUT_S = 180.0


def fineflow_home() -> Path:
    return Path(os.environ.get("FINEFLOW_HOME", "~/.fineflow")).expanduser()


def state_dir() -> Path:
    return fineflow_home() / "prefect"


@dataclass(frozen=True)
class ServerInfo:
    url: str  # http://127.0.0.1:PORT
    pid: int | None

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None) -> int:
    if preferred and port_is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def runs_python_or_weed(pid: int) -> bool:
    """Whether ``pid`` still runs one of the programs fineflow starts (this Python or SeaweedFS)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc to check (not Linux): trust the recorded pid
    program = os.path.basename(command[0].decode(errors="replace")) if command and command[0] else ""
    return program.startswith("python") or program == "weed" or command[0].decode(errors="replace") == sys.executable


def _info_file(folder: Path) -> Path:
    return folder / "server.json"


def running_server(folder: Path | None = None) -> ServerInfo | None:
    folder = folder or state_dir()
    try:
        data = json.loads(_info_file(folder).read_text())
    except (FileNotFoundError, ValueError):
        return None
    info = ServerInfo(url=data["url"], pid=data.get("pid"))
    return info if healthy(info.api_url) else None


def server_environment(folder: Path) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(folder / "home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        # The UI bundle is copied on first start; keep that copy in our state folder.
        "PREFECT_UI_STATIC_DIRECTORY": str(folder / "ui"),
    }


def start_server(folder: Path | None = None, port: int | None = None) -> ServerInfo:
    """Start ``prefect server start`` in its own session (it outlives this process)."""
    folder = folder or state_dir()
    existing = running_server(folder)
    if existing:
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port(port or DEFAULT_PORT)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **server_environment(folder), "PREFECT_SERVER_API_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)
    log = open(folder / "server.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _info_file(folder).write_text(json.dumps({"url": url, "pid": process.pid}))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if healthy(f"{url}/api"):
            return ServerInfo(url=url, pid=process.pid)
        if process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited during startup; see {folder / 'server.log'}")
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"the Prefect server did not answer within {STARTUP_TIMEOUT_S:.0f}s; see {folder / 'server.log'}")


def stop_server(folder: Path | None = None) -> bool:
    folder = folder or state_dir()
    try:
        data = json.loads(_info_file(folder).read_text())
    except (FileNotFoundError, ValueError):
        return False
    pid = data.get("pid")
    stopped = False
    if pid_alive(pid) and runs_python_or_weed(pid):
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            if not pid_alive(pid):
                break
            time.sleep(0.1)
        stopped = True
    _info_file(folder).unlink(missing_ok=True)
    return stopped


def ensure_api() -> tuple[str, bool]:
    """``(PREFECT_API_URL, started_by_us)``: the configured API, else our local server."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        return configured, False
    existing = running_server()
    if existing:
        return existing.api_url, False
    return start_server().api_url, True
