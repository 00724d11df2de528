"""Plan the dedup stage: signatures (map) -> buckets (one task per key) -> cluster (one task)
-> remove (map), and with ``index:`` -> append (one task: the kept documents' keys added to the
persistent index, ``fineflow.tasks.dedup.index``).

Fingerprints chain: buckets and cluster depend on every shard's signatures, so adding one input
file re-runs them and everything after (a global step cannot be partial); the signatures of
unchanged shards stay cached. In incremental mode (``previous``), the previous run's signatures
are read, not recomputed, and enter the fingerprints through their own fingerprint; with an
index, the index runs read enter them by their keys (each run's signatures fingerprint).
"""

from __future__ import annotations

from fineflow.manifest import committed_files, read_manifest
from fineflow.steps import PlanContext, StepPlan
from fineflow.tasks.dedup import append, buckets, cluster, index, remove, signatures
from fineflow.tasks.dedup.config import DedupStage
from fineflow.tasks.text.words import splitter_resources

# what makes two runs' band keys comparable (signatures from before `shingles` existed used words)
MINHASH_PARAMS = {"shingles": "words", "n_grams": None, "bands": None, "rows": None, "seed": None, "hash_function": None}


def _previous(folder: str | None, params: dict) -> tuple[list[str], str | None]:
    if folder is None:
        return [], None
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("stage") != "dedup" or manifest.get("step") != "signatures":
        raise ValueError(f"previous: {folder} is not a committed dedup/signatures folder (no matching _manifest.json)")
    theirs = manifest.get("components", {}).get("params", {})
    if params["near_dedup"]:
        for name, default in MINHASH_PARAMS.items():
            if theirs.get(name, default) != params[name]:
                raise ValueError(
                    f"previous: {folder} was signed with {name}={theirs.get(name, default)!r}, this run uses "
                    f"{params[name]!r}: MinHash settings must match for band keys to compare"
                )
    return committed_files(folder), manifest["fingerprint"]


def rewrites_text(config: DedupStage) -> bool:
    """Substring dedup cuts spans out of the text (the kind's ``rewrites_text``)."""
    return config.substring is not None


def plan_dedup(config: DedupStage, ctx: PlanContext) -> list[StepPlan]:
    assert ctx.inputs is not None  # a document-reading kind: the DAG gives it inputs
    inputs = ctx.inputs.shards()
    # substring dedup runs in the remove step (after the document dedup); empty when off, so the
    # fingerprints of a run without it are unchanged
    substring = {"substring": config.substring.model_dump()} if config.substring else {}
    if not (config.exact or config.url or config.near):  # substring dedup alone: no clustering
        return [
            ctx.step(
                remove, "remove_shard", step="remove", params=substring, chained={"upstream": ctx.inputs.fingerprint},
                fingerprint_params=substring, shards=inputs,
            )
        ]
    signature_params = {
        "shingles": config.shingles,
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
    # word shingles fingerprint as before the option existed, so existing signatures stay cached
    fingerprinted = {k: v for k, v in signature_params.items() if not (k == "shingles" and v == "words")}
    signatures_plan = ctx.step(
        signatures, "signatures_shard", step="signatures", params=signature_params, fingerprint_params=fingerprinted,
        chained={"upstream": ctx.inputs.fingerprint}, shards=inputs, resources=splitter_resources(),
    )
    previous_files, previous_fp = _previous(config.previous, signature_params)
    if previous_fp == signatures_plan.fingerprint.value:
        raise ValueError(f"previous: {config.previous} holds this run's own signatures (same input and parameters)")
    signature_files = [signatures_plan.location.shard_url(n) for n in range(len(inputs))]
    if previous_files:
        signature_files = signature_files + [buckets.PREVIOUS + url for url in previous_files]
    indexed = _index(config, signature_params, signatures_plan.fingerprint.value, len(inputs))

    keys = [f"band_{i:02d}" for i in range(config.bands)] if config.near else []
    keys += ["exact_key"] if config.exact else []
    keys += ["url_key"] if config.url else []
    chained = {"signatures": signatures_plan.fingerprint.value, "previous": previous_fp}
    if indexed:  # the index's runs (their signatures fingerprints) as read: a new run appended is a new plan
        chained["index"] = {"params": indexed["key_params"], "runs": indexed["runs"]}
    index_params = {"index": {"folder": indexed["folder"], "runs": indexed["runs"]}} if indexed else {}
    buckets_plan = ctx.step(
        buckets, "buckets_shard", step="buckets", params={"signatures": signature_files, **index_params}, chained=chained,
        fingerprint_params={"keys": keys},
        shards=[{"shard": n, "key": key} for n, key in enumerate(keys)],
    )
    cluster_plan = ctx.step(
        cluster, "cluster_shard", step="cluster",
        params={
            "edges": [buckets_plan.location.shard_url(n) for n in range(len(keys))],
            # with an index: its runs' kept documents' attributes (what the keep order ranks)
            "signatures": signature_files + (index.marked_docs(indexed["folder"], indexed["runs"]) if indexed else []),
            **index_params,
            "upstream_shards": len(inputs),
            "exact": config.exact,
            "url": config.url,
            # how it runs, not what it computes: the same outputs either way, so not fingerprinted
            "cluster": config.cluster.model_dump(),
        },
        fingerprint_params={"keep": "previous,earliest,longest,smallest-id", "exact": config.exact, "url": config.url},
        chained={"buckets": buckets_plan.fingerprint.value, **chained},
        shards=[{"shard": 0}],
    )
    remove_plan = ctx.step(
        remove, "remove_shard", step="remove", params=substring,
        chained={"upstream": ctx.inputs.fingerprint, "cluster": cluster_plan.fingerprint.value},
        fingerprint_params=substring,
        shards=[
            {**shard, "assignments": cluster_plan.location.artifact_url(cluster.assignments_name(shard["shard"]))}
            for shard in inputs
        ],
    )
    if not indexed:
        return [signatures_plan, buckets_plan, cluster_plan, remove_plan]
    append_plan = ctx.step(
        append, "append_shard", step="append",
        params={
            "folder": indexed["folder"],
            "run": signatures_plan.fingerprint.value,
            "base": indexed["runs"],
            "key_params": indexed["key_params"],
            "keys": [f"band_{i:02d}" for i in range(config.bands)] + ["exact_key", "url_key"],
            "signatures": signature_files,
            "assignments": [cluster_plan.location.artifact_url(cluster.assignments_name(n)) for n in range(len(inputs))],
        },
        # where it appends, too: the same run appended to another index is another append
        fingerprint_params={"index": indexed["folder"]},
        chained={"cluster": cluster_plan.fingerprint.value, "index": chained["index"]},
        shards=[{"shard": 0}],
    )
    return [signatures_plan, buckets_plan, cluster_plan, remove_plan, append_plan]


def _index(config: DedupStage, signature_params: dict, run: str, shards: int) -> dict | None:
    """Where this run's index folder is and which of its runs this run reads (``index.runs_to_read``)."""
    if config.index is None:
        return None
    if shards > index.MAX_SHARDS:
        raise ValueError(f"index: a run of more than {index.MAX_SHARDS} upstream shards cannot be indexed (got {shards})")
    key_params = index.key_params(signature_params, signatures.STEP_VERSION)
    folder = index.folder_of(config.index, key_params)
    return {"folder": folder, "runs": index.runs_to_read(folder, run), "key_params": key_params}
