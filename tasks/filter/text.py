"""Character classes and line helpers shared by the filters."""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache

import regex


# Built on first use: validating a configuration imports the rules, and these take seconds.
@lru_cache(maxsize=1)
def sentencizer_punctuation() -> frozenset[str]:
    """What spaCy's sentencizer ends a sentence on (C4 counts sentences the way it does)."""
    from spacy.pipeline.sentencizer import Sentencizer

    return frozenset(Sentencizer.default_punct_chars)


@lru_cache(maxsize=1)
def terminal_punctuation() -> frozenset[str]:
    """Line-final characters for FineWeb quality: the sentencizer's list, every Unicode
    Sentence_Terminal character (scripts added after spaCy's list was written) and the Khmer
    signs datatrove also counts."""
    terminal = regex.compile(r"\p{Sentence_Terminal}")
    return (
        sentencizer_punctuation()
        | frozenset(terminal.findall("".join(map(chr, range(sys.maxunicode + 1)))))  # every code point, one scan
        | frozenset("\u17d6\u17d9\u17da")
    )


# FineWeb-era (datatrove 0.2.0) FineWeb-quality stop characters.
LEGACY_STOP_CHARS = (".", "'", '"', "!", "?")

PARAGRAPH_BREAK = re.compile(r"\n{2,}")
LINE_BREAK_RUN = re.compile(r"\n+")


@lru_cache(maxsize=65536)
def is_symbol(char: str) -> bool:
    """Punctuation, symbols and control characters: what a "symbol-only word" is made of."""
    return unicodedata.category(char)[0] in "PSC"


def is_symbol_word(word: str) -> bool:
    return all(is_symbol(c) for c in word)


def is_punct_token(token: str) -> bool:
    """spaCy's lexical ``is_punct``: every character is Unicode punctuation."""
    return all(unicodedata.category(c)[0] == "P" for c in token)


def duplicate_stats(items: list[str]) -> tuple[int, int]:
    """Number of items that repeat an earlier one, and their total characters."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars
