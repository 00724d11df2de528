"""Input identity as work for the cluster: raw input files are hashed by the workers, not the client.

A stage's fingerprint names its raw inputs by path, size and content hash. The client reading
every byte of a user's terabytes of WARC files before any work would be a single-process pass
over the whole input; on an existing cluster the workers do it instead, one task per file, each
leaving its per-file record (path, size, change token, content hash) in the storage's memo
(``fineflow.fingerprint.input_record``), where planning then finds it without reading the file.
"""

from __future__ import annotations

from fineflow import registry
from fineflow.fingerprint import input_record
from fineflow.flows.cluster import Cluster
from fineflow.flows.shard_work import in_run
from fineflow.stage_config import StageConfig


def inputs_to_hash(stages: list[StageConfig]) -> list[str]:
    """Every raw input file whose content hash a stage's planner will need (sorted, once each)."""
    files: set[str] = set()
    for stage in stages:
        files.update(registry.of(stage).call("content_inputs", stage) or [])
    return sorted(files)


def hash_on_workers(cluster: Cluster, stages: list[StageConfig], root: str) -> list[dict]:
    """The inputs' per-file records, computed (or found memoised under ``root``) by the cluster's workers."""
    files = inputs_to_hash(stages)
    if not files:
        return []
    client = cluster.client()
    futures = client.map(
        in_run, [cluster.run_key] * len(files), [input_record] * len(files), files, [root] * len(files),
        key=[f"fineflow-input-hash-{cluster.run_key}-{n}" for n in range(len(files))], pure=False,
    )
    try:
        return client.gather(futures)
    finally:
        for future in futures:
            future.release()
