"""decontaminate's last step, ``items``: which benchmark items were found, in how many documents.

One task: the ``scan`` shards' lists of found items (artifacts) added up and joined with the
index's list of items (their first characters). The output table has one row per item found
(benchmark, item number in its benchmark, contaminated documents holding it, text); the stats
count the items found per benchmark, the share of a benchmark that leaked into the corpus.
"""

from __future__ import annotations

import io
import time

import polars as pl

from fineflow import storage
from fineflow.documents import commit_shard

STEP_VERSION = "1"
LIBRARIES = ("polars", "pyarrow")


def items_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    schema = {"benchmark": pl.String, "item": pl.Int64, "documents": pl.Int64}
    found = pl.concat([pl.DataFrame(schema=schema)] + [pl.read_parquet(io.BytesIO(storage.read_bytes(url))) for url in params["found"]])
    listed = pl.read_parquet(io.BytesIO(storage.read_bytes(params["items"])))
    totals = (
        found.group_by("benchmark", "item").agg(pl.col("documents").sum())
        .join(listed, on=["benchmark", "item"], how="left")
        .sort("benchmark", "item")
    )
    per_benchmark = dict(totals.group_by("benchmark").len().sort("benchmark").iter_rows())
    return commit_shard(
        shard["shard"], output_url, totals.to_arrow(), docs_in=0, items_found=per_benchmark,
        seconds=round(time.perf_counter() - started, 3),
    )
