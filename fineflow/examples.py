"""A few example documents per drop reason (and per change a rewriting stage made), for the run report.

Each shard keeps, per reason, the ``PER_REASON`` rejected documents whose id hashes lowest, and
merging shards keeps the lowest of their union: the same examples however the documents were
sharded or in which order shards finished, in a bounded size (a few hundred characters each).
Text, URL and detail are masked (``fineflow.masking``) before they enter any stats, manifest or
summary: an address is never stored, shown or logged through this path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import pyarrow as pa

from fineflow import storage
from fineflow.masking import MARGIN, mask_pii, masked_excerpt, masked_prefix

PER_REASON = 3
CHARS = 300  # characters of text kept per example
FIELD = "drop_examples"  # the stats key (a list value in stats is always a ranked sample: fineflow.counters)
CHANGE_FIELD = "change_examples"  # {what changed it: [example with before/after]}, e.g. per formatter
CONTEXT = 80  # characters shown before the first change


def rank(doc_id: str) -> str:
    return hashlib.blake2b(str(doc_id).encode(), digest_size=8).hexdigest()


def drop_examples(rejects: pa.Table, per_reason: int = PER_REASON, chars: int = CHARS) -> dict[str, list[dict]]:
    """``{reason: [example]}`` from a rejects table (one with ``drop_reason`` and ``text``); each example
    holds its rank, id, language, URL, detail and the start of its text, masked."""
    names = rejects.column_names
    if not rejects.num_rows or "drop_reason" not in names or "text" not in names or "id" not in names:
        return {}
    chosen: dict[str, list[tuple[str, int]]] = {}
    for row, (doc_id, reason) in enumerate(zip(rejects["id"].to_pylist(), rejects["drop_reason"].to_pylist())):
        chosen.setdefault(reason or "-", []).append((rank(doc_id), row))
    found = {}
    for reason, ranked in sorted(chosen.items()):
        rows = sorted(ranked)[:per_reason]
        picked = rejects.take([row for _, row in rows])
        column = {name: picked[name].to_pylist() if name in names else [None] * picked.num_rows
                  for name in ("id", "language", "url", "drop_detail", "text")}
        found[reason] = [
            {"rank": key, "id": str(column["id"][i]), "language": column["language"][i] or "und",
             "url": masked_prefix(column["url"][i] or "", 500), "detail": masked_prefix(str(column["drop_detail"][i] or ""), 200),
             "text": masked_excerpt(column["text"][i] if isinstance(column["text"][i], str) else "", chars)}
            for i, (key, _) in enumerate(rows)
        ]
    return found


def merge(samples: Iterable[list[dict]], per_reason: int = PER_REASON) -> list[dict]:
    """The lowest-ranked ``per_reason`` examples of several shards' samples of one reason (ties: by id)."""
    seen = {(example["rank"], example["id"]): example for sample in samples for example in sample}
    return [seen[key] for key in sorted(seen)[:per_reason]]


def _widen(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` moved out to whitespace (at most 100 characters each way), so an address at an
    edge of the window is shown whole to the masking, never a part of it that masking cannot tell."""
    low = max(0, start - 100)
    while start > low and not text[start - 1].isspace():
        start -= 1
    high = min(len(text), end + 100)
    while end < high and not text[end].isspace():
        end += 1
    return start, end


def change_example(doc_id: str, language: str | None, before: str, after: str, chars: int = CHARS) -> dict:
    """One changed document: the text around its first change, before and after, each masked
    (``fineflow.masking``: a formatter's replaced address is never shown, nor what replaced it)."""
    prefix = 0
    limit = min(len(before), len(after))
    while prefix < limit and before[prefix] == after[prefix]:
        prefix += 1
    start = max(0, prefix - CONTEXT)

    def excerpt(text: str) -> str:
        low, high = _widen(text, start, min(len(text), start + chars))
        shown = mask_pii(text[low:high])[: chars + MARGIN]
        return ("…" if low else "") + shown + ("…" if high < len(text) else "")

    return {"rank": rank(doc_id), "id": str(doc_id), "language": language or "und",
            "before": excerpt(before), "after": excerpt(after)}


def keep_lowest(sample: list[dict], example_of, doc_id: str, per_reason: int = PER_REASON) -> None:
    """Add the example of ``doc_id`` (built by ``example_of()`` only if it ranks among the lowest
    ``per_reason``) to ``sample``, in place, keeping the lowest ranks."""
    key = rank(doc_id)
    if len(sample) >= per_reason and key >= max(example["rank"] for example in sample):
        return
    sample.append(example_of())
    sample.sort(key=lambda example: (example["rank"], example["id"]))
    del sample[per_reason:]


def artifact_examples(step: dict, label: str, limit: int) -> list[dict]:
    """Side-by-side examples a step committed as ``examples-NNNNN.json`` artifacts (``{group:
    [{field: text}]}``, e.g. per target language or task), the first ``limit``, each with its group
    under ``label`` and its texts masked for the report."""
    found: list[dict] = []
    for url in sorted(u for u in step.get("artifacts", []) if "/examples-" in u):
        try:
            groups = json.loads(storage.read_bytes(url))
        except (FileNotFoundError, ValueError):
            continue
        for group, items in groups.items():
            found += [{label: group, **{k: mask_pii(v) if isinstance(v, str) else v for k, v in item.items()}} for item in items]
        if len(found) >= limit:
            break
    return found[:limit]
