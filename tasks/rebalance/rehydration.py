"""FineWeb2's rehydration (papers.md (f), fineweb-datatrove.md §5.8): upsampling weights by
duplicate-cluster size, per language.

Documents whose cluster is of a size that the filter removed less often than the language's
global removal rate are repeated more: the size with the lowest rate gets ``max_weight``, sizes at
or above the global rate 1, linear in between; the weights are smoothed by a centred moving
average (the ``window // 2`` sizes at each end stay raw), rounded (half to even, as numpy does)
and compressed to ``{start_size: weight}`` (a size uses the weight of the last start at or below
it; sizes past the last start use the last weight).

Small samples: a cluster size with fewer than ``min_docs`` documents is merged into the nearest
populated size (ties: the smaller), or, past the last populated size, into a pooled tail (itself
merged into the last size when too small), so no rate rests on a handful of documents. A
language with fewer than ``min_language_docs`` documents or under two populated sizes uses the
fallback table (FineWeb2's README table, or a weights file) and the report says so.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from fineflow import storage
from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard, read_columns

STEP_VERSION = "1"
LIBRARIES = ("numpy", "pyarrow")

# FineWeb2's README (misc/rehydration): N=1 -> 1, 2 -> 2, 3-4 -> 3, 5-99 -> 5, 100-999 -> 8, >= 1000 -> 1.
README_TABLE = {1: 1, 2: 2, 3: 3, 5: 5, 100: 8, 1000: 1}
REPORT = "rehydration.json"


@dataclass
class Curve:
    """One language's weights: ``weights[i]`` for cluster sizes from ``starts[i]``."""

    starts: list[int]
    weights: list[int]
    source: str  # data | readme | file
    reason: str | None = None  # why a fallback was used
    documents: int = 0
    removed: int = 0
    global_removal_rate: float | None = None
    bins: list[dict] = field(default_factory=list)  # data: per merged size, its documents, rate and weight

    def lookup(self, sizes: np.ndarray) -> np.ndarray:
        """Weights for cluster sizes (sizes below the first start take the first weight)."""
        index = np.searchsorted(np.asarray(self.starts), sizes, side="right") - 1
        return np.asarray(self.weights, dtype=np.float64)[np.clip(index, 0, None)]

    @property
    def table(self) -> dict[int, int]:
        return dict(zip(self.starts, self.weights))


def from_table(table: dict, source: str, reason: str | None = None) -> Curve:
    items = sorted((int(start), int(weight)) for start, weight in table.items())
    if not items or any(weight < 0 for _, weight in items):
        raise ValueError(f"a weights table needs {{start_size: weight >= 0}} entries, got {table!r}")
    return Curve([s for s, _ in items], [w for _, w in items], source, reason)


def load_weights_file(url: str) -> dict[str, dict]:
    """A weights file in FineWeb2's format: ``{language: {start_size: weight}}``."""
    try:
        data = json.loads(storage.read_bytes(url))
    except FileNotFoundError:
        raise ValueError(f"rehydration weights file {url} does not exist") from None
    except ValueError as error:
        raise ValueError(f"rehydration weights file {url} is not JSON: {error}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"rehydration weights file {url}: expected {{language: {{start_size: weight}}}}")
    for language, table in data.items():
        try:
            from_table(table, "file")
        except (TypeError, ValueError) as error:
            raise ValueError(f"rehydration weights file {url}: {language}: {error}") from None
    return data


def merge_sizes(sizes: np.ndarray, docs: np.ndarray, removed: np.ndarray, min_docs: int) -> list[dict] | None:
    """Cluster sizes (ascending) pooled into bins of at least ``min_docs`` documents, or None when
    no size has that many. Each bin: its first size, documents and removed documents."""
    populated = np.flatnonzero(docs >= min_docs)
    if not len(populated):
        return None
    last = populated[-1]
    owner = np.empty(len(sizes), dtype=np.int64)  # the populated position each size is merged into
    for position in range(len(sizes)):
        if docs[position] >= min_docs:
            owner[position] = position
            continue
        after = populated[np.searchsorted(populated, position):]
        before = populated[: np.searchsorted(populated, position)]
        if not len(after):
            owner[position] = -1  # past the last populated size: the tail
        elif not len(before):
            owner[position] = after[0]
        else:
            lower, upper = before[-1], after[0]
            owner[position] = lower if sizes[position] - sizes[lower] <= sizes[upper] - sizes[position] else upper
    tail = owner == -1
    if tail.any() and docs[tail].sum() < min_docs:
        owner[tail] = last  # too few to stand alone: part of the last populated size
    bins = []
    for key in [*[int(p) for p in populated], -1]:
        members = np.flatnonzero(owner == key)
        if len(members):
            bins.append({"start": int(sizes[members].min()), "documents": int(docs[members].sum()),
                         "removed": int(removed[members].sum()), "sizes": [int(s) for s in sizes[members]]})
    return sorted(bins, key=lambda b: b["start"])


def repetitions(rates: np.ndarray, global_rate: float, max_weight: int, window: int) -> np.ndarray:
    """FineWeb2's weights from removal rates per bin: interpolated, smoothed, rounded."""
    reps = np.ones(len(rates), dtype=np.float64)
    min_rate = float(rates.min())
    below = rates < global_rate
    if below.any() and min_rate < global_rate:
        reps[below] = 1 + (max_weight - 1) * (rates[below] - global_rate) / (min_rate - global_rate)
    half = window // 2
    smoothed = reps.copy()
    if len(reps) >= window > 1:  # the ends stay raw; shorter curves are all ends
        smoothed[half : len(reps) - half] = np.convolve(reps, np.ones(window) / window, mode="valid")
    return np.round(smoothed).astype(np.int64)


def compress(starts: list[int], weights: np.ndarray) -> dict[int, int]:
    """``{start_size: weight}`` with a key only where the weight changes."""
    table: dict[int, int] = {}
    for start, weight in zip(starts, weights.tolist()):
        if not table or list(table.values())[-1] != weight:
            table[int(start)] = int(weight)
    return table


def data_curve(sizes: np.ndarray, docs: np.ndarray, removed: np.ndarray, settings: dict, fallback: Curve) -> Curve:
    """One language's weights from its documents and removals per cluster size, or the fallback
    (with the reason) when there is not enough data."""
    total, dropped = int(docs.sum()), int(removed.sum())
    global_rate = dropped / total if total else None
    reason = None
    bins = merge_sizes(sizes, docs, removed, settings["min_docs"]) if total else None
    if total < settings["min_language_docs"]:
        reason = f"{total} documents (fewer than min_language_docs {settings['min_language_docs']})"
    elif bins is None or len(bins) < 2:
        reason = f"under two cluster sizes with {settings['min_docs']}+ documents"
    if reason is not None:
        return Curve(fallback.starts, fallback.weights, fallback.source, reason, total, dropped, global_rate)
    rates = np.array([b["removed"] / b["documents"] for b in bins])
    weights = repetitions(rates, global_rate, settings["max_weight"], settings["window"])
    for b, rate, weight in zip(bins, rates.tolist(), weights.tolist()):
        b.update(removal_rate=round(rate, 6), weight=weight)
    table = compress([b["start"] for b in bins], weights)
    return Curve(list(table), list(table.values()), "data", None, total, dropped, global_rate, bins)


def fallback_curve(fallback: str, language: str, files: dict[str, dict] | None, reason: str | None = None) -> Curve:
    """The fixed table for a language: FineWeb2's README table, or its entry in a weights file."""
    if fallback != "readme" and files is not None:
        if language in files:
            return from_table(files[language], "file", reason)
        reason = f"{reason}; " if reason else ""
        return from_table(README_TABLE, "readme", f"{reason}{language} is not in the weights file")
    return from_table(README_TABLE, "readme", reason)


def rehydrate_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    """One task: documents and removals per language and cluster size from the filter stage's
    output and rejects, and each language's weights; ``rehydration.json`` holds it all."""
    started = time.perf_counter()
    column = params["column"]
    counts: Counter = Counter()
    no_size: Counter = Counter()
    for removed, urls in ((0, params["kept"]), (1, params["removed"])):
        for url in urls:
            table = read_columns(url, ["language", column])
            if column not in table.column_names:
                raise ValueError(f"{url} has no {column} column: rehydration needs dedup before the filter stage")
            languages = table["language"].to_pylist()
            for language, size in zip(languages, table[column].to_pylist()):
                language = language or "und"
                if size is None:
                    no_size[language] += 1
                else:
                    counts[(language, int(size), removed)] += 1
    files = load_weights_file(params["fallback"]) if params["fallback"] != "readme" else None
    curves = {}
    for language in sorted({key[0] for key in counts}):
        sizes = np.array(sorted({size for (lang, size, _) in counts if lang == language}), dtype=np.int64)
        docs = np.array([counts[(language, s, 0)] + counts[(language, s, 1)] for s in sizes], dtype=np.int64)
        removed = np.array([counts[(language, s, 1)] for s in sizes], dtype=np.int64)
        curves[language] = data_curve(sizes, docs, removed, params, fallback_curve(params["fallback"], language, files))
    report = {"settings": {k: params[k] for k in ("max_weight", "window", "min_docs", "min_language_docs", "fallback")},
              "languages": {language: asdict(curve) for language, curve in curves.items()},
              "no_cluster_size": dict(no_size)}
    artifact = commit_artifact(output_url, REPORT, json.dumps(report, indent=1).encode())
    rows = [{"language": language, "start_size": start, "weight": weight, "source": curve.source}
            for language, curve in curves.items() for start, weight in zip(curve.starts, curve.weights)]
    table = pa.Table.from_pylist(rows, schema=pa.schema([("language", pa.string()), ("start_size", pa.int64()),
                                                        ("weight", pa.int64()), ("source", pa.string())]))
    return commit_shard(shard["shard"], output_url, table, docs_in=sum(counts.values()) + sum(no_size.values()),
                        artifacts=[artifact], languages_from_data=sum(c.source == "data" for c in curves.values()),
                        languages_fallback=sum(c.source != "data" for c in curves.values()),
                        seconds=round(time.perf_counter() - started, 3))


def load_report(url: str) -> dict[str, Curve]:
    report = json.loads(storage.read_bytes(url))
    return {language: Curve(**curve) for language, curve in report["languages"].items()}
