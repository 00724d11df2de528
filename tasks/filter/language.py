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

from pydantic import Field, field_validator

from fineflow.languages import canonical_language
from fineflow.tasks.filter.rule import Document, Rule, RuleOptions


class LanguageFilterOptions(RuleOptions):
    languages: list[str] | None = Field(default=None, description="keep only these (None: any language)")
    min_score: float = Field(default=0.65, ge=0, le=1)
    inclusive: bool = Field(default=False, description="keep a score equal to the threshold (FineWeb2: >=)")
    per_language_scores: bool = Field(default=True, description="use language_score from the language configs")
    model: str | None = Field(default=None, description="re-identify with 'lid.176' or a fastText model path (GlotLID)")
    THRESHOLDS = ("languages", "min_score", "inclusive", "per_language_scores")

    @field_validator("languages")
    @classmethod
    def _canonical(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else sorted({canonical_language(code) for code in value})


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


def screen(spec: dict, document: Document) -> bool:
    if spec.get("model"):
        from fineflow.tasks.text import langid

        document.relabel(*langid.identify(document.text, spec["model"]))
    return listed(document.language, spec.get("languages"))


def limits(spec: dict, overrides: dict) -> dict:
    merged = {**spec, **overrides}
    if not merged.get("per_language_scores", True):
        merged["min_score"] = spec["min_score"]  # the stage's score for every language
    return merged


def decide_row(row: dict, limits: dict) -> str | None:
    language = row.get("language") or "und"
    return decide(language, row.get("language_score"), limits.get("languages"), limits["min_score"], limits.get("inclusive", False))


def resources(spec: dict) -> dict[str, str]:
    if not spec.get("model"):
        return {}
    from fineflow.tasks.text import langid

    return {"language.model": langid.model_hash(spec["model"])}


RULE = Rule(
    name="language",
    resources=resources,
    options=LanguageFilterOptions,
    decide=decide_row,
    screen=screen,
    prepare=lambda options, language_configs: {**options.split()[0], "languages": options.languages},
    limits=limits,
    language_keys={"language_score": "min_score"},
)
