"""The stats step (one task): the shards' count tables summed into ``token_counts.parquet``.

The artifact has every (language, source_domain, key columns) group with its documents, bytes,
words and tokens per tokenizer: what a mixing decision or a budget reads. The summary keeps only
the ``top_domains`` domains per language by tokens, the rest summed as "other", so it stays
small however many domains a crawl holds.
"""

from __future__ import annotations

import io

import polars as pl
import pyarrow as pa

from fineflow import storage
from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard, table_to_parquet_bytes
from fineflow.tasks.tokenize.count import counts_artifact

STEP_VERSION = "1"
LIBRARIES = ("polars", "pyarrow")

COUNTS = "token_counts.parquet"
OTHER = "(other)"


def stats_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    keys = ["language", "source_domain", *params["key_columns"]]
    parts = [pl.read_parquet(io.BytesIO(storage.read_bytes(storage.join(params["count_artifacts"], counts_artifact(n)))))
             for n in range(params["count_shards"])]
    parts = [part for part in parts if part.height]
    if not parts:
        totals = pl.DataFrame(schema={**dict.fromkeys(keys, pl.String), "documents": pl.Int64})
    else:
        frame = pl.concat(parts, how="diagonal_relaxed")
        values = [c for c in frame.columns if c not in keys]
        totals = frame.group_by(keys).agg([pl.col(c).sum() for c in values]).sort(keys, nulls_last=True)
    artifact = commit_artifact(output_url, COUNTS, table_to_parquet_bytes(totals.to_arrow()))
    ranking = params["ranking"]  # the tokenizer whose tokens rank the domains
    top: dict[str, dict] = {}
    if totals.height:
        by_domain = totals.group_by("language", "source_domain").agg(
            pl.col(c).sum() for c in totals.columns if c not in keys
        ).with_columns(pl.col("language").fill_null("und"), pl.col("source_domain").fill_null("(no url)"))
        for (language,), group in by_domain.group_by("language"):
            group = group.sort(ranking, descending=True)
            head, rest = group.head(params["top_domains"]), group.slice(params["top_domains"])
            entries = {row["source_domain"]: _values(row) for row in head.iter_rows(named=True)}
            if rest.height:
                entries[OTHER] = {c: int(rest[c].sum()) for c in rest.columns if c not in ("language", "source_domain")}
            top[language] = entries
    table = pa.table({"groups": [totals.height]})
    return commit_shard(shard["shard"], output_url, table, docs_in=int(totals["documents"].sum()) if totals.height else 0,
                        artifacts=[artifact], top_domains=top, groups=totals.height)


def _values(row: dict) -> dict[str, int]:
    return {key: int(value) for key, value in row.items() if key not in ("language", "source_domain")}
