"""rebalance's ``apply`` step (map, the document step): the solver's ``repeats`` on the documents.

Documents written at least once keep every column plus ``repeats`` (the tokenize stage writes a
document that many times) and ``rebalance_cell`` (the cell's name, as the token files name their
partitions), and ``source_name`` where ``sources`` maps URLs. The others go to rejects:
``rebalance:downsampled``, or ``rebalance:<problem>`` (e.g. no token count).
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fineflow import storage
from fineflow.documents import DETAIL_FIELD, commit_shard, read_input, read_table, rejects_schema, set_columns
from fineflow.tasks.common.cells import cell_name
from fineflow.tasks.rebalance.config import SOURCE_COLUMN
from fineflow.tasks.rebalance.measure import cell_key

STEP_VERSION = "2"  # 2: rejects carry drop_detail (an input from rejects had one: the cast failed)
LIBRARIES = ("numpy", "pyarrow")

REPEATS_COLUMN = "repeats"
CELL_COLUMN = "rebalance_cell"


def apply_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    documents = read_input(shard)
    measured = read_table([shard["measure"]])
    repeats = pq.read_table(io.BytesIO(storage.read_bytes(shard["repeats"])))["repeats"].to_numpy()
    if not (documents.num_rows == measured.num_rows == len(repeats)):
        raise RuntimeError(f"shard {shard['shard']}: the solver's repeats ({len(repeats)}) do not match the documents "
                           f"({documents.num_rows}) of {shard['input']}: re-run the stage")
    columns = params["cells"]
    values = [measured[cell_key(i)].to_pylist() for i in range(len(columns))]
    added: dict[str, pa.Array] = {
        REPEATS_COLUMN: pa.array(repeats, pa.int32()),
        CELL_COLUMN: pa.array([cell_name(columns, cell) for cell in zip(*values)] if columns
                              else [cell_name([], ())] * documents.num_rows, pa.string()),
    }
    if SOURCE_COLUMN in columns:
        added[SOURCE_COLUMN] = measured[cell_key(columns.index(SOURCE_COLUMN))]
    table = set_columns(documents, added)
    keep = repeats > 0
    kept = table.filter(pa.array(keep))
    problems = measured["problem"]
    reasons = pc.if_else(pc.is_null(problems), "rebalance:downsampled", pc.binary_join_element_wise("rebalance:", problems, ""))
    rejected = pa.array(np.flatnonzero(~keep), pa.int64())
    rejected_reasons = pc.take(reasons, rejected)
    # drop_detail always (an input read from another stage's rejects has one: it is replaced)
    rejects = set_columns(table.take(rejected), {"drop_reason": rejected_reasons,
                                                 DETAIL_FIELD.name: pa.nulls(len(rejected), DETAIL_FIELD.type)})
    rejects = rejects.cast(rejects_schema(kept.schema, detail=True))
    drop_reasons = {item["values"]: item["counts"] for item in pc.value_counts(rejected_reasons).to_pylist()}
    return commit_shard(shard["shard"], output_url, kept, rejects_url, rejects, docs_in=documents.num_rows,
                        copies=int(repeats.sum()), drop_reasons=drop_reasons)
