"""dedup's third step, ``cluster``: connected components over every candidate pair, and which
member of each cluster is kept.

Two paths with the same outputs, byte for byte (``cluster`` settings, ``config.ClusterMemory``):
in memory, scipy's sparse connected components over the whole edge list (only documents that have
at least one candidate pair are held, a few dozen bytes each, never the corpus), the default while
the edges fit ``memory_mb``; or partitioned on storage within ``memory_mb``
(``fineflow.tasks.dedup.bounded``). Which member is kept: ``fineflow.tasks.dedup.keep``.

Output: ``assign-NNNNN.parquet`` per upstream shard (its documents that are in a cluster) and
``part-00000.parquet`` (one row per cluster: id, size).
"""

from __future__ import annotations

import resource
import threading
import time
import uuid
from collections import Counter

import numpy as np
import polars as pl
import psutil

from fineflow import storage
from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard, table_to_parquet_bytes
from fineflow.manifest import step_folder_of
from fineflow.tasks.dedup import index
from fineflow.tasks.dedup.bounded import bounded_cluster
from fineflow.tasks.dedup.buckets import read_columns
from fineflow.tasks.dedup.components import Bound, bound_for
from fineflow.tasks.dedup.keep import choose_kept
from fineflow.tasks.dedup.signatures import ROW_BITS
from fineflow.tasks.dedup.spill import parquet_rows

STEP_VERSION = "3"  # 3: a full tie (date, length, id) is broken by the smaller node, the same in every mode
LIBRARIES = ("polars",)
SIZE_BINS = ((2, "2"), (3, "3-4"), (5, "5-9"), (10, "10-99"), (100, "100-999"), (1000, "1000+"))


def connected_components(edges: pl.DataFrame) -> pl.DataFrame:
    """``(node, component)`` for every node of ``edges`` (columns a, b); the component is its smallest node."""
    if edges.is_empty():
        return pl.DataFrame(schema={"node": pl.Int64, "component": pl.Int64})
    a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
    nodes = np.unique(np.concatenate([a, b]))
    ia, ib = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    from scipy.sparse import coo_matrix, csgraph  # (imported where used: planning a run should not pay for scipy)

    graph = coo_matrix((np.ones(len(ia), dtype=np.int8), (ia, ib)), shape=(len(nodes), len(nodes)))
    _, labels = csgraph.connected_components(graph, directed=False)
    frame = pl.DataFrame({"node": nodes, "label": labels})
    return frame.with_columns(pl.col("node").min().over("label").alias("component")).select("node", "component").sort("node")


class _PeakMemory:
    """Highest resident memory of this process while the block runs, sampled every 20 ms."""

    def __enter__(self) -> _PeakMemory:
        self._process = psutil.Process()
        self.baseline = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def assignments_name(shard: int) -> str:
    """The artifact listing upstream shard ``shard``'s clustered documents (what remove reads)."""
    return f"assign-{shard:05d}.parquet"


EXACT_BYTES_PER_EDGE = 400  # the in-memory path: measured 350 per edge (RSS) on a 1M-edge graph of 734k nodes


def _in_memory(params: dict) -> dict:
    """The exact path: every edge and every clustered document at once."""
    edges = read_columns(params["edges"], ["a", "b"]).unique()
    components = connected_components(edges)
    # attributes of clustered documents only, one signature file at a time
    wanted = components.select("node")
    attributes = []
    for url in params["signatures"]:
        plain, ordinal = index.unmark(url)
        if ordinal is not None:  # an index run's kept documents: only the row groups holding clustered ones
            found = index.read_docs(plain, ordinal, wanted["node"])
            attributes += [found] if found is not None else []
            continue
        columns = read_columns([url], ["node", "id", "crawl_date", "text_chars", "exact_key", "url_key"])
        attributes.append(columns.join(wanted, on="node", how="semi"))
    members = (
        pl.concat(attributes).join(components, on="node")
        if attributes
        else components.with_columns(
            pl.lit(None, pl.String).alias("id"),
            pl.lit(None, pl.Datetime("us", "UTC")).alias("crawl_date"),
            pl.lit(None, pl.Int64).alias("text_chars"),
            pl.lit(None, pl.UInt64).alias("exact_key"),
            pl.lit(None, pl.UInt64).alias("url_key"),
        )
    )
    roles = choose_kept(members, exact=params.get("exact", True), url=params.get("url", True))
    assignments = roles.filter(pl.col("node") >= 0).select(
        "node", "id", "cluster_id", pl.col("cluster_size").cast(pl.Int64), "drop_reason"
    ).with_columns((pl.col("node") // (1 << ROW_BITS)).alias("shard"))
    bridged = index.bridges(index.bridge_rows(roles)) if params.get("index") else None
    return {
        "assignments": lambda number: assignments.filter(pl.col("shard") == number).drop("shard").sort("node"),
        "clusters": roles.group_by("cluster_id").agg(pl.len().alias("size")).sort("cluster_id"),
        "removed": Counter(r for r in assignments["drop_reason"].to_list() if r),
        "edges": edges.height,
        "clustered_docs": components.height,
        **({"bridges": index.bridge_stats(bridged.height, [bridged])} if bridged is not None else {}),
    }


def choose_path(params: dict) -> tuple[str, Bound | None]:
    """``memory`` or ``partitioned`` (with its cut), from the step's ``cluster`` settings and the
    edge files' row counts (their footers only)."""
    settings = params.get("cluster") or {}
    mode, memory_mb = settings.get("mode", "auto"), settings.get("memory_mb", 2048)
    if mode == "memory":
        return "memory", None
    edge_rows = sum(parquet_rows(url) for url in params["edges"])
    if mode == "auto" and edge_rows * EXACT_BYTES_PER_EDGE <= memory_mb * 2**20:
        return "memory", None
    return "partitioned", bound_for(memory_mb, settings.get("partitions", "auto"), edge_rows)


def scratch_of(output_url: str) -> str:
    """The partitioned path's scratch folder: inside the step's own folder (gc removes it with the
    step), never among its data, rejects or artifacts."""
    return storage.join(step_folder_of(output_url.rsplit("/", 1)[0]), "scratch")


def cluster_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    path, bound = choose_path(params)
    # each attempt spills into a folder of its own: a retry never reads what another attempt writes
    scratch = storage.join(scratch_of(output_url), uuid.uuid4().hex)
    try:
        with _PeakMemory() as memory:
            work = _in_memory(params) if bound is None else bounded_cluster(params, scratch, bound)
            committed = [
                commit_artifact(output_url, assignments_name(number), table_to_parquet_bytes(work["assignments"](number).to_arrow()))
                for number in range(params["upstream_shards"])
            ]
    finally:
        storage.remove(scratch, recursive=True)
    # and a crashed attempt's leftovers go with the first attempt that succeeds (one still running
    # then fails on its missing files; what it committed before came from its own complete spills)
    storage.remove(scratch_of(output_url), recursive=True)
    clusters = work["clusters"]
    histogram: Counter[str] = Counter()
    for size in clusters["size"].to_list():
        histogram[next(label for low, label in reversed(SIZE_BINS) if size >= low)] += 1
    extra = {"cluster_partitions": bound.partitions, "cluster_passes": work["passes"]} if bound else {}
    return commit_shard(  # the clusters table last: it marks the step's one task committed
        shard["shard"],
        output_url,
        clusters.to_arrow(),
        docs_in=work["clustered_docs"],
        artifacts=committed,
        edges=work["edges"],
        clusters=clusters.height,
        clustered_docs=work["clustered_docs"],
        cluster_sizes=dict(sorted(histogram.items())),
        to_remove=dict(sorted(work["removed"].items())),
        cluster_path=path,
        **extra,
        **work.get("bridges", {}),
        cluster_peak_rss_mb=round(memory.peak / 2**20, 1),
        cluster_extra_rss_mb=round((memory.peak - memory.baseline) / 2**20, 1),
        worker_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        seconds=round(time.perf_counter() - started, 3),
    )


def read_assignments(url: str) -> pl.DataFrame:
    import io

    return pl.read_parquet(io.BytesIO(storage.read_bytes(url)))
