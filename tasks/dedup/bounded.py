"""The ``cluster`` step partitioned on storage, in memory bounded by ``cluster.memory_mb``.

The same answer as the in-memory path, byte for byte (tests/test_dedup_cluster_bounded.py
compares them), in four streaming phases over ``Spill`` partitions:

1. components: ``components.components_on_storage`` over the edge files, read a chunk at a time;
   labels come out partitioned by node;
2. members: every signature file, a chunk at a time, spilled by node, then joined per partition
   with that partition's labels; the clustered documents (with their component) spill by component,
   and so does each chunk's best member per component (``keep.first_in_keep_order``);
3. keepers: per component partition, the best of those bests and the summed sizes, then the
   members streamed past them get their roles (``keep.roles``), spilled by upstream shard;
4. outputs: per upstream shard, its assignments (no more rows than the shard has documents).

Only the clusters table (one row per cluster: its id and size) is gathered whole, as the step's
one output file is written from one table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import polars as pl

from fineflow import storage
from fineflow.tasks.dedup import index
from fineflow.tasks.dedup.buckets import PREVIOUS
from fineflow.tasks.dedup.components import Bound, components_on_storage
from fineflow.tasks.dedup.keep import first_in_keep_order, roles
from fineflow.tasks.dedup.signatures import ROW_BITS
from fineflow.tasks.dedup.spill import Spill, iter_parquet

ATTRIBUTES = ["node", "id", "crawl_date", "text_chars", "exact_key", "url_key"]
ASSIGNMENT_SCHEMA = {"node": pl.Int64, "id": pl.String, "cluster_id": pl.String, "cluster_size": pl.Int64, "drop_reason": pl.String}


def _edge_batches(urls: list[str], rows: int) -> Iterator[pl.DataFrame]:
    for url in urls:
        yield from iter_parquet(url, ["a", "b"], rows)


def _signature_batches(urls: list[str], rows: int) -> Iterator[pl.DataFrame]:
    """Attributes of every signed document, a chunk at a time; a previous run's nodes and indexed
    documents' negative (as ``buckets.read_columns`` makes them)."""
    for url in urls:
        previous = url.startswith(PREVIOUS)
        plain, ordinal = index.unmark(url.removeprefix(PREVIOUS))
        for batch in iter_parquet(plain, ATTRIBUTES, rows):
            if ordinal is not None:
                batch = batch.with_columns(index.old_node(ordinal, pl.col("node")))
            yield batch.with_columns(-pl.col("node") - 1) if previous else batch


def bounded_cluster(params: dict, folder: str, bound: Bound) -> dict:
    """Run the step's work under ``folder`` (scratch, removed by the caller): per upstream shard a
    function giving its assignments, the clusters table and the counts ``cluster_shard`` reports."""
    exact, url = params.get("exact", True), params.get("url", True)
    labels, counts = components_on_storage(_edge_batches(params["edges"], bound.chunk_rows), storage.join(folder, "components"), bound)

    attributes = Spill(storage.join(folder, "attributes"), bound.partitions, ["node"], bound.wide_rows)
    for batch in _signature_batches(params["signatures"], bound.wide_rows):
        attributes.add(batch)
    attributes.flush()
    members = Spill(storage.join(folder, "members"), bound.partitions, ["component"], bound.wide_rows)
    bests = Spill(storage.join(folder, "bests"), bound.partitions, ["component"], bound.wide_rows)
    clustered = 0
    for partition in range(bound.partitions):
        label = pl.concat([pl.DataFrame(schema={"node": pl.Int64, "component": pl.Int64}), *labels.read(partition)])
        clustered += label.height
        for run in attributes.read(partition):
            joined = run.join(label, on="node")
            members.add(joined)
            bests.add(first_in_keep_order(joined))
    members.flush()
    bests.flush()
    attributes.remove()
    labels.remove()

    # the assignments of upstream shard n are the non-negative nodes n << ROW_BITS ...
    shards = params["upstream_shards"]
    out = Spill(storage.join(folder, "assignments"), max(1, shards), ["node"], bound.wide_rows, by=pl.col("node") // (1 << ROW_BITS))
    clusters = []
    removed: Counter[str] = Counter()
    bridged, bridged_heads = 0, []  # with an index: clusters joining indexed documents (index.bridges)
    for partition in range(bound.partitions):
        keepers = None
        for run in bests.read(partition):
            keepers = first_in_keep_order(run if keepers is None else pl.concat([keepers, run], how="vertical_relaxed"))
        if keepers is None:
            continue
        clusters.append(keepers.select("id", pl.col("cluster_size").cast(pl.UInt32)))
        rows = []
        for run in members.read(partition):
            if params.get("index"):
                rows.append(index.bridge_rows(run))
            assigned = roles(run, keepers, exact, url).filter(pl.col("node") >= 0)  # a previous run's: never removed again
            removed.update(r for r in assigned["drop_reason"].to_list() if r)
            out.add(assigned.select(*ASSIGNMENT_SCHEMA))
        if rows:  # a component's members are all in its partition
            found = index.bridges(pl.concat(rows))
            bridged += found.height
            bridged_heads.append(found.head(index.EXAMPLES))
    out.flush()
    members.remove()
    bests.remove()

    def assignments(shard: int) -> pl.DataFrame:
        empty = pl.DataFrame(schema=ASSIGNMENT_SCHEMA)
        runs = list(out.read(shard)) if shard < out.partitions else []
        return pl.concat([empty, *runs], how="vertical_relaxed").cast(ASSIGNMENT_SCHEMA).sort("node")

    table = pl.concat([pl.DataFrame(schema={"id": pl.String, "cluster_size": pl.UInt32}), *clusters])
    # as the in-memory path groups its roles: by the kept document's id
    table = table.group_by("id").agg(pl.col("cluster_size").sum().cast(pl.UInt32).alias("size")).rename({"id": "cluster_id"})
    return {
        "assignments": assignments,
        "clusters": table.sort("cluster_id"),
        "removed": removed,
        "edges": counts["edges"],
        "clustered_docs": clustered,
        "passes": counts["passes"],
        "output": out,
        **({"bridges": index.bridge_stats(bridged, bridged_heads)} if params.get("index") else {}),
    }
