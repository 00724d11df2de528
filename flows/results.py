"""Where Prefect keeps result and cache records: under the run's own storage root.

Keeping them beside the artifacts means a local run's cache records can never answer for an
S3 run (and ``gc`` can remove both together). Prefect wants result storage saved server-side,
so each root gets a block named after it. With credentials from the environment it holds a path
only; with a credentials block it is a prefect-aws ``S3Bucket`` referring to that block, so the
secret stays masked in the API.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from prefect.filesystems import LocalFileSystem, RemoteFileSystem, WritableFileSystem

from fineflow import storage
from fineflow.fingerprint import digest

RESULTS_DIR = "_prefect/results"


def block_name(root: str) -> str:
    return f"fineflow-results-{digest(storage.normalize(root), 16)}"


_lock = threading.Lock()


def result_storage(root: str, credentials_block: str | None = None) -> WritableFileSystem:
    # Concurrent stage flows ask at once: two saves of one block conflict in the API and the
    # loser retries with backoff for seconds, so one thread saves and the others reuse it.
    with _lock:
        return _saved_storage(root, credentials_block)


@lru_cache(maxsize=32)
def _saved_storage(root: str, credentials_block: str | None = None) -> WritableFileSystem:
    location = storage.join(root, RESULTS_DIR)
    if storage.is_local(root):
        block = LocalFileSystem(basepath=location)
    elif credentials_block and storage.protocol_of(root) == "s3":
        from prefect_aws import S3Bucket

        from fineflow.flows.credentials import load_block

        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        block = S3Bucket(bucket_name=bucket, bucket_folder=prefix, credentials=load_block(credentials_block))
    else:
        block = RemoteFileSystem(basepath=location)
    block.save(block_name(root), overwrite=True)
    return block
