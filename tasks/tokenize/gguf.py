"""Rebuild the tokenizer inside a GGUF model file as a Hugging Face ``tokenizers.Tokenizer``.

A GGUF file (llama.cpp's model format) carries its tokenizer as metadata: the token strings, their
types, the BPE merges (or SentencePiece scores) and the name of the pre-tokenizer, whose split
regexes live in llama.cpp's source (``src/llama-vocab.cpp``), not in the file. This module reads
those arrays and rebuilds the same tokenizer, so ``encode(text, add_special_tokens=False).ids``
are the ids llama.cpp gives the text with ``parse_special=false`` once
``tokenizer.encode_special_tokens`` is set.

Only the metadata block at the head of the file is read, through a memory map; the tensors are
never touched. ``gguf.GGUFReader`` builds a numpy view per element of every array (over five
seconds for SmolLM2-135M's 100k tokenizer strings, against 0.2 s here) and parses every tensor
header, so the key/value block is walked here with ``struct``, with the ``gguf`` package's
constants.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Any

import tokenizers
from gguf.constants import GGUF_MAGIC, GGUFValueType, Keys, TokenType
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

# -- llama.cpp's pre-tokenizers --------------------------------------------------------------
# llama.cpp splits the text with each regex in turn (every piece, matched or not, is split again
# by the next), then maps the pieces' bytes to GPT-2's byte alphabet: a Sequence of "isolated"
# Splits followed by a ByteLevel that does not split again.

# GPT-2's split. llama.cpp's list lacks the final "\s+", but it keeps unmatched text as pieces,
# which leaves the same single whitespace character that "\s+" would match.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Llama-3's split (its tokenizer.json); Qwen2's is the same with single digits.
_LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")


@dataclass(frozen=True)
class _Pre:
    regexes: tuple[str, ...]
    ignore_merges: bool = False  # a piece that is a whole token is taken as is (llama.cpp's flag)
    add_bos: bool = False  # llama.cpp's default when the file has no add_bos_token


_DIGITS_THEN_GPT2 = _Pre((r"\p{N}", _GPT2))  # SmolLM2's HF pre-tokenizer: Digits(individual) + ByteLevel
_LLAMA3_PRE = _Pre((_LLAMA3,), ignore_merges=True, add_bos=True)

# tokenizer.ggml.pre -> split; the names are llama.cpp's, grouped as its switch groups them.
PRE_TOKENIZERS: dict[str, _Pre] = {
    # llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEFAULT, also used when a gpt2 file names no pre-tokenizer
    "default": _Pre((r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")),
    **dict.fromkeys(("gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4"), _Pre((_GPT2,))),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"),
                    _DIGITS_THEN_GPT2),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3"), _LLAMA3_PRE),
    **dict.fromkeys(("dbrx", "smaug-bpe"), _Pre((_LLAMA3,))),  # Llama-3's split, no other flag
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"), _Pre((_QWEN2,))),
}
MODELS = ("gpt2", "llama")  # byte-level BPE; SentencePiece BPE (Llama-2, Mistral)


@dataclass(frozen=True)
class GGUFTokenizer:
    tokenizer: tokenizers.Tokenizer  # encode(text, add_special_tokens=False).ids == the model's ids
    bos_id: int | None  # tokenizer.ggml.bos_token_id
    eos_id: int | None  # tokenizer.ggml.eos_token_id
    add_bos: bool  # tokenizer.ggml.add_bos_token, else llama.cpp's default for the model type
    add_eos: bool  # tokenizer.ggml.add_eos_token, else False
    model: str  # tokenizer.ggml.model: "gpt2", "llama"
    pre: str  # tokenizer.ggml.pre: "smollm", "llama-bpe", ... ("default" when absent; "" for "llama")


def load_gguf_tokenizer(path: str) -> GGUFTokenizer:
    """The tokenizer stored in the GGUF file at ``path`` (a local path: the file is memory-mapped)."""
    meta = _read_tokenizer_metadata(path)
    model = meta.get(Keys.Tokenizer.MODEL)
    tokens = meta.get(Keys.Tokenizer.LIST)
    if model is None or tokens is None:
        raise ValueError(f"{path}: the GGUF file has no tokenizer metadata (tokenizer.ggml.model / tokens)")
    if model not in MODELS:
        raise ValueError(f"{path}: tokenizer model {model!r} is not supported (supported: {', '.join(MODELS)})")
    types = meta.get(Keys.Tokenizer.TOKEN_TYPE) or [TokenType.NORMAL] * len(tokens)
    if len(types) < len(tokens):
        raise ValueError(f"{path}: {len(types)} token types for {len(tokens)} tokens")
    vocab = _vocab(path, tokens)
    texts = list(vocab)  # id -> text, ids being 0..n-1 in order (an empty token renamed)

    if model == "gpt2":
        pre = meta.get(Keys.Tokenizer.PRE) or "default"  # llama.cpp falls back to its default split
        if pre not in PRE_TOKENIZERS:
            raise ValueError(f"{path}: pre-tokenizer {pre!r} is not supported "
                             f"(supported: {', '.join(sorted(PRE_TOKENIZERS))})")
        tokenizer = _byte_level_bpe(vocab, meta.get(Keys.Tokenizer.MERGES) or [], PRE_TOKENIZERS[pre])
        default_add_bos = PRE_TOKENIZERS[pre].add_bos
    else:
        pre = ""  # llama.cpp gives SentencePiece vocabularies no pre-tokenizer
        scores = meta.get(Keys.Tokenizer.SCORES)
        if scores is None or len(scores) < len(tokens):
            raise ValueError(f"{path}: a 'llama' tokenizer needs one score per token (tokenizer.ggml.scores)")
        unk = _token_id(meta.get(Keys.Tokenizer.UNK_ID, 0), len(tokens))  # llama.cpp's default: 0
        add_prefix = bool(meta.get(Keys.Tokenizer.ADD_PREFIX, True))
        tokenizer = _sentencepiece_bpe(vocab, scores, None if unk is None else texts[unk], add_prefix)
        default_add_bos = True

    # Control and user-defined tokens are matched in the text before the model runs, as llama.cpp
    # does; only control (and unknown) tokens are "special", so encode_special_tokens=True turns
    # them back into plain text while user-defined ones still match, as with parse_special=false.
    added = [AddedToken(text, special=kind != TokenType.USER_DEFINED, normalized=False)
             for text, kind in zip(texts, types)
             if kind in (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)]
    tokenizer.add_tokens(added)

    bos, eos = (_token_id(meta.get(key), len(tokens)) for key in (Keys.Tokenizer.BOS_ID, Keys.Tokenizer.EOS_ID))
    add_bos = bool(meta.get(Keys.Tokenizer.ADD_BOS, default_add_bos))
    add_eos = bool(meta.get(Keys.Tokenizer.ADD_EOS, False))
    # encode(text) with special tokens then adds what llama.cpp's tokenize(add_special=true) adds.
    prefix = [(texts[bos], bos)] if add_bos and bos is not None else []
    suffix = [(texts[eos], eos)] if add_eos and eos is not None else []
    if prefix or suffix:
        template = [*(text for text, _ in prefix), "$A", *(text for text, _ in suffix)]
        tokenizer.post_processor = processors.TemplateProcessing(single=template, special_tokens=prefix + suffix)
    return GGUFTokenizer(tokenizer, bos, eos, add_bos, add_eos, model, pre)


# -- the two models --------------------------------------------------------------------------


def _byte_level_bpe(vocab: dict[str, int], merges: list[str], pre: _Pre) -> tokenizers.Tokenizer:
    pairs = []
    for merge in merges:
        cut = merge.find(" ", 1)  # as llama.cpp: the first space after the first character
        left, right = merge[:cut], merge[cut + 1 :]
        # tokenizers rejects a merge whose parts or result are not tokens; llama.cpp could never
        # emit such a result as one token either, so it is dropped.
        if cut > 0 and left in vocab and right in vocab and left + right in vocab:
            pairs.append((left, right))
    tokenizer = tokenizers.Tokenizer(models.BPE(vocab, pairs, ignore_merges=pre.ignore_merges))
    regexes = [*pre.regexes, *_unencodable(vocab)]
    splits = [pre_tokenizers.Split(Regex(regex), behavior="isolated") for regex in regexes]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([*splits, byte_level])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _byte_alphabet() -> list[str]:
    """GPT-2's stand-in character for each byte, in byte order: printable Latin-1 stands for
    itself, the other bytes take U+0100 onwards."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    extra = iter(range(0x100, 0x200))
    return [chr(byte) if byte in printable else chr(next(extra)) for byte in range(256)]


def _unencodable(vocab: dict[str, int]) -> list[str]:
    """A split isolating the characters whose bytes start with a byte that has no token.

    llama.cpp keeps such a byte as a symbol that merges with nothing and then drops it, so its
    neighbours never merge across it; tokenizers would drop it first and merge them. SmolLM2 has no
    token for six C0 controls (U+0004, U+0006, U+0013, U+0014, U+0016, U+001D): ".\x04." is "." "."
    there, not "..". (A missing continuation byte, 0x80-0xBF, cannot be isolated this way.)"""
    ranges = []
    for byte, char in enumerate(_byte_alphabet()):
        if char in vocab:
            continue
        if byte < 0x80:
            ranges.append((byte, byte))
        elif 0xC2 <= byte <= 0xDF:  # lead bytes: the characters they start
            ranges.append(((byte - 0xC0) << 6, ((byte - 0xC0) << 6) + 0x3F))
        elif 0xE0 <= byte <= 0xEF:
            ranges.append(((byte - 0xE0) << 12, ((byte - 0xE0) << 12) + 0xFFF))
        elif 0xF0 <= byte <= 0xF4:
            ranges.append(((byte - 0xF0) << 18, min(((byte - 0xF0) << 18) + 0x3FFFF, 0x10FFFF)))
    # surrogates are no characters of a str (and 0xC0, 0xC1, 0xF5-0xFF start none)
    ranges = [part for low, high in ranges
              for part in ((low, min(high, 0xD7FF)), (max(low, 0xE000), high)) if part[0] <= part[1]]
    if not ranges:
        return []
    return ["[" + "".join(f"\\x{{{low:X}}}-\\x{{{high:X}}}" for low, high in ranges) + "]"]


def _sentencepiece_bpe(vocab: dict[str, int], scores: list[float], unk: str | None, add_space_prefix: bool,
                       ) -> tokenizers.Tokenizer:
    """llama.cpp's SPM tokenizer: spaces become "▁", then adjacent symbols whose concatenation is a
    token merge, highest score first; characters that no token covers fall back to <0xXX> byte
    tokens. As a BPE, every split of a token into two tokens is a merge, ranked by that score.
    Like llama.cpp, any token may be the result of a merge, whatever its type."""
    texts = list(vocab)  # id -> text (ids are 0..n-1, in order)
    ranked = sorted((-scores[index], index, cut) for index, text in enumerate(texts)
                    for cut in range(1, len(text)) if text[:cut] in vocab and text[cut:] in vocab)
    merges = [(texts[index][:cut], texts[index][cut:]) for _, index, cut in ranked]
    tokenizer = tokenizers.Tokenizer(models.BPE(vocab, merges, unk_token=unk, byte_fallback=True))
    prefix = [normalizers.Prepend("▁")] if add_space_prefix else []
    tokenizer.normalizer = normalizers.Sequence([*prefix, normalizers.Replace(" ", "▁")])
    strip = [decoders.Strip(" ", 1, 0)] if add_space_prefix else []  # the space the normalizer added
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), *strip])
    return tokenizer


# -- the GGUF metadata block -----------------------------------------------------------------

# Value type -> struct code, for the fixed-size ones.
_SCALAR = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}


def _read_tokenizer_metadata(path: str) -> dict[str, Any]:
    """The ``tokenizer.ggml.*`` keys of a GGUF file, decoded; the other keys are skipped."""
    try:
        file = open(path, "rb")  # noqa: SIM115 (closed below, after the map)
    except OSError as error:  # missing, a folder, no permission
        raise ValueError(f"{path}: cannot read the GGUF file ({error.strerror or error})") from error
    with file:
        try:
            data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as error:  # an empty file cannot be mapped
            raise ValueError(f"{path}: not a GGUF file ({error})") from error
        with data:
            return _KeyValues(data, path).tokenizer_keys()


class _KeyValues:
    """Walks the header: magic, version, tensor count, key/value count, then the key/values."""

    def __init__(self, data: mmap.mmap, path: str) -> None:
        self.data, self.path, self.pos = data, path, 0
        if len(data) < 24 or data[:4] != struct.pack("<I", GGUF_MAGIC):
            raise ValueError(f"{path}: not a GGUF file (no 'GGUF' magic at its start)")
        version = struct.unpack_from("<I", data, 4)[0]
        # a file written on a big-endian machine reads as a version with a zero low half
        self.order = ">" if version & 0xFFFF == 0 else "<"
        version = struct.unpack_from(self.order + "I", data, 4)[0]
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version} is not supported (2 or 3)")
        self.pos = 8

    def tokenizer_keys(self) -> dict[str, Any]:
        _tensors, count = self._unpack("QQ")
        found = {}
        try:
            for _ in range(count):
                key = self._string().decode("utf-8", "replace")
                (kind,) = self._unpack("I")
                keep = key.startswith("tokenizer.ggml.")
                value = self._value(kind, keep)
                if keep:
                    found[key] = value
        except (struct.error, IndexError, OverflowError, MemoryError) as error:  # sizes past the end
            raise ValueError(f"{self.path}: truncated or corrupt GGUF metadata ({error})") from error
        return found

    def _unpack(self, codes: str) -> tuple[Any, ...]:
        values = struct.unpack_from(self.order + codes, self.data, self.pos)
        self.pos += struct.calcsize(self.order + codes)
        return values

    def _string(self) -> bytes:
        (size,) = self._unpack("Q")
        if self.pos + size > len(self.data):
            raise IndexError("a string runs past the end of the file")
        text = self.data[self.pos : self.pos + size]
        self.pos += size
        return text

    def _strings(self, count: int) -> list[bytes]:
        # the tokens and merges arrays: ~100k strings, so the loop keeps everything local
        data, pos, size_at, strings = self.data, self.pos, struct.Struct(self.order + "Q").unpack_from, []
        for _ in range(count):
            (size,) = size_at(data, pos)
            strings.append(data[pos + 8 : pos + 8 + size])
            pos += 8 + size
        if pos > len(data):
            raise IndexError("a string runs past the end of the file")
        self.pos = pos
        return strings

    def _value(self, kind: int, keep: bool) -> Any:
        if kind in _SCALAR:
            return self._unpack(_SCALAR[kind])[0]
        if kind == GGUFValueType.STRING:
            return self._string().decode("utf-8", "replace") if keep else self._string()
        if kind != GGUFValueType.ARRAY:
            raise ValueError(f"{self.path}: unknown GGUF value type {kind}")
        item, count = self._unpack("IQ")
        if item in _SCALAR:
            codes = f"{count}{_SCALAR[item]}"
            if not keep:  # skipped without decoding: a tensor-sized array costs nothing
                self.pos += struct.calcsize(self.order + codes)
                return None
            return list(self._unpack(codes))
        if item == GGUFValueType.STRING:
            strings = self._strings(count)
            return [text.decode("utf-8", "replace") for text in strings] if keep else None
        return [self._value(item, keep) for _ in range(count)]  # nested arrays (not in tokenizers)


# -- helpers ---------------------------------------------------------------------------------


def _vocab(path: str, tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for index, text in enumerate(tokens):
        text = text or f"[EMPTY_{index}]"  # llama.cpp's name for an empty token
        if vocab.setdefault(text, index) != index:
            raise ValueError(f"{path}: token {text!r} appears twice (ids {vocab[text]} and {index})")
    return vocab


def _token_id(value: int | None, size: int) -> int | None:
    # llama.cpp ignores a special token id outside the vocabulary
    return value if value is not None and 0 <= value < size else None
