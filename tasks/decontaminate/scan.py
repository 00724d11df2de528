"""decontaminate's document step, ``scan``: each document's n-grams looked up in the index.

Every document gets ``decontam_benchmarks`` (the benchmarks it shares an n-gram with, most
matched first), ``decontam_ngrams`` (its n-gram positions found in the index) and
``decontam_overlap`` (the share of its words inside a matched n-gram), all measured on the text
as it came in. A document is contaminated when it has at least ``min_ngrams`` matched n-grams and
an overlap of at least ``min_overlap``; then, by mode:

- ``drop``: rejected, ``drop_reason`` ``decontaminate:<benchmark>`` (its most matched benchmark);
- ``remove_paragraphs``: the lines (paragraphs) holding a word of a matched n-gram are removed
  and ``decontam_paragraphs_removed`` says how many; a document left with no text is rejected
  as ``decontaminate:<benchmark>:emptied``;
- ``audit``: kept as it is, with the columns.

Words come from the document's language's splitter (its ``language`` column), so a translated
benchmark matches a translated corpus. N-grams run across line breaks: an item split over two
lines is found.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from fineflow.artifacts import commit_artifact
from fineflow.documents import (
    DETAIL_FIELD,
    commit_shard,
    read_input,
    rejects_schema,
    set_columns,
    table_to_parquet_bytes,
    undecodable_rows,
)
from fineflow.tasks.decontaminate.index import load_index
from fineflow.tasks.decontaminate.ngrams import NGRAM_VERSION, ngram_hashes, splitter_name, word_hashes, words

STEP_VERSION = "3." + NGRAM_VERSION  # 3: the items found, per shard
FOUND_SCHEMA = pa.schema([("benchmark", pa.string()), ("item", pa.int64()), ("documents", pa.int64())])
LIBRARIES = ("numpy", "xxhash", "pyarrow")
REASON = "decontaminate"
BENCHMARKS = "decontam_benchmarks"
NGRAMS = "decontam_ngrams"
OVERLAP = "decontam_overlap"
PARAGRAPHS_REMOVED = "decontam_paragraphs_removed"


@dataclass
class Match:
    """What the index says about one document."""

    ngrams: int = 0
    overlap: float = 0.0
    by_benchmark: Counter = field(default_factory=Counter)  # benchmark number -> matched n-gram positions
    paragraphs: dict[int, set[int]] = field(default_factory=dict)  # benchmark number -> lines touched
    lines: set[int] = field(default_factory=set)  # every line touched
    items: set[tuple[int, int]] = field(default_factory=set)  # (benchmark number, item number in it)

    def benchmarks(self) -> list[int]:
        return sorted(self.by_benchmark, key=lambda number: (-self.by_benchmark[number], number))


def match_document(text: str, splitter: str, n: int, index) -> Match:
    lines = text.split("\n")
    per_line = [words(line, splitter) for line in lines]
    line_of = np.repeat(np.arange(len(lines)), [len(w) for w in per_line])
    total = len(line_of)
    grams = ngram_hashes(word_hashes([w for line in per_line for w in line]), n)
    found = index.lookup(grams)
    match = Match()
    if not found:
        return match
    positions = np.array(sorted({position for position, _ in found}))
    covered = np.zeros(total + 1, np.int32)
    np.add.at(covered, positions, 1)
    np.add.at(covered, positions + n, -1)
    inside = np.cumsum(covered[:total]) > 0
    match.ngrams = len(positions)
    match.overlap = float(inside.sum() / total)
    by_position: set[tuple[int, int]] = set()
    for position, item in found:
        number = index.benchmark_of(item)
        match.items.add((number, item - int(index.offsets[number])))
        if (position, number) not in by_position:  # (two items of a benchmark sharing the n-gram: counted once)
            by_position.add((position, number))
            match.by_benchmark[number] += 1
            match.paragraphs.setdefault(number, set()).update(line_of[position : position + n].tolist())
    match.lines = set(np.unique(line_of[inside]).tolist())
    return match


def found_name(shard: int) -> str:
    """The artifact listing the benchmark items a shard's contaminated documents hold (what ``items`` reads)."""
    return f"found-{shard:05d}.parquet"


def remove_lines(text: str, lines: set[int]) -> str:
    return "\n".join(line for number, line in enumerate(text.split("\n")) if number not in lines)


def scan_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    docs = read_input(shard)
    docs, undecodable = undecodable_rows(docs)  # rejected (with their text decoded with U+FFFD: readable)
    index = load_index(params["index"])
    names = index.names
    mode, n = params["mode"], params["n"]
    texts = docs.column("text").to_pylist()
    languages = docs.column("language").to_pylist() if "language" in docs.column_names else [None] * len(texts)

    columns: dict[str, list] = {BENCHMARKS: [], NGRAMS: [], OVERLAP: [], PARAGRAPHS_REMOVED: []}
    reasons: list[str | None] = [None] * len(texts)
    new_texts: list[str | None] = list(texts)
    # per benchmark: documents, paragraphs (lines) and n-grams matched, documents per language
    contamination: dict[str, dict] = {name: {"documents": 0, "paragraphs": 0, "ngrams_matched": 0, "languages": Counter()} for name in names}
    counts: Counter = Counter()
    found_items: Counter = Counter()  # (benchmark, item) -> contaminated documents holding it
    for row, (text, language) in enumerate(zip(texts, languages)):
        if row in undecodable:
            reasons[row] = f"{REASON}:undecodable"
            columns[BENCHMARKS].append([])
            columns[NGRAMS].append(0)
            columns[OVERLAP].append(0.0)
            columns[PARAGRAPHS_REMOVED].append(0)
            continue
        splitter = splitter_name(language, params["word_splitters"])
        match = match_document(text or "", splitter, n, index)
        contaminated = match.ngrams >= params["min_ngrams"] and match.overlap >= params["min_overlap"] and match.ngrams > 0
        ordered = match.benchmarks()
        columns[BENCHMARKS].append([names[number] for number in ordered])
        columns[NGRAMS].append(match.ngrams)
        columns[OVERLAP].append(round(match.overlap, 4))
        removed = 0
        if contaminated:
            counts["documents_contaminated"] += 1
            for number in ordered:
                found = contamination[names[number]]
                found["documents"] += 1
                found["paragraphs"] += len(match.paragraphs[number])
                found["ngrams_matched"] += match.by_benchmark[number]
                found["languages"][language or "und"] += 1
            found_items.update((names[number], item) for number, item in match.items)
            top = names[ordered[0]]
            if mode == "drop":
                reasons[row] = f"{REASON}:{top}"
                counts["documents_dropped"] += 1
            elif mode == "remove_paragraphs":
                removed = len(match.lines)
                new_texts[row] = remove_lines(text, match.lines)
                counts["paragraphs_removed"] += removed
                if not new_texts[row].strip():
                    reasons[row] = f"{REASON}:{top}:emptied"
                    new_texts[row] = text  # the rejects keep the document as it came
                    counts["documents_emptied"] += 1
                else:
                    counts["documents_rewritten"] += 1
        columns[PARAGRAPHS_REMOVED].append(removed)

    added = {
        BENCHMARKS: pa.array(columns[BENCHMARKS], pa.list_(pa.string())),
        NGRAMS: pa.array(columns[NGRAMS], pa.int32()),
        OVERLAP: pa.array(columns[OVERLAP], pa.float32()),
    }
    if mode == "remove_paragraphs":
        added[PARAGRAPHS_REMOVED] = pa.array(columns[PARAGRAPHS_REMOVED], pa.int32())
        added["text"] = pa.array(new_texts, pa.string())
    table = _with_columns(docs, added)
    keep = pa.array([reason is None for reason in reasons], pa.bool_())
    kept = table.filter(keep)
    rejected = [row for row, reason in enumerate(reasons) if reason]
    # drop_detail always (an input read from another stage's rejects has one: it is replaced)
    rejects = set_columns(table.take(pa.array(rejected, pa.int64())),
                          {"drop_reason": pa.array([reasons[row] for row in rejected], pa.string()),
                           DETAIL_FIELD.name: pa.array([undecodable.get(row) for row in rejected], DETAIL_FIELD.type)})
    rejects = rejects.cast(rejects_schema(kept.schema, detail=True))
    listed = pa.Table.from_pylist([{"benchmark": name, "item": item, "documents": documents}
                                   for (name, item), documents in sorted(found_items.items())], schema=FOUND_SCHEMA)
    artifact = commit_artifact(output_url, found_name(shard["shard"]), table_to_parquet_bytes(listed))
    return commit_shard(
        shard["shard"], output_url, kept, rejects_url, rejects, artifacts=[artifact],
        drop_reasons=dict(sorted(Counter(reason for reason in reasons if reason).items())),
        contamination={name: {**found, "languages": dict(sorted(found["languages"].items()))} for name, found in contamination.items()},
        undecodable=len(undecodable),
        **{key: value for key, value in sorted(counts.items())},
        seconds=round(time.perf_counter() - started, 3),
    )


def _with_columns(docs: pa.Table, added: dict[str, pa.Array]) -> pa.Table:
    """The documents with the step's columns; ``text`` replaced where it was (its place in the schema kept)."""
    if "text" in added:
        position = docs.schema.get_field_index("text")
        docs = docs.set_column(position, docs.schema.field("text"), added.pop("text"))
    return set_columns(docs, added)
