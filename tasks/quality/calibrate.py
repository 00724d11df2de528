"""quality's ``calibrate`` step (one task): weighted quantiles of every scorer's scores.

Reads the score shards' scores and weights and stores, per scorer (and per language when
configured; ``*`` is every language), the quantile grid of ``buckets.GRID`` steps for each
weight unit (tokens, bytes, characters, documents). A language with fewer than ``min_docs``
scored documents, or whose scores take fewer than ``min_distinct_scores`` values, gets no grid
of its own: percentiles of one document (or of tied scores) would put it all in the top bucket,
so it is judged by the global thresholds, and the step's ``per_language`` counts say why. Keep rules and Nemotron-CC's buckets read
their thresholds from it in ``decide``, so a new threshold or top share re-runs only ``decide``.

``summary`` (``calibrate.summary``): ``exact`` reads every score shard into this one task (a few
tens of bytes per document and scorer); ``histogram`` merges the ``summarize`` step's per-shard
histograms one batch of shards at a time (memory: scorers x languages x bins), whose quantiles are
within ``summary.rank_error`` of the exact ones (in the stats' ``rank_error``); ``auto`` is exact up
to ``exact_max_docs`` scored rows and the histograms past them.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_columns, read_table
from fineflow.tasks.quality import buckets, summarize, summary
from fineflow.tasks.quality.score import score_column

STEP_VERSION = "2"  # (the summary settings enter the fingerprint only when not exact: exact runs keep theirs)
LIBRARIES = ("numpy", "pyarrow")

UNITS = summary.UNITS
ALL = summarize.ALL
MERGE_BATCH = 32  # shard summaries merged at once (per scorer and language): memory stays a few times bins
REFINE_ROUNDS = 4  # each round narrows a heavy bin ~bins-fold: float32 scores are single values well before
HISTOGRAM_BINS = 40
GRID_SCHEMA = pa.schema([
    ("scorer", pa.string()), ("language", pa.string()), ("unit", pa.string()), ("documents", pa.int64()),
    ("quantiles", pa.list_(pa.float64())),
])


def _weights(table: pa.Table, unit: str) -> np.ndarray:
    if unit == "docs":
        return np.ones(table.num_rows)
    return table[f"w_{unit}"].to_numpy(zero_copy_only=False).astype(np.float64)


def _scored_rows(urls: list[str]) -> int:
    """The score shards' rows, from their summaries (each row of a summary repeats its shard's)."""
    total = 0
    for url in urls:
        rows = read_columns(url, ["shard_rows"])["shard_rows"]
        total += int(rows[0].as_py()) if len(rows) else 0
    return total


def calibrate_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    mode = params.get("summary", "exact")
    if mode == "histogram" or (mode == "auto" and _scored_rows(params["summaries"]) > params["exact_max_docs"]):
        return _from_summaries(shard, params, output_url, started)
    used = {"summary": "exact"} if mode != "exact" else {}  # (an exact run's stats stay as they were)
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
                        percentiles=thresholds, mean_score=means, score_histogram=histograms, **floor, **used, seconds=round(time.perf_counter() - started, 3))


def _summary_rows(table: pa.Table) -> list[tuple[tuple[str, str], summary.Summary]]:
    found = []
    for row in range(table.num_rows):
        values = {name: (table[name][row].values.to_numpy(zero_copy_only=False) if isinstance(table[name].type, pa.ListType)
                         else table[name][row].as_py()) for name in table.column_names}
        found.append(((values["scorer"], values["language"]), summarize.from_row(values)))
    return found


def merged_summaries(urls: list[str], bins: int, distinct_cap: int) -> tuple[dict[tuple[str, str], summary.Summary], int]:
    """Every shard's summaries merged per (scorer, language), ``MERGE_BATCH`` shards at a time; the rows scored."""
    merged: dict[tuple[str, str], summary.Summary] = {}
    pending: dict[tuple[str, str], list[summary.Summary]] = {}
    rows = 0
    for number, url in enumerate(urls):
        table = read_table([url])
        rows += int(table["shard_rows"][0].as_py()) if table.num_rows else 0
        for key, found in _summary_rows(table):
            pending.setdefault(key, []).append(found)
        if (number + 1) % MERGE_BATCH == 0 or number + 1 == len(urls):
            for key, batch in pending.items():
                cap = distinct_cap if key[1] != ALL else 0
                merged[key] = summary.merge([merged[key], *batch] if key in merged else batch, bins, cap)
            pending = {}
    return merged, rows


def _budget(share: float, target: float, bins: int) -> int:
    """Bins for re-summarizing one heavy bin: enough that its share splits below the target, at most ``bins``."""
    return int(min(bins, max(summary.MIN_BINS, np.ceil(32 * share / target))))


def refine(merged: dict[tuple[str, str], summary.Summary], keys: list[tuple[str, str]], score_urls: list[str],
           bins: int, target: float) -> int:
    """Re-summarize, from the score shards (read one at a time, a few columns), every bin that holds more than
    one distinct score and over ``target`` of a unit's weight, until none is left (or ``REFINE_ROUNDS``); the
    rounds taken. Memory: per scorer and language, ``bins`` plus at most ``288 / target`` bins a round (none per document)."""
    for rounds in range(REFINE_ROUNDS):
        wanted = {key: found for key in keys if (found := merged[key]).bins and summary.heavy(found, target).size}
        if not wanted:
            return rounds
        positions = {key: summary.heavy(found, target) for key, found in wanted.items()}
        budgets = {}
        for key, found in wanted.items():
            totals = found.weights.sum(axis=0)
            shares = np.max(found.weights[positions[key]] / np.where(totals > 0, totals, 1.0), axis=1)
            budgets[key] = [_budget(share, target, bins) for share in shares.tolist()]
        parts: dict[tuple[str, str], list[list[summary.Summary]]] = {key: [[] for _ in positions[key]] for key in wanted}
        names = sorted({name for name, _ in wanted})
        columns = ["language", *(f"w_{u}" for u in UNITS if u != "docs"), *(score_column(n) for n in names)]
        for url in score_urls:
            table = read_columns(url, columns)
            languages = pc.fill_null(table["language"], "und")
            by_language = {language: table if language == ALL else table.filter(pc.equal(languages, language))
                           for language in sorted({language for _, language in wanted})}
            for (name, language), found in wanted.items():
                part = by_language[language].filter(pc.is_valid(by_language[language][score_column(name)]))
                scores = part[score_column(name)].to_numpy(zero_copy_only=False).astype(np.float64)
                lows, highs = found.low[positions[(name, language)]], found.high[positions[(name, language)]]
                bin_of = np.searchsorted(lows, scores, side="right") - 1
                rows = np.flatnonzero((bin_of >= 0) & (scores <= highs[np.maximum(bin_of, 0)]))
                rows = rows[np.argsort(bin_of[rows], kind="stable")]  # the rows of each heavy bin together
                heavy_bins, starts = np.unique(bin_of[rows], return_index=True)
                weights = summarize.weights(part)
                for j, chunk in zip(heavy_bins.tolist(), np.split(rows, starts[1:])):
                    budget = budgets[(name, language)][j]
                    pending = parts[(name, language)][j]
                    pending.append(summary.build(scores[chunk], weights[chunk], budget))
                    if len(pending) >= MERGE_BATCH:
                        pending[:] = [summary.merge(pending, budget)]
        for key, found in wanted.items():
            done = [summary.merge(pending, budget) for pending, budget in zip(parts[key], budgets[key])]
            merged[key] = summary.splice(found, positions[key], done)
    return REFINE_ROUNDS


def _from_summaries(shard: dict, params: dict, output_url: str, started: float) -> dict:
    """The grids, thresholds and stats of the exact path, from the merged histograms."""
    names = sorted(params["scorers"])
    merged, scored_rows = merged_summaries(params["summaries"], params["bins"], params["min_distinct_scores"])
    languages = sorted({language for _, language in merged if language != ALL}) if params["per_language"] else []
    histograms = {name: summary.report_histogram(merged.get((name, ALL)) or summary.empty(), HISTOGRAM_BINS) for name in names}
    own = [(name, language) for name in names for language in [ALL, *languages] if (name, language) in merged
           and (language == ALL or (merged[(name, language)].documents >= params["min_docs"]
                                    and merged[(name, language)].distinct.size >= params["min_distinct_scores"]))]
    rounds = refine(merged, own, params["scores"], params["bins"], params["max_rank_error"])
    qs = np.arange(buckets.GRID + 1) / buckets.GRID
    rows = []
    thresholds: dict[str, dict[str, float]] = {}
    means: dict[str, float] = {}
    errors: dict[str, dict[str, float]] = {}
    by_language: dict[str, dict[str, dict[str, int]]] = {}
    for name in names:
        for language in [ALL, *languages]:
            found = merged.get((name, language)) or summary.empty()
            if language != ALL:
                distinct = int(found.distinct.size)  # capped at min_distinct_scores: exact below it
                own = found.documents >= params["min_docs"] and distinct >= params["min_distinct_scores"]
                by_language.setdefault(name, {})[language] = {
                    "documents": found.documents, "distinct_scores": distinct, "own_thresholds": int(own)}
                if not own:
                    continue
            errors.setdefault(name, {})[language] = round(summary.rank_error(found, params["weight"]), 6)
            for unit in UNITS:
                grid = summary.quantiles(found, unit, qs)
                rows.append({"scorer": name, "language": language, "unit": unit, "documents": found.documents,
                             "quantiles": grid.tolist()})
                if language == ALL and unit == params["weight"] and found.documents:
                    thresholds[name] = {f"p{p:02d}": round(float(t), 6)
                                        for p, t in zip(buckets.BUCKET_PERCENTILES, buckets.bucket_thresholds(grid))}
        every = merged.get((name, ALL)) or summary.empty()
        if every.documents:
            means[name] = round(every.total / every.documents, 6)
    grids = pa.Table.from_pylist(rows, schema=GRID_SCHEMA)
    floor = {"per_language": {"min_docs": params["min_docs"], "min_distinct_scores": params["min_distinct_scores"],
                              "scorers": by_language}} if params["per_language"] else {}
    sizes = [found.bins for found in merged.values()]
    return commit_shard(shard["shard"], output_url, grids, docs_in=scored_rows, documents_scored=scored_rows,
                        percentiles=thresholds, mean_score=means, **floor,
                        score_histogram={name: found for name, found in histograms.items() if found is not None},
                        summary="histogram", rank_error=errors, refine_rounds=rounds, summary_bins=sum(sizes), summary_bins_max=max(sizes, default=0),
                        seconds=round(time.perf_counter() - started, 3))


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
