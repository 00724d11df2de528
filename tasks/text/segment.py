"""Segmenting a document for translation, and putting the translations back in its place; and
joining its lines into inputs for rephrasing (``join_lines``).

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

import regex
from sentencex import segment as split_sentences

from fineflow.tasks.text.window import cut, estimate

_LIST_MARKER = re.compile(r"^(?:[-*•·▪‣–—]|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)])\s+")
_URL_LINE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|www\.)\S*$", re.IGNORECASE)
# Lines that open like a program or a REPL/shell session, or close like a C-family statement.
_CODE_START = re.compile(r"^\s*(?:\$ |>>>|\.\.\. |#include|def |class |import |from \S+ import|return\b|if \(|for \()")
_CODE_END = re.compile(r"[;{}]\s*$")
# A token of code: operators and braces, a call, an_identifier, an option, a path from the root,
# a #comment, a.dotted.name, a symbol alone. Brackets, a slash between words (A/B, 3/4) and
# periods (e.g., Fig. 2, 11.8.2.) are prose too.
_CODE_TOKEN = re.compile(r"[{}=<>$\\|&^~`]|;.|->|::|\*\*|\w[([]|\w_\w|^--?\w|^['\"]?[.~]?/\w|^#|\w{2,}\.[^\W\d]\w|^['\"]?[\[\]()*+]+['\"]?,?$")
_TABLE_ROW = re.compile(r"^\|.*\|$|\t.*\t")  # a |-delimited row, or three tab-separated cells
# Words: whitespace-separated tokens, and runs of a script written without spaces apart (a
# Chinese run counts as its characters / 1.5 words).
_NO_SPACE = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}"
_TOKENS = regex.compile(rf"[{_NO_SPACE}]+|[^\s{_NO_SPACE}]+")
_NO_SPACE_RUN = regex.compile(rf"[{_NO_SPACE}]")
_WORDS = re.compile(r"[^\W\d_]{2,}")


@dataclass(frozen=True)
class Piece:
    text: str
    translate: bool


def keep_as_is(line: str) -> bool:
    """A line that is code, a URL, a table row, or has no words (numbers, symbols). Prose with
    citations, fractions or parentheses ("see Fig. 2", "3/4", "A/B", "[1]") is translated."""
    stripped = line.strip()
    if not _WORDS.search(stripped) or _URL_LINE.match(stripped) or _TABLE_ROW.search(stripped):
        return True
    letters = sum(ch.isalpha() for ch in stripped)
    if letters < 0.4 * len("".join(stripped.split())):
        return True  # mostly digits and symbols
    tokens = _TOKENS.findall(stripped)
    code = sum(1 for token in tokens if _CODE_TOKEN.search(token))
    if len(tokens) == 1:
        return bool(code) or bool(re.search(r"[\[\]()/]", stripped))  # an identifier, a path, a call
    words = sum(len(token) / 1.5 if _NO_SPACE_RUN.match(token) else 1 for token in tokens)
    return (code >= 0.4 * words or bool(_CODE_START.search(stripped)) and code >= 1
            or bool(_CODE_END.search(stripped)) and code >= 2)


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


@dataclass(frozen=True)
class Joined:
    """A document's lines joined into inputs for a model that rewrites them whole (rephrasing):
    the inputs, and how many lines and joined inputs were left out for their length."""

    inputs: list[str]
    long_lines: int  # lines over the limit on their own
    short_inputs: int  # joined inputs under the minimum


def join_lines(text: str, count: Callable[[str], int], max_tokens: int, min_tokens: int = 0) -> Joined:
    """Nemotron-CC's segmentation for rephrasing: split on line breaks, leave out lines longer
    than ``max_tokens`` alone, join adjacent lines (with ``\\n``) greedily while the joined input
    stays within ``max_tokens``, and leave out joined inputs under ``min_tokens``. Blank lines
    join nothing; a line left out ends the input before it (inputs are runs of adjacent lines)."""
    inputs: list[str] = []
    long_lines = short = 0
    current: list[str] = []
    size = 0

    def close() -> None:
        nonlocal current, size, short
        if current:
            joined = "\n".join(current)
            if count(joined) >= min_tokens:
                inputs.append(joined)
            else:
                short += 1
        current, size = [], 0

    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        tokens = count(line)
        if tokens > max_tokens:
            close()
            long_lines += 1
            continue
        if current and size + tokens + 1 > max_tokens:  # the line break joining them counts as one token
            close()
        current.append(line)
        size += tokens + (1 if len(current) > 1 else 0)
    close()
    return Joined(inputs, long_lines, short)
