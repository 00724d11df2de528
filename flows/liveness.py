"""Runs whose process died are shown as dead.

A ``fineflow run`` killed with SIGKILL cannot tell Prefect: its flow run, subflows and task runs
would stay "Running" in the UI forever. So every pipeline run registers its process (host,
pid, the process's start time, the API it reports to) in ``$FINEFLOW_HOME/active-runs/`` and
in its run record; the next fineflow command against the same API (``fineflow run``,
``fineflow server status``, ...) marks a registered run whose process is gone as Crashed,
together with its unfinished subflows and task runs.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path

import psutil

from fineflow.server import fineflow_home, running_server, state_dir

UNFINISHED = ("PENDING", "RUNNING", "SCHEDULED", "PAUSED", "CANCELLING")
PAGE = 200  # the API's largest page


def _all_pages(read) -> list:  # noqa: ANN001
    found, offset = [], 0
    while page := read(offset):
        found += page
        offset += len(page)
        if len(page) < PAGE:
            break
    return found


def registry() -> Path:
    return fineflow_home() / "active-runs"


def process_record() -> dict:
    """This process, as a later command can recognise it (a reused pid has another start time)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def _local_server_home(api_url: str | None) -> str | None:
    """The state folder of fineflow's own Prefect server when ``api_url`` is it: the same database
    is still that server's after a restart on another port."""
    server = running_server()
    return str(state_dir()) if server is not None and server.api_url == api_url else None


def register(flow_run_id: str, api_url: str | None) -> None:
    folder = registry()
    folder.mkdir(parents=True, exist_ok=True)
    record = {"flow_run_id": flow_run_id, "api_url": api_url, "server_home": _local_server_home(api_url), **process_record()}
    tmp = folder / f".{flow_run_id}.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(folder / f"{flow_run_id}.json")


def unregister(flow_run_id: str) -> None:
    (registry() / f"{flow_run_id}.json").unlink(missing_ok=True)


def is_alive(record: dict) -> bool:
    """False only when certain: same host, and no process with that pid and start time."""
    if record.get("host") != socket.gethostname():
        return True  # another machine's run: it cannot be checked from here
    try:
        return abs(psutil.Process(record["pid"]).create_time() - record["started"]) < 1.0
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def mark_dead_runs(api_url: str) -> list[str]:
    """Mark the registered runs of ``api_url`` whose process is gone as Crashed; return their ids."""
    marked = []
    home = _local_server_home(api_url)
    for path in sorted(registry().glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        same_server = record.get("api_url") == api_url or (home is not None and record.get("server_home") == home)
        if not same_server or is_alive(record):
            continue
        message = (
            f"the fineflow process that ran it (pid {record['pid']} on {record['host']}) is gone: "
            "killed or lost with its machine; a re-run resumes from what it committed"
        )
        if crash_run_tree(record["flow_run_id"], message):
            marked.append(record["flow_run_id"])
        path.unlink(missing_ok=True)
    return marked


def crash_run_tree(flow_run_id: str, message: str) -> bool:
    """Set a flow run, its subflows (recursively) and their unfinished task runs to Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        try:
            root = client.read_flow_run(uuid.UUID(flow_run_id))
        except ObjectNotFound:
            return False
        if root.state is None or root.state.is_final():
            return False
        runs, frontier = [root], [root.id]
        while frontier:
            parents = FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier))
            children = _all_pages(
                lambda offset, parents=parents: client.read_flow_runs(flow_run_filter=parents, limit=PAGE, offset=offset)
            )
            runs += children
            frontier = [child.id for child in children]
        unfinished = TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=list(UNFINISHED))))
        in_tree = FlowRunFilter(id=FlowRunFilterId(any_=[run.id for run in runs]))
        while tasks := client.read_task_runs(flow_run_filter=in_tree, task_run_filter=unfinished, limit=PAGE):
            for task_run in tasks:  # each one set leaves the filter: read again until none is left
                client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
        for run in reversed(runs):  # children first, so the UI never shows a finished parent over running children
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    return True
