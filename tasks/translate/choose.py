"""translate's ``choose`` step (one task): the documents to translate, the same for every target.

Candidates in key order, taken while under the caps (``max_documents``; ``max_tokens`` of source
tokens): a seeded choice that depends only on the ids and the seed, and grows with the caps.
"""

from __future__ import annotations

import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_table
from fineflow.tasks.text.sampling import pick

STEP_VERSION = "1"
LIBRARIES = ("pyarrow", "numpy")


def choose_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    table = read_table(params["candidates"])
    chosen = pick(table, params["max_documents"], params["max_tokens"])
    by_language = {item["values"]: item["counts"] for item in pc.value_counts(chosen["language"]).to_pylist()}
    return commit_shard(shard["shard"], output_url, chosen, docs_in=table.num_rows, chosen=chosen.num_rows,
                        candidates=table.num_rows, source_tokens=int(pc.sum(chosen["tokens"]).as_py() or 0),
                        source_chars=int(pc.sum(chosen["chars"]).as_py() or 0), chosen_by_language=by_language)
