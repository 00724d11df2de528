"""Language filter: keep listed languages (or any language) above a per-language score.

By default the decision reads the ``language``/``language_score`` columns crawl wrote (lid.176,
FineWeb's model). With ``model`` set (``lid.176`` or a fastText model path such as GlotLID's
``model_v3.bin``, FineWeb2's model) the signal step identifies the language again and the
stage's output carries the new columns.
"""

from __future__ import annotations

NAME = "language"


def decide(language: str, score: float | None, languages: list[str] | None, threshold: float, inclusive: bool) -> str | None:
    if languages is not None and language not in languages:
        return "not_listed"
    score = score if score is not None else 0.0
    if score > threshold or (inclusive and score == threshold):
        return None
    return "low_score"
