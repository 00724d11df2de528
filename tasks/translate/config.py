"""Configuration of the translate stage: which documents, into which languages, with which
backend, and the quality checks their translations must pass.

    - stage: translate
      targets: [fr, de, es]
      select: {languages: [en], where: [{column: quality_edu_int, min: 3}], max_documents: 100}
      segment: {mode: sentences}           # or windows (at most window_tokens per segment)
      backend:
        kind: openai                       # openai | llama | ctranslate2 | http | identity
        server: {base_url: http://127.0.0.1:8080/v1, model: smollm2, max_tokens: 256}
      qc: {min_language_score: 0.5, min_coverage: 0.85}   # length bands: measured per pair

Each document becomes one row per target language; translations that fail a check go to rejects
as ``translate:<check>``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from fineflow.languages import canonical_language
from fineflow.llm import LLMServer
from fineflow.stage_config import StageConfig, Strict
from fineflow.tasks.translate import codes

DEFAULT_PROMPT = (
    "Translate the following {source_name} text into {target_name}. Answer with the translation only, "
    "nothing else.\n\n{text}"
)


Number = Annotated[float, Field(allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Ratio = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]
Ratios = tuple[Ratio, Ratio]


def _ordered(key: str, bounds: Ratios) -> None:
    if bounds[0] > bounds[1]:
        raise ValueError(f"{key}: the lower bound {bounds[0]:g} is over the upper bound {bounds[1]:g}")


class Rule(Strict):
    """A document passes when its ``column`` is within [min, max], or one of ``values``."""

    column: str
    min: Number | None = None
    max: Number | None = None
    values: list[str] | None = Field(default=None, description="the column's value (as text) is one of these")

    @model_validator(mode="after")
    def _one_test(self) -> Rule:
        if self.min is None and self.max is None and self.values is None:
            raise ValueError(f"rule on {self.column}: give min, max or values")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"rule on {self.column}: min {self.min:g} is over max {self.max:g}")
        return self


class Select(Strict):
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1, description="source languages")
    where: list[Rule] = Field(default_factory=list, description="every rule must pass (e.g. a quality score)")
    max_documents: int | None = Field(default=None, ge=1, le=10**12, description="per target language: a seeded choice, the same for every target")
    max_tokens: int | None = Field(default=None, ge=1, le=10**15, description="per target language: source tokens, by `tokens`")
    tokens: str | None = Field(default=None, description="the n_tokens_<name> column for max_tokens (default: characters / 4)")
    max_chars: int = Field(default=100_000, ge=1, le=10**9, description="longer documents are not selected (counted)")
    seed: int = Field(default=0, ge=0, le=2**63 - 1)

    _languages = field_validator("languages")(classmethod(lambda cls, value: [canonical_language(v) for v in value]))


class Segment(Strict):
    mode: Literal["sentences", "windows", "lines"] = Field(
        default="sentences", description="sentences (a multilingual splitter), windows of at most window_tokens, or whole lines",
    )
    window_tokens: int = Field(default=200, ge=8, le=1_000_000, description="windows: the most tokens of `tokenizer` per segment")
    tokenizer: str | None = Field(default=None, description="windows: a tokenizer.json (default: whitespace words)")


class Backend(Strict):
    kind: Literal["openai", "llama", "ctranslate2", "http", "identity"]
    # openai: an OpenAI-compatible server (fineflow.llm)
    server: LLMServer | None = None
    prompt: str = Field(default=DEFAULT_PROMPT, description="openai/llama: {text}, {source_name}, {target_name}, {source}, {target}")
    # llama: a GGUF model in-process (llama-cpp-python); ctranslate2: a converted model folder
    model: str | None = Field(default=None, description="llama: a .gguf file; ctranslate2: a model folder")
    tokenizer: str | None = Field(default=None, description="ctranslate2: its tokenizer.json (default: <model>/tokenizer.json)")
    codes: Literal["nllb", "none"] = Field(default="nllb", description="ctranslate2/http: how languages are named to the model")
    language_codes: dict[str, str] = Field(default_factory=dict, description="fineflow code -> the model's code, overriding `codes`")
    max_tokens: int | None = Field(
        default=None, ge=1, le=1_000_000,
        description="llama/ctranslate2: the most tokens generated per segment (default: derived from each segment's "
                    "length, budget.py; openai: server.max_tokens). A segment cut at it is retried once with twice as many",
    )
    max_input_tokens: int | None = Field(
        default=None, ge=8, le=1_000_000,
        description="the hard window: longer segments are cut before they are sent (default 256 tokens of its "
                    "tokenizer for ctranslate2; 512 estimated tokens, half the UTF-8 bytes, for the others)",
    )
    beam_size: int = Field(default=4, ge=1, le=16, description="ctranslate2")
    compute_type: str = Field(default="auto", description="ctranslate2: auto (int8 on CPU, float16 on GPU), int8, float32, ...")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(default=1, ge=1, le=256, description="llama/ctranslate2: CPU threads")
    n_ctx: int = Field(default=2048, ge=128, le=10_000_000,
                       description="llama: the context window; openai: the server's (caps derived max_tokens and retries)")
    # http: POST {url}/translate with {texts, src_lang, tgt_lang} -> {translations}
    url: str | None = None
    batch_size: int = Field(default=32, ge=1, le=4096)
    timeout_s: float = Field(default=120.0, gt=0, le=86_400, allow_inf_nan=False)
    model_name: str | None = Field(default=None, description="http: the model's name (part of the cache key)")

    @model_validator(mode="after")
    def _complete(self) -> Backend:
        needs = {"openai": ("server",), "llama": ("model",), "ctranslate2": ("model",), "http": ("url", "model_name"), "identity": ()}
        missing = [key for key in needs[self.kind] if getattr(self, key) is None]
        if missing:
            raise ValueError(f"backend {self.kind} needs {', '.join(missing)}")
        if self.kind in ("openai", "llama") and "{text}" not in self.prompt:
            raise ValueError("the prompt must hold {text}")
        if self.kind == "openai" and self.max_tokens is not None:
            raise ValueError("backend openai: set server.max_tokens (backend.max_tokens is for llama and ctranslate2)")
        return self


class QC(Strict):
    min_language_score: Share = Field(default=0.5, description="lid.176's score for the target language")
    language_scores: dict[str, Share] = Field(default_factory=dict, description="per target language overrides")
    length_ratio: Ratios | None = Field(
        default=None, description="[min, max] translated / source characters over the segments, per document, for every pair "
                                  "(default: the pair's band measured on human translations, else [0.3, 3.0])")
    length_ratios: dict[str, Ratios] = Field(default_factory=dict, description="per pair 'en-ar' overrides")
    min_coverage: Share = Field(default=0.85, description="share of source characters whose segment's translation has the "
                                                         "length the pair's length model expects (within its spread)")
    min_sentence_ratio: Share = Field(default=0.8, description="the translation's sentences over the source's (5 source "
                                                               "sentences or more; under 0.9 with a short text fails too)")
    max_truncated: int = Field(default=0, ge=0, le=1_000_000, description="segments cut before their end (short and unfinished)")
    max_copy_share: Share = Field(default=0.5, description="segments returned unchanged (ignoring numbers and short ones)")
    max_repetition: Share = Field(default=0.5, description="share of repeated word 3-grams (character 5-grams for scripts "
                                                           "without spaces), in the translation or in its worst segment")
    max_segment_ratio: float = Field(default=6.0, gt=1, le=1000, allow_inf_nan=False,
                                     description="a segment longer than this times its source is runaway")

    @model_validator(mode="after")
    def _ordered_ratios(self) -> QC:
        if self.length_ratio is not None:
            _ordered("qc.length_ratio", self.length_ratio)
        for pair, bounds in self.length_ratios.items():
            _ordered(f"qc.length_ratios.{pair}", bounds)
        return self


class TranslateStage(StageConfig):
    stage: Literal["translate"]
    targets: list[str] = Field(min_length=1, description="target languages (fineflow codes: fr, de, ar, ...)")
    select: Select = Field(default_factory=Select)
    segment: Segment = Field(default_factory=Segment)
    backend: Backend
    qc: QC = Field(default_factory=QC)
    flush_every: int = Field(default=64, ge=1, le=1_000_000, description="translated segments per cache batch file")
    throughput: float | None = Field(default=None, gt=0, le=1e12, allow_inf_nan=False, description="dry run: source tokens per second per worker (default: measured)")

    _targets = field_validator("targets")(classmethod(lambda cls, value: [canonical_language(v) for v in value]))

    @model_validator(mode="after")
    def _distinct(self) -> TranslateStage:
        if len(set(self.targets)) != len(self.targets):
            raise ValueError("targets: a language is listed twice")
        mapped = set(self.backend.language_codes) | {canonical_language(k) for k in self.backend.language_codes}
        for key, languages in (("targets", self.targets), ("select.languages", self.select.languages)):
            for code in languages:
                if code not in mapped and not codes.known(code):
                    raise ValueError(f"{key}: {code!r} is not a language code fineflow knows (fr, de, ar, zh-Hant, ...); "
                                     f"a code only your model knows goes in backend.language_codes")
        return self

    def path_fields(self) -> list[tuple[object, str]]:
        found: list[tuple[object, str]] = []
        if self.backend.kind in ("llama", "ctranslate2"):
            found.append((self.backend, "model"))
        if self.backend.tokenizer:
            found.append((self.backend, "tokenizer"))
        if self.segment.tokenizer:
            found.append((self.segment, "tokenizer"))
        return found
