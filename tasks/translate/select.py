"""translate's ``select`` step (map): the documents that may be translated, with a seeded key.

A document is a candidate when its language is a source language, every ``where`` rule passes
and its text is at most ``max_chars``. Its key (xxh64 of seed and id) orders the candidates for
the caps in ``choose``: a larger cap holds the smaller one's documents, so raising it only adds.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_input_columns
from fineflow.tasks.text.sampling import seeded_keys

STEP_VERSION = "1"
LIBRARIES = ("pyarrow", "xxhash")


def _passes(table: pa.Table, rules: list[dict]) -> tuple[np.ndarray, dict[str, int]]:
    keep = np.ones(table.num_rows, dtype=bool)
    failed: dict[str, int] = {}
    for rule in rules:
        column = rule["column"]
        if column not in table.column_names:
            raise ValueError(f"select.where: the documents have no {column} column (columns: {', '.join(table.column_names)})")
        values = table[column]
        ok = pc.is_valid(values)
        if rule.get("min") is not None:
            ok = pc.and_(ok, pc.greater_equal(values, rule["min"]))
        if rule.get("max") is not None:
            ok = pc.and_(ok, pc.less_equal(values, rule["max"]))
        if rule.get("values") is not None:
            ok = pc.and_(ok, pc.is_in(pc.cast(values, pa.string()), pa.array([str(v) for v in rule["values"]])))
        passed = pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
        failed[f"where:{column}"] = int((keep & ~passed).sum())
        keep &= passed
    return keep, failed


def candidates(table: pa.Table, params: dict, shard: int) -> tuple[pa.Table, dict[str, int]]:
    """The shard's candidates (shard, row, id, language, key, chars, tokens) and why others are not."""
    token_column = params["token_column"]
    if token_column and token_column not in table.column_names:
        raise ValueError(f"select.tokens: the documents have no {token_column} column: count with a tokenize stage first")
    languages = pc.fill_null(table["language"], "und")
    in_language = pc.is_in(languages, pa.array(params["languages"])).to_numpy(zero_copy_only=False)
    chars = pc.fill_null(pc.utf8_length(table["text"]), 0).to_numpy(zero_copy_only=False)
    passed, failed = _passes(table, params["where"])
    short = chars <= params["max_chars"]
    keep = in_language & passed & short & (chars > 0)
    rows = np.flatnonzero(keep)
    ids = table["id"].take(pa.array(rows, pa.int64()))
    tokens = table[token_column].to_numpy(zero_copy_only=False)[rows] if token_column else (chars[rows] + 3) // 4
    found = pa.table({
        "shard": pa.array(np.full(len(rows), shard, dtype=np.int32)),
        "row": pa.array(rows, pa.int64()), "id": ids, "language": languages.take(pa.array(rows, pa.int64())),
        "key": pa.array(seeded_keys(ids.to_pylist(), params["seed"]), pa.uint64()),
        "chars": pa.array(chars[rows], pa.int64()), "tokens": pa.array(tokens, pa.int64()),
    })
    skipped = {"other_language": int((~in_language).sum()), **failed,
               "too_long": int((in_language & passed & ~short).sum()), "no_text": int((in_language & passed & (chars == 0)).sum())}
    return found, {k: v for k, v in skipped.items() if v}


def needed_columns(params: dict) -> list[str]:
    token_column = params["token_column"]
    columns = ["id", "language", "text", *[r["column"] for r in params["where"]], *([token_column] if token_column else [])]
    return list(dict.fromkeys(columns))


def select_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    table = read_input_columns(shard, needed_columns(params))
    found, skipped = candidates(table, params, shard["shard"])
    return commit_shard(shard["shard"], output_url, found, docs_in=table.num_rows, skipped=skipped)
