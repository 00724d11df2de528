"""quality's ``summarize`` step (map): one score shard's weighted histograms, for ``calibrate``.

Planned when ``calibrate.summary`` is ``histogram`` or ``auto``: per scorer, of every language
(``*``) and, with ``calibrate.per_language``, of each language, a ``summary.Summary`` of at most
``calibrate.bins`` bins (and the smallest ``min_distinct_scores`` distinct scores, what the
per-language floor asks). ``calibrate`` merges them one shard at a time, so it holds scorers x
languages x bins, never a score per document. The stats give each shard's summary sizes.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_columns
from fineflow.tasks.quality import summary
from fineflow.tasks.quality.score import score_column

STEP_VERSION = "1"
LIBRARIES = ("numpy", "pyarrow")
ALL = "*"  # (calibrate.ALL: calibrate imports this module)

SCHEMA = pa.schema([
    ("scorer", pa.string()), ("language", pa.string()), ("shard_rows", pa.int64()), ("exponent", pa.int32()),
    ("index", pa.list_(pa.int64())), *((f"w_{unit}", pa.list_(pa.float64())) for unit in summary.UNITS),
    ("low", pa.list_(pa.float64())), ("high", pa.list_(pa.float64())), ("distinct", pa.list_(pa.float64())),
    ("total", pa.float64()),
])


def to_row(scorer: str, language: str, shard_rows: int, found: summary.Summary) -> dict:
    return {"scorer": scorer, "language": language, "shard_rows": shard_rows, "exponent": found.exponent,
            "index": found.index, **{f"w_{unit}": found.weights[:, n] for n, unit in enumerate(summary.UNITS)},
            "low": found.low, "high": found.high, "distinct": found.distinct, "total": found.total}


def from_row(row: dict) -> summary.Summary:
    weights = np.column_stack([np.asarray(row[f"w_{unit}"], np.float64) for unit in summary.UNITS])
    return summary.Summary(int(row["exponent"]), np.asarray(row["index"], np.int64), weights.reshape(-1, len(summary.UNITS)),
                           np.asarray(row["low"], np.float64), np.asarray(row["high"], np.float64),
                           np.asarray(row["distinct"], np.float64), float(row["total"]))


def weights(table: pa.Table) -> np.ndarray:
    columns = [table[f"w_{unit}"].to_numpy(zero_copy_only=False).astype(np.float64) for unit in summary.UNITS if unit != "docs"]
    return np.column_stack([*columns, np.ones(table.num_rows)]).reshape(-1, len(summary.UNITS))


def summarize_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    names = sorted(params["scorers"])
    columns = ["language", *(f"w_{u}" for u in summary.UNITS if u != "docs"), *(score_column(n) for n in names)]
    table = read_columns(shard["scores"], columns)
    groups = {ALL: table}
    if params["per_language"] and table.num_rows:
        languages = pc.fill_null(table["language"], "und")
        for language in sorted(set(languages.to_pylist())):
            groups[language] = table.filter(pc.equal(languages, language))
    rows = []
    for name in names:
        for language, part in groups.items():
            part = part.filter(pc.is_valid(part[score_column(name)]))  # an undecodable text has no score
            scores = part[score_column(name)].to_numpy(zero_copy_only=False).astype(np.float64)
            cap = params["min_distinct_scores"] if language != ALL else 0
            rows.append(to_row(name, language, table.num_rows, summary.build(scores, weights(part), params["bins"], cap)))
    out = pa.Table.from_pylist(rows, schema=SCHEMA)
    sizes = [len(row["index"]) for row in rows]
    return commit_shard(shard["shard"], output_url, out, docs_in=table.num_rows, summaries=len(rows),
                        summary_bins=sum(sizes), summary_bins_max=max(sizes, default=0), summary_bytes=out.nbytes,
                        seconds=round(time.perf_counter() - started, 3))
