"""Corruptions of aligned human translations: what the translate stage's checks must catch.

Each takes a ``translate_align.Document`` (paragraphs with their source segments and aligned
human translations) and its target language, and returns a ``Corrupted`` (one translation per
segment, every one non-empty, and the human and corrupted character counts, the size), or raises
``Skip`` (that document is left out of that corruption's figures, counted). Definitions (shared
with the QC checks' tuning; keep them):

- ``cut_third``: every paragraph's translation loses its last third: cut at the whitespace
  nearest 2/3 of its characters (at that character in a language without spaces, or in a
  paragraph with no whitespace); the rest is re-partitioned over the paragraph's segments in
  proportion to the source segments' lengths, at word boundaries (characters where there are
  fewer words than segments), each part non-empty. Size: about a third of the characters.
- ``drop_sentence``: content dropped from inside paragraphs: the target's sentences (sentencex
  in the target language; a piece without a word, the "16.1." of a numbered heading, belongs to
  the next) of the paragraphs that have at least two are counted across the
  document; the 3rd, 6th, 9th, ... are dropped, except that a paragraph keeps its last
  remaining sentence; a paragraph that lost one is re-partitioned as above, the others keep
  their alignment. Single-sentence paragraphs (headings, list items) are left whole and do not
  count, so multi-sentence paragraphs lose one sentence in three; a document where that drops
  nothing (fewer than three sentences in paragraphs of two or more) is skipped (counted). Size: the share of characters actually
  dropped (reported per document in ``--details``; it is below a third where much of a document
  is single-sentence paragraphs).
- ``copy_source``: every segment's translation is its source segment.
- ``other_language``: every paragraph's translation is the same paragraph's human translation
  into another language, aligned onto the segments the same way: the first of
  ``other_languages(target)`` (fr, de, es, it, pt, nl, ru, without the target) in which that
  paragraph was translated (documentation translations leave some paragraphs in English); a
  document with a paragraph that no other language translated (or that does not align) is
  skipped.
- ``loop``: in each document, the translation of its longest source segment becomes its first
  quarter (at least 3 words; 8 characters in a language without spaces) repeated until it is at
  least 3 times that translation's length (a model that loops until it stops). Size: +2x that
  segment.
- ``truncate``: an answer cut off by a token limit, mid-sentence: in each document, the
  translation of its longest source segment *whose source ends a sentence* (a heading or list
  item without a full stop is not a sentence an answer could be cut inside of) is cut at the
  whitespace nearest half its length (the middle character in a language without spaces) and
  loses any trailing punctuation, so it ends mid-sentence. A document without such a segment is
  skipped (counted). Size: half that segment.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import regex
from sentencex import segment as split_sentences
from translate_align import AlignmentError, Document, align, spaceless

from fineflow.tasks.text.qc.lengths import ends_sentence

OTHER_LANGUAGES = ("fr", "de", "es", "it", "pt", "nl", "ru")
LOOP_SHARE, LOOP_MIN_WORDS, LOOP_MIN_CHARS, LOOP_FACTOR = 0.25, 3, 8, 3
CUT_KEEP = 2 / 3
DROP_EVERY = 3


class Skip(ValueError):
    """This corruption cannot be made on this document (why)."""


@dataclass
class Corrupted:
    translations: list[list[str]]  # per paragraph, one per source segment
    human_chars: int
    chars: int

    @property
    def change(self) -> float:
        """The corrupted translation's length change, relative to the human one."""
        return self.chars / self.human_chars - 1 if self.human_chars else 0.0


def other_languages(target: str) -> list[str]:
    """The languages whose human translation stands in for ``target``'s, in order of preference."""
    return [language for language in OTHER_LANGUAGES if language != target]


def _tokens(text: str, language: str, words: bool) -> list[tuple[int, int]]:
    if words and not spaceless(language):
        return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]


def repartition(text: str, weights: list[int], language: str) -> list[str]:
    """``text`` in ``len(weights)`` contiguous non-empty parts sized in proportion to
    ``weights``, cut at words (characters where there are too few words); raises ``Skip``."""
    n = len(weights)
    if n == 0:
        return []
    tokens = _tokens(text, language, True)
    if len(tokens) < n:
        tokens = _tokens(text, language, False)
    if len(tokens) < n:
        raise Skip(f"{len(tokens)} characters for {n} segments")
    total, length = sum(weights) or n, len(text)
    ends, at, share = [], -1, 0
    for i, weight in enumerate(weights[:-1], start=1):
        share += weight or 1
        want = length * share / total
        low, high = at + 1, len(tokens) - 1 - (n - i)  # leave one token for every later part
        at = min(range(low, high + 1), key=lambda k: abs(tokens[k][1] - want))
        ends.append(at)
    ends.append(len(tokens) - 1)
    parts, start = [], 0
    for end in ends:
        parts.append(text[tokens[start][0]:tokens[end][1]])
        start = end + 1
    return parts


def _cut(text: str, keep: float, language: str) -> str:
    """``text`` cut at the whitespace nearest ``keep`` of its length (a character without one)."""
    want = round(len(text) * keep)
    spaces = [i for i, ch in enumerate(text) if ch.isspace()] if not spaceless(language) else []
    at = min(spaces, key=lambda i: abs(i - want)) if spaces else want
    return text[:max(at, 1)].rstrip()


def _human(document: Document) -> list[list[str]]:
    return [list(p.translations) for p in document.paragraphs]


def _result(document: Document, translations: list[list[str]]) -> Corrupted:
    for paragraph, found in zip(document.paragraphs, translations):
        if len(found) != len(paragraph.segments) or not all(t.strip() for t in found):
            raise AssertionError("a corruption left a segment empty or unaligned")
    human = sum(len(t) for p in document.paragraphs for t in p.translations)
    return Corrupted(translations, human, sum(len(t) for found in translations for t in found))


def cut_third(document: Document, language: str, other: list[str | None] | None = None) -> Corrupted:
    out = []
    for paragraph in document.paragraphs:
        if not paragraph.segments:
            out.append([])
            continue
        kept = _cut(paragraph.target, CUT_KEEP, language)
        out.append(repartition(kept, [len(s) for s in paragraph.segments], language))
    return _result(document, out)


def _sentences(text: str, language: str) -> list[str]:
    """sentencex's sentences, a piece without a word ("16.1." before a heading) joined to the next."""
    chunks = list(split_sentences(language, text))
    if "".join(chunks) != text or not chunks:
        return [text]
    out: list[str] = []
    pending = ""
    for chunk in chunks:
        if regex.search(r"\p{L}{2}", chunk):
            out.append(pending + chunk)
            pending = ""
        else:
            pending += chunk
    if pending:
        out = [*out[:-1], out[-1] + pending] if out else [pending]
    return out


def drop_sentence(document: Document, language: str, other: list[str | None] | None = None) -> Corrupted:
    out = _human(document)
    counted = 0
    for index, paragraph in enumerate(document.paragraphs):
        if not paragraph.segments:
            continue
        sentences = _sentences(paragraph.target, language)
        if len(sentences) < 2:
            continue
        drop = []
        for _ in sentences:
            counted += 1
            drop.append(counted % DROP_EVERY == 0)
        if all(drop):
            drop[-1] = False  # a paragraph keeps its last remaining sentence
        if any(drop):
            kept = "".join(s for s, gone in zip(sentences, drop) if not gone).strip()
            out[index] = repartition(kept, [len(s) for s in paragraph.segments], language)
    if out == _human(document):
        raise Skip("no sentence to drop: fewer than three in paragraphs of two or more")
    return _result(document, out)


def copy_source(document: Document, language: str, other: list[str | None] | None = None) -> Corrupted:
    return _result(document, [list(p.segments) for p in document.paragraphs])


def other_language_text(document: Document, language: str,
                        other: list[tuple[str, str] | None] | None = None) -> Corrupted:
    """``other``: per paragraph, (language, its human translation into that language) from
    ``other_languages(language)``, None where no other language translated it."""
    if other is None or len(other) != len(document.paragraphs):
        raise Skip("no other language's version of the document")
    out = []
    for paragraph, found in zip(document.paragraphs, other):
        if not paragraph.segments:
            out.append([])
            continue
        if not found:
            raise Skip("a paragraph no other language translated")
        code, text = found
        try:
            out.append(align(paragraph.segments, text, code))
        except AlignmentError as error:
            raise Skip(f"the {code} translation does not align: {error}") from None
    return _result(document, out)


def _longest(document: Document, which: Callable[[str], bool] = lambda _: True) -> tuple[int, int]:
    found = [(len(s), -p, -i) for p, paragraph in enumerate(document.paragraphs) for i, s in enumerate(paragraph.segments)
             if which(s)]
    _, p, i = max(found)
    return -p, -i


def loop(document: Document, language: str, other: list[str | None] | None = None) -> Corrupted:
    out = _human(document)
    p, i = _longest(document)
    human = out[p][i]
    if spaceless(language):
        piece, joiner = human[:min(len(human), max(LOOP_MIN_CHARS, round(len(human) * LOOP_SHARE)))], ""
    else:
        words = human.split()
        piece, joiner = " ".join(words[:min(len(words), max(LOOP_MIN_WORDS, round(len(words) * LOOP_SHARE)))]), " "
    looped = piece
    while len(looped) < LOOP_FACTOR * len(human):
        looped += joiner + piece
    out[p][i] = looped
    return _result(document, out)


def _no_final_punctuation(text: str) -> str:
    while text and (unicodedata.category(text[-1]).startswith("P") or text[-1].isspace()):
        text = text[:-1]
    return text


def truncate(document: Document, language: str, other: list[str | None] | None = None) -> Corrupted:
    out = _human(document)
    if not any(ends_sentence(s) for paragraph in document.paragraphs for s in paragraph.segments):
        raise Skip("no segment whose source ends a sentence")
    p, i = _longest(document, ends_sentence)
    human = out[p][i]
    cut = _no_final_punctuation(_cut(human, 0.5, language)) or _no_final_punctuation(human[: max(1, len(human) // 2)])
    out[p][i] = cut or human[:1]
    return _result(document, out)


CORRUPTIONS: dict[str, Callable[..., Corrupted]] = {
    "cut_third": cut_third, "drop_sentence": drop_sentence, "copy_source": copy_source,
    "other_language": other_language_text, "loop": loop, "truncate": truncate,
}
