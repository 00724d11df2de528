"""Quality checks of a rewritten (translated) document against its source, measured per segment
and summed per document. ``measure`` gives threshold-free measures plus those of the shipped
calibration (``calibration.py``); ``fails`` applies a stage's thresholds, so a changed threshold
never rewrites again.

- coverage: the share of source characters in segments whose translation has the length the
  pair's length model expects, within its spread, and ends where its source ends a sentence
  (``lengths.py``): dropped content makes a segment short; joined or split sentences do not
  matter; and ``sentence_ratio``, the translation's sentences (each side split by its own
  language's rules) over the source's, capped at 1, for a source of ``MIN_SENTENCES`` or more
  (else 1.0: a translator may render three short sentences as one): sentences dropped evenly
  from every segment keep each one's length plausible but not the count; and
  ``sentence_share``, the same for any source: a document whose share is under
  ``SHORT_SENTENCES`` fails when it is also short (its length ratio under ``SHORT_LENGTH`` of the
  pair's calibrated ratio): a translator who joins sentences keeps the length, one who drops
  them does not;
- truncated: segments cut before their end (short, unfinished where the source ends a sentence);
- runaway: segments far longer than their source (a model that does not stop);
- repetition: the share of repeated n-grams (words, or characters for scripts without spaces),
  the larger of the whole translation's and its worst segment's (``repetition.py``);
- copy: the share of segments returned unchanged, among those with words;
- language: lid.176 on the translation, the target's score (measured by the stage);
- length ratio: translated / source characters over the segments, within the pair's band.
"""

from __future__ import annotations

import re
import unicodedata

from sentencex import segment as split_sentences

from fineflow.tasks.text.qc import calibration
from fineflow.tasks.text.qc.lengths import judge
from fineflow.tasks.text.qc.repetition import repetition

_WORDS = re.compile(r"[^\W\d_]{2,}")

CHECKS = ("coverage", "truncated", "runaway", "repetition", "copy", "language", "length_ratio")
SEGMENT_MIN_GRAMS = 8  # a segment's repetition needs this many n-grams to mean anything
MIN_SENTENCES = 5  # fewer source sentences: the count alone says nothing (joined ones)
# Fewer sentences and a shorter text together are dropped content (chosen on the calibration half
# with windows of 8-paragraph documents: human translations that join sentences keep the length).
SHORT_SENTENCES, SHORT_LENGTH = 0.9, 0.9


def _normal(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def _sentences(language: str, text: str) -> int:
    return sum(1 for sentence in split_sentences(language.split("-")[0], text) if sentence.strip())


def measure(sources: list[str], translations: list[str], source_language: str, target_language: str, mode: str,
            runaway_ratio: float) -> dict:
    """Per-document measures from its segments (in order) and their translations."""
    copies = wordy = runaway = 0
    for source, translation in zip(sources, translations):
        if _WORDS.search(source) and len(source) >= 20:
            wordy += 1
            copies += _normal(source) == _normal(translation)
        runaway += len(translation) > runaway_ratio * len(source) + 20
    source_chars = sum(map(len, sources))
    target_chars = sum(len(t.strip()) for t in translations)
    lengths = judge(sources, translations, calibration.length_model(source_language, target_language, mode))
    source_sentences = sum(_sentences(source_language, s) for s in sources)
    target_sentences = sum(_sentences(target_language, t) for t in translations)
    return {
        "segments": len(sources),
        "coverage": lengths["coverage"],
        "sentence_ratio": min(1.0, target_sentences / source_sentences) if source_sentences >= MIN_SENTENCES else 1.0,
        "sentence_share": min(1.0, target_sentences / source_sentences) if source_sentences else 1.0,
        "truncated": lengths["truncated"],
        "runaway": runaway,
        "copy": copies / wordy if wordy else 0.0,
        "length_ratio": target_chars / source_chars if source_chars else 1.0,
        "repetition": repetition("\n".join(translations)),
        "segment_repetition": max((repetition(t, SEGMENT_MIN_GRAMS) for t in translations), default=0.0),
    }


def length_band(qc: dict, source_language: str, target_language: str) -> tuple[float, float]:
    """The document band: the pair's in ``length_ratios``, else ``length_ratio`` when set, else the
    shipped calibration's (measured, derived through English, or its default)."""
    pair = f"{source_language}-{target_language}"
    if pair in qc.get("length_ratios", {}):
        low, high = qc["length_ratios"][pair]
        return low, high
    if qc.get("length_ratio") is not None:
        low, high = qc["length_ratio"]
        return low, high
    return calibration.band(source_language, target_language)[0]


def fails(check: str, measures: dict, qc: dict, source_language: str, target_language: str) -> bool:
    """Whether a document (its measures, without the stage's prefix) fails one check."""
    if check == "coverage":
        expected = calibration.ratio(source_language, target_language)
        short = expected is not None and measures["length_ratio"] < SHORT_LENGTH * expected
        return (measures["coverage"] < qc["min_coverage"] or measures["sentence_ratio"] < qc["min_sentence_ratio"]
                or (short and measures.get("sentence_share", 1.0) < SHORT_SENTENCES))
    if check == "truncated":
        return measures["truncated"] > qc["max_truncated"]
    if check == "runaway":
        return measures["runaway"] > 0
    if check == "repetition":
        return max(measures["repetition"], measures.get("segment_repetition") or 0.0) > qc["max_repetition"]
    if check == "copy":
        return measures["copy"] > qc["max_copy_share"]
    if check == "language":
        threshold = qc["language_scores"].get(target_language, qc["min_language_score"])
        return measures["language_score"] < threshold
    low, high = length_band(qc, source_language, target_language)
    return not low <= measures["length_ratio"] <= high
