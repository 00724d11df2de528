"""dedup's last step with ``index:``, ``append``: the keys of the documents this run kept, added to
the persistent index (``fineflow.tasks.dedup.index``) for later runs to deduplicate against.

One task. Per key (each band, ``exact_key``, ``url_key``) it reads that column of every signature
file, drops the documents the ``cluster`` step removed, and writes one immutable Parquet file per
value range; then the kept documents' attributes (what the keep order ranks); then the run's
marker, last: until it exists nothing of the run is read, so a crash leaves no partial run
visible, and a retry rewrites the same names with the same bytes. A run whose marker exists (a
re-run of the same snapshot: the same ``signatures`` fingerprint) appends nothing.
"""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timezone

import polars as pl
import pyarrow as pa

from fineflow import storage
from fineflow.documents import commit_shard, table_to_parquet_bytes
from fineflow.tasks.dedup import index
from fineflow.tasks.dedup.cluster import read_assignments
from fineflow.tasks.dedup.signatures import ROW_BITS

STEP_VERSION = "1"
LIBRARIES = ("polars",)


def _write(url: str, frame: pl.DataFrame) -> None:
    storage.write_bytes(url, table_to_parquet_bytes(frame.to_arrow()))


def _removed(assignment_urls: list[str]) -> pl.DataFrame:
    """Nodes of the documents the clustering removed (what the index must not hold)."""
    frames = [read_assignments(url).filter(pl.col("drop_reason").is_not_null()).select("node") for url in assignment_urls]
    return pl.concat([pl.DataFrame(schema={"node": pl.Int64}), *frames])


def _kept(url: str, columns: list[str], removed: pl.DataFrame) -> pl.DataFrame:
    frame = pl.read_parquet(io.BytesIO(storage.read_bytes(url)), columns=columns)
    return frame.join(removed, on="node", how="anti")


def append_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    folder, run = params["folder"], params["run"]
    marker_url = storage.join(folder, "runs", f"{run}.json")
    counts: dict[str, int] = {}
    if storage.exists(marker_url):  # this run's documents are in the index already
        marker = json.loads(storage.read_bytes(marker_url))
        return _commit(shard, output_url, counts, started, index_run=run, index_docs_appended=0, index_already=True, index_docs=marker["docs"])
    if not storage.exists(storage.join(folder, "params.json")):
        storage.write_bytes(storage.join(folder, "params.json"), json.dumps(params["key_params"], indent=1, sort_keys=True).encode())
    # runs appended since this run was planned: it was not deduplicated against them (runs must
    # append one after the other), so it says how many
    unseen = sorted(set(index.committed_runs(folder)) - set(params["base"]))
    removed = _removed(params["assignments"])
    prefixes: dict[str, list[int]] = {}
    for key in params["keys"]:  # one key at a time: memory of one buckets task
        rows = pl.concat([_kept(url, ["node", key], removed) for url in params["signatures"]]).drop_nulls(key)
        rows = rows.select(pl.col(key).alias("value"), pl.col("node")).sort("value", "node")
        parts = rows.with_columns(index.prefix_of(pl.col("value")).alias("_prefix")).partition_by("_prefix", as_dict=True, include_key=False)
        for (prefix,), part in sorted(parts.items()):
            _write(index.key_file(folder, key, prefix, run), part)
        prefixes[key] = sorted(prefix for (prefix,) in parts)
        counts[key] = rows.height
    docs = pl.concat([_kept(url, index.DOC_COLUMNS, removed) for url in params["signatures"]])
    if docs.height and docs["node"].max() >> ROW_BITS >= index.MAX_SHARDS:
        raise ValueError(f"index: a run of more than {index.MAX_SHARDS} upstream shards cannot be indexed")
    _write(index.docs_file(folder, run), docs)
    marker = {
        "run": run,
        "base": params["base"],  # the runs it was deduplicated against
        "docs": docs.height,
        "keys": prefixes,
        "committed": datetime.now(timezone.utc).isoformat(),
        **({"unseen": unseen} if unseen else {}),
    }
    storage.write_bytes(marker_url, json.dumps(marker, indent=1).encode())  # last: the run is now visible
    return _commit(
        shard, output_url, counts, started, index_run=run, index_docs_appended=docs.height, index_already=False,
        index_docs=docs.height, index_runs_not_deduplicated_against=len(unseen),
    )


def _commit(shard: dict, output_url: str, counts: dict[str, int], started: float, **stats) -> dict:
    table = pa.table({"key": list(counts), "rows": pa.array(list(counts.values()), pa.int64())})
    return commit_shard(shard["shard"], output_url, table, docs_in=stats["index_docs"], seconds=round(time.perf_counter() - started, 3), **stats)
