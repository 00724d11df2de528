"""What a Dask worker runs for one shard: a step's pure function, with the run's settings.

This module imports no Prefect (nor do the step functions): the run's S3 options, secrets and
plug-in code reach the worker through the run's worker plugin (``flows/run_plugin.py``), never
from a Prefect API of the worker's own.
"""

from __future__ import annotations

from fineflow.flows.run_plugin import MissingRunContext, PluginConflict, enter
from fineflow.flows.versions import VersionMismatch, check_versions
from fineflow.manifest import StepLocation
from fineflow.steps import run_shard
from fineflow.storage import PERMANENT_ERRNOS

_TRANSIENT_NAMES = ("Connection", "Timeout", "Throttl", "SlowDown", "ServiceUnavailable", "ReadTimeout")
_PERMANENT = (
    FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, MissingRunContext, PluginConflict,
    VersionMismatch,
)
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


class WorkerMissesCredentials(RuntimeError):
    """A worker has no S3 credentials: neither the run's nor its own."""


def run_on_worker(
    function: str, shard: dict, params: dict, location: dict, run_key: str | None = None, versions: dict | None = None
) -> dict:
    check_versions(versions)  # a worker that would compute other output than the fingerprint says refuses
    enter(run_key)  # the run's storage options, secrets and plug-ins (fails at once without them)
    try:
        return run_shard(function, shard, params, StepLocation(**location))
    except Exception as error:
        if type(error).__name__ == "NoCredentialsError":  # botocore's, raised deep inside s3fs
            raise WorkerMissesCredentials(
                "this Dask worker has no S3 credentials: name a credentials block (--credentials-block) so the run "
                "carries its keys to the workers, or give every worker AWS_* variables"
            ) from None
        raise


def in_run(run_key: str | None, function, *args, **kwargs):  # noqa: ANN001, ANN201 (any function)
    """Call ``function`` on a worker with the run's settings applied (e.g. hashing input files)."""
    enter(run_key)
    return function(*args, **kwargs)
