"""rephrase's ``select`` step (map): per task, the documents it may rewrite, with a seeded key.

A document is a candidate of a task when its language is a source language (any, by default),
the task's ``where`` conditions hold, its text is valid UTF-8, at most ``max_chars`` long and at
least ``min_document_tokens`` long (Nemotron-CC leaves out documents under 30 tokens). Its key
(xxh64 of seed and id, the same for every task) orders the candidates for ``choose``'s caps.
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa

from fineflow.documents import commit_shard, read_input_columns, undecodable_rows
from fineflow.tasks.common.condition import Condition
from fineflow.tasks.text.sampling import seeded_keys
from fineflow.tasks.text.window import token_counter

STEP_VERSION = "1"
LIBRARIES = ("pyarrow", "xxhash", "tokenizers")

CANDIDATES = pa.schema([("shard", pa.int32()), ("row", pa.int64()), ("id", pa.string()), ("language", pa.string()),
                        ("task", pa.string()), ("key", pa.uint64()), ("tokens", pa.int64())])


def needed_columns(params: dict) -> list[str]:
    wanted = ["id", "language", "text"] + [c["column"] for task in params["tasks"] for c in task["where"]]
    return list(dict.fromkeys(wanted))


def candidates(table: pa.Table, undecodable: dict[int, str], params: dict, shard: int) -> tuple[pa.Table, dict]:
    """The shard's candidates per task, and why the other documents are not, per task."""
    for column in needed_columns(params):
        if column not in table.column_names:
            raise ValueError(f"rephrase: the documents have no {column} column (a task's where names it; "
                             f"columns: {', '.join(table.column_names)})")
    count = token_counter(params["tokenizer"])
    languages = [language or "und" for language in table["language"].to_pylist()]
    texts = table["text"].to_pylist()
    ids = table["id"].to_pylist()
    keys = seeded_keys(ids, params["seed"])
    allowed = set(params["languages"]) if params["languages"] else None
    eligible: dict[int, int] = {}  # row -> tokens, for rows any task may take
    skipped: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    reasons: dict[int, str] = {}
    for row, text in enumerate(texts):
        if allowed is not None and languages[row] not in allowed:
            reasons[row] = "other_language"
        elif row in undecodable:
            reasons[row] = "undecodable"
        elif not text or not text.strip():
            reasons[row] = "no_text"
        elif len(text) > params["max_chars"]:
            reasons[row] = "too_long"
        else:
            tokens = count(text)
            if tokens < params["min_document_tokens"]:
                reasons[row] = "too_short"
            else:
                eligible[row] = tokens
    found: list[dict] = []
    for task in params["tasks"]:
        conditions = [Condition.model_validate(c) for c in task["where"]]
        values = {c.column: table[c.column].to_pylist() for c in conditions}
        for row in range(table.num_rows):
            failed = next((c.column for c in conditions if not c.met(values[c.column][row])), None)
            if failed is not None:
                skipped[task["name"]][f"where:{failed}"] += 1
            elif row in reasons:
                skipped[task["name"]][reasons[row]] += 1
            else:
                found.append({"shard": shard, "row": row, "id": ids[row], "language": languages[row], "task": task["name"],
                              "key": int(keys[row]), "tokens": eligible[row]})
    return pa.Table.from_pylist(found, schema=CANDIDATES), {task: dict(v) for task, v in skipped.items()}


def select_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    table, undecodable = undecodable_rows(read_input_columns(shard, needed_columns(params)))
    found, skipped = candidates(table, undecodable, params, shard["shard"])
    return commit_shard(shard["shard"], output_url, found, docs_in=table.num_rows, skipped=skipped)
