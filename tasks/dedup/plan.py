"""Plan the dedup stage: signatures (map) -> buckets (one task per key) -> cluster (one task)
-> remove (map).

Fingerprints chain: buckets and cluster depend on every shard's signatures, so adding one input
file re-runs them and everything after (a global step cannot be partial); the signatures of
unchanged shards stay cached. In incremental mode (``previous``), the previous run's signatures
are read, not recomputed, and enter the fingerprints through their own fingerprint.
"""

from __future__ import annotations

from fineflow import storage
from fineflow.dedup_config import DedupStage
from fineflow.fingerprint import step_fingerprint
from fineflow.manifest import StepLocation, committed_files, read_manifest, shard_name
from fineflow.steps import StepPlan
from fineflow.tasks.dedup import buckets, cluster, remove, signatures
from fineflow.tasks.text.words import splitter_resources


class MissingUpstream(ValueError):
    pass


def _previous(folder: str | None) -> tuple[list[str], str | None]:
    if folder is None:
        return [], None
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("stage") != "dedup" or manifest.get("step") != "signatures":
        raise ValueError(f"previous: {folder} is not a committed dedup/signatures folder (no matching _manifest.json)")
    return committed_files(folder), manifest["fingerprint"]


def plan_dedup(config: DedupStage, root: str, upstream: dict | None) -> list[StepPlan]:
    if upstream is None:
        raise MissingUpstream("the dedup stage reads documents: put a crawl (or another document) stage before it")
    inputs = [storage.join(upstream["output"], shard_name(n)) for n in range(upstream["shards"])]
    signature_params = {
        "n_grams": config.n_grams,
        "bands": config.bands,
        "rows": config.rows,
        "seed": config.seed,
        "hash_function": config.hash_function,
        "exact_dedup": config.exact,
        "url_dedup": config.url,
        "near_dedup": config.near,
        "word_splitters": dict(sorted(config.word_splitters.items())),
        "word_splitter": config.word_splitter,
        "max_text_chars": config.max_text_chars,
    }
    signatures_fp = step_fingerprint(
        stage="dedup",
        step="signatures",
        step_version=signatures.STEP_VERSION,
        params=signature_params,
        inputs={"upstream": upstream["fingerprint"]},
        libraries=("xxhash", "numpy", "pyarrow"),
        resources=splitter_resources(),
    )
    signatures_location = StepLocation(root, "dedup", "signatures", signatures_fp.value)
    previous_files, previous_fp = _previous(config.previous)
    if previous_fp == signatures_fp.value:
        raise ValueError(f"previous: {config.previous} holds this run's own signatures (same input and parameters)")
    signature_files = [signatures_location.shard_url(n) for n in range(len(inputs))]
    if previous_files:
        signature_files = signature_files + [buckets.PREVIOUS + url for url in previous_files]

    keys = [f"band_{i:02d}" for i in range(config.bands)] if config.near else []
    keys += ["exact_key"] if config.exact else []
    keys += ["url_key"] if config.url else []
    chained = {"signatures": signatures_fp.value, "previous": previous_fp}
    buckets_fp = step_fingerprint(
        stage="dedup", step="buckets", step_version=buckets.STEP_VERSION, params={"keys": keys}, inputs=chained,
        libraries=("polars",),
    )
    buckets_location = StepLocation(root, "dedup", "buckets", buckets_fp.value)
    cluster_fp = step_fingerprint(
        stage="dedup", step="cluster", step_version=cluster.STEP_VERSION, params={"keep": "previous,earliest,longest,smallest-id", "exact": config.exact, "url": config.url},
        inputs={"buckets": buckets_fp.value, **chained}, libraries=("polars",),
    )
    cluster_location = StepLocation(root, "dedup", "cluster", cluster_fp.value)
    remove_fp = step_fingerprint(
        stage="dedup", step="remove", step_version=remove.STEP_VERSION, params={},
        inputs={"upstream": upstream["fingerprint"], "cluster": cluster_fp.value}, libraries=("pyarrow",),
    )
    return [
        StepPlan(
            stage="dedup", step="signatures", function="fineflow.tasks.dedup.signatures:signatures_shard",
            params=signature_params, shards=[{"shard": n, "input": url} for n, url in enumerate(inputs)],
            fingerprint=signatures_fp, root=root,
        ),
        StepPlan(
            stage="dedup", step="buckets", function="fineflow.tasks.dedup.buckets:buckets_shard",
            params={"signatures": signature_files}, shards=[{"shard": n, "key": key} for n, key in enumerate(keys)],
            fingerprint=buckets_fp, root=root,
        ),
        StepPlan(
            stage="dedup", step="cluster", function="fineflow.tasks.dedup.cluster:cluster_shard",
            params={
                "edges": [buckets_location.shard_url(n) for n in range(len(keys))],
                "signatures": signature_files,
                "upstream_shards": len(inputs),
                "exact": config.exact,
                "url": config.url,
            },
            shards=[{"shard": 0}], fingerprint=cluster_fp, root=root,
        ),
        StepPlan(
            stage="dedup", step="remove", function="fineflow.tasks.dedup.remove:remove_shard", params={},
            shards=[
                {"shard": n, "input": url, "assignments": cluster.assign_url(cluster_location.shard_url(0), n)}
                for n, url in enumerate(inputs)
            ],
            fingerprint=remove_fp, root=root,
        ),
    ]
