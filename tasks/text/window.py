"""The hard window: no segment sent to a backend is longer than its model can take.

Sentences mode keeps a sentence whole, and a line without sentence punctuation is one
"sentence" (a 17k-character line was refused by a server for its context length, on every
re-run). Segments over ``limit`` tokens are cut here, at whitespace where there is any, else
between characters, until every part fits; the cut's whitespace stays untranslated.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

# Per backend kind, when the config names none: ctranslate2 counts with the model's own tokenizer
# (NLLB was trained on sentences: a few hundred tokens at most); the others with ``estimate``.
DEFAULT_INPUT_TOKENS = {"ctranslate2": 256, "openai": 512, "llama": 512, "http": 512, "identity": 512}


def estimate(text: str) -> int:
    """Tokens without a tokenizer at hand, on the high side: half the UTF-8 bytes. English runs
    ~4-5 bytes per token and CJK ~3 bytes per 1-2 tokens, so a window by this estimate fits."""
    return (len(text.encode("utf-8", "surrogatepass")) + 1) // 2


def _cut_point(text: str) -> tuple[int, int]:
    """Where to cut ``text`` in two: the whitespace run nearest its middle (start, end), else the
    middle character (not before a combining mark)."""
    middle = len(text) // 2
    for distance in range(len(text) // 2 + 1):
        for at in (middle - distance, middle + distance):
            if 0 < at < len(text) - 1 and text[at].isspace():
                start, end = at, at + 1
                while start > 0 and text[start - 1].isspace():
                    start -= 1
                while end < len(text) and text[end].isspace():
                    end += 1
                if 0 < start and end < len(text):
                    return start, end
    at = max(1, middle)
    while at < len(text) - 1 and unicodedata.combining(text[at]):
        at += 1
    return at, at


def cut(text: str, limit: int, count: Callable[[str], int]) -> list[tuple[str, bool]]:
    """``text`` as (part, translate) pairs that concatenate to it, every translated part at most
    ``limit`` tokens by ``count`` (a single character is never cut further)."""
    if len(text) <= 1 or count(text) <= limit:
        return [(text, True)]
    start, end = _cut_point(text)
    gap = [(text[start:end], False)] if end > start else []
    return cut(text[:start], limit, count) + gap + cut(text[end:], limit, count)


def token_counter(tokenizer: str | None) -> Callable[[str], int]:
    """Tokens of a text by a Hugging Face ``tokenizer.json`` (a path or URL), else ``estimate``."""
    if not tokenizer:
        return estimate
    from tokenizers import Tokenizer

    from fineflow import storage

    model = Tokenizer.from_file(storage.local_file(tokenizer))
    return lambda text: len(model.encode(text, add_special_tokens=False).ids)
