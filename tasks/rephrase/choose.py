"""rephrase's ``choose`` step (one task): per task, the documents it rewrites.

Each task's candidates in key order, taken while under its caps (``max_documents``, ``max_tokens``
of source tokens): a seeded choice that depends only on the ids and the seed, and grows with the caps.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_table
from fineflow.tasks.rephrase.select import CANDIDATES
from fineflow.tasks.text.sampling import pick

STEP_VERSION = "1"
LIBRARIES = ("pyarrow", "numpy")


def choose_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    table = read_table(params["candidates"]).cast(CANDIDATES) if params["candidates"] else CANDIDATES.empty_table()
    chosen, stats = [], {}
    for task in params["tasks"]:
        offered = table.filter(pc.equal(table["task"], task["name"]))
        taken = pick(offered, task["max_documents"], task["max_tokens"])
        chosen.append(taken)
        stats[task["name"]] = {"candidates": offered.num_rows, "chosen": taken.num_rows,
                               "source_tokens": int(pc.sum(taken["tokens"]).as_py() or 0)}
    found = pa.concat_tables(chosen).sort_by([("shard", "ascending"), ("row", "ascending"), ("task", "ascending")])
    return commit_shard(shard["shard"], output_url, found, docs_in=table.num_rows, chosen=found.num_rows, by_task=stats)
