"""Configuration of the rephrase stage: which documents become which synthetic documents, with
which LLM, and the checks a generated text must pass.

    - stage: rephrase
      server: {base_url: http://127.0.0.1:8080/v1, model: smollm2, temperature: 0.5, top_p: 0.9}
      tasks:
        wiki: {where: {column: quality_level, op: "<=", value: 1}, max_documents: 1000}
        diverse_qa: {where: {column: quality_level, op: ">=", value: 3}}
        mine: {prompt: prompts/mine.txt, max_input_tokens: 800, max_output_tokens: 800, post: plain}
      sources: keep                         # the input documents pass through as kind "actual"

A task is built in (``prompts/tasks.yaml``: Nemotron-CC's five, three Cosmopedia-style seeds) or
defined here (a prompt file with ``{text}`` and optionally ``{language_name}``); an entry for a
built-in task overrides any of its settings. Each chosen document gives one synthetic document
per task (``<source id>#<task>``); one that fails a check goes to rejects as ``rephrase:<check>``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from fineflow.languages import canonical_language
from fineflow.llm import LLMServer
from fineflow.stage_config import StageConfig, Strict
from fineflow.tasks.common.condition import Condition

PROMPTS = Path(__file__).parent / "prompts"


@lru_cache(maxsize=1)
def builtin_tasks() -> dict[str, dict[str, Any]]:
    """The packaged task definitions, by name (prompt and system as file names under ``prompts/``)."""
    return yaml.safe_load((PROMPTS / "tasks.yaml").read_text(encoding="utf-8"))


class Task(Strict):
    """One rephrase task: which documents, the prompt, its limits and its post-processing. Unset
    fields come from the built-in task of the same name (``task``: another built-in's name)."""

    task: str | None = Field(default=None, description="the built-in task this one starts from (default: the entry's name, if built in)")
    where: list[Condition] = Field(default_factory=list, description="every condition must hold (e.g. quality_level <= 1)")
    max_documents: int | None = Field(default=None, ge=1, le=10**12, description="a seeded choice among the matching documents")
    max_tokens: int | None = Field(default=None, ge=1, le=10**15, description="source tokens (estimated, or by tokenizer) over the chosen documents")
    prompt: str | None = Field(default=None, description="a prompt file holding {text} (and {language_name} where it names the language)")
    system: str | None = Field(default=None, description="a file holding the system message (none: the prompt alone)")
    prefix: str | None = Field(default=None, description="a line the answer is asked to start with: removed where it is there")
    mode: Literal["segments", "seed"] | None = Field(
        default=None, description="segments: the document's lines joined into inputs up to max_input_tokens, each rewritten "
                                  "(Nemotron-CC); seed: its start, up to max_input_tokens, inspires one new text (Cosmopedia)")
    max_input_tokens: int | None = Field(default=None, ge=8, le=1_000_000)
    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    min_segment_tokens: int | None = Field(default=None, ge=0, le=1_000_000, description="joined inputs shorter than this are not sent")
    min_output_tokens: int | None = Field(default=None, ge=0, le=1_000_000, description="post-processed outputs shorter than this are rejected")
    post: Literal["plain", "wiki", "diverse_qa", "extract_knowledge", "knowledge_list"] | None = None
    max_pairs: int | None = Field(default=None, ge=1, le=1000, description="diverse_qa: pairs kept per 150 input tokens, at most")


class Resolved(Strict):
    """A task with every field set (``RephraseStage.resolved``)."""

    name: str
    where: list[Condition]
    max_documents: int | None
    max_tokens: int | None
    prompt: str  # a path (resolved against the pipeline's folder) or prompts/<file> for a built-in
    system: str | None
    prefix: str | None
    mode: Literal["segments", "seed"]
    max_input_tokens: int
    max_output_tokens: int
    min_segment_tokens: int
    min_output_tokens: int
    post: str
    max_pairs: int


class QC(Strict):
    min_language_score: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False,
                                      description="lid.176's score for the source's language, on the generated text")
    max_repetition: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False,
                                  description="share of repeated word 3-grams (character 5-grams for scripts without spaces)")


class RephraseStage(StageConfig):
    stage: Literal["rephrase"]
    server: LLMServer = Field(description="an OpenAI-compatible server (vLLM, SGLang, llama.cpp, TGI, Ollama); "
                                          "Nemotron-CC decodes at temperature 0.5, top_p 0.9")
    tasks: dict[str, Task] = Field(min_length=1, description="task name -> which documents and, for a task of your own, its prompt")
    languages: list[str] | None = Field(default=None, min_length=1, description="source languages (default: any)")
    min_document_tokens: int = Field(default=30, ge=0, le=1_000_000, description="shorter documents are not chosen (Nemotron-CC: 30)")
    max_chars: int = Field(default=100_000, ge=1, le=10**9, description="longer documents are not chosen (counted)")
    tokenizer: str | None = Field(default=None, description="the generator's tokenizer.json, for the token limits "
                                                            "(default: an estimate on the high side, half the UTF-8 bytes)")
    sources: Literal["keep", "drop"] = Field(
        default="keep", description="keep: every input document passes through as kind 'actual' beside the synthetic ones "
                                    "(Nemotron-CC's release: actual and synthetic per level); drop: synthetic documents only")
    inherit: list[str] = Field(default_factory=lambda: ["quality_*"],
                               description="columns (fnmatch patterns) measured on the source's text that its synthetic "
                                           "documents keep (their level); other text-derived columns are left null")
    qc: QC = Field(default_factory=QC)
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="the choice of documents and diverse_qa's sampling of pairs")
    throughput: float | None = Field(default=None, gt=0, le=1e12, allow_inf_nan=False,
                                     description="dry run: generated tokens per second per server (default: measured, else assumed)")

    _languages = field_validator("languages")(classmethod(lambda cls, value: value and [canonical_language(v) for v in value]))

    @field_validator("tasks")
    @classmethod
    def _names(cls, value: dict[str, Task]) -> dict[str, Task]:
        for name, task in value.items():
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"task name {name!r}: letters, digits, - and _ only (it is part of document ids)")
            base = task.task or name
            if base not in builtin_tasks() and task.prompt is None:
                raise ValueError(f"task {name}: not a built-in task ({', '.join(builtin_tasks())}): give its prompt file")
            if task.task is not None and task.task not in builtin_tasks():
                raise ValueError(f"task {name}: task {task.task!r} is not built in ({', '.join(builtin_tasks())})")
        return value

    @model_validator(mode="after")
    def _complete(self) -> RephraseStage:
        for task in self.resolved():
            if task.min_segment_tokens > task.max_input_tokens:
                raise ValueError(f"task {task.name}: min_segment_tokens {task.min_segment_tokens} is over max_input_tokens {task.max_input_tokens}")
        return self

    def resolved(self) -> list[Resolved]:
        """Every task with its built-in's settings where the entry leaves them unset."""
        found = []
        for name, task in self.tasks.items():
            base = dict(builtin_tasks().get(task.task or name, {}))
            for key in ("prompt", "system"):
                if base.get(key):
                    base[key] = str(PROMPTS / base[key])
            given = task.model_dump(exclude={"task"}, exclude_none=True)
            merged = {"mode": "segments", "max_input_tokens": 512, "max_output_tokens": 512, "min_segment_tokens": 0,
                      "min_output_tokens": 0, "post": "plain", "max_pairs": 10, "system": None, "prefix": None,
                      **base, **given, "name": name, "where": task.where,
                      "max_documents": task.max_documents, "max_tokens": task.max_tokens}
            for key in ("prompt", "system"):  # a file given here replaces the built-in's
                if key in given:
                    merged[key] = given[key]
            found.append(Resolved.model_validate(merged))
        return found

    def path_fields(self) -> list[tuple[object, str]]:
        found: list[tuple[object, str]] = [(task, key) for task in self.tasks.values() for key in ("prompt", "system")
                                           if getattr(task, key) is not None]
        if self.tokenizer:
            found.append((self, "tokenizer"))
        return found
