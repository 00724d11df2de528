"""S3 credentials from a Prefect block, as an alternative to the ``AWS_*`` environment.

A pipeline names a prefect-aws ``AwsCredentials`` block (``storage_credentials`` in the YAML or
``--credentials-block``). Only the name travels with runs; the flow process loads the block from
the Prefect API and configures fineflow's storage with it, and hands the options (and the values
of Secret blocks its steps name) to the Dask workers in the run's worker plugin
(``flows/run_plugin.py``): the secret never appears in parameters, task arguments, logs or
artifacts, and no worker needs a Prefect API.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fineflow import storage


@lru_cache(maxsize=8)
def load_block(name: str):
    from prefect_aws import AwsCredentials

    return AwsCredentials.load(name)


def s3_options(name: str) -> dict[str, Any]:
    """fsspec/s3fs options from an ``AwsCredentials`` block."""
    credentials = load_block(name)
    options: dict[str, Any] = {}
    if credentials.aws_access_key_id:
        options["key"] = credentials.aws_access_key_id
    if credentials.aws_secret_access_key:
        options["secret"] = credentials.aws_secret_access_key.get_secret_value()
    if credentials.aws_session_token:
        options["token"] = credentials.aws_session_token
    client_kwargs: dict[str, Any] = {}
    if credentials.region_name:
        client_kwargs["region_name"] = credentials.region_name
    endpoint = credentials.aws_client_parameters.endpoint_url if credentials.aws_client_parameters else None
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    return options


def apply_credentials(name: str | None) -> None:
    """Make this process's s3:// access use the named block (no-op without a name)."""
    if name:
        storage.configure("s3", **s3_options(name))


@lru_cache(maxsize=32)
def secret_value(name: str) -> str:
    from prefect.blocks.system import Secret

    value = Secret.load(name).get()
    return value if isinstance(value, str) else str(value)
