"""The document table: columns every stage reads and writes, and its Parquet encoding.

Documents are Parquet shards (zstd) that polars and pyarrow read directly. Later stages add
columns; rejects keep every input column plus ``drop_reason``.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fineflow import storage

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("text", pa.string()),
        pa.field("language", pa.string()),
        pa.field("language_score", pa.float32()),
        pa.field("source", pa.string()),  # "<input file>@<offset>" or "@<unit offset>+<offset in it>" (tasks/crawl/warc.py)
        pa.field("crawl_date", pa.timestamp("us", tz="UTC")),
        pa.field("warc_record_id", pa.string()),
        pa.field("content_type", pa.string()),
        pa.field("charset", pa.string()),
    ]
)

REJECT_EXTRA_FIELDS = [pa.field("drop_reason", pa.string(), nullable=False)]


def rejects_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema(list(schema) + REJECT_EXTRA_FIELDS)


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    # Row groups of ~64k rows keep readers' memory bounded; statistics help `inspect` filters.
    pq.write_table(table, sink, compression="zstd", row_group_size=65536, write_statistics=True)
    return sink.getvalue()


def write_table(url: str, table: pa.Table) -> dict:
    """Write ``table`` to ``url`` as one atomic object; returns its size and hash for manifests."""
    data = table_to_parquet_bytes(table)
    storage.write_bytes(url, data)
    return {
        "file": url.rstrip("/").rsplit("/", 1)[-1],
        "rows": table.num_rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def read_table(urls: list[str]) -> pa.Table:
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(u))) for u in urls]
    if not tables:
        return DOCUMENT_SCHEMA.empty_table()
    return pa.concat_tables(tables, promote_options="default")


def commit_shard(
    shard: int,
    output_url: str,
    kept: pa.Table,
    rejects_url: str | None = None,
    rejects: pa.Table | None = None,
    docs_in: int | None = None,
    **stats,
) -> dict:
    """Write a shard's rejects (if any), then its output, last: the output's existence marks the
    shard committed. Returns the shard task's result, documents counted from the tables (and, for
    document tables, their characters and languages)."""
    n_rejects = rejects.num_rows if rejects is not None else 0
    rejects_info = write_table(rejects_url, rejects) if n_rejects else None
    output_info = write_table(output_url, kept)
    counts = {"docs_in": kept.num_rows + n_rejects if docs_in is None else docs_in, "docs_out": kept.num_rows, "rejects": n_rejects}
    if "text" in kept.schema.names:  # document tables: characters kept and dropped, for the run report's funnel
        counts["text_chars"] = _characters(kept)
        counts["rejected_chars"] = _characters(rejects) if n_rejects else 0
    if "language" in kept.schema.names:  # documents kept per language ("und": none detected)
        languages = Counter(code or "und" for code in kept.column("language").to_pylist())
        counts["languages"] = dict(sorted(languages.items()))
    return {"shard": shard, "output": output_info, "rejects": rejects_info, "stats": {**counts, **stats}}


def _characters(table: pa.Table) -> int:
    if "text" not in table.schema.names or table.num_rows == 0:
        return 0
    return int(pc.sum(pc.utf8_length(table["text"])).as_py() or 0)
