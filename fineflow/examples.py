"""A few example documents per drop reason, for the run report.

Each shard keeps, per reason, the ``PER_REASON`` rejected documents whose id hashes lowest, and
merging shards keeps the lowest of their union: the same examples however the documents were
sharded or in which order shards finished, in a bounded size (a few hundred characters each).
Text, URL and detail are masked (``fineflow.masking``) before they enter any stats, manifest or
summary: an address is never stored, shown or logged through this path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pyarrow as pa

from fineflow.masking import mask_pii, masked_excerpt

PER_REASON = 3
CHARS = 300  # characters of text kept per example
FIELD = "drop_examples"  # the stats key (a list value in stats is always a ranked sample: fineflow.counters)


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
             "url": mask_pii(column["url"][i] or ""), "detail": mask_pii(str(column["drop_detail"][i] or ""))[:200],
             "text": masked_excerpt(column["text"][i] if isinstance(column["text"][i], str) else "", chars)}
            for i, (key, _) in enumerate(rows)
        ]
    return found


def merge(samples: Iterable[list[dict]], per_reason: int = PER_REASON) -> list[dict]:
    """The lowest-ranked ``per_reason`` examples of several shards' samples of one reason (ties: by id)."""
    seen = {(example["rank"], example["id"]): example for sample in samples for example in sample}
    return [seen[key] for key in sorted(seen)[:per_reason]]
