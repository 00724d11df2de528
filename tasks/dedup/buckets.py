"""dedup's second step, ``buckets``: candidate pairs for one key (an LSH band, the exact-text
key or the URL key), each an independent task over every shard's signatures.

Documents sharing a key form a group; each group becomes a star of edges from its smallest
node to every other member (k - 1 edges for k members, the fewest that connect them). Only the key column and ``node`` are read from each signature file.
"""

from __future__ import annotations

import io
import time

import polars as pl

from fineflow import storage
from fineflow.documents import commit_shard
from fineflow.tasks.dedup import index

STEP_VERSION = "1"
LIBRARIES = ("polars",)


PREVIOUS = "previous:"  # marks a previous run's signature file (incremental mode)


def read_columns(urls: list[str], columns: list[str]) -> pl.DataFrame:
    """Columns of signature files; a previous run's nodes become negative (-node - 1), and an index
    docs file's (``index.MARK``) too, so they never collide with this run's and are recognizable as old."""
    frames = []
    for url in urls:
        previous = url.startswith(PREVIOUS)
        plain, ordinal = index.unmark(url.removeprefix(PREVIOUS))
        frame = pl.read_parquet(io.BytesIO(storage.read_bytes(plain)), columns=columns)
        if previous and "node" in columns:
            frame = frame.with_columns(-pl.col("node") - 1)
        if ordinal is not None and "node" in columns:
            frame = frame.with_columns(index.old_node(ordinal, pl.col("node")))
        frames.append(frame)
    return pl.concat(frames) if frames else pl.DataFrame(schema={c: pl.Int64 for c in columns})


def group_edges(keys: pl.DataFrame, key: str) -> pl.DataFrame:
    """Star edges ``(a, b)`` with ``a`` the smallest node of each group of equal non-null keys."""
    grouped = (
        keys.drop_nulls(key)
        .with_columns(pl.col("node").min().over(key).alias("a"), pl.len().over(key).alias("size"))
        .filter((pl.col("size") > 1) & (pl.col("node") != pl.col("a")))
    )
    return grouped.select(pl.col("a").cast(pl.Int64), pl.col("node").cast(pl.Int64).alias("b")).sort("a", "b")


def buckets_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    key = shard["key"]
    keys = read_columns(params["signatures"], ["node", key])
    extra = {}
    if params.get("index"):  # the indexed documents sharing a value with a new one (the only ones that can pair)
        old, read = index.read_key(params["index"]["folder"], params["index"]["runs"], key, keys[key])
        keys = pl.concat([old, keys.cast({key: pl.UInt64})])
        extra = {"index_rows_read": read, "index_rows_matched": old.height}
    edges = group_edges(keys, key)
    return commit_shard(
        shard["shard"], output_url, edges.to_arrow(), docs_in=keys.height, pairs={key: edges.height},
        seconds=round(time.perf_counter() - started, 3), **extra,
    )
