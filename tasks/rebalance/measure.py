"""rebalance's ``measure`` step (map): what the solver needs of every document, nothing more.

Reads only the columns it needs (id, the cell columns, the token count, and the cluster size
and quality level where weights use them; the URL for ``sources``), never the texts, and writes
one small row per input row: its cell values (as strings), tokens, language, cluster size,
level, and the problem that keeps it out of the mix (no token count), if any.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_input_columns
from fineflow.tasks.common.cells import NULL
from fineflow.tasks.rebalance.config import SOURCE_COLUMN

STEP_VERSION = "1"
LIBRARIES = ("numpy", "pyarrow")

OTHER_SOURCE = "other"


def cell_key(index: int) -> str:
    return f"cell_{index}"


def assign_sources(urls: list[str | None], sources: dict[str, str]) -> list[str]:
    """Each URL's source name: the first pattern that matches, else ``other``."""
    patterns = [(name, re.compile(pattern)) for name, pattern in sources.items()]
    found = []
    for url in urls:
        found.append(next((name for name, pattern in patterns if url and pattern.search(url)), OTHER_SOURCE))
    return found


def needed_columns(params: dict) -> list[str]:
    columns = ["id", params["count_column"], *[c for c in params["cells"] if c != SOURCE_COLUMN]]
    if params["sources"]:
        columns.append("url")
    if params["cluster_column"]:
        columns += ["language", params["cluster_column"]]
    if params["quality_column"]:
        columns.append(params["quality_column"])
    return list(dict.fromkeys(columns))


def _as_strings(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Cell values as the token files name them: ``str(value)``, ``none`` for nulls."""
    return pa.array([NULL if value is None else str(value) for value in column.to_pylist()], pa.string())


def measure_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    table = read_input_columns(shard, needed_columns(params))
    count = params["count_column"]
    missing = [c for c in needed_columns(params) if c not in table.column_names]
    if count in missing:
        raise ValueError(f"the documents have no {count} column: put a tokenize stage with that tokenizer before rebalance")
    if missing:
        raise ValueError(f"the documents have no {', '.join(missing)} column (columns: {', '.join(table.column_names)})")
    rows = table.num_rows
    tokens = table[count]
    problem = pc.if_else(pc.is_null(tokens), "no_token_count",
                         pc.if_else(pc.less(pc.fill_null(tokens, 0), 0), "negative_token_count", pa.scalar(None, pa.string())))
    columns: dict[str, pa.Array] = {
        "shard": pa.array(np.full(rows, shard["shard"], dtype=np.int32)),
        "row": pa.array(np.arange(rows, dtype=np.int64)),
        "id": table["id"],
        "tokens": pc.fill_null(tokens, 0).cast(pa.int64()),
    }
    for index, column in enumerate(params["cells"]):
        if column == SOURCE_COLUMN:
            columns[cell_key(index)] = pa.array(assign_sources(table["url"].to_pylist(), params["sources"]), pa.string())
        else:
            columns[cell_key(index)] = _as_strings(table[column])
    if params["cluster_column"]:
        columns["language"] = table["language"].cast(pa.string())
        columns["cluster_size"] = table[params["cluster_column"]].cast(pa.int64())
    if params["quality_column"]:
        columns["level"] = _as_strings(table[params["quality_column"]])
    columns["problem"] = problem
    out = pa.table(columns)
    problems = {item["values"]: item["counts"] for item in pc.value_counts(out["problem"].drop_null()).to_pylist()}
    return commit_shard(shard["shard"], output_url, out, docs_in=rows, tokens=int(pc.sum(out["tokens"]).as_py() or 0),
                        problems=problems, seconds=round(time.perf_counter() - started, 3))
