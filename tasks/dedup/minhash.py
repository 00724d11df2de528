"""MinHash signatures that reproduce datatrove's bit for bit, and their LSH band keys.

Shingles are word n-grams of the normalized text joined with single spaces, hashed with xxh64
(datatrove's default; ``sha1`` takes the first 8 bytes of SHA-1, little-endian, as FineWeb
did). Each of ``num_perm`` permutations is ``(h * a + b) mod (2^61 - 1)`` computed in uint64
that wraps on the multiply, as datasketch and datatrove do, with ``a`` and ``b`` drawn from
``numpy.random.RandomState(seed)``. The signature is the minimum per permutation; it is cut
into ``bands`` bands of ``rows`` values, and each band becomes one 64-bit key (xxh64 of its
bytes, seeded by the band number) for grouping.

With ``shingles="chars"`` (Nemotron-CC's choice: 24 characters) a shingle is instead every run
of ``n_grams`` consecutive characters (code points) of the same normalized text, spaces
included, hashed the same way; repeated shingles are hashed once into the signature (the
minimum does not change), which keeps long repetitive texts cheap.

Documents with fewer than ``n_grams`` words (characters) get no signature and are never
near-duplicates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import xxhash

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
_CHUNK = 4096  # shingles per block: bounds the (shingles x permutations) matrix to a few MB


@dataclass(frozen=True)
class MinHashSpec:
    n_grams: int = 5
    bands: int = 14
    rows: int = 8
    seed: int = 1
    hash_function: str = "xxhash"
    shingles: str = "words"

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    @cached_property
    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        generator = np.random.RandomState(self.seed)
        a = generator.randint(1, MERSENNE_PRIME, dtype=np.uint64, size=(1, self.num_perm))
        b = generator.randint(0, MERSENNE_PRIME, dtype=np.uint64, size=(1, self.num_perm))
        return a, b


def _hash64(shingle: str, function: str) -> int:
    if function == "xxhash":
        return xxhash.xxh64_intdigest(shingle.encode("utf-8"))
    return int.from_bytes(hashlib.sha1(shingle.encode("utf-8")).digest()[:8], "little")


def shingle_hashes(words: list[str], spec: MinHashSpec) -> np.ndarray:
    n = spec.n_grams
    count = len(words) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    return np.fromiter(
        (_hash64(" ".join(words[i : i + n]), spec.hash_function) for i in range(count)), dtype=np.uint64, count=count
    )


def char_shingle_hashes(text: str, spec: MinHashSpec) -> np.ndarray:
    """The distinct hashes of every ``n_grams``-character window of ``text``."""
    n = spec.n_grams
    count = len(text) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    function = spec.hash_function
    hashes = np.fromiter((_hash64(text[i : i + n], function) for i in range(count)), dtype=np.uint64, count=count)
    return np.unique(hashes)


def signature(hashes: np.ndarray, spec: MinHashSpec) -> np.ndarray | None:
    """The ``num_perm`` minimum permuted hashes, or None without shingles."""
    if hashes.size == 0:
        return None
    a, b = spec.permutations
    result = np.full(spec.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, hashes.size, _CHUNK):
            block = hashes[start : start + _CHUNK].reshape(-1, 1)
            np.minimum(result, ((block * a + b) % MERSENNE_PRIME).min(axis=0), out=result)
    return result


def band_keys(sig: np.ndarray, spec: MinHashSpec) -> list[int]:
    """One 64-bit key per band: equal keys mean the band's ``rows`` values are equal."""
    bands = sig.reshape(spec.bands, spec.rows)
    return [xxhash.xxh64_intdigest(bands[i].tobytes(), seed=i) for i in range(spec.bands)]


def bands_for_threshold(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimizing false positives and negatives around a Jaccard ``threshold`` (datasketch's choice)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r
