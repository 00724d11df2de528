"""Length checks of a rewritten text against its source, segment by segment.

A faithful translation's length is close to ``ratio`` times its source's, with a spread that
grows with the square root of the source's length (Gale & Church 1993: the difference is about
normal, its variance proportional to the length). Per segment::

    z = (translated / ratio - source) / sqrt(variance * max(source, MIN_CHARS) + (spread * source)**2)

in source characters, so one ``variance`` serves pairs whose ratios differ (en→zh ~0.3,
en→fr ~1.15); ``spread`` is the relative spread of whole documents (a translator's style, a
page's terms) that a long segment carries. A short segment gets more slack than a long one, and
joined or split sentences do not matter: only lengths are compared.

- coverage: the share of the source's characters in segments whose translation is non-empty,
  has ``z >= -max_z`` (content dropped from a segment makes it short) and ends a sentence or a
  clause where its source ends a sentence (human translations almost always do; an answer cut
  off does not);
- truncated: segments whose source ends a sentence and whose translation does not, at under
  ``truncated_share`` of the expected length (an answer cut by a token limit);
- the document's length ratio (translated / source characters over the segments) is checked by
  the caller against the pair's band: it catches content lost evenly from every segment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import regex

MIN_CHARS = 20  # shorter sources are judged as if this long: a 3-character label varies a lot
_CLOSERS = "\"'»”’)]}›」』】〉》）"
_TERMINAL = regex.compile(r"[.!?…。！？؟۔։।॥።፧⸮;:؛：；]$")
_CLAUSE = regex.compile(r"[,，、،]$")
_WORD = regex.compile(r"\p{L}{2}")  # "6.2." or "(1)." ends with a stop but is no sentence


@dataclass(frozen=True)
class LengthModel:
    """What a faithful translation's segment lengths look like for one pair and mode."""

    ratio: float | None  # translated / source characters; None: the document's own (weighted median)
    variance: float  # per source character, in source characters squared
    spread: float  # relative, of a document's ratio around ``ratio``
    max_z: float  # a segment under -max_z is not covered
    truncated_share: float  # an unfinished segment under this share of its expected length is cut


def ends_sentence(text: str) -> bool:
    """Whether ``text`` is a sentence's end: sentence-final punctuation (any script's), quotes
    aside, after at least one word (two letters: a numbered heading "6.2." is not a sentence)."""
    return bool(_TERMINAL.search(text.rstrip().rstrip(_CLOSERS).rstrip())) and bool(_WORD.search(text))


def finished(text: str) -> bool:
    """Whether a translation ends a sentence or a clause (a translator may move a sentence's end
    into the next segment; an answer cut by a token limit ends inside a clause)."""
    core = text.rstrip().rstrip(_CLOSERS).rstrip()
    return bool(_TERMINAL.search(core) or _CLAUSE.search(core))


def own_ratio(sources: list[int], translations: list[int]) -> float:
    """The document's translated / source ratio as the source-weighted median of its segments'
    (robust to a few damaged segments, unlike the total)."""
    pairs = sorted((t / s, s) for s, t in zip(sources, translations) if s > 0)
    half = sum(s for _, s in pairs) / 2
    seen = 0
    for ratio, weight in pairs:
        seen += weight
        if seen >= half:
            return ratio
    return 1.0


def z_scores(sources: list[int], translations: list[int], ratio: float, variance: float, spread: float) -> list[float]:
    return [(t / ratio - s) / math.sqrt(variance * max(s, MIN_CHARS) + (spread * s) ** 2) for s, t in zip(sources, translations)]


def judge(sources: list[str], translations: list[str], model: LengthModel) -> dict:
    """coverage (share of source characters covered), truncated (segments), ratio used."""
    source_chars = [len(s) for s in sources]
    target_chars = [len(t.strip()) for t in translations]
    ratio = model.ratio or own_ratio(source_chars, target_chars) or 1.0
    z = z_scores(source_chars, target_chars, ratio, model.variance, model.spread if model.ratio else 0.0)
    covered = truncated = 0
    for source, translation, s, t, score in zip(sources, translations, source_chars, target_chars, z):
        unfinished = ends_sentence(source) and not finished(translation)
        covered += s if t > 0 and score >= -model.max_z and not unfinished else 0
        truncated += unfinished and t < model.truncated_share * ratio * s
    total = sum(source_chars)
    return {"coverage": covered / total if total else 1.0, "truncated": truncated, "expected_ratio": ratio}
