"""Segmenting a document for translation, and putting the translations back in its place.

Extracted text is plain lines, so structure is line-based. A document becomes a list of pieces
whose concatenation is exactly the text; some pieces are segments to translate, the others stay
as they are: line breaks, blank lines, leading and trailing whitespace, list markers (``- ``,
``1. ``, ``•``), whole lines that are code, a URL, or numbers and symbols without words. The
translatable rest of a line is split into sentences (sentencex, ~300 languages), into windows
of at most N tokens (whole sentences where they fit), or kept whole. Reassembly replaces each
segment by its translation in order, so the line structure comes back exactly (an identity
translation gives the document back byte for byte).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sentencex import segment as split_sentences

from fineflow.tasks.translate.window import cut, estimate

_LIST_MARKER = re.compile(r"^(?:[-*•·▪‣–—]|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)])\s+")
_URL_LINE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|www\.)\S*$", re.IGNORECASE)
_CODE_CHARS = re.compile(r"[{}()\[\];=<>$\\/|&_#@^~`*+]")
_CODE_LINE = re.compile(r"(?:[;{}]\s*$|^\s*(?:\$|>>>|#include|def |class |import |from \S+ import|return\b|if \(|for \())")
_WORDS = re.compile(r"[^\W\d_]{2,}")


@dataclass(frozen=True)
class Piece:
    text: str
    translate: bool


def keep_as_is(line: str) -> bool:
    """A line that is code, a URL or has no words (numbers, a table of them, symbols)."""
    stripped = line.strip()
    if not _WORDS.search(stripped) or _URL_LINE.match(stripped):
        return True
    letters = sum(ch.isalpha() for ch in stripped)
    if letters < 0.4 * len(stripped.replace(" ", "")):
        return True  # mostly digits and symbols
    symbols = len(_CODE_CHARS.findall(stripped))
    return bool(_CODE_LINE.search(stripped)) and symbols >= 2 or symbols > max(4, 0.12 * len(stripped))


def _sentences(text: str, language: str) -> Iterator[tuple[str, str, str]]:
    """(leading whitespace, sentence, trailing whitespace) triples that concatenate to ``text``."""
    chunks = list(split_sentences(language, text))
    if "".join(chunks) != text:  # never lose a character: the whole run as one sentence
        chunks = [text]
    for chunk in chunks:
        core = chunk.strip()
        if not core:
            yield chunk, "", ""
            continue
        start = chunk.index(core)
        yield chunk[:start], core, chunk[start + len(core):]


def _windows(sentences: list[tuple[str, str, str]], size: int, count: Callable[[str], int]) -> list[tuple[str, str, str]]:
    """Whole sentences joined while they fit in ``size`` tokens; a longer one cut at spaces."""
    out: list[tuple[str, str, str]] = []
    current: list[str] = []  # the text of the window being built, pieces with their whitespace
    lead = ""
    tokens = 0

    def close() -> None:
        nonlocal current, tokens
        if current:
            text = "".join(current)
            core = text.rstrip()
            out.append((lead if not out else "", core, text[len(core):]))
            current, tokens = [], 0

    for index, (before, sentence, after) in enumerate(sentences):
        if index == 0:
            lead = before
        elif current:
            current.append(before)
        else:
            out.append(("", "", before)) if before else None
        n = count(sentence)
        if current and tokens + n > size:
            close()
        if n > size:  # one sentence over the window: cut between words
            words = re.split(r"(\s+)", sentence)
            for word in words:
                m = count(word) if word.strip() else 0
                if current and tokens + m > size:
                    close()
                current.append(word)
                tokens += m
        else:
            current.append(sentence)
            tokens += n
        current.append(after)
    close()
    return out


def segment_document(text: str, language: str, mode: str = "sentences", window_tokens: int = 200,
                     count: Callable[[str], int] | None = None, input_tokens: int | None = None,
                     count_input: Callable[[str], int] | None = None) -> list[Piece]:
    """The document as pieces; ``"".join(p.text for p in pieces) == text`` always. With
    ``input_tokens``, no segment is over that many tokens by ``count_input`` (the hard window)."""
    pieces: list[Piece] = []
    for number, line in enumerate(text.split("\n")):
        if number:
            pieces.append(Piece("\n", False))
        if not line.strip() or keep_as_is(line):
            pieces.append(Piece(line, False)) if line else None
            continue
        body = line.lstrip()
        indent = line[: len(line) - len(body)]
        marker = _LIST_MARKER.match(body)
        prefix = indent + (marker.group(0) if marker else "")
        rest = line[len(prefix):]
        if prefix:
            pieces.append(Piece(prefix, False))
        if mode == "lines":
            core = rest.rstrip()
            parts = [("", core, rest[len(core):])]
        else:
            parts = list(_sentences(rest, language))
            if mode == "windows":
                parts = _windows(parts, window_tokens, count or (lambda s: len(s.split())))
        for before, core, after in parts:
            cores = cut(core, input_tokens, count_input or estimate) if input_tokens and core else [(core, True)]
            for text_part, translate in [(before, False), *cores, (after, False)]:
                if text_part:
                    pieces.append(Piece(text_part, translate))
    if "".join(piece.text for piece in pieces) != text:  # a guard: segmentation must never change the text
        raise AssertionError("segmentation changed the document's text")
    return pieces


def segments(pieces: list[Piece]) -> list[str]:
    return [piece.text for piece in pieces if piece.translate]


def reassemble(pieces: list[Piece], translations: list[str]) -> str:
    """The document with its segments replaced, in order, by ``translations`` (one line each)."""
    found = iter(translations)
    return "".join(next(found) if piece.translate else piece.text for piece in pieces)
