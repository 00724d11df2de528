"""Where Prefect keeps result and cache records: under the run's own storage root.

Keeping them beside the artifacts means a local run's cache records can never answer for an
S3 run (and ``gc`` can remove both together). Prefect wants result storage saved server-side,
so each root gets a block named after it; it holds a path only, never credentials (those come
from the environment of whichever process reads or writes).
"""

from __future__ import annotations

from functools import lru_cache

from prefect.filesystems import LocalFileSystem, RemoteFileSystem, WritableFileSystem

from fineflow import storage
from fineflow.fingerprint import digest

RESULTS_DIR = "_prefect/results"


def block_name(root: str) -> str:
    return f"fineflow-results-{digest(storage.normalize(root), 16)}"


@lru_cache(maxsize=32)
def result_storage(root: str) -> WritableFileSystem:
    location = storage.join(root, RESULTS_DIR)
    block = LocalFileSystem(basepath=location) if storage.is_local(root) else RemoteFileSystem(basepath=location)
    block.save(block_name(root), overwrite=True)
    return block
