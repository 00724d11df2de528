"""quality's ``calibrate`` step (one task): weighted quantiles of every scorer's scores.

Reads the score shards' scores and weights and stores, per scorer (and per language when
configured; ``*`` is every language), the quantile grid of ``buckets.GRID`` steps for each
weight unit (tokens, bytes, characters, documents). A language with fewer than ``min_docs``
scored documents, or whose scores take fewer than ``min_distinct_scores`` values, gets no grid
of its own: percentiles of one document (or of tied scores) would put it all in the top bucket,
so it is judged by the global thresholds, and the step's ``per_language`` counts say why. Keep rules and Nemotron-CC's buckets read
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

STEP_VERSION = "2"
LIBRARIES = ("numpy", "pyarrow")

UNITS = ("tokens", "bytes", "chars", "docs")
ALL = "*"
HISTOGRAM_BINS = 40
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
    histograms: dict[str, dict] = {}
    by_language: dict[str, dict[str, dict[str, int]]] = {}
    for name in names:
        for language, part in groups.items():
            part = part.filter(pc.is_valid(part[score_column(name)]))  # an undecodable text has no score
            scores = part[score_column(name)].to_numpy(zero_copy_only=False).astype(np.float64)
            if language != ALL:
                distinct = int(np.unique(scores).size)
                own = part.num_rows >= params["min_docs"] and distinct >= params["min_distinct_scores"]
                by_language.setdefault(name, {})[language] = {
                    "documents": part.num_rows, "distinct_scores": distinct, "own_thresholds": int(own)}
                if not own:  # no grid of its own: decide reads the global one (``decide.Grids``)
                    continue
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
            finite = column.drop_null().to_numpy(zero_copy_only=False).astype(np.float64)
            if np.isfinite(finite).any():
                histograms[name] = histogram(finite[np.isfinite(finite)])
    grids = pa.Table.from_pylist(rows, schema=GRID_SCHEMA)
    floor = {"per_language": {"min_docs": params["min_docs"], "min_distinct_scores": params["min_distinct_scores"],
                              "scorers": by_language}} if params["per_language"] else {}
    return commit_shard(shard["shard"], output_url, grids, docs_in=table.num_rows, documents_scored=table.num_rows,
                        percentiles=thresholds, mean_score=means, score_histogram=histograms, **floor, seconds=round(time.perf_counter() - started, 3))


def histogram(scores: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict:
    """Every score in ``bins`` equal bins from the lowest to the highest (the report's distribution):
    ``low``, ``width`` and the non-empty bins' counts by their zero-padded index. One task holds
    every score, so the range is the scores' own (a fixed 0-1 range would put a classifier whose
    probabilities crowd around 0.5 in one bar)."""
    low, high = float(scores.min()), float(scores.max())
    width = (high - low) / bins
    index = np.minimum(((scores - low) / width).astype(np.int64), bins - 1) if width > 0 else np.zeros(scores.size, np.int64)
    found, counts = np.unique(index, return_counts=True)
    return {"low": round(low, 9), "width": round(width, 12),
            "counts": {f"{int(i):03d}": int(n) for i, n in zip(found, counts)}}


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def fallbacks(per_language: dict) -> list[str]:
    """Why each language below the floor uses the global thresholds, one line per language (and scorer, when
    only some of its scorers' scores are too few distinct values), from the calibrate step's ``per_language``."""
    min_docs, min_distinct = per_language["min_docs"], per_language["min_distinct_scores"]
    found = []
    languages = sorted({language for by in per_language["scorers"].values() for language in by})
    for language in languages:
        entries = {name: by[language] for name, by in sorted(per_language["scorers"].items()) if language in by}
        documents = max(entry["documents"] for entry in entries.values())
        if documents < min_docs:
            found.append(f"language {language}: {plural(documents, 'document')} (< min_docs {min_docs}), global thresholds used")
            continue
        for name, entry in entries.items():
            if not entry["own_thresholds"]:
                found.append(f"language {language}: {plural(entry['distinct_scores'], 'distinct score')} of {name} "
                             f"(< min_distinct_scores {min_distinct}), global thresholds used")
    return found
