"""One interface over the encoder libraries: Hugging Face ``tokenizers`` and ``tiktoken``.

An :class:`Encoder` gives a document's raw ids (text only: special-token strings inside the
text are encoded as ordinary text, never as control tokens) and the ids the token writer puts
around every document: what the tokenizer itself adds (a BOS, by its post-processor or its GGUF
metadata) and an end-of-document token. Counts are ``len(raw) + len(prefix) + len(suffix)``, so
counts, budgets and written files agree exactly.

A tokenizer is described for the step functions by a JSON-able *source* (``describe``): its
format, its files (local paths or fsspec URLs, read once per process) and its special-token
choices; its *fingerprint* hashes the files' bytes, so a changed file recomputes every count.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fineflow import storage
from fineflow.tasks.tokenize import packaged
from fineflow.tasks.tokenize.config import TokenizerSpec

# Split patterns of OpenAI's BPE files (tiktoken's own definitions): a ranks file needs its pattern.
TIKTOKEN_PATTERNS = {
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    "cl100k": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    "o200k": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}
TIKTOKEN_SPECIALS = {
    "gpt2": {"<|endoftext|>": 50256},
    "cl100k": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
               "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
    "o200k": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}
# End-of-document tokens looked for, in order, when ``eos: auto``.
EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded or used as configured: a configuration error."""


@dataclass(frozen=True)
class Encoder:
    name: str
    engine: str  # "hf" or "tiktoken"
    vocab_size: int  # every id is below it: the largest id + 1 (added tokens included), not the entry count
    prefix: tuple[int, ...]  # written before every document (a BOS)
    suffix: tuple[int, ...]  # written after every document (an EOS)
    eos_token: str | None
    encode_texts: Callable[[list[str]], list[list[int]]]
    count_texts: Callable[[list[str]], list[int]]
    decode: Callable[[list[int]], str]

    @property
    def specials(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def document(self, raw: list[int]) -> list[int]:
        return [*self.prefix, *raw, *self.suffix]


def _sha256_of(url: str) -> str:
    return hashlib.sha256(storage.read_bytes(url)).hexdigest()


@lru_cache(maxsize=64)
def _cached_sha256(url: str, size: int, modified: float) -> str:
    return _sha256_of(url)


def file_sha256(url: str) -> str:
    """A file's content hash (cached per process while its size and time stay the same)."""
    try:
        return _cached_sha256(url, storage.size(url), storage.modified(url))
    except FileNotFoundError:
        raise TokenizerError(f"tokenizer file {url} does not exist") from None


def describe(spec: TokenizerSpec, trained_url: str | None = None) -> dict[str, Any]:
    """The JSON-able source of a configured tokenizer, as the step functions load it."""
    common = {"eos": spec.eos, "bos": spec.bos, "engine": spec.engine}
    if spec.packaged is not None:
        entry, files = packaged.files_of(spec.packaged)
        extra = {"pattern": entry.pattern} if entry.pattern else {}
        return {"format": entry.format, "files": files, "packaged": spec.packaged, **extra, **common}
    if spec.file is not None:
        return {"format": "hf", "files": [spec.file], **common}
    if spec.tiktoken is not None:
        return {"format": "tiktoken", "files": [spec.tiktoken], "pattern": spec.pattern,
                "special_tokens": dict(spec.special_tokens), **common}
    if spec.gguf is not None:
        return {"format": "gguf", "files": [spec.gguf], **common}
    if trained_url is None:
        raise TokenizerError("a trained tokenizer is described by its artifact's URL")
    return {"format": "hf", "files": [trained_url], "trained": True, **common}


def source_fingerprint(source: dict[str, Any], trained_fingerprint: str | None = None) -> str:
    """What a count with this tokenizer depends on: the files' bytes (or the training step's
    fingerprint, known before the file exists) and the special-token choices."""
    if source.get("trained"):
        files = [f"trained:{trained_fingerprint}"]
    else:
        files = [file_sha256(url) for url in source["files"]]
    material = {key: value for key, value in source.items() if key not in ("files", "packaged")}
    digest = hashlib.sha256(json.dumps({"files": files, **material}, sort_keys=True).encode()).hexdigest()
    return digest[:20]


# -- loading ---------------------------------------------------------------------------------


def _hf_tokenizer(source: dict[str, Any]):  # noqa: ANN202 (tokenizers.Tokenizer, imported lazily)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    fmt, files = source["format"], source["files"]
    if fmt == "hf":
        return Tokenizer.from_str(storage.read_bytes(files[0]).decode("utf-8")), None
    if fmt == "gpt2-bpe":
        encoder_json, vocab_bpe = (storage.read_bytes(url).decode("utf-8") for url in files)
        merges = [tuple(line.split()) for line in vocab_bpe.split("\n")[1:] if line.strip()]
        tokenizer = Tokenizer(models.BPE(vocab=json.loads(encoder_json), merges=merges))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens(list(TIKTOKEN_SPECIALS["gpt2"]))
        return tokenizer, None
    if fmt == "gguf":
        from fineflow.tasks.tokenize.gguf import load_gguf_tokenizer

        found = load_gguf_tokenizer(_local_path(files[0]))
        return found.tokenizer, found
    raise TokenizerError(f"format {fmt!r} has no Hugging Face encoder")


def _local_path(url: str) -> str:
    """A local path for libraries that read files by path (a remote file: this machine's model cache)."""
    try:
        return storage.local_file(url)
    except FileNotFoundError:
        raise TokenizerError(f"tokenizer file {url} does not exist") from None


def _tiktoken_ranks(source: dict[str, Any]) -> tuple[dict[bytes, int], dict[str, int]]:
    fmt, files = source["format"], source["files"]
    if fmt == "gpt2-bpe":
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        encoder_json, vocab_bpe = (_local_path(url) for url in files)
        return data_gym_to_mergeable_bpe_ranks(vocab_bpe, encoder_json), dict(TIKTOKEN_SPECIALS["gpt2"])
    if fmt != "tiktoken":
        raise TokenizerError(f"engine tiktoken reads BPE ranks files, not {fmt!r}")
    data = storage.read_bytes(files[0])
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ranks = {}
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, TypeError):
            raise TokenizerError(f"{files[0]}: line {number} is not '<base64 token> <rank>': not a tiktoken file") from None
    specials = dict(source.get("special_tokens") or {}) or dict(TIKTOKEN_SPECIALS.get(source.get("pattern") or "", {}))
    return ranks, specials


def _tiktoken_encoding(source: dict[str, Any]):  # noqa: ANN202
    import tiktoken

    ranks, specials = _tiktoken_ranks(source)
    pattern = TIKTOKEN_PATTERNS.get(source["pattern"], source["pattern"])
    return tiktoken.Encoding(name=f"fineflow-{source['pattern'][:20]}", pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens=specials)


def _engine(source: dict[str, Any]) -> str:
    if source["engine"] != "auto":
        return source["engine"]
    # tiktoken gives identical ids on these (bench/tokenize_bench.py checks every document) and is faster.
    return "tiktoken" if source["format"] in ("tiktoken", "gpt2-bpe") else "hf"


def _token_id(name: str, vocab: Callable[[str], int | None], token: str) -> int:
    found = vocab(token)
    if found is None:
        raise TokenizerError(f"tokenizer {name}: {token!r} is not in its vocabulary")
    return found


def _specials(name: str, source: dict[str, Any], vocab: Callable[[str], int | None], added: tuple[list[int], list[int]],
              ) -> tuple[tuple[int, ...], tuple[int, ...], str | None]:
    """(prefix, suffix, eos token) from the config's ``bos``/``eos`` and what the tokenizer adds."""
    own_prefix, own_suffix = added
    eos = source["eos"]
    if eos == "auto":
        eos = next((token for token in EOS_CANDIDATES if vocab(token) is not None), "none")
    bos = source["bos"]
    prefix = tuple(own_prefix) if bos == "auto" else () if bos == "none" else (_token_id(name, vocab, bos),)
    suffix = tuple(own_suffix)
    if eos != "none":
        eos_id = _token_id(name, vocab, eos)
        if not suffix or suffix[-1] != eos_id:
            suffix = (*suffix, eos_id)
    return prefix, suffix, None if eos == "none" else eos


def _added_by_post_processor(tokenizer) -> tuple[list[int], list[int]]:  # noqa: ANN001
    """What the tokenizer's post-processor puts around a text (e.g. Llama-3's BOS)."""
    plain = tokenizer.encode("x", add_special_tokens=False).ids
    full = tokenizer.encode("x", add_special_tokens=True).ids
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


def _hf_encoder(name: str, source: dict[str, Any]) -> Encoder:
    tokenizer, gguf = _hf_tokenizer(source)
    tokenizer.encode_special_tokens = True  # "<|endoftext|>" inside a document is text, not a control token
    if gguf is not None:
        added = ([gguf.bos_id] if gguf.add_bos and gguf.bos_id is not None else [],
                 [gguf.eos_id] if gguf.add_eos and gguf.eos_id is not None else [])
    else:
        added = _added_by_post_processor(tokenizer)
    prefix, suffix, eos = _specials(name, source, tokenizer.token_to_id, added)

    def encode_texts(texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]

    def count_texts(texts: list[str]) -> list[int]:
        return [len(encoding) for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]

    # A vocabulary's ids may have gaps (a file of 299 entries can hold id 70,000): the token files'
    # integer type follows the largest id, never the number of entries.
    largest = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)
    return Encoder(name, "hf", largest + 1, prefix, suffix, eos,
                   encode_texts, count_texts, lambda ids: tokenizer.decode(ids, skip_special_tokens=False))


def _tiktoken_encoder(name: str, source: dict[str, Any]) -> Encoder:
    encoding = _tiktoken_encoding(source)
    specials = encoding._special_tokens  # noqa: SLF001 (tiktoken exposes no public name -> id map)
    prefix, suffix, eos = _specials(name, source, specials.get, ([], []))

    def encode_texts(texts: list[str]) -> list[list[int]]:
        return encoding.encode_ordinary_batch(texts, num_threads=1)  # one Dask worker, one core

    def count_texts(texts: list[str]) -> list[int]:
        return [len(ids) for ids in encode_texts(texts)]

    return Encoder(name, "tiktoken", encoding.max_token_value + 1, prefix, suffix, eos, encode_texts, count_texts,
                   lambda ids: encoding.decode(ids, errors="strict"))


def load_encoder(name: str, source: dict[str, Any]) -> Encoder:
    """An encoder from its source; ``TokenizerError`` names the tokenizer and what is wrong."""
    try:
        return _load_cached(name, json.dumps(source, sort_keys=True))
    except TokenizerError:
        raise
    except FileNotFoundError as error:
        raise TokenizerError(f"tokenizer {name}: file not found: {error.filename or error}") from None
    except Exception as error:  # noqa: BLE001 (a corrupt file fails inside the library with its own error type)
        files = ", ".join(source.get("files", []))
        raise TokenizerError(f"tokenizer {name}: cannot load {files}: {type(error).__name__}: {error}") from None


@lru_cache(maxsize=16)
def _load_cached(name: str, source_json: str) -> Encoder:
    source = json.loads(source_json)
    return _tiktoken_encoder(name, source) if _engine(source) == "tiktoken" else _hf_encoder(name, source)


# The widest integer type each token file format takes.
WIDEST_DTYPE = {"megatron": "int32", "nanotron": "uint32"}


def token_dtype(vocab_size: int, writer: str) -> str:
    """The token files' integer type for ids below ``vocab_size``: Megatron's rule (uint16 below
    65,500, else int32) or datatrove's (uint16 up to 65,536, else uint32); a vocabulary too large
    is an error."""
    if writer == "megatron":
        if vocab_size < 65_500:
            return "uint16"
        if vocab_size <= 2**31 - 1:
            return "int32"
    else:
        if vocab_size <= 65_536:
            return "uint16"
        if vocab_size <= 2**32:
            return "uint32"
    raise TokenizerError(f"a vocabulary of {vocab_size:,} ids does not fit the {writer} token files' integer types")
