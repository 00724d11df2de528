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

from fineflow import storage
from fineflow.manifest import artifact_url_of


def commit_artifact(output_url: str, name: str, data: bytes) -> dict:
    """Write artifact ``name`` of the shard task whose output is ``output_url``; its manifest entry.

    Pass the returned entries to ``commit_shard(..., artifacts=[...])`` (or return them under the
    result's ``artifacts``) so the step's manifest lists them.
    """
    if not name or name.startswith(".") or "/" in name:
        raise ValueError(f"artifact name {name!r}: give a file name (no folders, not hidden); prefix it to group files")
    storage.write_bytes(artifact_url_of(output_url, name), data)
    return {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
