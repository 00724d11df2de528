"""quality's ``score`` step (map): every scorer's score for every document of one shard.

Writes a row-aligned scores shard (id, language, the weights calibration may use, and
``quality_<name>`` plus ``quality_<name>_int`` for 0-5 regressors); the documents themselves are
written once, by ``decide``. Document weights: UTF-8 bytes, characters, and tokens from the
input's first ``n_tokens_*`` column when a tokenize stage ran upstream (else bytes stand in,
as Nemotron-CC weighted by bytes). A document whose text is not valid UTF-8 gets null scores (``decide``
rejects it as ``quality:undecodable``; ``calibrate`` leaves it out).
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_input, undecodable_rows
from fineflow.tasks.quality import scorers

STEP_VERSION = "2"
# Characters of text turned into Python strings and handed to the scorers at once: scoring whole
# texts (fastText) holds a batch, a few copies of it, and at most one longer document at a time,
# never the whole shard a second time.
BATCH_CHARS = 4_000_000
LIBRARIES = ("fasttext-numpy2", "numpy", "tokenizers", "safetensors", "pyarrow")


def score_column(name: str) -> str:
    return f"quality_{name}"


def int_column(name: str) -> str:
    return f"quality_{name}_int"


def token_column(columns: list[str]) -> str | None:
    return next((c for c in columns if c.startswith("n_tokens_")), None)


def batches(lengths: np.ndarray, limit: int = BATCH_CHARS) -> list[tuple[int, int]]:
    """Row ranges [start, stop) holding at most ``limit`` characters each (a longer document alone)."""
    found, start, held = [], 0, 0
    for row, length in enumerate(lengths.tolist()):
        if row > start and held + length > limit:
            found.append((start, row))
            start, held = row, 0
        held += length
    if start < len(lengths):
        found.append((start, len(lengths)))
    return found


def score_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    docs, undecodable = undecodable_rows(read_input(shard))
    unscored = np.array([row in undecodable for row in range(docs.num_rows)], dtype=bool) if undecodable else None
    text = docs["text"].cast(pa.string())
    read = pc.utf8_slice_codeunits(text, 0, params["max_chars"])
    full = pc.utf8_length(text).fill_null(0).to_numpy(zero_copy_only=False) if docs.num_rows else np.zeros(0, np.int64)
    n_bytes = pc.binary_length(text).fill_null(0)
    tokens = token_column(docs.column_names)
    columns = {
        "id": docs["id"],
        "language": docs["language"] if "language" in docs.column_names else pa.nulls(docs.num_rows, pa.string()),
        "w_bytes": pc.cast(n_bytes, pa.int64()),
        "w_chars": pc.cast(pc.utf8_length(text).fill_null(0), pa.int64()),
        "w_tokens": pc.cast(docs[tokens].fill_null(0), pa.int64()) if tokens else pc.cast(n_bytes, pa.int64()),
    }
    names = sorted(params["scorers"])
    values: dict[str, list[np.ndarray]] = {name: [] for name in names}
    seconds = dict.fromkeys(names, 0.0)
    lengths = pc.utf8_length(read).fill_null(0).to_numpy(zero_copy_only=False) if docs.num_rows else np.zeros(0, np.int64)
    for start, stop in batches(lengths):
        texts = [t or "" for t in read.slice(start, stop - start).to_pylist()]
        for name in names:
            spec = params["scorers"][name]
            began = time.perf_counter()
            cut = spec["max_chars"]
            values[name].append(scorers.load(spec).score([t[:cut] for t in texts] if cut < params["max_chars"] else texts))
            seconds[name] += time.perf_counter() - began
    for name in names:
        scored = np.concatenate(values[name]) if values[name] else np.zeros(0)
        columns[score_column(name)] = pa.array(scored, pa.float32(), mask=unscored)
        if params["scorers"][name].get("regression"):  # a 0-5 regressor only: a classifier's probability has no int score
            columns[int_column(name)] = pa.array(scorers.int_score(scored), pa.int8(), mask=unscored)
    table = pa.table(columns)
    return commit_shard(shard["shard"], output_url, table, docs_in=docs.num_rows, undecodable=len(undecodable),
                        scorer_seconds={name: round(value, 3) for name, value in seconds.items()},
                        docs_cut={name: int((full > params["scorers"][name]["max_chars"]).sum()) for name in names},
                        weight_tokens_from={tokens or "bytes": docs.num_rows},
                        seconds=round(time.perf_counter() - started, 3))
