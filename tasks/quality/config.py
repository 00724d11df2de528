"""Configuration of the quality stage: annotate a sample with an LLM, train classifiers, score
every document with any number of scorers, calibrate thresholds, decide.

    - stage: quality
      annotate:                       # optional: LLM labels for a seeded sample
        server: {base_url: http://127.0.0.1:8080/v1, model: smollm2}
        prompt: edu                   # the built-in additive 0-5 rubric, or a file with {text}
        sample_size: 500              # per language (stratified), or in all
      classifiers:                    # optional: trained in the run
        edu: {model: embedding, labels: {annotations: true}}   # a 0-5 regression head
      scorers:                        # each adds quality_<name> (and quality_<name>_int for 0-5 regressors only)
        edu: {trained: edu}
        dclm: {fasttext: /models/openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin, label: __label__hq}
      keep:                           # every rule must pass
        - {scorer: edu, min_int: 3}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fineflow.llm import LLMServer
from fineflow.stage_config import NAME_PATTERN, StageConfig, Strict
from fineflow.tasks.quality.summary import MAX_BINS, MIN_BINS

BUILTIN_PROMPTS = ("edu",)
# Characters an encoder scorer (an embedding head, an hf model) reads by default: more than its
# 512-token window holds in any language, so the cut only spares tokenizing what would be dropped.
ENCODER_MAX_CHARS = 10_000
# "The whole text" for fastText (DCLM and PreSelect score whole documents), up to this many
# characters: scoring holds ~15 bytes per character (measured: +1.45 GB for one 100 MB document),
# so a pathological document costs at most ~15 MB; a document this long is scored on its start
# (counted in the score step's ``docs_cut``). An explicit max_chars is taken as given.
WHOLE_TEXT_CHARS = 1_000_000
MAX_CHARS_LIMIT = 100_000_000
# Annotate's tasks by default: enough for progress and for a failed one to re-run alone, few enough
# that a modest cluster runs them at once (they share the server's slots: one waiting leaves its idle).
DEFAULT_ANNOTATE_TASKS = 8
MAX_ANNOTATE_TASKS = 1024  # (server.concurrency's bound)


class Annotate(Strict):
    server: LLMServer
    prompt: str = Field(default="edu", description="'edu' (fineflow's additive 0-5 rubric) or a prompt file holding {text}")
    sample_size: int = Field(default=500, ge=1, description="documents to annotate (per language when per_language)")
    per_language: bool = Field(default=True, description="stratify the sample by language")
    languages: list[str] | None = Field(default=None, description="only these languages (default: all)")
    max_chars: int = Field(default=1000, ge=1, description="characters of each document shown to the LLM")
    wrapper: str | None = Field(
        default=None, description="completions endpoint: a file holding {prompt} (or that text itself), e.g. the model's "
        "chat template written out, so a base or small model sees the rubric as it was trained to",
    )
    answer_prefix: str | None = Field(
        default=None, description="completions endpoint: the start of the answer, appended to the prompt (e.g. "
        "'Score: ') and read back in front of the model's continuation",
    )
    seed: int = 0
    max_unparsed_share: float = Field(
        default=0.5, ge=0, le=1,
        description="more answers than this share of a task's without a score fail the step (a prompt or model that does not work)",
    )
    tasks: int | None = Field(
        default=None, ge=1, le=MAX_ANNOTATE_TASKS,
        description=f"tasks the sample is split into (each a shard: progress as they finish, and a failed one re-runs "
        f"alone), sharing server.concurrency's slots, so at most server.concurrency; default: server.concurrency, at "
        f"most {DEFAULT_ANNOTATE_TASKS}. They keep every slot busy where the cluster runs that many at once",
    )

    @property
    def builtin(self) -> bool:
        return self.prompt in BUILTIN_PROMPTS

    @property
    def task_count(self) -> int:
        """How many tasks annotate (``tasks``, else the default for the server's concurrency)."""
        return self.tasks if self.tasks is not None else min(self.server.concurrency, DEFAULT_ANNOTATE_TASKS)

    @model_validator(mode="after")
    def _completion_options(self) -> Annotate:
        if (self.wrapper is not None or self.answer_prefix is not None) and self.server.endpoint != "completions":
            raise ValueError("wrapper and answer_prefix apply to server.endpoint: completions")
        if self.tasks is not None and self.tasks > self.server.concurrency:
            raise ValueError(f"tasks ({self.tasks}) is more than server.concurrency ({self.server.concurrency}): each "
                             "annotate task holds at least one of the server's request slots")
        return self


class LabelSet(Strict):
    """Documents of one class: a URL pattern among this stage's input, another stage's documents,
    or document files."""

    url: str | None = Field(default=None, description="a regular expression searched in the input documents' URLs")
    stage: str | None = Field(default=None, description="another stage of the pipeline (or NAME.rejects): its documents")
    files: str | None = Field(default=None, description="a glob of Parquet document files (a `text` column)")
    rest: bool = Field(default=False, description="every input document the other class does not take")

    @field_validator("url")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"url: not a regular expression ({error}): {value!r}") from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> LabelSet:
        if sum(x is not None for x in (self.url, self.stage, self.files, self.rest or None)) != 1:
            raise ValueError("give exactly one of url, stage, files or rest: true")
        return self


class Labels(Strict):
    annotations: bool = Field(default=False, description="the LLM scores of the annotate step")
    column: str | None = Field(default=None, description="an input column holding a label (number, bool or string)")
    positives: LabelSet | None = None
    negatives: LabelSet | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Labels:
        chosen = [self.annotations, self.column is not None, self.positives is not None or self.negatives is not None]
        if sum(chosen) != 1:
            raise ValueError("labels: give exactly one of annotations: true, column, or positives + negatives")
        if (self.positives is None) != (self.negatives is None):
            raise ValueError("labels: positives and negatives go together")
        if self.positives is not None and self.positives.rest:
            raise ValueError("labels: positives cannot be `rest`; negatives can")
        return self


class FastTextParams(Strict):
    """fastText's supervised settings; the defaults are DCLM's (word bigrams, else fastText's own)."""

    epoch: int = Field(default=5, ge=1)
    lr: float = Field(default=0.1, gt=0)
    dim: int = Field(default=100, ge=2)
    word_ngrams: int = Field(default=2, ge=1)
    min_count: int = Field(default=1, ge=1)
    ws: int = Field(default=5, ge=1)
    bucket: int = Field(default=2_000_000, ge=1, description="hash buckets of word n-grams: the model file is about "
                        "4 * dim * (bucket + words) bytes (2,000,000 x 100: ~0.8 GB); small samples need far fewer")


class EmbeddingParams(Strict):
    model: str = Field(default="all-minilm-l6-v2", description="'all-minilm-l6-v2' (packaged) or a folder with "
                       "model.safetensors + tokenizer.json of a BERT-style encoder")
    max_tokens: int = Field(default=256, ge=8, le=512)
    ridge: float = Field(default=1e-2, ge=0, description="L2 penalty of the linear head")


class Classifier(Strict):
    model: Literal["fasttext", "embedding"] = "fasttext"
    labels: Labels
    positive_from: float = Field(
        default=3, description="a numeric label at or above this is positive (FineWeb-Edu: int_score >= 3)"
    )
    regression: bool | None = Field(
        default=None, description="predict the 0-5 score (an embedding head on annotations); default: for annotations"
    )
    max_per_class: int = Field(default=20_000, ge=1, description="seeded sample of each class (positives, negatives)")
    balance: bool = Field(default=True, description="classifiers: as many negatives as positives (the smaller class's "
                          "size), as DCLM and PreSelect trained; false keeps every labelled document up to max_per_class. "
                          "Regressors train on every label")
    held_out: float = Field(default=0.2, gt=0, lt=1, description="share of labelled documents kept for evaluation")
    seed: int = 0
    max_chars: int | None = Field(
        default=None, ge=1, le=MAX_CHARS_LIMIT, description="characters of each document trained on (default: fastText "
        f"the whole text, as DCLM and PreSelect trained, up to {WHOLE_TEXT_CHARS:,}; an embedding head "
        f"{ENCODER_MAX_CHARS:,}, of which its encoder reads max_tokens)",
    )
    fasttext: FastTextParams = Field(default_factory=FastTextParams)
    embedding: EmbeddingParams = Field(default_factory=EmbeddingParams)

    @model_validator(mode="after")
    def _fasttext_classifies(self) -> Classifier:
        if self.model == "fasttext" and self.regression:
            raise ValueError("a fastText model is a classifier: regression needs model: embedding")
        return self

    @property
    def train_chars(self) -> int:
        """Characters of each labelled document trained on: max_chars, else the whole text for fastText."""
        if self.max_chars is not None:
            return self.max_chars
        return WHOLE_TEXT_CHARS if self.model == "fasttext" else ENCODER_MAX_CHARS

    @property
    def is_regression(self) -> bool:
        if self.regression is not None:
            return self.regression
        return self.labels.annotations and self.model == "embedding"


class Scorer(Strict):
    """One score per document: a model trained in this run, a fastText file, or a Hugging Face model."""

    trained: str | None = Field(default=None, description="a classifier of this stage's `classifiers`")
    fasttext: str | None = Field(default=None, description="a fastText .bin by path or URL (e.g. DCLM's)")
    hf: str | None = Field(default=None, description="a Hugging Face sequence-classification model folder (torch needed)")
    label: str = Field(default="__label__hq", description="fastText or an hf classifier: the label whose probability "
                       "is the score (hf: one of the model's id2label names; a '__label__' prefix is ignored)")
    regression: bool | None = Field(
        default=None, description="hf: true for a 0-5 regressor (one output, FineWeb-Edu's int_score), false for a "
        "classifier; default: read from the model's config.json (problem_type, else num_labels / id2label)",
    )
    max_chars: int | None = Field(
        default=None, ge=1, le=MAX_CHARS_LIMIT, description="characters of each document scored (default: fastText the "
        f"whole text, as DCLM and PreSelect score, up to {WHOLE_TEXT_CHARS:,}; {ENCODER_MAX_CHARS:,} for encoder models, "
        "whose token window reads less)",
    )
    batch_size: int = Field(default=64, ge=1)
    device: str | None = Field(default=None, description="hf: cuda, cpu, ... (default: cuda when present)")

    @model_validator(mode="after")
    def _one_model(self) -> Scorer:
        if sum(x is not None for x in (self.trained, self.fasttext, self.hf)) != 1:
            raise ValueError("a scorer names exactly one of trained, fasttext or hf")
        if self.regression is not None and self.hf is None:
            raise ValueError("regression is an hf scorer's option (a trained classifier states its own)")
        return self


class KeepRule(Strict):
    """Keep a document when its score passes: a threshold, a top share, or a Nemotron-CC level."""

    scorer: str | None = Field(default=None, description="whose score (not for min_level)")
    min: float | None = Field(default=None, description="keep score >= min")
    min_int: int | None = Field(default=None, ge=0, le=5, description="keep the 0-5 clip-and-round score >= this "
                                "(FineWeb-Edu: int_score >= 3)")
    top_share: float | None = Field(default=None, gt=0, le=1, description="keep the best share of the run's weight")
    unit: Literal["tokens", "bytes", "chars", "docs"] = Field(default="chars", description="what top_share measures")
    min_level: int | None = Field(default=None, ge=0, le=4, description="keep quality_level >= this (0-4)")

    @model_validator(mode="after")
    def _one_rule(self) -> KeepRule:
        if sum(x is not None for x in (self.min, self.min_int, self.top_share, self.min_level)) != 1:
            raise ValueError("a keep rule has exactly one of min, min_int, top_share or min_level")
        if self.min_level is None and self.scorer is None:
            raise ValueError("a keep rule with min or top_share names its scorer")
        return self


class Calibrate(Strict):
    weight: Literal["tokens", "bytes", "chars", "docs"] = Field(
        default="tokens", description="percentiles weighted by each document's tokens (an n_tokens_* column of a "
        "tokenize stage upstream, else UTF-8 bytes, as Nemotron-CC), bytes, characters or documents",
    )
    per_language: bool = Field(default=False, description="thresholds per language")
    min_docs: int = Field(
        default=50, ge=1, le=1_000_000, description="per_language: a language with fewer scored documents uses the "
        "global thresholds (its own percentiles would rest on too few scores)",
    )
    min_distinct_scores: int = Field(
        default=20, ge=1, le=1_000_000, description="per_language: a language whose scores (per scorer) take fewer "
        "distinct values uses the global thresholds (20: Nemotron-CC's buckets cannot all be told apart with fewer)",
    )
    ensemble: bool | None = Field(default=None, description="Nemotron-CC's 20 buckets and 5 levels (default: with 2+ scorers)")
    summary: Literal["auto", "exact", "histogram"] = Field(
        default="auto", description="exact: one task reads every score (~40 bytes per document and scorer); histogram: "
        "per-shard weighted histograms merged in bounded memory, each quantile within the stats' rank_error (a weight "
        "share) of the exact one; auto: exact up to exact_max_docs scored documents, histogram past them",
    )
    bins: int = Field(
        default=16_384, ge=MIN_BINS, le=MAX_BINS, description="histogram: the most bins a scorer's (and language's) "
        "summary spans (power-of-two widths; more bins, finer quantiles and more memory)",
    )
    max_rank_error: float = Field(
        default=0.001, ge=1e-6, le=0.5, description="histogram: a bin over this share of the weight (with more than "
        "one distinct score) is summarized again from the score shards, so every quantile's rank error stays under it",
    )
    exact_max_docs: int = Field(
        default=2_000_000, ge=0, le=10**12, description="auto: the most scored documents calibrated exactly",
    )


class QualityStage(StageConfig):
    stage: Literal["quality"]
    annotate: Annotate | None = None
    classifiers: dict[str, Classifier] = Field(default_factory=dict)
    scorers: dict[str, Scorer] = Field(min_length=1)
    calibrate: Calibrate = Field(default_factory=Calibrate)
    keep: list[KeepRule] = Field(default_factory=list, description="every rule must pass; none: keep all, scored")

    @field_validator("classifiers", "scorers")
    @classmethod
    def _names(cls, value: dict) -> dict:
        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"name {name!r}: lower-case letters, digits, '_' and '-' only")
        return value

    @model_validator(mode="after")
    def _references(self) -> QualityStage:
        for name, classifier in self.classifiers.items():
            if classifier.labels.annotations and self.annotate is None:
                raise ValueError(f"classifier {name}: labels from annotations need an `annotate` section")
        for name, scorer in self.scorers.items():
            if scorer.trained is not None and scorer.trained not in self.classifiers:
                raise ValueError(f"scorer {name}: trained: {scorer.trained} is not one of classifiers "
                                 f"({', '.join(self.classifiers) or 'none'})")
        for rule in self.keep:
            if rule.scorer is not None and rule.scorer not in self.scorers:
                raise ValueError(f"keep: scorer {rule.scorer} is not one of scorers ({', '.join(self.scorers)})")
            if rule.min_int is not None and rule.scorer and self.is_regressor(rule.scorer) is False:
                raise ValueError(f"keep: scorer {rule.scorer} is not a 0-5 regressor, so it has no int score")
            if rule.min_level is not None and not self.use_ensemble:
                raise ValueError("keep: min_level needs the ensemble (2+ scorers, or calibrate.ensemble: true)")
        return self

    def references(self) -> list[str]:
        return sorted({labels.stage for c in self.classifiers.values() for labels in (c.labels.positives, c.labels.negatives)
                       if labels is not None and labels.stage is not None})

    def is_regressor(self, scorer: str) -> bool | None:
        """Whether the scorer is a 0-5 regressor; None for an hf model that leaves it to its config.json
        (``plan.hf_regression`` reads it)."""
        spec = self.scorers[scorer]
        if spec.trained is not None:
            return self.classifiers[spec.trained].is_regression
        if spec.hf is not None:
            return spec.regression
        return False

    def scored_chars(self, scorer: str) -> int:
        """Characters of each document the scorer reads: its max_chars, else the whole text (up to
        ``WHOLE_TEXT_CHARS``) for fastText and ``ENCODER_MAX_CHARS`` for an encoder."""
        spec = self.scorers[scorer]
        if spec.max_chars is not None:
            return spec.max_chars
        fasttext = spec.fasttext is not None or (spec.trained is not None and self.classifiers[spec.trained].model == "fasttext")
        return WHOLE_TEXT_CHARS if fasttext else ENCODER_MAX_CHARS

    @property
    def use_ensemble(self) -> bool:
        return self.calibrate.ensemble if self.calibrate.ensemble is not None else len(self.scorers) >= 2

    def path_fields(self) -> list[tuple[object, str]]:
        found: list[tuple[object, str]] = []
        if self.annotate is not None and not self.annotate.builtin:
            found.append((self.annotate, "prompt"))
        if self.annotate is not None and self.annotate.wrapper and "{prompt}" not in self.annotate.wrapper:
            found.append((self.annotate, "wrapper"))
        for scorer in self.scorers.values():
            found += [(scorer, key) for key in ("fasttext", "hf") if getattr(scorer, key) is not None]
        for classifier in self.classifiers.values():
            for labels in (classifier.labels.positives, classifier.labels.negatives):
                if labels is not None and labels.files is not None:
                    found.append((labels, "files"))
            if classifier.model == "embedding" and classifier.embedding.model != "all-minilm-l6-v2":
                found.append((classifier.embedding, "model"))
        return found

    def named_files(self) -> list[str]:
        return [path for path in super().named_files() if not _is_glob(path)]


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")

