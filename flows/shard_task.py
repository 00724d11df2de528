"""The one Prefect task every step uses: run a step's pure function over one shard.

Its cache key is the step fingerprint plus the shard number, its result (a small dict of
counts and the committed file's size and hash) is persisted under the run's storage root, and
transient I/O errors are retried with exponential backoff.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.tasks import exponential_backoff

from fineflow.flows.credentials import apply_credentials, load_secrets
from fineflow.manifest import StepLocation
from fineflow.steps import run_shard
from fineflow.storage import PERMANENT_ERRNOS

_TRANSIENT_NAMES = ("Connection", "Timeout", "Throttl", "SlowDown", "ServiceUnavailable", "ReadTimeout")
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


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


def _retry_if_transient(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect's signature)
    try:
        state.result()
    except Exception as error:  # noqa: BLE001 (we classify it)
        return is_transient(error)
    return False


def _cache_key(context, parameters: dict[str, Any]) -> str:  # noqa: ANN001
    return parameters["cache_key"]


@task(
    persist_result=True,
    cache_key_fn=_cache_key,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_if_transient,
    task_run_name="{task_label}",
)
def shard_task(
    task_label: str,
    cache_key: str,
    function: str,
    shard: dict,
    params: dict,
    location: dict,
    credentials_block: str | None = None,
    secret_blocks: list[str] | None = None,
) -> dict:
    apply_credentials(credentials_block)  # on the Dask worker: storage access with the block's keys
    load_secrets(secret_blocks or [])  # e.g. an LLM server's API key, by block name
    return run_shard(function, shard, params, StepLocation(**location))
