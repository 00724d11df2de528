"""How many tokens a backend may generate for one segment, and how much more a retry gets.

A fixed ``max_tokens`` either wastes room on short sentences or cuts long windows (150-word
windows into Arabic need several hundred tokens of a byte-level tokenizer), so unless the config
sets one the budget is derived from the segment (formula v1):

    first  = min(cap, FLOOR + FACTOR * estimate(segment))
    retry  = min(cap, 2 * first)          (only when it is more than ``first``)

``estimate`` is half the segment's UTF-8 bytes (``window.estimate``: on the high side for the
source); FACTOR leaves room for a target language whose tokens are shorter than the source's, and
FLOOR for a short segment's translation running a little long. ``cap`` keeps prompt + answer
inside the context: ``n_ctx`` minus the prompt's estimate for openai/llama, the decoder length
CTranslate2 models are used with for ctranslate2. A decoder only runs to its budget when it does
not stop by itself, so a generous budget costs nothing on a translation that ends.
"""

from __future__ import annotations

from fineflow.tasks.translate import window

FORMULA = "derived (formula v1)"  # what enters fingerprints and cache namespaces instead of a number
FLOOR = 32
FACTOR = 3
DECODER_CAP = 1024  # ctranslate2: NLLB's 1024 positions; the hard window keeps sources at 256 tokens


def derived(text: str) -> int:
    """Formula v1 before the cap."""
    return FLOOR + FACTOR * window.estimate(text)


def cap(kind: str, n_ctx: int, prompt: str) -> int:
    """The most a budget may be: what the context leaves after the prompt (at least 1)."""
    if kind == "ctranslate2":
        return DECODER_CAP
    return max(1, n_ctx - window.estimate(prompt))


def first(configured: int | None, text: str, ceiling: int) -> int:
    """The budget of a segment's first attempt: the configured one, else derived and capped."""
    return configured if configured is not None else min(ceiling, derived(text))


def retry(limit: int, ceiling: int) -> int | None:
    """The budget of the one retry of a truncated segment, None when the context has no more room."""
    more = min(max(ceiling, limit), 2 * limit)
    return more if more > limit else None
