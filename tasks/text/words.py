"""Word splitting per language, done once per document and shared by every filter.

Whitespace languages use spaCy's rule-based tokenizer for that language (what datatrove uses
since 0.3, so word counts and n-grams match FineWeb's current code); Chinese uses jieba;
Thai, Japanese and Korean use pythainlp, SudachiPy and Kiwi when those optional packages are
installed (``pip install fineflow[segmenters]``) and otherwise fall back to one word per
character for scripts written without spaces. A splitter returns the words in order; C4
splits each kept line with the same splitter (cheap: spaCy's split is cached per
whitespace-delimited chunk).
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections.abc import Callable
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from itertools import chain
from pathlib import Path

import regex

Splitter = Callable[[str], list[str]]

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
_ONE_AFFIX = re.compile(r"([(\[]?)([^\W\d_]+)([,;:!?)\]]?)")


def _spacy_splitter(code: str) -> Splitter:
    import spacy

    from fineflow.tasks.text.spacy_affixes import affix_splitter

    def build():
        with _lock:
            return spacy.blank(code)

    nlp = build()
    # A chunk of letters only that is no special case comes out of spaCy as itself: no prefix,
    # suffix or infix rule of any language matches letters alone; with one opening bracket before
    # and/or one of , ; : ! ? ) ] after, those split off (checked on every such chunk of the
    # web-small crawl, 24 languages, and in the tests). spaCy is skipped for both shapes.
    special = frozenset(nlp.tokenizer.rules or ())
    # Other chunks: spaCy's own affix rules, run on strings (spacy_affixes.py); spaCy itself
    # where a special case may apply.
    affixes = affix_splitter(nlp.tokenizer) or (lambda chunk: None)

    class Pieces(dict):
        """chunk -> its tokens; a miss computes them (``dict.__getitem__`` stays in C for hits)."""

        def __missing__(self, chunk: str) -> tuple[str, ...]:
            affixed = None if chunk.isalpha() else _ONE_AFFIX.fullmatch(chunk)
            if chunk.isalpha() and chunk not in special:
                pieces: tuple[str, ...] = (chunk,)
            elif affixed and affixed[2].isalpha() and chunk not in special and affixed[2] not in special:
                pieces = tuple(part for part in affixed.groups() if part)
            else:
                pieces = affixes(chunk)  # type: ignore[assignment]
                if pieces is None:
                    nlp.max_length = len(chunk) + 1  # tokenizer only: no parser memory to protect
                    pieces = tuple(token.text for token in nlp.tokenizer(chunk))
            self[chunk] = pieces
            return pieces

    state = {"cache": Pieces()}

    def split(text: str) -> list[str]:
        cache = state["cache"]
        # str.isspace() boundaries, as spaCy's; map/chain keep the per-word loop in C
        words = list(chain.from_iterable(map(cache.__getitem__, text.split())))
        if len(cache) > SPACY_CACHE_LIMIT:
            state["cache"] = Pieces()  # (spaCy's vocabulary grows too: a fresh pipeline below)
            nonlocal nlp
            nlp = build()
        return words

    return split


def _stripped(words) -> list[str]:
    return [w for w in (word.strip() for word in words) if w]


def _jieba_splitter() -> Splitter:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    with _lock:
        tokenizer.initialize()
    return lambda text: _stripped(tokenizer.lcut(text))


def _thai_splitter() -> Splitter:
    from pythainlp.tokenize import word_tokenize

    return lambda text: _stripped(word_tokenize(text, keep_whitespace=False, engine="newmm-safe"))


def _sudachi_splitter() -> Splitter:
    from sudachipy import Dictionary, SplitMode

    tokenizer = Dictionary().tokenizer(mode=SplitMode.A)
    # Sudachi refuses inputs over ~49 kB: tokenize line by line, long lines in 16k-character
    # pieces (at most 48 kB of UTF-8). Some dictionary entries span a space ("front end"); the
    # filters count whitespace-free words, so those surfaces are split.
    def split(text: str) -> list[str]:
        pieces = (line[i : i + 16000] for line in text.splitlines() for i in range(0, len(line), 16000))
        return _stripped(part for piece in pieces for m in tokenizer.tokenize(piece) for part in m.surface().split())

    return split


def _kiwi_splitter() -> Splitter:
    from kiwipiepy import Kiwi

    kiwi = Kiwi()

    def split(text: str) -> list[str]:
        # Surface forms (substrings of the text), not Kiwi's normalized morphemes; morphemes that
        # share characters (이 + ㅂ니다 in 입니다) merge into one word.
        spans: list[list[int]] = []
        for token in kiwi.tokenize(text):
            start, end = token.start, token.start + token.len
            if spans and start < spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
        return _stripped(text[a:b] for a, b in spans)

    return split


def _char_splitter(text: str) -> list[str]:
    return _CHAR_WORDS.findall(text)


def base_language(language: str) -> str:
    return (language or "und").split("-")[0].lower()


@lru_cache(maxsize=None)
def _spacy_has(code: str) -> bool:
    # (looked up on disk: find_spec("spacy.lang.xx") would import spaCy, ~1 s, in the planning process)
    spec = importlib.util.find_spec("spacy")
    return bool(spec and spec.submodule_search_locations) and any(
        (Path(folder) / "lang" / code / "__init__.py").is_file() for folder in spec.submodule_search_locations
    )


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


# Bump when fineflow's own use of a segmenter changes the words (e.g. how surfaces are split).
SPLITTER_CODE_VERSION = "2"  # 2: Sudachi surfaces split on spaces, long lines in pieces


def splitter_versions() -> dict[str, str]:
    """Versions of every segmenting library present and of fineflow's splitter code: they decide
    the words, so the fingerprints of every step that splits words."""
    versions = {"fineflow-splitters": SPLITTER_CODE_VERSION}
    for package in ("spacy", "jieba", "regex", *OPTIONAL_SEGMENTERS.values()):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "absent"
    return versions


def splitter_resources() -> dict[str, str]:
    """``splitter_versions()`` as fingerprint resources, for every step that splits words."""
    return {f"splitter.{name}": value for name, value in splitter_versions().items()}


# Words for ratios such as tokens per word (fertility): runs of letters, digits and marks, and one
# word per character in scripts written without spaces. Language-independent and cheap, so ratios
# compare across languages and tokenizers without a segmenter per language.
_RATIO_WORDS = regex.compile(rf"[{_NO_SPACE_SCRIPTS}]|[^\s{_NO_SPACE_SCRIPTS}\p{{P}}\p{{S}}]+")


def count_words(text: str) -> int:
    return sum(1 for _ in _RATIO_WORDS.finditer(text))
