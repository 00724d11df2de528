"""Word splitting per language, done once per document and shared by every filter.

Whitespace languages use spaCy's rule-based tokenizer for that language (what datatrove uses
since 0.3, so word counts and n-grams match FineWeb's current code); Chinese uses jieba;
Thai, Japanese and Korean use pythainlp, SudachiPy and Kiwi when those optional packages are
installed (``pip install fineflow[segmenters]``) and otherwise fall back to one word per
character for scripts written without spaces. A splitter returns the words with their
character offsets, so per-line rules (C4's sentence count) reuse the same split.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

import regex


@dataclass(frozen=True)
class Words:
    texts: list[str]
    starts: list[int]

    def __len__(self) -> int:
        return len(self.texts)


Splitter = Callable[[str], Words]

_NO_SPACE_SCRIPTS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}"
_CHAR_WORDS = regex.compile(rf"[{_NO_SPACE_SCRIPTS}]|[^\s{_NO_SPACE_SCRIPTS}\p{{P}}]+|\p{{P}}")
_lock = threading.Lock()

OPTIONAL_SEGMENTERS = {"thai": "pythainlp", "sudachi": "sudachipy", "kiwi": "kiwipiepy"}
# Languages whose spaCy tokenizer needs a package fineflow does not install.
_SPACY_NEEDS_EXTRA = {"ja", "ko", "th", "vi", "zh"}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# spaCy tokenizes each whitespace-delimited chunk on its own (prefixes, suffixes, infixes,
# exceptions), so the split of a chunk can be cached: web text repeats its chunks, and a dict
# lookup is much cheaper than a call into the tokenizer. Past this many entries the cache (and
# spaCy's vocabulary, which grows with every new string) starts afresh, bounding memory.
SPACY_CACHE_LIMIT = 500_000
_CHUNKS = re.compile(r"\S+")


def _spacy_splitter(code: str) -> Splitter:
    import spacy
    from spacy.attrs import IDX, LENGTH

    def build():
        with _lock:
            return spacy.blank(code)

    state = {"nlp": build(), "cache": {}}

    def pieces_of(chunk: str) -> tuple[tuple[int, int], ...]:
        nlp = state["nlp"]
        nlp.max_length = len(chunk) + 1  # tokenizer only: no parser memory to protect
        return tuple((start, length) for start, length in nlp.tokenizer(chunk).to_array([IDX, LENGTH]).tolist())

    def split(text: str) -> Words:
        cache: dict[str, tuple] = state["cache"]
        texts: list[str] = []
        starts: list[int] = []
        for match in _CHUNKS.finditer(text):
            chunk = match.group()
            pieces = cache.get(chunk)
            if pieces is None:
                pieces = cache[chunk] = pieces_of(chunk)
            base = match.start()
            if len(pieces) == 1:
                texts.append(chunk)
                starts.append(base)
            else:
                for start, length in pieces:
                    texts.append(chunk[start : start + length])
                    starts.append(base + start)
        if len(cache) > SPACY_CACHE_LIMIT:
            state["nlp"], state["cache"] = build(), {}
        return Words(texts, starts)

    return split


def _jieba_splitter() -> Splitter:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    with _lock:
        tokenizer.initialize()

    def split(text: str) -> Words:
        texts, starts = [], []
        for word, start, _ in tokenizer.tokenize(text):
            stripped = word.strip()
            if stripped:
                texts.append(stripped)
                starts.append(start + word.index(stripped[0]))
        return Words(texts, starts)

    return split


def _thai_splitter() -> Splitter:
    from pythainlp.tokenize import word_tokenize

    def split(text: str) -> Words:
        return _with_offsets(text, word_tokenize(text, keep_whitespace=False, engine="newmm-safe"))

    return split


def _sudachi_splitter() -> Splitter:
    from sudachipy import Dictionary, SplitMode

    tokenizer = Dictionary().tokenizer(mode=SplitMode.A)

    def split(text: str) -> Words:
        # Sudachi refuses inputs over ~49 kB: tokenize line by line.
        words = [m.surface() for line in text.splitlines() for m in tokenizer.tokenize(line[:16000])]
        return _with_offsets(text, words)

    return split


def _kiwi_splitter() -> Splitter:
    from kiwipiepy import Kiwi

    kiwi = Kiwi()

    def split(text: str) -> Words:
        # Surface forms (substrings of the text), not Kiwi's normalized morphemes; morphemes that
        # share characters (이 + ㅂ니다 in 입니다) merge into one word.
        spans: list[list[int]] = []
        for token in kiwi.tokenize(text):
            start, end = token.start, token.start + token.len
            if spans and start < spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
        kept = [(a, b) for a, b in spans if text[a:b].strip()]
        return Words([text[a:b] for a, b in kept], [a for a, _ in kept])

    return split


def _char_splitter(text: str) -> Words:
    texts, starts = [], []
    for match in _CHAR_WORDS.finditer(text):
        texts.append(match.group())
        starts.append(match.start())
    return Words(texts, starts)


def _with_offsets(text: str, words: list[str]) -> Words:
    texts, starts = [], []
    position = 0
    for word in words:
        word = word.strip()
        if not word:
            continue
        found = text.find(word, position)
        start = found if found >= 0 else position
        texts.append(word)
        starts.append(start)
        position = start + len(word) if found >= 0 else position
    return Words(texts, starts)


def base_language(language: str) -> str:
    return (language or "und").split("-")[0].lower()


@lru_cache(maxsize=None)
def _spacy_has(code: str) -> bool:
    return _installed(f"spacy.lang.{code}")


def default_splitter(language: str) -> str:
    """The splitter a language gets unless the configuration names another."""
    base = base_language(language)
    if base == "zh":
        return "jieba"
    if base == "ja":
        return "sudachi" if _installed("sudachipy") else "chars"
    if base == "th":
        return "thai" if _installed("pythainlp") else "chars"
    if base == "ko":
        return "kiwi" if _installed("kiwipiepy") else "spacy:xx"
    if base in ("lo", "km", "my", "bo"):
        return "chars"
    if base == "no":
        return "spacy:nb"  # spaCy names Norwegian by its written standard, Bokmål
    if base not in _SPACY_NEEDS_EXTRA and _spacy_has(base):
        return f"spacy:{base}"
    return "spacy:xx"


@lru_cache(maxsize=None)
def load_splitter(name: str) -> Splitter:
    """Build a splitter once per worker process (spaCy and jieba load dictionaries)."""
    if name.startswith("spacy:"):
        return _spacy_splitter(name.split(":", 1)[1])
    if name == "jieba":
        return _jieba_splitter()
    if name == "chars":
        return _char_splitter
    builders = {"thai": _thai_splitter, "sudachi": _sudachi_splitter, "kiwi": _kiwi_splitter}
    if name in builders:
        if not _installed(OPTIONAL_SEGMENTERS[name]):
            raise ValueError(f"word splitter {name!r} needs the {OPTIONAL_SEGMENTERS[name]} package")
        return builders[name]()
    raise ValueError(f"unknown word splitter {name!r}: use spacy:<code>, jieba, chars, thai, sudachi or kiwi")


def splitter_versions() -> dict[str, str]:
    """Versions of every segmenting library present: they decide the words, so the signals' fingerprint."""
    versions = {}
    for package in ("spacy", "jieba", "regex", *OPTIONAL_SEGMENTERS.values()):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "absent"
    return versions
