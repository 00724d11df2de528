"""format's one step, ``format`` (map, the document step): every document's text through the
configured formatters in order.

Kept documents get the rewritten ``text``, ``formatted_by`` (the formatters that changed it, in
order) and each formatter's count columns (``pii_emails``, ``symbol_lines``, ...; a second format
stage replaces them). Rejects: ``format:<reason>`` where a formatter turns a document away (e.g.
``format:pii_matches``), with the text as the formatters left it (PII replaced, not the
original), and ``format:undecodable`` for a text that is not UTF-8. Per formatter and language:
kept documents changed and characters changed, and a few of the changes (before/after, around the
first change, addresses masked), for the summary and the report.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from functools import partial

import pyarrow as pa

from fineflow import examples
from fineflow.documents import DETAIL_FIELD, commit_shard, read_input, rejects_schema, set_columns, undecodable_rows
from fineflow.tasks.format import formatters

STEP_VERSION = "2"  # 2: a few changes per formatter, before/after (masked), for the report
LIBRARIES = ("pyarrow", "ftfy")


def changed_span(before: str, after: str) -> int:
    """Characters of ``before`` from its first to its last character that ``after`` changed (at
    least 1 where only something was inserted): a formatter's edit size where it cannot count its own."""
    if before == after:
        return 0
    limit = min(len(before), len(after))
    low, high = 0, limit  # the longest common prefix, by slice comparisons (C speed on long texts)
    while low < high:
        middle = (low + high + 1) // 2
        if before[:middle] == after[:middle]:
            low = middle
        else:
            high = middle - 1
    prefix = low
    low, high = 0, limit - prefix
    while low < high:
        middle = (low + high + 1) // 2
        if before[len(before) - middle:] == after[len(after) - middle:]:
            low = middle
        else:
            high = middle - 1
    return max(len(before) - prefix - low, 1)


class Chain:
    """The configured formatters, each loaded once per shard."""

    def __init__(self, specs: list[dict]) -> None:
        self.formatters = []
        for spec in specs:
            formatter = formatters.get(spec["name"], spec.get("module"))
            self.formatters.append((formatter, formatter.load(spec["options"])))
        self.columns = list(dict.fromkeys(column for formatter, _ in self.formatters for column in formatter.counts))

    def run(self, text: str) -> tuple[str, list[tuple[str, int, str, str]], dict[str, int], str | None]:
        """(new text, [(formatter that changed it, characters changed, its input, its output)], counts, reject reason)."""
        changed: list[tuple[str, int, str, str]] = []
        counts: dict[str, int] = {}
        for formatter, loaded in self.formatters:
            applied = formatter.apply(loaded, text)
            counts.update(applied.counts)
            if applied.text != text:
                chars = applied.chars if applied.chars is not None else changed_span(text, applied.text)
                changed.append((formatter.name, chars, text, applied.text))
                text = applied.text
            if applied.reject:
                return text, changed, counts, f"format:{applied.reject}"
        return text, changed, counts, None


def format_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    documents, undecodable = undecodable_rows(read_input(shard))
    chain = Chain(params["formatters"])
    texts = documents.column("text").to_pylist() if "text" in documents.column_names else [None] * documents.num_rows
    languages = documents.column("language").to_pylist() if "language" in documents.column_names else [None] * documents.num_rows

    new_texts: list[str | None] = []
    formatted_by: list[list[str]] = []
    counts: dict[str, list[int]] = {column: [] for column in chain.columns}
    reasons: list[str | None] = []
    details: list[str | None] = []
    # formatter -> language -> {"documents": n, "chars": n}: merged across shards key by key
    formatted: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    shown: dict[str, list[dict]] = defaultdict(list)  # formatter -> a few changes, before/after, masked
    ids = documents.column("id").to_pylist() if "id" in documents.column_names else [str(row) for row in range(documents.num_rows)]
    for row, (text, language) in enumerate(zip(texts, languages)):
        if row in undecodable or text is None:
            new_texts.append(text)
            formatted_by.append([])
            for column in counts:
                counts[column].append(0)
            reasons.append("format:undecodable" if row in undecodable else None)
            details.append(undecodable.get(row))
            continue
        text, changed, found, reason = chain.run(text)
        new_texts.append(text)
        formatted_by.append([name for name, *_ in changed])
        for column in counts:
            counts[column].append(found.get(column, 0))
        reasons.append(reason)
        details.append(None)
        if reason is not None:
            continue  # counted under its drop reason, not as a change to the corpus
        for name, chars, before, after in changed:
            tally = formatted[name][language or "und"]
            tally["documents"] += 1
            tally["chars"] += chars
            examples.keep_lowest(shown[name], partial(examples.change_example, ids[row], language, before, after), str(ids[row]))

    table = documents
    if "text" in table.column_names:  # in its place among the columns
        table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(new_texts, pa.string()))
    table = set_columns(table, {
        "formatted_by": pa.array(formatted_by, pa.list_(pa.string())),
        **{column: pa.array(values, pa.int32()) for column, values in counts.items()},
    })
    keep = pa.array([reason is None for reason in reasons], pa.bool_())
    rejected = [row for row, reason in enumerate(reasons) if reason is not None]
    kept = table.filter(keep)
    rejects = set_columns(table.take(pa.array(rejected, pa.int64())), {
        "drop_reason": pa.array([reasons[row] for row in rejected], pa.string()),
        DETAIL_FIELD.name: pa.array([details[row] for row in rejected], DETAIL_FIELD.type),
    }).cast(rejects_schema(kept.schema, detail=True))
    by_reason = Counter(reason for reason in reasons if reason)
    by_language: dict[str, Counter] = defaultdict(Counter)
    for language, reason in zip(languages, reasons):
        if reason:
            by_language[language or "und"][reason] += 1
    return commit_shard(
        shard["shard"], output_url, kept, rejects_url, rejects,
        formatted={name: {lang: dict(tally) for lang, tally in sorted(per.items())} for name, per in formatted.items()},
        drop_reasons=dict(sorted(by_reason.items())),
        **({examples.CHANGE_FIELD: dict(sorted(shown.items()))} if shown else {}),
        drops_by_language={lang: dict(sorted(c.items())) for lang, c in sorted(by_language.items())},
        seconds=round(time.perf_counter() - started, 3),
    )
