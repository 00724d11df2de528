"""rebalance's ``solve`` step (one task): every document's ``repeats``, and the mix report.

Reads the measure shards, gives every document its preference (rehydration weight x quality
weight), resolves the cells' targets (``targets.py``), checks every cell's feasibility before
anything is written (an infeasible target fails the step, naming the cells and their shortfall,
unless ``on_shortfall: report``), solves each cell (``solver.py``) and commits per input shard
the ``repeats`` of its rows, and ``mix.json``: per cell its target, achieved and unique tokens,
documents, epochs, shortfall and weight (its share of the written tokens, what a trainer's
data-args file gives it), with the rehydration curves and the quality table used.

``solve.mode`` says how it holds the documents (``groups.py``): all at once, or a group of cells
at a time within ``solve.memory_mb``; each cell is solved from its own documents in the same
canonical order either way, so the repeats and the mix are the same.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard, table_to_parquet_bytes
from fineflow.tasks.common.cells import cell_name
from fineflow.tasks.rebalance import groups, rehydration, solver, stream
from fineflow.tasks.rebalance.config import MAX_TOKENS, RebalanceStage
from fineflow.tasks.rebalance.measure import cell_key
from fineflow.tasks.rebalance.targets import CellTarget, epochs_of, resolve
from fineflow.tasks.text.sampling import seeded_keys

STEP_VERSION = "3"  # 3: the pivotal cut, weight 0 never written
LIBRARIES = ("numpy", "pyarrow", "xxhash")

MIX = "mix.json"
EMPTY = "empty"  # a listed cell without documents, whose target is 0 (reported, never a failure)


def repeats_artifact(shard: int) -> str:
    return f"repeats-{shard:05d}.parquet"


def _curves(config: RebalanceStage, params: dict, languages: list[str]) -> dict[str, rehydration.Curve]:
    """Each language's rehydration weights (from this run's filter data, or a fixed table)."""
    spec = config.rehydration
    assert spec is not None
    files = rehydration.load_weights_file(spec.weights) if spec.weights not in ("data", "readme") else None
    fallback_files = rehydration.load_weights_file(spec.fallback) if spec.fallback != "readme" else None
    found = rehydration.load_report(params["rehydration_report"]) if spec.weights == "data" else {}
    curves = {}
    for language in languages:
        if language in found:
            curves[language] = found[language]
        elif spec.weights == "data":
            curves[language] = rehydration.fallback_curve(spec.fallback, language, fallback_files,
                                                          f"no document of {language} reached {spec.kept}")
        elif spec.weights == "readme":
            curves[language] = rehydration.from_table(rehydration.README_TABLE, "readme")
        else:
            curves[language] = rehydration.fallback_curve("file", language, files)
    return curves


def preferences(table: pa.Table, config: RebalanceStage, params: dict) -> tuple[np.ndarray, dict[str, Any]]:
    """Each document's preference (rehydration x quality weight) and what was used, for the report."""
    weighting = Weighting(config, params, _languages(table), _levels(table))
    return weighting.weights(table), weighting.used(int((~_known_sizes(table)).sum()) if config.rehydration else 0)


def _languages(table: pa.Table) -> set[str]:
    if "language" not in table.column_names:
        return set()
    return set(pc.fill_null(table["language"], "und").to_numpy(zero_copy_only=False).tolist())


def _levels(table: pa.Table) -> set:
    return set(table["level"].to_numpy(zero_copy_only=False).tolist()) if "level" in table.column_names else set()


def _known_sizes(table: pa.Table) -> np.ndarray:
    return pc.is_valid(table["cluster_size"]).to_numpy(zero_copy_only=False)


class Weighting:
    """The preferences of every document, from the languages and levels of all of them: the same
    for all the documents at once or a group of cells at a time."""

    def __init__(self, config: RebalanceStage, params: dict, languages: set[str], levels: set) -> None:
        self.config = config
        self.curves = _curves(config, params, sorted(languages)) if config.rehydration is not None else {}
        self.unknown: list[str] = []
        if config.quality is not None:
            spec = config.quality
            self.unknown = sorted({str(level) for level in levels if level not in spec.weights})
            if self.unknown and spec.default is None:
                raise ValueError(f"quality: {spec.column} values {', '.join(self.unknown)} have no weight (add them, or a default)")

    def weights(self, table: pa.Table) -> np.ndarray:
        weights = np.ones(table.num_rows, dtype=np.float64)
        if self.config.rehydration is not None:
            languages = pc.fill_null(table["language"], "und").to_numpy(zero_copy_only=False)
            known = _known_sizes(table)
            sizes = pc.fill_null(table["cluster_size"], 1).to_numpy()
            for language, curve in self.curves.items():
                mask = languages == language
                weights[mask] = np.where(known[mask], curve.lookup(sizes[mask]), 1.0)
        if self.config.quality is not None:
            spec = self.config.quality
            levels = table["level"].to_numpy(zero_copy_only=False)
            lookup = np.vectorize(lambda level: spec.weights.get(level, spec.default), otypes=[np.float64])
            if len(levels):
                weights *= lookup(levels)
        return weights

    def used(self, no_cluster_size: int) -> dict[str, Any]:
        used: dict[str, Any] = {}
        if self.config.rehydration is not None:
            used["rehydration"] = {language: {"weights": {str(k): v for k, v in curve.table.items()}, "source": curve.source,
                                              "reason": curve.reason, "documents": curve.documents, "removed": curve.removed,
                                              "global_removal_rate": curve.global_removal_rate, "bins": curve.bins}
                                   for language, curve in self.curves.items()}
            used["no_cluster_size"] = no_cluster_size
        if self.config.quality is not None:
            spec = self.config.quality
            used["quality"] = {"column": spec.column, "weights": spec.weights, "default": spec.default, "unlisted": self.unknown}
        return used


def _cell_runs(valid: pa.Table, n_columns: int, keys: np.ndarray) -> tuple[np.ndarray, dict[tuple[str, ...], tuple[int, int]]]:
    """The canonical order (by cell, then key, then id) and each cell's contiguous run in it. Cells
    are compared column by column (dictionary codes): any value, however odd, is its own."""
    names = [cell_key(i) for i in range(n_columns)]
    work = pa.table({**{name: valid[name] for name in names}, "key": pa.array(keys, pa.uint64()), "id": valid["id"],
                     "index": np.arange(valid.num_rows)})
    order = work.sort_by([(name, "ascending") for name in names] + [("key", "ascending"), ("id", "ascending")])["index"]
    order = order.to_numpy()
    if not len(order):
        return order, {}
    change = np.zeros(len(order) - 1, dtype=bool)
    for name in names:
        codes = pc.dictionary_encode(valid[name].combine_chunks()).indices.to_numpy()[order]
        change |= codes[1:] != codes[:-1]
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    ends = np.concatenate([starts[1:], [len(order)]])
    firsts = pa.array(order[starts], pa.int64())
    values = [pc.take(valid[name], firsts).to_pylist() for name in names]
    cells = list(zip(*values)) if names else [()]
    return order, {cell: (int(s), int(e)) for cell, s, e in zip(cells, starts, ends)}


def _check_countable(most: float) -> None:
    """Every count below is int64 arithmetic: refuse (before any of it) a mix whose most tokens,
    every document at its cap, could overflow it. Float sums: they cannot overflow themselves."""
    if most > MAX_TOKENS:
        raise ValueError(f"the documents at their max_epochs would make {most:.3g} tokens, more than int64 token counts hold "
                         f"({MAX_TOKENS:.3g}; nothing was written): lower max_epochs or split the input")


def _check_weightless(found: list[str]) -> None:
    """Weight 0 means never selected: a ``min_epochs`` that would copy such documents anyway is a
    configuration error naming their cells and a few of them (which documents weigh 0 is known
    only once the levels and cluster sizes are read, so this is the first place it can be told)."""
    if found:
        raise ValueError("weight 0 means never selected, but min_epochs asks for copies of these documents (nothing was "
                         "written; set min_epochs: 0 on their cells or give them a positive weight):\n  " + "\n  ".join(found))


def _check_counts(report: list[dict], written: int, selected: int, negative: bool) -> None:
    """What mix.json says must be what apply writes: fail the step (nothing written) otherwise."""
    for row in report:
        numbers = [row[key] for key in ("target", "achieved", "documents", "copies", "selected_unique_tokens", "max_repeats")]
        if any(not isinstance(n, int) or n < 0 or n > MAX_TOKENS for n in numbers) or row["max_repeats"] > row["max_epochs"]:
            raise ValueError(f"{row['cell']}: the solver's counts are out of range (target {row['target']}, achieved "
                             f"{row['achieved']}, documents {row['documents']}, most repeats {row['max_repeats']}); nothing was written")
    if negative or written != sum(row["achieved"] for row in report) or selected != sum(row["documents"] for row in report):
        raise ValueError("the solver's repeats do not add up to its mix (nothing was written)")


def _check_unique_ids(table: pa.Table) -> None:
    """Repeats are decided per document id: the same id twice would make the result depend on
    the shard order (dedup's exact stage, or the crawl's ids, make them unique)."""
    if table.num_rows and pc.count_distinct(table["id"]).as_py() != table.num_rows:
        counts = pc.value_counts(table["id"])
        repeated = [item["values"] for item in counts.to_pylist() if item["counts"] > 1][:5]
        raise ValueError(f"document ids must be unique for rebalance; repeated: {', '.join(map(str, repeated))} "
                         "(is the input a union of overlapping stages?)")


def _describe_shortfall(cell: dict) -> str:
    need = f"target {cell['target']:,} tokens"
    if cell["infeasible"] == "short":
        return (f"{cell['cell']}: {need}, at most {cell['max_tokens']:,} with max_epochs {cell['max_epochs']} "
                f"(short by {cell['target'] - cell['max_tokens']:,})")
    return (f"{cell['cell']}: {need}, at least {cell['min_tokens']:,} with min_epochs {cell['min_epochs']} "
            f"(over by {cell['min_tokens'] - cell['target']:,})")


@dataclass
class _Group:
    """One group's documents in the canonical order (by cell, then key, then id)."""

    valid: pa.Table
    order: np.ndarray
    runs: dict[tuple[str, ...], tuple[int, int]]
    tokens: np.ndarray
    weights: np.ndarray
    keys: np.ndarray


def _prepare(valid: pa.Table, config: RebalanceStage, weighting: Weighting, keys: np.ndarray | None = None) -> _Group:
    _check_unique_ids(valid)
    weights = weighting.weights(valid)
    if not np.isfinite(weights).all() or (weights < 0).any():  # the config and weights files are checked: a bug if so
        raise ValueError("a document's preference is negative or not finite (nothing was written): check the weights")
    keys = seeded_keys(valid["id"].to_pylist(), config.seed) if keys is None else keys
    order, runs = _cell_runs(valid, len(config.cells), keys)
    return _Group(valid, order, runs, valid["tokens"].to_numpy()[order], weights[order], keys[order])


@dataclass
class _CellStats:
    """What the targets and the report need of a cell's documents."""

    natural: float
    documents: int
    unique: int
    counted: int  # tokens of the documents with a positive weight
    largest: int
    positive: int = 0  # documents with a positive weight


def _slices(source: groups.Grouped, index: int, config: RebalanceStage, weighting: Weighting) -> Iterator[_Group]:
    """A one-cell group past the bound, a slice of its keys at a time, in key order."""
    for table, keys in source.slices(index, config.seed):
        yield _prepare(table, config, weighting, keys)


def _stats_in_slices(parts: Iterator[_Group], cell: tuple[str, ...], documents: int, config: RebalanceStage,
                     note: Callable[[int, _Group], None]) -> tuple[_CellStats, float, str | None]:
    """A cell's numbers from its slices (in key order): the natural size summed in numpy's order."""
    high, low = epochs_of(config, cell)
    natural = stream.PairwiseSum(documents)
    most, unique, counted, largest, positive, zeros, examples = 0.0, 0, 0, 0, 0, 0, []
    for number, group in enumerate(parts):
        note(number, group)
        t, w = group.tokens, group.weights
        natural.push(t * np.where(w > 0, np.clip(w, low, high), 0.0))
        most += float(np.where(w > 0, high, low) @ t.astype(np.float64))  # only ever compared with 2^62
        unique, counted, positive = unique + int(t.sum()), counted + int(t[w > 0].sum()), positive + int((w > 0).sum())
        largest = max(largest, int(t.max()) if len(t) else 0)
        zero = np.flatnonzero(w == 0)
        zeros += len(zero)
        if len(examples) < 3 and len(zero):
            examples += group.valid["id"].take(pa.array(group.order[zero[: 3 - len(examples)]], pa.int64())).to_pylist()
    message = None
    if low > 0 and zeros:
        message = (f"{cell_name(config.cells, cell)}: {zeros:,} document(s) of weight 0 with min_epochs {low} "
                   f"(e.g. {', '.join(map(str, examples))})")
    return _CellStats(natural.result(), documents, unique, counted, largest, positive), most, message


def _solve_in_slices(parts: Callable[[], Iterator[_Group]], target: CellTarget, cell: _CellStats, folder: Path, block: int,
                     put: Callable[[np.ndarray, np.ndarray, np.ndarray, int], None]) -> tuple[dict[str, int], float]:
    """``solver.solve_cell`` on a cell read in slices (each pass in key order): the same repeats."""
    lo, hi = target.min_epochs, target.max_epochs
    limit = solver.Bounds(cell.counted * lo, cell.counted * hi)
    fixed = lo if target.target <= limit.low else hi if target.target >= limit.high and not target.natural else None
    if fixed is not None:
        scale = 0.0 if fixed == lo else float("inf")
    elif target.natural:
        scale = 1.0
    else:
        with tempfile.TemporaryDirectory(dir=folder) as here:
            scale = stream.solve_lambda_in_parts(lambda: ((g.tokens, g.weights) for g in parts()), cell.positive,
                                                 target.target, lo, hi, Path(here))
    counts = {"achieved": 0, "documents": 0, "copies": 0, "selected": 0, "most": 0}

    def count(repeats: np.ndarray, tokens: np.ndarray) -> None:
        counts["achieved"] += int((repeats * tokens).sum())
        counts["documents"] += int((repeats > 0).sum())
        counts["copies"] += int(repeats.sum())
        counts["selected"] += int(tokens[repeats > 0].sum())
        counts["most"] = max(counts["most"], int(repeats.max()) if len(repeats) else 0)

    cut = stream.CutStream(block, width=4)
    written = 0  # parts put so far: a later put of a row wins

    def patch(late: list) -> None:
        """Units taken after their slice was put: one more copy each."""
        nonlocal written
        if not late:
            return
        shard_of, row_of, whole, tokens = np.array(late, dtype=np.int64).reshape(-1, 4).T
        counts["achieved"] += int(tokens.sum())
        counts["copies"] += len(late)
        counts["documents"] += int((whole == 0).sum())  # a document first written now
        counts["selected"] += int(tokens[whole == 0].sum())
        counts["most"] = max(counts["most"], int((whole + 1).max()))
        put(shard_of, row_of, whole + 1, written)
        written += 1

    for group in parts():
        positive, tokens, keys = group.weights > 0, group.tokens, group.keys
        shard_of, row_of = group.valid["shard"].to_numpy()[group.order], group.valid["row"].to_numpy()[group.order]
        if fixed is not None:
            repeats = np.where(positive, fixed, 0).astype(np.int64)
        else:
            ideal = np.where(positive, np.clip(scale * group.weights, lo, hi), 0.0)
            whole = np.floor(ideal).astype(np.int64)
            shares = ideal - whole
            taken = np.zeros(len(tokens), dtype=bool)
            empty = np.flatnonzero((shares > 0) & (tokens == 0))
            taken[empty] = solver.uniform(solver.mix(keys[empty], 2)) < shares[empty]
            units = np.flatnonzero((shares > 0) & (tokens > 0))  # in key order: the cell's order is by key
            payload = np.stack([shard_of[units], row_of[units], whole[units], tokens[units]], axis=1).astype(np.int64)
            taken[units] = cut.push(tokens[units], shares[units], solver.uniform(solver.mix(keys[units], 1)), payload)
            repeats = whole + taken
        count(repeats, tokens)
        put(shard_of, row_of, repeats, written)
        written += 1
        patch(cut.drain())
    patch(cut.finish() if fixed is None else [])
    return counts, scale


def solve_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    config = RebalanceStage.model_validate(params["config"])
    urls = params["measures"]
    limit = groups.capacity(config.solve.memory_mb)
    bounded = config.solve.mode == "bounded" or (config.solve.mode == "auto" and groups.rows(urls) > limit)
    with tempfile.TemporaryDirectory(prefix="rebalance-solve-") as folder:
        source = groups.Grouped(urls, len(config.cells), limit, folder) if bounded else groups.Everything(urls, len(config.cells))
        return _solve(source, shard["shard"], config, params, output_url, started)


@dataclass
class _Numbers:
    """Pass 1 over every group: what the targets and the checks need, per cell and in all."""

    stats: dict[tuple[str, ...], _CellStats]
    most: dict[tuple[str, ...], float]
    weightless: dict[tuple[str, ...], str]
    positive: int = 0
    smallest: int = 0
    kept: _Group | None = None  # one group: its documents stay for the second pass


def _cell_numbers(source: groups.Everything | groups.Grouped, config: RebalanceStage, weighting: Weighting) -> _Numbers:
    found = _Numbers({}, {}, {})

    def note(index: int, part: int, group: _Group) -> None:
        source.note_ids(index, group.valid["id"].take(pa.array(group.order, pa.int64())), group.keys, part)
        found.positive += int((group.weights > 0).sum())
        counted = group.tokens[group.tokens > 0]
        found.smallest = min(found.smallest or int(counted.min()), int(counted.min())) if len(counted) else found.smallest

    for index in range(source.groups):
        if not source.whole(index):  # one cell past the bound
            cell = source.cells[index][0]
            found.stats[cell], found.most[cell], message = _stats_in_slices(
                _slices(source, index, config, weighting), cell, source.survey.cells[cell], config,
                lambda part, group, index=index: note(index, part, group))
            if message:
                found.weightless[cell] = message
            continue
        group = _prepare(source.load(index), config, weighting)
        found.kept = group if source.groups == 1 else None
        note(index, 0, group)
        tokens, weights = group.tokens, group.weights
        for cell, (s, e) in group.runs.items():
            high, low = epochs_of(config, cell)
            w, t = weights[s:e], tokens[s:e]
            found.most[cell] = float(np.where(w > 0, high, low) @ t.astype(np.float64))
            found.stats[cell] = _CellStats(float((t * np.where(w > 0, np.clip(w, low, high), 0.0)).sum()), e - s,
                                           int(t.sum()), int(t[w > 0].sum()), int(t.max()) if e > s else 0, int((w > 0).sum()))
            zero = np.flatnonzero(w == 0)
            if low > 0 and len(zero):
                examples = ", ".join(map(str, group.valid["id"].take(pa.array(group.order[s + zero[:3]], pa.int64())).to_pylist()))
                found.weightless[cell] = (f"{cell_name(config.cells, cell)}: {len(zero):,} document(s) of weight 0 with "
                                          f"min_epochs {low} (e.g. {examples})")
    return found


def _solve(source: groups.Everything | groups.Grouped, number: int, config: RebalanceStage, params: dict, output_url: str,
           started: float) -> dict:
    columns = config.cells
    survey = source.survey
    weighting = Weighting(config, params, survey.languages, survey.levels)
    numbers = _cell_numbers(source, config, weighting)
    stats, kept = numbers.stats, numbers.kept
    for ids in source.id_ranges():  # the same id in two groups (cells): each group saw only its own
        _check_unique_ids(pa.table({"id": ids["id"]}))
    _check_countable(sum(numbers.most[cell] for cell in sorted(numbers.most)))
    _check_weightless([numbers.weightless[cell] for cell in sorted(numbers.weightless)])

    targets = resolve(config, {cell: stats[cell].natural for cell in sorted(stats)})
    report, infeasible = [], []
    for target in targets:
        cell = stats.get(target.values, _CellStats(0.0, 0, 0, 0, 0))
        limit = solver.Bounds(cell.counted * target.min_epochs, cell.counted * target.max_epochs)
        state = None if target.natural else ("short" if target.target > limit.high else "over" if target.target < limit.low else None)
        if not cell.documents and state is None:  # a listed value without documents: nothing can fill it, even a zero target
            state = EMPTY
        row = _cell_row(columns, target, limit, cell.documents, cell.unique, state)
        row["largest_document"] = cell.largest  # the most a cut can miss by
        report.append(row)
        if state:
            infeasible.append(row)
    failing = [row for row in infeasible if row["infeasible"] != EMPTY]  # a zero target is met, even by nothing
    if failing and config.on_shortfall == "error":
        raise ValueError("these cells cannot meet their target within their epochs (nothing was written; raise max_epochs, "
                         "lower the targets, or set on_shortfall: report):\n  " + "\n  ".join(map(_describe_shortfall, failing)))

    by_cell = {target.values: (target, row) for target, row in zip(targets, report)}
    written, selected, negative = 0, 0, False
    empty = np.zeros(0, dtype=np.int64)
    for target, row in by_cell.values():
        if target.values not in stats:  # no documents: solved (to nothing) here
            repeats, scale = solver.solve_cell(empty, np.zeros(0), empty.astype(np.uint64), target.target, target.min_epochs,
                                               target.max_epochs, target.natural)
            _fill_achieved(row, repeats, empty, scale)
    for index in range(source.groups):
        if not source.whole(index):  # one cell past the bound, in slices
            cell = source.cells[index][0]
            target, row = by_cell[cell]

            def put(shard_of: np.ndarray, row_of: np.ndarray, repeats: np.ndarray, part: int, index: int = index) -> None:
                source.put(index, shard_of, row_of, repeats, part)

            counts, scale = _solve_in_slices(lambda index=index: _slices(source, index, config, weighting), target,
                                             stats[cell], source.folder, source.block, put)
            _fill_counts(row, counts, scale)
            written, selected = written + counts["achieved"], selected + counts["documents"]
            continue
        group = kept or _prepare(source.load(index), config, weighting)
        repeats_sorted = np.zeros(len(group.order), dtype=np.int64)
        for cell, (s, e) in group.runs.items():
            target, row = by_cell[cell]
            repeats, scale = solver.solve_cell(group.tokens[s:e], group.weights[s:e], group.keys[s:e], target.target,
                                               target.min_epochs, target.max_epochs, target.natural)
            repeats_sorted[s:e] = repeats
            _fill_achieved(row, repeats, group.tokens[s:e], scale)
        written += int((repeats_sorted * group.tokens).sum()) if len(repeats_sorted) else 0
        selected += int((repeats_sorted > 0).sum())
        negative |= bool((repeats_sorted < 0).any())
        # Back to input shards and rows: every row of every shard, 0 for the ones left out.
        repeats_valid = np.zeros(group.valid.num_rows, dtype=np.int64)
        repeats_valid[group.order] = repeats_sorted
        source.put(index, group.valid["shard"].to_numpy(), group.valid["row"].to_numpy(), repeats_valid)
        group = None
    _check_counts(report, written, selected, negative)
    total = sum(row["achieved"] for row in report)
    for row in report:
        row["weight"] = round(row["achieved"] / total, 9) if total else 0.0

    artifacts = [commit_artifact(output_url, repeats_artifact(n), table_to_parquet_bytes(pa.table({"repeats": source.repeats(n)})))
                 for n in range(len(survey.rows_per_shard))]
    unique = sum(cell.unique for cell in stats.values())
    mix = {"tokens": config.count_column, "cells": columns, "seed": config.seed, "budget": config.budget,
           "target_tokens": sum(row["target"] for row in report), "achieved_tokens": total,
           "unique_tokens": unique, "on_shortfall": config.on_shortfall,
           "infeasible": [row["cell"] for row in infeasible], "mix": report,
           **weighting.used(survey.no_cluster_size)}
    artifacts.append(commit_artifact(output_url, MIX, json.dumps(mix, indent=1).encode()))
    documents = sum(cell.documents for cell in stats.values())
    # Step totals are summed counters (numbers only): the report reads the rest from mix.json.
    return commit_shard(number, output_url, pa.Table.from_pylist(report, schema=MIX_SCHEMA), docs_in=survey.documents,
                        artifacts=artifacts, seconds=round(time.perf_counter() - started, 3), mix_cells=len(report),
                        infeasible_cells=len(infeasible), target_tokens=mix["target_tokens"], achieved_tokens=total,
                        unique_tokens=unique, solve_groups=source.groups,
                        solve_sliced_cells=len(source.over_bound),
                        **_degenerate(report, documents, numbers.positive, numbers.smallest, config))


def _degenerate(report: list[dict], documents: int, positive: int, smallest: int, config: RebalanceStage) -> dict:
    """Counters for ``mix_warnings``: what made a mix empty, or left cells with a target unfilled."""
    unfilled = [row for row in report if row["target"] > 0 and row["achieved"] == 0 and not row["infeasible"]]
    return {"mix_documents": documents, "mix_positive_weight_documents": positive,
            "mix_budget": config.budget or 0, "mix_smallest_document": smallest,
            "mix_unfilled_cells": len(unfilled)}


def mix_warnings(totals: dict) -> list[str]:
    """The solve step's warnings (``--strict`` makes them errors): an empty or degenerate mix."""
    found = []
    documents, positive = totals.get("mix_documents", 0), totals.get("mix_positive_weight_documents", 0)
    budget, smallest = totals.get("mix_budget", 0), totals.get("mix_smallest_document", 0)
    if totals.get("achieved_tokens", 0) == 0:
        if not documents:
            why = "no document with a token count reached rebalance"
        elif not positive:
            why = f"none of the {documents:,} documents has a positive weight (quality weights all 0?)"
        elif budget and budget < smallest:
            why = f"budget {budget:,} is smaller than the smallest document ({smallest:,} tokens)"
        else:
            why = "every document has 0 tokens or every target is 0"
        found.append(f"the mix is empty: {why}; nothing is written")
    elif totals.get("mix_unfilled_cells", 0):
        found.append(f"{totals['mix_unfilled_cells']} cell(s) with a target got no document (targets below their smallest "
                     "document?): see mix.json")
    return found


MIX_SCHEMA = pa.schema([
    ("cell", pa.string()), ("values", pa.map_(pa.string(), pa.string())), ("target", pa.int64()), ("achieved", pa.int64()),
    ("shortfall", pa.int64()), ("infeasible", pa.string()), ("natural", pa.bool_()), ("unique_tokens", pa.int64()),
    ("available_documents", pa.int64()), ("documents", pa.int64()), ("copies", pa.int64()),
    ("selected_unique_tokens", pa.int64()), ("epochs", pa.float64()), ("max_repeats", pa.int64()),
    ("max_epochs", pa.int64()), ("min_epochs", pa.int64()), ("max_tokens", pa.int64()), ("min_tokens", pa.int64()),
    ("largest_document", pa.int64()), ("scale", pa.float64()), ("weight", pa.float64()),
])


def _cell_row(columns: list[str], target: CellTarget, limit: solver.Bounds, documents: int, unique: int,
              state: str | None) -> dict[str, Any]:
    return {"cell": cell_name(columns, target.values), "values": dict(zip(columns, target.values)), "target": target.target,
            "natural": target.natural, "infeasible": state, "unique_tokens": unique, "available_documents": documents,
            "max_epochs": target.max_epochs, "min_epochs": target.min_epochs, "max_tokens": limit.high, "min_tokens": limit.low}


def _fill_achieved(row: dict[str, Any], repeats: np.ndarray, tokens: np.ndarray, scale: float) -> None:
    _fill_counts(row, {"achieved": int((repeats * tokens).sum()), "documents": int((repeats > 0).sum()),
                       "copies": int(repeats.sum()), "selected": int(tokens[repeats > 0].sum()),
                       "most": int(repeats.max()) if len(repeats) else 0}, scale)


def _fill_counts(row: dict[str, Any], counts: dict[str, int], scale: float) -> None:
    achieved = counts["achieved"]
    row.update(
        achieved=achieved, shortfall=row["target"] - achieved, documents=counts["documents"], copies=counts["copies"],
        selected_unique_tokens=counts["selected"], max_repeats=counts["most"],
        epochs=round(achieved / row["unique_tokens"], 6) if row["unique_tokens"] else 0.0,
        scale=round(scale, 9) if np.isfinite(scale) else None,
    )
