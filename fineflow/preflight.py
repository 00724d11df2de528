"""Checks before any work starts: storage, inputs, models. Each problem is one line naming the
key or option at fault, raised before a flow run or a Dask cluster exists.

They are cheap (listings, sizes, one request to S3), so ``fineflow run`` runs them before it
starts anything, and the pipeline flow runs them again before it starts its cluster (a
deployed run has no CLI in front of it).
"""

from __future__ import annotations

from typing import Any

import fsspec

from fineflow import storage
from fineflow.config import PipelineConfig

S3_CHECK_TIMEOUT_S = 10


class PreflightError(ValueError):
    """The run cannot start: the message says which key or option and why, in one line."""


def check_storage_url(url: str, key: str = "storage") -> None:
    """A storage root fsspec can open: a known protocol, and a host or bucket where one is needed."""
    protocol = storage.protocol_of(url)
    if protocol == "file":
        return
    try:
        fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError):
        raise PreflightError(f"{key}: {url}: unsupported protocol {protocol}:// (use a local path or s3://bucket/prefix)") from None
    if not url.split("://", 1)[1].split("/", 1)[0]:
        raise PreflightError(f"{key}: {url} names no {'bucket' if protocol in ('s3', 'gs', 'gcs') else 'host'}")


def check_s3(url: str, key: str = "storage") -> None:
    """Credentials exist, the endpoint answers and the bucket is there: one request, short timeouts."""
    import s3fs
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    options: dict[str, Any] = dict(storage.protocol_options("s3"))
    options["skip_instance_cache"] = True
    options["config_kwargs"] = {
        **options.get("config_kwargs", {}),
        "connect_timeout": S3_CHECK_TIMEOUT_S,
        "read_timeout": S3_CHECK_TIMEOUT_S,
        "retries": {"max_attempts": 1},
    }
    bucket = url.split("://", 1)[1].split("/", 1)[0]
    endpoint = options.get("endpoint_url") or options.get("client_kwargs", {}).get("endpoint_url") or _env_endpoint()
    where = f" at {endpoint}" if endpoint else ""
    filesystem = s3fs.S3FileSystem(**options)
    try:
        filesystem.ls(bucket, refresh=True)
    except NoCredentialsError:
        raise PreflightError(
            f"{key}: {url} needs S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(and AWS_ENDPOINT_URL for a server other than AWS), or name a credentials block"
        ) from None
    except FileNotFoundError:
        raise PreflightError(f"{key}: bucket {bucket} does not exist{where}") from None
    except PermissionError as error:
        raise PreflightError(f"{key}: access to bucket {bucket}{where} denied: {_first_line(error)}") from None
    except (OSError, BotoCoreError, ClientError) as error:
        raise PreflightError(f"{key}: cannot reach the S3 endpoint{where or ' (AWS_ENDPOINT_URL unset)'}: {_first_line(error)}") from None


def _env_endpoint() -> str | None:
    import os

    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def check_storage(url: str, key: str = "storage") -> None:
    """A storage URL that can be used: well formed, and on S3 reachable with credentials."""
    check_storage_url(url, key)
    if storage.protocol_of(url) == "s3":
        check_s3(url, key)


def check_stage(stage: Any) -> list[str]:
    """A stage's own cheap checks (its inputs, models); any failure is one line naming the stage."""
    from fineflow.planning import preflight_stage

    try:
        return [f"{stage.label}: {warning}" for warning in preflight_stage(stage)]
    except PreflightError as error:
        raise PreflightError(f"stages.{stage.label}.{error}") from None
    except (ValueError, OSError) as error:
        raise PreflightError(f"stages.{stage.label}.{_first_line(error)}") from None
    except Exception as error:  # noqa: BLE001 (a client library's own error types: still one line)
        raise PreflightError(f"stages.{stage.label}: {type(error).__name__}: {_first_line(error)}") from None


def _check_export(config: PipelineConfig) -> None:
    """The export's folder: usable, and empty or an earlier export (checked before any work)."""
    from fineflow.export.release import check_folder, release_url
    from fineflow.export.source import ExportError

    url = release_url(config.export, config.storage)
    check_storage_url(url, "export.to")
    try:
        check_folder(url)
    except (ExportError, OSError) as error:
        raise PreflightError(f"export.to: {_first_line(error)}") from None


def preflight(config: PipelineConfig) -> list[str]:
    """Raise ``PreflightError`` for what makes the run impossible; return the warnings found.

    With ``strict`` the warnings are errors too.
    """
    check_storage(config.storage)
    if config.export is not None:
        _check_export(config)
    warnings: list[str] = []
    for stage in config.stages:
        warnings += check_stage(stage)
    if config.strict and warnings:
        raise PreflightError(f"strict: {len(warnings)} warning(s) would be errors: {'; '.join(warnings)}")
    return warnings
