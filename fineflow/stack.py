"""The local stack: a Prefect server, a SeaweedFS S3 server, a Dask scheduler with workers and a
Prefect worker on fineflow's process work pool, all on 127.0.0.1, started by ``fineflow stack up``.

Every port is chosen free; each component runs in its own session so it outlives the command;
its pid, address and log live in one state folder (``$FINEFLOW_HOME/stack``, default
``~/.fineflow/stack``). The Prefect server is the one ``fineflow run`` starts by itself
(``$FINEFLOW_HOME/prefect``). ``up`` is idempotent: a component that answers is left alone, one
that died is started again. The S3 keys are generated once per state folder and kept in a file
readable only by its owner; they are printed by ``fineflow stack env`` and nowhere else.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fineflow import server
from fineflow.seaweed import bucket_ready, start_seaweed

WORK_POOL = "fineflow-process"
BUCKET = "fineflow"
DEFAULT_STORAGE = f"s3://{BUCKET}/runs"
STARTUP_TIMEOUT_S = 120.0


def stack_dir() -> Path:
    return server.fineflow_home() / "stack"


@dataclass
class Stack:
    folder: Path

    @property
    def state_file(self) -> Path:
        return self.folder / "stack.json"

    def state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save(self, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=1))
        temporary.replace(self.state_file)

    # -- credentials -----------------------------------------------------------------------

    def s3_keys(self) -> dict[str, str]:
        """This stack's S3 keys: generated on first use, stored owner-readable only."""
        path = self.folder / "s3-credentials.json"
        if path.exists():
            return json.loads(path.read_text())
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = {"access_key": f"fineflow-{secrets.token_hex(4)}", "secret_key": secrets.token_urlsafe(24)}
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(keys, handle)
        return keys

    # -- the environment clients use -------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """``PREFECT_API_URL``, ``AWS_*`` and the Dask address of the running stack."""
        state = self.state()
        env: dict[str, str] = {}
        prefect = server.running_server()
        if prefect:
            env["PREFECT_API_URL"] = prefect.api_url
        if "s3" in state:
            keys = self.s3_keys()
            env |= {
                "AWS_ENDPOINT_URL": state["s3"]["endpoint"],
                "AWS_ACCESS_KEY_ID": keys["access_key"],
                "AWS_SECRET_ACCESS_KEY": keys["secret_key"],
                "AWS_DEFAULT_REGION": "us-east-1",
                "FINEFLOW_STORAGE": DEFAULT_STORAGE,
            }
        if "dask" in state:
            env["FINEFLOW_DASK_ADDRESS"] = state["dask"]["scheduler"]
        return env

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, Any]]:
        state = self.state()
        prefect = server.running_server()
        report: dict[str, dict[str, Any]] = {
            "prefect": {"running": prefect is not None, "url": prefect.url if prefect else None},
        }
        s3 = state.get("s3")
        report["s3"] = {
            "running": bool(s3) and server.pid_alive(s3["pid"]) and self._s3_answers(s3),
            "url": s3["endpoint"] if s3 else None,
            "bucket": BUCKET,
        }
        dask = state.get("dask")
        report["dask"] = {
            "running": bool(dask) and server.pid_alive(dask["scheduler_pid"]) and _port_open(dask["scheduler"]),
            "url": dask["dashboard"] if dask else None,
            "scheduler": dask["scheduler"] if dask else None,
            "workers": server.pid_alive(dask["workers_pid"]) if dask else False,
        }
        worker = state.get("worker")
        report["worker"] = {
            "running": bool(worker) and server.pid_alive(worker["pid"]),
            "url": None,
            "pool": WORK_POOL,
        }
        return report

    def _s3_answers(self, s3: dict) -> bool:
        keys = self.s3_keys()
        return bucket_ready(s3["endpoint"], BUCKET, keys["access_key"], keys["secret_key"])

    # -- up / down -------------------------------------------------------------------------

    def up(self, dask_workers: int = 2, threads_per_worker: int = 1, memory_limit: str = "auto") -> dict[str, dict]:
        """Start whatever is not running; return ``status()``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        prefect = server.start_server()
        current = self.status()
        state = self.state()
        if not current["s3"]["running"]:
            _stop(state.get("s3", {}).get("pid"))
            keys = self.s3_keys()
            seaweed = start_seaweed(
                self.folder / "s3", BUCKET, keys["access_key"], keys["secret_key"], timeout_s=STARTUP_TIMEOUT_S, detach=True
            )
            state["s3"] = {"endpoint": seaweed.endpoint, "pid": seaweed.process.pid}
            self._save(state)
            # the Dask workers and the Prefect worker hold the old endpoint in their environment
            current["dask"]["running"] = current["worker"]["running"] = False
        environment = {**os.environ, **self.environment(), "PREFECT_API_URL": prefect.api_url}
        if not current["dask"]["running"] or not current["dask"]["workers"]:
            for key in ("workers_pid", "scheduler_pid"):
                _stop(state.get("dask", {}).get(key))
            state["dask"] = self._start_dask(environment, dask_workers, threads_per_worker, memory_limit)
            self._save(state)
            current["worker"]["running"] = False  # its flow runs must see the new scheduler address
        # a worker polling a Prefect server that has since moved (restarted on another port) is restarted too
        if not current["worker"]["running"] or state.get("worker", {}).get("api_url") != prefect.api_url:
            _stop(state.get("worker", {}).get("pid"))
            environment = {**os.environ, **self.environment(), "PREFECT_API_URL": prefect.api_url}
            state["worker"] = {"pid": self._start_worker(environment, prefect.api_url), "api_url": prefect.api_url}
            self._save(state)
        return self.status()

    def _start_dask(self, environment: dict[str, str], workers: int, threads: int, memory_limit: str) -> dict:
        port, dashboard_port = server.free_port(), server.free_port()
        while dashboard_port == port:
            dashboard_port = server.free_port()
        scheduler = f"tcp://127.0.0.1:{port}"
        scheduler_pid = _spawn(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", f"127.0.0.1:{dashboard_port}"],
            environment, self.folder / "dask-scheduler.log",
        )
        _wait(lambda: _port_open(scheduler), "the Dask scheduler", self.folder / "dask-scheduler.log", scheduler_pid)
        # The workers get the stack's S3 and Prefect environment: tasks read and write storage there.
        workers_pid = _spawn(
            [sys.executable, "-m", "distributed.cli.dask_worker", scheduler, "--nworkers", str(workers),
             "--nthreads", str(threads), "--memory-limit", memory_limit, "--host", "127.0.0.1", "--no-dashboard",
             "--local-directory", str(self.folder / "dask-workers")],
            environment, self.folder / "dask-workers.log",
        )
        _wait(
            lambda: _dask_workers(scheduler) >= workers, "the Dask workers", self.folder / "dask-workers.log", workers_pid,
            also_stop=(scheduler_pid,),
        )
        return {
            "scheduler": scheduler,
            "dashboard": f"http://127.0.0.1:{dashboard_port}/status",
            "scheduler_pid": scheduler_pid,
            "workers_pid": workers_pid,
        }

    def _start_worker(self, environment: dict[str, str], api_url: str) -> int:
        # A short poll interval: a run triggered from the UI starts within ~2 s instead of ~10 s.
        environment = {**environment, "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
        pid = _spawn(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process",
             "--name", "fineflow-local-worker"],
            environment, self.folder / "prefect-worker.log",
        )
        _wait(lambda: _worker_online(api_url), "the Prefect worker", self.folder / "prefect-worker.log", pid)
        return pid

    def down(self, prefect: bool = True) -> list[str]:
        """Stop every component (the Prefect server too unless ``prefect=False``); return what was stopped."""
        state = self.state()
        stopped = []
        for name, key in (("worker", "pid"), ("dask workers", "workers_pid"), ("dask scheduler", "scheduler_pid"), ("s3", "pid")):
            section = state.get(name.split()[0], {})
            if _stop(section.get(key)):
                stopped.append(name)
        self.state_file.unlink(missing_ok=True)
        if prefect and server.stop_server():
            stopped.append("prefect")
        return stopped


def _spawn(command: list[str], environment: dict[str, str], log: Path) -> int:
    handle = open(log, "ab")
    process = subprocess.Popen(
        command, env=environment, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process.pid


def _wait(ready, what: str, log: Path, pid: int, also_stop: tuple[int, ...] = ()) -> None:  # noqa: ANN001
    """Wait until ``ready()``; on failure stop ``pid`` (and ``also_stop``), so nothing is left unrecorded."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready():
            return
        if not server.pid_alive(pid):
            break
        time.sleep(0.5)
    for leftover in (pid, *also_stop):
        _stop(leftover)
    raise RuntimeError(f"{what} did not come up within {STARTUP_TIMEOUT_S:.0f}s or exited; see {log}")


def _stop(pid: int | None, timeout_s: float = 20.0) -> bool:
    """Stop the process group of a stack component; a recorded pid now used by another program
    (after a reboot) is left alone."""
    if not server.pid_alive(pid) or not server.runs_python_or_weed(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.pid_alive(pid):
        time.sleep(0.2)
    if server.pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    return True


def _port_open(address: str) -> bool:
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _dask_workers(scheduler: str) -> int:
    from distributed import Client

    try:
        with Client(scheduler, timeout=5) as client:
            return len(client.scheduler_info(n_workers=-1)["workers"])
    except OSError:
        return 0


def _worker_online(api_url: str) -> bool:
    import httpx

    try:
        response = httpx.post(f"{api_url}/work_pools/{WORK_POOL}/workers/filter", json={}, timeout=5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and any(w.get("status") == "ONLINE" for w in response.json())


def export_lines(environment: dict[str, str]) -> str:
    """Shell ``export`` lines, quoted for POSIX shells."""
    import shlex

    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in sorted(environment.items()))
