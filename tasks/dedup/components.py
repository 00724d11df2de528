"""Connected components of an edge list on storage, in memory bounded by a setting.

The exact path (``cluster.connected_components``) holds every edge and every clustered node at
once. This one keeps the edges in a ``Spill`` (hash partitions of Parquet runs) and alternates
the two passes of Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014):

- **large-star**: every node ``u`` links each larger neighbour to ``m(u)``, the smallest of ``u``
  and its neighbours;
- **small-star**: every node ``u`` links each smaller neighbour, and itself, to ``m(u)``.

Both keep each component connected and never add edges; alternating them reaches a forest of
stars, each centred on its component's smallest node, in O(log² n) passes (a handful in practice;
a chain of 20,000 nodes in random order took 23). A large-star pass also checks whether its input
already is such a forest (every edge ``(a, b)``, ``a < b``, has ``m(a) = a`` and ``m(b) = a``):
then ``(u, m(u))`` are the labels, the component being its smallest node as on the exact path.

Each pass reads one partition at a time: the smallest neighbour per node is a min over the
partition's runs (its state: one row per node of the partition), then the runs are read again
and joined with it. So a task holds one partition's nodes plus one run, whatever the degree of a
node (a star of a million copies is a million rows streamed past one row of state).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from fineflow import storage
from fineflow.tasks.dedup.spill import Spill

# What a row costs while a pass works on it (concatenated, hashed, joined, partitioned, written:
# polars and Parquet buffers included), measured on a 1M-edge graph (docs/dedup.md, Bounded memory)
EDGE_ROW_BYTES = 256  # (node, node), 16 bytes of data
WIDE_ROW_BYTES = 1024  # a clustered document's attributes (node, id, date, length, keys, component)
STATE_ROW_BYTES = 256  # one node of a partition's state (node, smallest neighbour)
MAX_PASSES = 1000  # O(log² n) passes: far above what 2^63 nodes need; reaching it is a bug


@dataclass(frozen=True)
class Bound:
    """How a bounded run is cut: ``partitions`` of the nodes; ``chunk_rows`` edge rows, or
    ``wide_rows`` document rows, read or buffered at once."""

    partitions: int
    chunk_rows: int
    wide_rows: int = 0

    def __post_init__(self) -> None:
        if not self.wide_rows:
            object.__setattr__(self, "wide_rows", self.chunk_rows)


def bound_for(memory_mb: int, partitions: int | str, edge_rows: int) -> Bound:
    """The cut that keeps a task within ``memory_mb``: a quarter for the chunk being read, a
    quarter for the chunk being written, half for one partition's state (its nodes); ``auto``
    partitions are as many as that needs for ``edge_rows`` edges (at most two nodes each)."""
    budget = memory_mb * 2**20
    if partitions == "auto":
        partitions = max(1, math.ceil(2 * edge_rows / max(1, budget // 2 // STATE_ROW_BYTES)))
    return Bound(
        partitions=int(partitions),
        chunk_rows=max(1024, budget // 4 // EDGE_ROW_BYTES),
        wide_rows=max(256, budget // 4 // WIDE_ROW_BYTES),
    )


def _both_ways(frame: pl.DataFrame, a: str, b: str) -> pl.DataFrame:
    return pl.concat([frame.select(pl.col(a).alias("u"), pl.col(b).alias("v")), frame.select(pl.col(b).alias("u"), pl.col(a).alias("v"))])


def _smallest(spill: Spill, partition: int) -> pl.DataFrame:
    """``(u, m)`` for every node ``u`` of a partition: the smallest of ``u`` and its neighbours ``v``."""
    state = pl.DataFrame(schema={"u": pl.Int64, "v": pl.Int64})
    for run in spill.read(partition):
        state = pl.concat([state, run.group_by("u").agg(pl.col("v").min())]).group_by("u").agg(pl.col("v").min())
    return state.select("u", pl.min_horizontal("u", "v").alias("m"))


def _large_star(source: Spill, folder: str, bound: Bound, labels: Spill) -> tuple[Spill, int]:
    """One large-star pass over ``source`` (both directions of every edge, keyed by ``u``): the
    next small-star's input (``(u, v)``, ``v < u``, keyed by ``u``) and how many edges show the
    input is not yet a forest of stars. ``labels`` receives ``(node, component)`` per node."""
    target = Spill(storage.join(folder, "small"), bound.partitions, ["u"], bound.chunk_rows, distinct=True)
    violations = 0
    for partition in range(bound.partitions):
        smallest = _smallest(source, partition)
        labels.add(smallest.select(pl.col("u").alias("node"), pl.col("m").alias("component")))
        labels.flush()  # one file per partition, in the partition of its nodes
        for run in source.read(partition):
            joined = run.join(smallest, on="u")
            u, v, m = pl.col("u"), pl.col("v"), pl.col("m")
            violations += joined.filter(((u < v) & (m != u)) | ((v < u) & (m != v))).height
            target.add(joined.filter(v > u).select(v.alias("u"), m.alias("v")))
    target.flush()
    return target, violations


def _small_star(source: Spill, folder: str, bound: Bound) -> Spill:
    """One small-star pass over ``source`` (``(u, v)``, ``v < u``, keyed by ``u``): the next
    large-star's input (both directions, keyed by ``u``)."""
    target = Spill(storage.join(folder, "large"), bound.partitions, ["u"], bound.chunk_rows, distinct=True)
    for partition in range(bound.partitions):
        smallest = _smallest(source, partition)
        target.add(_both_ways(smallest.filter(pl.col("m") < pl.col("u")), "m", "u"))
        for run in source.read(partition):
            linked = run.join(smallest, on="u").filter(pl.col("v") != pl.col("m"))
            target.add(_both_ways(linked, "m", "v"))
    target.flush()
    return target


def components_on_storage(edge_batches: Iterable[pl.DataFrame], folder: str, bound: Bound) -> tuple[Spill, dict]:
    """``(node, component)`` of every node of the edges (frames of columns a, b), the component
    being its smallest node, as a ``Spill`` with one file per partition (partitioned by node); and
    counts: distinct ``edges``, ``passes``."""
    raw = Spill(storage.join(folder, "edges"), bound.partitions, ["a", "b"], bound.chunk_rows, distinct=True)
    for batch in edge_batches:
        raw.add(batch.select(pl.col("a").cast(pl.Int64), pl.col("b").cast(pl.Int64)))
    raw.flush()
    # repeated pairs (one per band that found them) are dropped per pair partition: the edge count
    # equals the exact path's, and every pass reads fewer rows
    large = Spill(storage.join(folder, "pass-0000", "large"), bound.partitions, ["u"], bound.chunk_rows)
    edges = 0
    for partition in range(bound.partitions):
        distinct = pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64})
        for run in raw.read(partition):
            distinct = pl.concat([distinct, run]).unique()
        edges += distinct.height
        large.add(_both_ways(distinct, "a", "b"))
    large.flush()
    raw.remove()
    passes = 0
    while True:
        labels = Spill(storage.join(folder, f"labels-{passes:04d}"), bound.partitions, ["node"], bound.chunk_rows)
        small, violations = _large_star(large, storage.join(folder, f"pass-{passes + 1:04d}"), bound, labels)
        large.remove()
        passes += 1
        if violations == 0:
            small.remove()
            return labels, {"edges": edges, "passes": passes}
        labels.remove()
        if passes >= MAX_PASSES:
            raise RuntimeError(f"connected components did not converge in {MAX_PASSES} passes")
        large = _small_star(small, storage.join(folder, f"pass-{passes + 1:04d}"), bound)
        small.remove()
        passes += 1
