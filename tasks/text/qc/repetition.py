"""Repetition: the share of a text's n-grams that repeat an earlier one (a model caught in a loop
says the same words again and again).

Text in a script written without spaces (Chinese, Japanese, Thai, Lao, Khmer, Myanmar, Tibetan)
has no words to split on, so it is measured on characters: n-grams of ``CHAR_N`` letters
(whitespace and punctuation left out), which repeat in human text about as rarely as word
3-grams do in spaced languages (calibration.json records the fit). The script is decided from
the text itself (its letters), not from a language code, so a wrong-language answer is measured
as what it is.
"""

from __future__ import annotations

from collections import Counter

import regex

_NO_SPACE = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}]")
_LETTER = regex.compile(r"[\p{L}\p{M}\p{N}]")
_WORD_LETTER = regex.compile(r"[\p{L}\p{M}]")  # the script is its letters', digits aside ("6.2.7. 自动" is Chinese)

WORD_N = 3
CHAR_N = 5  # a Chinese word is 1.5-2 characters: 5 characters span about as much as 3 words
MIN_GRAMS = 4  # fewer n-grams than this measure nothing (0.0)


def written_without_spaces(text: str) -> bool:
    """Whether most of the text's letters belong to scripts written without spaces."""
    sample = text[:4000]
    letters = len(_WORD_LETTER.findall(sample))
    return letters > 0 and len(_NO_SPACE.findall(sample)) > 0.5 * letters


def units(text: str) -> tuple[list[str], int]:
    """(the text's units, the n-gram size): letters for scripts without spaces, else words."""
    if written_without_spaces(text):
        return _LETTER.findall(text.casefold()), CHAR_N
    return text.casefold().split(), WORD_N


def repetition(text: str, min_grams: int = MIN_GRAMS) -> float:
    """The share of the text's n-grams that are repeats of an earlier one (0.0 for fewer than
    ``min_grams`` n-grams); a text saying one phrase over and over comes close to 1."""
    tokens, n = units(text)
    total = len(tokens) - n + 1
    if total < min_grams:
        return 0.0
    counts = Counter(tuple(tokens[i : i + n]) for i in range(total))
    return (total - len(counts)) / total
