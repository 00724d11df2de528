"""Configuration of the tokenize stage: which tokenizers count, and what token files are written.

A tokenizer entry names exactly one source: ``packaged`` (a short name, ``packaged.PACKAGED``),
``file`` (a Hugging Face ``tokenizer.json``, local or any fsspec URL), ``tiktoken`` (a BPE ranks
file with its split ``pattern``), ``gguf`` (the tokenizer inside a GGUF model file) or ``train``
(byte-level BPE trained in the run on a seeded sample of this stage's input). A plain string is
short for ``{packaged: NAME}``. The entry's key names its columns (``n_tokens_<key>``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, field_validator, model_validator

from fineflow.stage_config import StageConfig, Strict

TOKENIZER_NAME = r"^[a-z0-9][a-z0-9_]*$"  # a column suffix and a file-name part: no dots or dashes
SOURCES = ("packaged", "file", "tiktoken", "gguf", "train")
MAX_SEED = 2**63 - 1  # numpy's generators and the sample's hash keys take it


class TrainSpec(Strict):
    languages: list[str] | None = Field(
        default=None, description="train on documents of these languages only (e.g. [ar]); default: all"
    )
    vocab_size: int = Field(
        default=32_000, ge=300, le=1_000_000,
        description="at most this many tokens; a sample with fewer frequent merges gives fewer (a step warning)",
    )
    sample_bytes: int = Field(
        default=20_000_000, ge=1_000, le=2_000_000_000,
        description="UTF-8 bytes of text sampled to train on: the trainer's memory grows with its input, never the corpus",
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    min_frequency: int = Field(default=2, ge=1, le=1_000_000_000)
    special_tokens: list[str] = Field(default_factory=lambda: ["<|endoftext|>"], min_length=1)


class TokenizerSpec(Strict):
    packaged: str | None = None
    file: str | None = Field(default=None, description="a Hugging Face tokenizer.json (path or fsspec URL)")
    tiktoken: str | None = Field(default=None, description="a tiktoken BPE ranks file (.tiktoken, or .tiktoken.gz)")
    pattern: str | None = Field(default=None, description="tiktoken: gpt2, cl100k, o200k, or a split regex")
    special_tokens: dict[str, Annotated[int, Field(ge=0, le=2**32 - 1)]] = Field(
        default_factory=dict, description="tiktoken: special token -> id"
    )
    gguf: str | None = Field(default=None, description="a GGUF model file: its tokenizer")
    train: TrainSpec | None = None
    eos: str = Field(default="auto", description="appended to every document: 'auto' (the tokenizer's), 'none', or a token")
    bos: str = Field(default="auto", description="prepended: 'auto' (what the tokenizer itself adds), 'none', or a token")
    engine: Literal["auto", "hf", "tiktoken"] = Field(
        default="auto", description="the encoder library; auto picks tiktoken where it gives identical ids"
    )

    @model_validator(mode="after")
    def _one_source(self) -> TokenizerSpec:
        given = [name for name in SOURCES if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SOURCES)} (got {', '.join(given) or 'none'})")
        if (self.pattern or self.special_tokens) and self.tiktoken is None:
            raise ValueError("pattern and special_tokens belong to a tiktoken file")
        if self.tiktoken is not None and self.pattern is None:
            raise ValueError("a tiktoken file needs its split pattern: gpt2, cl100k, o200k or a regex")
        if self.engine == "tiktoken" and (self.file or self.gguf or self.train):
            raise ValueError("engine tiktoken reads BPE ranks files (tiktoken:, packaged gpt2/cl100k/o200k)")
        return self

    @property
    def source(self) -> str:
        return next(name for name in SOURCES if getattr(self, name) is not None)


def _short_form(value: Any) -> Any:
    return {"packaged": value} if isinstance(value, str) else value


# A tokenizer entry, or a packaged tokenizer's short name (the deployment form accepts both).
TokenizerEntry = Annotated[TokenizerSpec, BeforeValidator(_short_form, json_schema_input_type=Union[str, TokenizerSpec])]  # noqa: UP007


class TokenizeStage(StageConfig):
    stage: Literal["tokenize"]
    tokenizers: dict[str, TokenizerEntry] = Field(min_length=1, description="name -> tokenizer; each adds n_tokens_<name>")
    write: Literal["megatron", "nanotron", "none"] = Field(
        default="none", description="token files: Megatron-LM .bin/.idx, nanotron/datatrove .ds, or none (count only)"
    )
    write_tokenizer: str | None = Field(default=None, description="the tokenizer whose ids are written (default: the first)")
    max_tokens_per_file: int = Field(default=2_000_000_000, ge=1, le=10**12, description="a token file holds at most this many")
    merge_tasks: int = Field(
        default=16, ge=1, le=10_000,
        description="merge tasks (at most one per input shard): each writes a run of files of about equal tokens, "
                    "its memory bounded by its own files, not the corpus",
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="the global shuffle of the written documents")
    partition_by: list[str] = Field(
        default_factory=list, description="columns whose values split the token files (e.g. [language, quality_level])"
    )
    key_columns: list[str] = Field(
        default_factory=list, description="columns the token counts are broken down by, besides language and domain"
    )
    repeats_column: str = Field(default="repeats", description="where present, a document is written that many times")
    top_domains: int = Field(default=20, ge=1, le=10_000, description="domains listed per language in the summary")
    max_chars: int = Field(default=2_000_000, gt=0, le=2**31 - 1, description="longer texts go to rejects instead of the encoder")
    batch_size: int = Field(default=1_000, ge=1, le=1_000_000)

    @field_validator("tokenizers")
    @classmethod
    def _names(cls, value: dict[str, TokenizerSpec]) -> dict[str, TokenizerSpec]:
        import re

        bad = [name for name in value if not re.match(TOKENIZER_NAME, name)]
        if bad:
            raise ValueError(f"tokenizer names are column suffixes: lower-case letters, digits and _ ({', '.join(bad)})")
        return value

    @model_validator(mode="after")
    def _writer(self) -> TokenizeStage:
        if self.write_tokenizer is not None and self.write_tokenizer not in self.tokenizers:
            raise ValueError(f"write_tokenizer {self.write_tokenizer!r} is not one of the tokenizers")
        if self.write == "none" and (self.partition_by or self.write_tokenizer):
            raise ValueError("partition_by and write_tokenizer need write: megatron or nanotron")
        return self

    @property
    def writer(self) -> str | None:
        """The tokenizer whose ids go to the token files (None: counting only)."""
        if self.write == "none":
            return None
        return self.write_tokenizer or next(iter(self.tokenizers))

    def resolve_paths(self, resolve: Callable[[str], str]) -> None:
        for spec in self.tokenizers.values():
            for key in ("file", "tiktoken", "gguf"):
                if getattr(spec, key):
                    setattr(spec, key, resolve(getattr(spec, key)))

    def named_files(self) -> list[str]:
        return [getattr(spec, key) for spec in self.tokenizers.values() for key in ("file", "tiktoken", "gguf") if getattr(spec, key)]
