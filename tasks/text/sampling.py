"""Seeded samples that depend only on a seed and document ids: each document's key is a hash of
both, and a sample of size k is the k smallest keys. Shards can each keep their own smallest keys
and a reduction takes the global ones; a larger sample with the same seed holds the smaller one."""

from __future__ import annotations

import numpy as np
import xxhash


def seeded_keys(ids: list[str], seed: int | str) -> np.ndarray:
    """xxh64 of ``"<seed>:<id>"`` per id, as uint64."""
    prefix = f"{seed}:"
    return np.fromiter((xxhash.xxh64_intdigest((prefix + i).encode("utf-8", "surrogatepass")) for i in ids),
                       dtype=np.uint64, count=len(ids))
