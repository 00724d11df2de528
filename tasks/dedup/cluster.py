"""dedup's third step, ``cluster``: connected components over every candidate pair, and which
member of each cluster is kept.

Components come from scipy's sparse connected components over the edge list: only documents
that have at least one candidate pair are ever in memory (a few dozen bytes each), never the
corpus. The kept document is chosen by a documented order, never by traversal order:
a document of a previous run (incremental mode) first, then the earliest ``crawl_date``, then
the longest text, then the smallest ``id``. Every other member is removed with the reason of
its relation to the kept one: ``exact_duplicate`` (same normalized text), ``url_duplicate``
(same normalized URL) or ``near_duplicate``.

Output: ``assign-NNNNN.parquet`` per upstream shard (its documents that are in a cluster) and
``part-00000.parquet`` (one row per cluster: id, size).
"""

from __future__ import annotations

import resource
import threading
import time
from collections import Counter

import numpy as np
import polars as pl
import psutil

from fineflow import storage
from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard, table_to_parquet_bytes
from fineflow.tasks.dedup.buckets import read_columns
from fineflow.tasks.dedup.signatures import ROW_BITS

STEP_VERSION = "2"
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


def choose_kept(members: pl.DataFrame, exact: bool = True, url: bool = True) -> pl.DataFrame:
    """Per component: size, the kept member, and each member's role (see the module docstring).

    ``exact``/``url``: whether those passes ran; a pass that is off names no removal, even when
    the keys happen to match (an exact copy found by MinHash alone is a ``near_duplicate``).
    """
    ordered = members.sort(
        [pl.col("node") >= 0, "crawl_date", "text_chars", "id"],
        descending=[False, False, True, False],
        nulls_last=True,
    )
    keeper = ordered.group_by("component", maintain_order=True).first().select(
        "component",
        pl.col("id").alias("cluster_id"),
        pl.col("node").alias("kept_node"),
        pl.col("exact_key").alias("kept_exact"),
        pl.col("url_key").alias("kept_url"),
    )
    sizes = members.group_by("component").agg(pl.len().alias("cluster_size"))
    joined = members.join(keeper, on="component").join(sizes, on="component")
    return joined.with_columns(
        pl.when(pl.col("node") == pl.col("kept_node"))
        .then(pl.lit(None, dtype=pl.String))
        .when(pl.lit(exact) & (pl.col("exact_key") == pl.col("kept_exact")))
        .then(pl.lit("exact_duplicate"))
        .when(pl.lit(url) & (pl.col("url_key") == pl.col("kept_url")))
        .then(pl.lit("url_duplicate"))
        .otherwise(pl.lit("near_duplicate"))
        .alias("drop_reason")
    )


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


def cluster_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    with _PeakMemory() as memory:
        edges = read_columns(params["edges"], ["a", "b"]).unique()
        components = connected_components(edges)
        # attributes of clustered documents only, one signature file at a time
        wanted = components.select("node")
        attributes = []
        for url in params["signatures"]:
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
    committed = []
    for number in range(params["upstream_shards"]):
        part = assignments.filter(pl.col("shard") == number).drop("shard").sort("node")
        committed.append(commit_artifact(output_url, assignments_name(number), table_to_parquet_bytes(part.to_arrow())))
    clusters = roles.group_by("cluster_id").agg(pl.len().alias("size")).sort("cluster_id")

    removed = Counter(r for r in assignments["drop_reason"].to_list() if r)
    histogram: Counter[str] = Counter()
    for size in clusters["size"].to_list():
        histogram[next(label for low, label in reversed(SIZE_BINS) if size >= low)] += 1
    return commit_shard(  # the clusters table last: it marks the step's one task committed
        shard["shard"],
        output_url,
        clusters.to_arrow(),
        docs_in=components.height,
        artifacts=committed,
        edges=edges.height,
        clusters=clusters.height,
        clustered_docs=components.height,
        cluster_sizes=dict(sorted(histogram.items())),
        to_remove=dict(sorted(removed.items())),
        cluster_peak_rss_mb=round(memory.peak / 2**20, 1),
        cluster_extra_rss_mb=round((memory.peak - memory.baseline) / 2**20, 1),
        worker_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        seconds=round(time.perf_counter() - started, 3),
    )


def read_assignments(url: str) -> pl.DataFrame:
    import io

    return pl.read_parquet(io.BytesIO(storage.read_bytes(url)))
