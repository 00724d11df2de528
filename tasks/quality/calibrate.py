"""quality's ``calibrate`` step (one task): weighted quantiles of every scorer's scores.

Reads the score shards' scores and weights and stores, per scorer (and per language when
configured; ``*`` is every language), the quantile grid of ``buckets.GRID`` steps for each
weight unit (tokens, bytes, characters, documents). Keep rules and Nemotron-CC's buckets read
their thresholds from it in ``decide``, so a new threshold or top share re-runs only ``decide``.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_table
from fineflow.tasks.quality import buckets
from fineflow.tasks.quality.score import score_column

STEP_VERSION = "1"
LIBRARIES = ("numpy", "pyarrow")

UNITS = ("tokens", "bytes", "chars", "docs")
ALL = "*"
GRID_SCHEMA = pa.schema([
    ("scorer", pa.string()), ("language", pa.string()), ("unit", pa.string()), ("documents", pa.int64()),
    ("quantiles", pa.list_(pa.float64())),
])


def _weights(table: pa.Table, unit: str) -> np.ndarray:
    if unit == "docs":
        return np.ones(table.num_rows)
    return table[f"w_{unit}"].to_numpy(zero_copy_only=False).astype(np.float64)


def calibrate_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    names = sorted(params["scorers"])
    columns = ["language", *(f"w_{u}" for u in UNITS if u != "docs"), *(score_column(n) for n in names)]
    table = read_table(params["scores"]).select(columns)
    groups = {ALL: table}
    if params["per_language"] and table.num_rows:
        languages = pc.fill_null(table["language"], "und")
        for language in sorted(set(languages.to_pylist())):
            groups[language] = table.filter(pc.equal(languages, language))
    rows = []
    thresholds: dict[str, dict[str, float]] = {}
    means: dict[str, float] = {}
    for name in names:
        for language, part in groups.items():
            part = part.filter(pc.is_valid(part[score_column(name)]))  # an undecodable text has no score
            scores = part[score_column(name)].to_numpy(zero_copy_only=False).astype(np.float64)
            for unit in UNITS:
                grid = buckets.quantile_grid(scores, _weights(part, unit))
                rows.append({"scorer": name, "language": language, "unit": unit, "documents": part.num_rows,
                             "quantiles": grid.tolist()})
                if language == ALL and unit == params["weight"] and part.num_rows:
                    thresholds[name] = {f"p{p:02d}": round(float(t), 6)
                                        for p, t in zip(buckets.BUCKET_PERCENTILES, buckets.bucket_thresholds(grid))}
        column = table[score_column(name)]
        if pc.count(column).as_py():
            means[name] = round(float(pc.mean(column).as_py()), 6)
    grids = pa.Table.from_pylist(rows, schema=GRID_SCHEMA)
    return commit_shard(shard["shard"], output_url, grids, docs_in=table.num_rows, documents_scored=table.num_rows,
                        percentiles=thresholds, mean_score=means, seconds=round(time.perf_counter() - started, 3))
