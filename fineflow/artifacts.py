"""Artifacts: files a step commits besides document shards (tokenizers, models, thresholds, token
files and their sidecars, reports, a clustering's assignments).

A shard task writes each artifact atomically into its step's ``artifacts/`` folder and returns
the entries; the step's manifest lists them with size and sha256 like document shards, so
caching, ``fineflow verify``, ``fineflow inspect`` and gc treat them alike. A step may commit a
number of artifacts known only when it runs. A later step that uses an artifact of the same run
names it by the producing step's location (``StepLocation.artifact_url``), so its fingerprint
chains on the producer's fingerprint, known at planning time, never on the file's content.
"""

from __future__ import annotations

import hashlib
import os

from fineflow import storage
from fineflow.manifest import artifact_url_of


def commit_artifact(output_url: str, name: str, data: bytes) -> dict:
    """Write artifact ``name`` of the shard task whose output is ``output_url``; its manifest entry.

    Pass the returned entries to ``commit_shard(..., artifacts=[...])`` (or return them under the
    result's ``artifacts``) so the step's manifest lists them.
    """
    _check_name(name)
    storage.write_bytes(artifact_url_of(output_url, name), data)
    return {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def commit_artifact_file(output_url: str, name: str, local_path: str) -> dict:
    """``commit_artifact`` for a file written locally first (token files: too large for memory)."""
    _check_name(name)
    digest = hashlib.sha256()
    with open(local_path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * 1024 * 1024), b""):
            digest.update(block)
    storage.put_file(local_path, artifact_url_of(output_url, name))
    return {"file": name, "bytes": os.path.getsize(local_path), "sha256": digest.hexdigest()}


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name:
        raise ValueError(f"artifact name {name!r}: give a file name (no folders, not hidden); prefix it to group files")
