"""CCNet's perplexity filter: a KenLM language model per language scores each document, and a
document whose perplexity is above its language's limit is dropped as ``perplexity:too_high``.

Text is normalised as CCNet does before scoring (``ccnet_normalize``): lowercased, accents
removed, every digit made ``0``, CJK and typographic punctuation mapped to ASCII, non-printing
characters removed. The perplexity is CCNet's document perplexity: each non-empty line is
scored alone (with sentence start and end), and the document's perplexity is
``10 ** (-sum of line log10 scores / sum of (words + 1) per line)``: lines weigh by their
length, not equally. Words are the normalised text's whitespace tokens: a model trained on
SentencePiece pieces (CCNet's released models) needs text tokenised the same way, which this
rule does not do; train the model on normalised, whitespace-tokenised text.

A language without a model is not measured (its documents pass this rule); a model file that
does not exist or does not load is a one-line error naming it, before any shard runs.
Models are ARPA or KenLM binary files by path or URL; workers stream a remote one into their
model cache (``fineflow.storage.local_file``).
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from functools import lru_cache
from typing import Any

from pydantic import Field, field_validator

from fineflow import storage
from fineflow.languages import canonical_language
from fineflow.tasks.filter.rule import Document, Rule, RuleOptions

SIGNAL = "perplexity"
REASON = "too_high"
_lock = threading.Lock()

# CCNet's punctuation normalisation: full-width and typographic marks to their ASCII forms
_PUNCTUATION = str.maketrans({
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "１": '"',
    "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?", "！": "!",
    "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~", "’": "'", "…": "...",
    "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%", "►": "-",
})
_DIGIT = re.compile(r"\d")


def ccnet_normalize(line: str) -> str:
    """One line as CCNet scores it (its ``normalize`` with the defaults: case, accents, digits, punctuation 1)."""
    line = line.strip().lower()
    if not line:
        return line
    line = "".join(c for c in unicodedata.normalize("NFD", line) if unicodedata.category(c) != "Mn")
    line = _DIGIT.sub("0", line)
    line = line.translate(_PUNCTUATION)
    return "".join(c for c in line if not unicodedata.category(c).startswith("C"))


class PerplexityOptions(RuleOptions):
    model_files: dict[str, str] = Field(
        min_length=1, description="language -> KenLM model (ARPA or binary) path or URL; other languages pass unmeasured"
    )
    max_perplexity: float = Field(default=1000.0, gt=0, le=1e12, description="documents above it are dropped (per language via a language config)")
    THRESHOLDS = ("max_perplexity",)

    @field_validator("model_files")
    @classmethod
    def _canonical(cls, value: dict[str, str]) -> dict[str, str]:
        return {canonical_language(code): url for code, url in value.items()}

    def file_options(self) -> list[str]:
        return [*super().file_options(), "model_files"]


def _model_for(models: dict[str, str], language: str) -> str | None:
    return models.get(language) or models.get(language.split("-")[0])


@lru_cache(maxsize=16)
def load_model(url: str) -> Any:
    """A KenLM model, loaded once per process (a remote file is cached locally first)."""
    import kenlm

    try:
        path = storage.local_file(url)
    except FileNotFoundError:
        raise ValueError(f"perplexity.model_files: {url} does not exist") from None
    try:
        return kenlm.Model(path)
    except OSError as error:
        raise ValueError(f"perplexity.model_files: {url} is not a KenLM model ({str(error).splitlines()[0][:200]})") from None


def document_perplexity(model: Any, text: str) -> float | None:
    """CCNet's document perplexity (None for a text with no scorable line)."""
    log_score, length = 0.0, 0
    for line in text.split("\n"):
        line = ccnet_normalize(line)
        if not line:
            continue
        log_score += model.score(line, bos=True, eos=True)
        length += len(line.split()) + 1
    if length == 0:
        return None
    return round(10.0 ** (-log_score / length), 1)


def measure(models: dict[str, str], document: Document) -> dict:
    url = _model_for(models, document.language)
    if url is None:
        return {SIGNAL: None}
    with _lock:  # one load per process even with threaded workers
        model = load_model(url)
    value = document_perplexity(model, document.text)
    return {SIGNAL: value if value is None or math.isfinite(value) else float("inf")}


def decide(row: dict, limits: dict) -> str | None:
    value = row.get(SIGNAL)
    return REASON if value is not None and value > limits["max_perplexity"] else None


def prepare(options: PerplexityOptions, language_configs: dict[str, dict]) -> dict:
    for language, url in options.model_files.items():
        if not storage.exists(url):  # a missing model is a config error before any shard runs
            raise ValueError(f"perplexity.model_files.{language}: {url} does not exist")
    return {"model_files": dict(sorted(options.model_files.items()))}


def resources(spec: dict) -> dict[str, str]:
    from fineflow.fingerprint import file_content_hash

    return {f"perplexity.{language}": file_content_hash(url)["blake2b"] for language, url in spec["model_files"].items()}


RULE = Rule(
    name="perplexity",
    options=PerplexityOptions,
    decide=decide,
    signals=((SIGNAL, "float64"),),
    measure=measure,
    load=lambda spec: spec["model_files"],
    measured_by=SIGNAL,
    prepare=prepare,
    resources=resources,
)
