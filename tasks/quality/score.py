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

STEP_VERSION = "1"
LIBRARIES = ("fasttext-numpy2", "numpy", "tokenizers", "safetensors", "pyarrow")


def score_column(name: str) -> str:
    return f"quality_{name}"


def int_column(name: str) -> str:
    return f"quality_{name}_int"


def token_column(columns: list[str]) -> str | None:
    return next((c for c in columns if c.startswith("n_tokens_")), None)


def score_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    docs, undecodable = undecodable_rows(read_input(shard))
    unscored = np.array([row in undecodable for row in range(docs.num_rows)], dtype=bool) if undecodable else None
    text = docs["text"].cast(pa.string())
    texts = [t or "" for t in pc.utf8_slice_codeunits(text, 0, params["max_chars"]).to_pylist()] if docs.num_rows else []
    n_bytes = pc.binary_length(text).fill_null(0)
    tokens = token_column(docs.column_names)
    columns = {
        "id": docs["id"],
        "language": docs["language"] if "language" in docs.column_names else pa.nulls(docs.num_rows, pa.string()),
        "w_bytes": pc.cast(n_bytes, pa.int64()),
        "w_chars": pc.cast(pc.utf8_length(text).fill_null(0), pa.int64()),
        "w_tokens": pc.cast(docs[tokens].fill_null(0), pa.int64()) if tokens else pc.cast(n_bytes, pa.int64()),
    }
    seconds = {}
    for name, spec in sorted(params["scorers"].items()):
        began = time.perf_counter()
        values = scorers.load(spec).score([t[: spec.get("max_chars", params["max_chars"])] for t in texts])
        columns[score_column(name)] = pa.array(values, pa.float32(), mask=unscored)
        if spec.get("regression"):
            columns[int_column(name)] = pa.array(scorers.int_score(values), pa.int8(), mask=unscored)
        seconds[name] = round(time.perf_counter() - began, 3)
    table = pa.table(columns)
    return commit_shard(shard["shard"], output_url, table, docs_in=docs.num_rows, undecodable=len(undecodable), scorer_seconds=seconds,
                        weight_tokens_from={tokens or "bytes": docs.num_rows},
                        seconds=round(time.perf_counter() - started, 3))
