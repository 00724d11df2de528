"""translate's ``choose`` step (one task): the documents to translate, the same for every target.

Candidates in key order, taken while under the caps (``max_documents``; ``max_tokens`` of source
tokens): a seeded choice that depends only on the ids and the seed, and grows with the caps.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fineflow.documents import commit_shard, read_table

STEP_VERSION = "1"
LIBRARIES = ("pyarrow", "numpy")


def choose_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    table = read_table(params["candidates"])
    if table.num_rows:
        table = table.sort_by([("key", "ascending"), ("id", "ascending")])
    take = table.num_rows
    if params["max_documents"] is not None:
        take = min(take, params["max_documents"])
    if params["max_tokens"] is not None and table.num_rows:
        running = np.cumsum(table["tokens"].to_numpy())
        take = min(take, int(np.searchsorted(running, params["max_tokens"], side="right")))
    chosen = table.slice(0, take).sort_by([("shard", "ascending"), ("row", "ascending")])
    by_language: dict[str, int] = {}
    for language in chosen["language"].to_pylist():
        by_language[language] = by_language.get(language, 0) + 1
    tokens = int(pa.compute.sum(chosen["tokens"]).as_py() or 0) if take else 0
    return commit_shard(shard["shard"], output_url, chosen, docs_in=table.num_rows, chosen=take, candidates=table.num_rows,
                        source_tokens=tokens, source_chars=int(pa.compute.sum(chosen["chars"]).as_py() or 0) if take else 0,
                        chosen_by_language=by_language)
