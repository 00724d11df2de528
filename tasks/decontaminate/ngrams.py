"""Text to hashed word n-grams, the same way for a benchmark item and a document.

Normalization: Unicode NFKC, case folded, punctuation, symbols and control characters become
spaces, whitespace runs collapse; then the language's word splitter
(``fineflow.tasks.text.words``: spaCy, jieba, ... so languages without spaces get words too).
Each word is hashed (xxh3, 64 bits); an n-gram's hash is a polynomial of its words' hashes
(mod 2^64) passed through a 64-bit finalizer, computed for all positions with ``n`` vector
operations instead of a Python loop per n-gram.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import regex
import xxhash

from fineflow.tasks.text.words import default_splitter, load_splitter

# Bump when the normalization or the hashing changes: every index and every scan is rebuilt.
NGRAM_VERSION = "1"
MAX_N = 50
_SEPARATORS = regex.compile(r"[\p{P}\p{S}\p{C}\s]+")
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial's base


def normalize(text: str) -> str:
    return " ".join(_SEPARATORS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def splitter_name(language: str | None, overrides: dict[str, str]) -> str:
    """The word splitter for a language: the configuration's override, else its default."""
    code = language or "und"
    return overrides.get(code) or overrides.get(code.split("-")[0]) or default_splitter(code)


def words(text: str, splitter: str) -> list[str]:
    normalized = normalize(text)
    return load_splitter(splitter)(normalized) if normalized else []


def word_hashes(items: list[str]) -> np.ndarray:
    return np.fromiter((xxhash.xxh3_64_intdigest(w.encode("utf-8")) for w in items), dtype=np.uint64, count=len(items))


def _finalize(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit moves every output bit (the polynomial alone keeps
    its low bits weak)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """The hash of every n-gram of consecutive words (``len - n + 1`` of them; none when fewer words)."""
    count = len(hashes) - n + 1
    if count <= 0:
        return np.empty(0, np.uint64)
    with np.errstate(over="ignore"):
        h = np.zeros(count, np.uint64)
        for k in range(n):
            h = h * _MULTIPLIER + hashes[k : k + count]
        return _finalize(h)
