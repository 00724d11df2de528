"""What a Dask worker runs for one shard: a step's pure function, with the run's storage keys.

This module imports no Prefect (nor do the step functions): a worker loads Prefect only when a
run names a credentials or secret block, which it then reads from the Prefect API itself.
"""

from __future__ import annotations

from fineflow.flows.credentials import apply_credentials, load_secrets
from fineflow.manifest import StepLocation
from fineflow.steps import run_shard
from fineflow.storage import PERMANENT_ERRNOS

_TRANSIENT_NAMES = ("Connection", "Timeout", "Throttl", "SlowDown", "ServiceUnavailable", "ReadTimeout")
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# Raised where a worker died under a shard (Dask gives up with KilledWorker): the shard runs again.
LOST_WORKER_ERRORS = ("KilledWorker", "CommClosedError", "WorkerError", "FutureCancelledError")


def is_transient(error: BaseException | None) -> bool:
    """Network and storage hiccups are worth retrying; bad data, bugs and full disks are not."""
    if error is None or isinstance(error, _PERMANENT):
        return False
    if isinstance(error, OSError) and error.errno in PERMANENT_ERRNOS:
        return False  # a full disk stays full for the next try
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if any(part in type(error).__name__ for part in _TRANSIENT_NAMES):
        return True
    return type(error) is OSError  # s3fs/fsspec wrap service errors in plain OSError


def lost_with_worker(error: BaseException) -> bool:
    return type(error).__name__ in LOST_WORKER_ERRORS


def run_on_worker(
    function: str,
    shard: dict,
    params: dict,
    location: dict,
    credentials_block: str | None = None,
    secret_blocks: list[str] | None = None,
) -> dict:
    apply_credentials(credentials_block)  # storage access with the block's keys (none: AWS_* environment)
    load_secrets(secret_blocks or [])  # e.g. an LLM server's API key, by block name
    return run_shard(function, shard, params, StepLocation(**location))
