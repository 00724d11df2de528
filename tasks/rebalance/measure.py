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
import pyarrow.parquet as pq

from fineflow import storage
from fineflow.documents import commit_shard, read_input_columns
from fineflow.tasks.common.cells import NULL
from fineflow.tasks.rebalance.config import SOURCE_COLUMN

STEP_VERSION = "2"
LIBRARIES = ("numpy", "pyarrow")

OTHER_SOURCE = "other"
# More tokens than any document can hold (4 TB of text): a corrupt count, which would overflow the sums.
MAX_DOCUMENT_TOKENS = 2**40


def cell_key(index: int) -> str:
    return f"cell_{index}"


def assign_sources(urls: list[str | None], sources: dict[str, str]) -> list[str]:
    """Each URL's source name: the first pattern that matches, else ``other``."""
    patterns = [(name, re.compile(pattern)) for name, pattern in sources.items()]
    found = []
    for url in urls:
        found.append(next((name for name, pattern in patterns if url and pattern.search(url)), OTHER_SOURCE))
    return found


def column_options(params: dict) -> list[tuple[str, str]]:
    """(column, the option that names it) for every input column measure reads; ``id`` is every
    document's own."""
    found = [("id", "id"), (params["count_column"], "tokens"),
             *[(column, "cells") for column in params["cells"] if column != SOURCE_COLUMN]]
    if params["sources"]:
        found.append(("url", "sources"))
    if params["cluster_column"]:
        found += [("language", "rehydration"), (params["cluster_column"], "rehydration.column")]
    if params["quality_column"]:
        found.append((params["quality_column"], "quality.column"))
    first: dict[str, str] = {}
    for column, option in found:
        first.setdefault(column, option)
    return list(first.items())


def needed_columns(params: dict) -> list[str]:
    return [column for column, _ in column_options(params)]


def _input_columns(shard: dict) -> list[str]:
    """Every column of the shard's input (in a fan-in: of the inputs' union), for error messages."""
    urls = shard.get("union") or [shard["input"]]
    names: dict[str, None] = {}
    for url in urls:
        with storage.open_input(url) as handle:
            names.update(dict.fromkeys(pq.read_schema(handle).names))
    return list(names)


def _missing_columns_error(shard: dict, params: dict, present: list[str]) -> ValueError:
    missing = [(column, option) for column, option in column_options(params) if column not in present]
    if missing[0][1] == "tokens":
        return ValueError(f"the documents have no {missing[0][0]} column (option tokens): put a tokenize stage with that "
                          f"tokenizer before rebalance (the input has: {', '.join(_input_columns(shard))})")
    named = "; ".join(f"{column} (option {option})" for column, option in missing)
    return ValueError(f"the documents have no column {named}; the input has: {', '.join(_input_columns(shard))}")


def token_problems(tokens: pa.ChunkedArray, ids: pa.ChunkedArray) -> pa.ChunkedArray:
    """Per row, what keeps it out of the mix (a rejects reason after ``rebalance:``), or null."""
    counted = pc.fill_null(tokens, 0)
    none = pa.scalar(None, pa.string())
    return pc.if_else(pc.is_null(ids), "no_id",
                      pc.if_else(pc.is_null(tokens), "no_token_count",
                                 pc.if_else(pc.less(counted, 0), "negative_token_count",
                                            pc.if_else(pc.greater(counted, MAX_DOCUMENT_TOKENS), "implausible_token_count", none))))


def _as_strings(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Cell values as the token files name them: ``str(value)``, ``none`` for nulls."""
    return pa.array([NULL if value is None else str(value) for value in column.to_pylist()], pa.string())


def measure_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    table = read_input_columns(shard, needed_columns(params))
    count = params["count_column"]
    if any(column not in table.column_names for column in needed_columns(params)):
        raise _missing_columns_error(shard, params, table.column_names)
    rows = table.num_rows
    tokens = table[count]
    if pa.types.is_floating(tokens.type):  # a count written as a float: NaN is no count, fractions are cut
        tokens = tokens.cast(pa.float64())
        tokens = pc.if_else(pc.is_finite(tokens), tokens, pa.scalar(None, pa.float64()))
    problem = token_problems(tokens, table["id"])
    columns: dict[str, pa.Array] = {
        "shard": pa.array(np.full(rows, shard["shard"], dtype=np.int32)),
        "row": pa.array(np.arange(rows, dtype=np.int64)),
        "id": table["id"],
        # A problem row counts 0 tokens: it is rejected, and must not overflow a sum.
        "tokens": pc.if_else(pc.is_null(problem), tokens, pa.scalar(0, tokens.type)).cast(pa.int64(), safe=False),
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
