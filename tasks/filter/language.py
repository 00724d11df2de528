"""Language filter: keep listed languages (or any language) above a per-language score.

By default the decision reads the ``language``/``language_score`` columns crawl wrote (lid.176,
FineWeb's model). With ``model`` set (``lid.176`` or a fastText model path such as GlotLID's
``model_v3.bin``, FineWeb2's model) the signal step identifies the language again and the
stage's output carries the new columns.

``languages`` is also a signal parameter: documents in other languages can never be kept, so
the signal step does not measure them (FineWeb's English pipeline skips the word splitting of
half the web this way); changing the list re-runs the signals, changing a score threshold does not.
"""

from __future__ import annotations

NAME = "language"


def listed(language: str, languages: list[str] | None) -> bool:
    """Whether a document's language is one of ``languages`` (``zh-Hant`` counts as ``zh``)."""
    return languages is None or language in languages or language.split("-")[0] in languages


def decide(language: str, score: float | None, languages: list[str] | None, threshold: float, inclusive: bool) -> str | None:
    if not listed(language, languages):
        return "not_listed"
    score = score if score is not None else 0.0
    if score > threshold or (inclusive and score == threshold):
        return None
    return "low_score"
