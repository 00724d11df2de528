"""Seeded samples that depend only on a seed and document ids: each document's key is a hash of
both, and a sample of size k is the k smallest keys. Shards can each keep their own smallest keys
and a reduction takes the global ones; a larger sample with the same seed holds the smaller one.
``pick`` takes candidates in key order while under a cap on documents or tokens (translate's and
rephrase's choices)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import xxhash


def seeded_keys(ids: list[str], seed: int | str) -> np.ndarray:
    """xxh64 of ``"<seed>:<id>"`` per id, as uint64."""
    prefix = f"{seed}:"
    return np.fromiter((xxhash.xxh64_intdigest((prefix + i).encode("utf-8", "surrogatepass")) for i in ids),
                       dtype=np.uint64, count=len(ids))


def pick(table: pa.Table, max_documents: int | None, max_tokens: int | None) -> pa.Table:
    """The candidates in key order while under the caps, then in (shard, row) order."""
    if table.num_rows:
        table = table.sort_by([("key", "ascending"), ("id", "ascending")])
    take = table.num_rows
    if max_documents is not None:
        take = min(take, max_documents)
    if max_tokens is not None and table.num_rows:
        running = np.cumsum(table["tokens"].to_numpy())
        take = min(take, int(np.searchsorted(running, max_tokens, side="right")))
    return table.slice(0, take).sort_by([("shard", "ascending"), ("row", "ascending")])
