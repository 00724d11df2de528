"""quality's ``sample`` step (map): each shard's candidates for annotation and for training.

Every document gets a key, a hash of a seed and its id; a sample of size k of a group (a
language, a class) is the k documents of smallest key over the whole input. Each shard keeps its
own k smallest per group (the global choice is always among them); the reduction steps take the
global k smallest. So a sample depends only on the seed and the ids, never on shard order, and a
larger or later sample with the same seed contains the smaller one: already annotated documents
are answered from the LLM cache.

Rows: purpose (``annotate`` or a classifier's name), group (a language, ``pos``/``neg``, or
``all``), key, id, language, url, text (cut to the purpose's character limit), label (a
classifier's numeric label, when it comes from the input).
"""

from __future__ import annotations

import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_input, undecodable_rows
from fineflow.tasks.text.sampling import seeded_keys as keys

STEP_VERSION = "1"
LIBRARIES = ("xxhash", "pyarrow")

SAMPLE_SCHEMA = pa.schema([
    ("purpose", pa.string()),
    ("group", pa.string()),
    ("key", pa.uint64()),
    ("id", pa.string()),
    ("language", pa.string()),
    ("url", pa.string()),
    ("text", pa.string()),
    ("label", pa.float64()),
])


class LabelError(ValueError):
    pass


def smallest(table: pa.Table, k: int, by: list[str] | None = None) -> pa.Table:
    """The k rows of smallest key in each group of ``by`` (columns), in key order."""
    if table.num_rows == 0:
        return table
    table = table.sort_by([("key", "ascending")])
    if not by:
        return table.slice(0, k)
    groups = pc.binary_join_element_wise(*[pc.cast(table[c], pa.string()).fill_null("") for c in by], "\x1f") \
        if len(by) > 1 else pc.cast(table[by[0]], pa.string()).fill_null("")
    seen: dict[str, int] = {}
    take = []
    for index, group in enumerate(groups.to_pylist()):
        if seen.get(group, 0) < k:
            seen[group] = seen.get(group, 0) + 1
            take.append(index)
    return table.take(pa.array(take, pa.int64()))


def _rows(purpose: str, group: list[str], key: np.ndarray, docs: pa.Table, max_chars: int,
          label: list[float | None] | None = None) -> pa.Table:
    text = pc.utf8_slice_codeunits(docs["text"].cast(pa.string()), 0, max_chars)
    return pa.table({
        "purpose": pa.array([purpose] * docs.num_rows, pa.string()),
        "group": pa.array(group, pa.string()),
        "key": pa.array(key, pa.uint64()),
        "id": docs["id"].cast(pa.string()),
        "language": docs["language"].cast(pa.string()) if "language" in docs.column_names else pa.nulls(docs.num_rows, pa.string()),
        "url": docs["url"].cast(pa.string()) if "url" in docs.column_names else pa.nulls(docs.num_rows, pa.string()),
        "text": text,
        "label": pa.array(label if label is not None else [None] * docs.num_rows, pa.float64()),
    }, schema=SAMPLE_SCHEMA)


def numeric_labels(docs: pa.Table, column: str) -> list[float | None]:
    if column not in docs.column_names:
        raise LabelError(f"labels.column: the input has no column {column!r} (columns: {', '.join(docs.column_names)})")
    values = docs[column]
    if pa.types.is_boolean(values.type):
        values = pc.cast(values, pa.float64())
    elif not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        raise LabelError(f"labels.column {column!r} is {values.type}: a label column holds numbers or booleans")
    return pc.cast(values, pa.float64()).to_pylist()


def url_matches(docs: pa.Table, pattern: str) -> list[bool]:
    compiled = re.compile(pattern)
    urls = docs["url"].to_pylist() if "url" in docs.column_names else [None] * docs.num_rows
    return [bool(url and compiled.search(url)) for url in urls]


def classifier_rows(name: str, spec: dict, docs: pa.Table) -> pa.Table:
    """The shard's candidates for training classifier ``name`` (labels taken from the input)."""
    labels = spec["labels"]
    key = keys(docs["id"].cast(pa.string()).to_pylist(), f"{spec['seed']}:{name}")
    if labels.get("column"):
        values = numeric_labels(docs, labels["column"])
        group = [None if v is None else ("pos" if v >= spec["positive_from"] else "neg") for v in values]
    else:
        positive, negative = labels["positives"], labels["negatives"]
        is_pos = url_matches(docs, positive["url"]) if positive.get("url") else [False] * docs.num_rows
        if negative.get("url"):
            is_neg = [not p and m for p, m in zip(is_pos, url_matches(docs, negative["url"]))]
        elif negative.get("rest"):
            is_neg = [not p for p in is_pos]
        else:
            is_neg = [False] * docs.num_rows
        group = ["pos" if p else "neg" if n else None for p, n in zip(is_pos, is_neg)]
        values = [1.0 if g == "pos" else 0.0 if g == "neg" else None for g in group]
    mask = pa.array([g is not None for g in group], pa.bool_())
    rows = _rows(name, group, key, docs, spec["max_chars"], values).filter(mask)
    return smallest(rows, spec["max_per_class"], ["group"])


def sample_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    docs, undecodable = undecodable_rows(read_input(shard))
    if undecodable:  # not valid UTF-8: never shown to an LLM or trained on (decide rejects it)
        docs = docs.filter(pa.array([row not in undecodable for row in range(docs.num_rows)], pa.bool_()))
    no_text = pc.sum(pc.is_null(docs["text"])).as_py() or 0
    if no_text:  # nothing to show an LLM or train on: counted, never sampled
        docs = docs.filter(pc.invert(pc.is_null(docs["text"])))
    parts = [SAMPLE_SCHEMA.empty_table()]
    annotate = params.get("annotate")
    if annotate is not None and docs.num_rows:
        chosen = docs
        languages = annotate.get("languages")
        if languages and "language" in docs.column_names:
            chosen = docs.filter(pc.is_in(docs["language"], pa.array(languages, pa.string())))
        lang = chosen["language"].to_pylist() if "language" in chosen.column_names else [None] * chosen.num_rows
        group = [(code or "und") if annotate["per_language"] else "all" for code in lang]
        key = keys(chosen["id"].cast(pa.string()).to_pylist(), annotate["seed"])
        parts.append(smallest(_rows("annotate", group, key, chosen, annotate["max_chars"]), annotate["sample_size"], ["group"]))
    for name, spec in sorted(params.get("classifiers", {}).items()):
        if docs.num_rows:
            parts.append(classifier_rows(name, spec, docs))
    sample = pa.concat_tables(parts)
    by_purpose = {}
    for purpose, group in zip(sample["purpose"].to_pylist(), sample["group"].to_pylist()):
        by_purpose.setdefault(purpose, {}).setdefault(group, 0)
        by_purpose[purpose][group] += 1
    return commit_shard(shard["shard"], output_url, sample, docs_in=docs.num_rows + no_text + len(undecodable),
                        sampled=by_purpose, skips={k: v for k, v in (("no_text", no_text), ("undecodable", len(undecodable))) if v},
                        seconds=round(time.perf_counter() - started, 3))
