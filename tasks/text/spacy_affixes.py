"""spaCy's split of one whitespace-free chunk, computed from its tokenizer's own rules in Python.

spaCy's ``Tokenizer`` splits a chunk by repeatedly taking a prefix and a suffix off it (its
``prefix_search`` and ``suffix_search``), stopping at a ``token_match`` or a special case, then
splits what remains at its ``infix_finditer`` matches; special cases are applied during that loop
and again afterwards over the resulting tokens (a phrase matcher). Each call also builds a
``Doc`` and a vocabulary entry, with its lexical attributes, for every new string: most of the
cost on web text, where most chunks are new. This module runs the same loop, with the same
callables, on strings only (``Tokenizer._split_affixes`` and ``_attach_tokens`` as spaCy 3.8 has
them), and answers None wherever a special case could take part, so the caller asks spaCy for
those chunks. The tests compare it with spaCy on every chunk of real pages in many languages.
"""

from __future__ import annotations

from collections.abc import Callable

import spacy

# The spaCy versions whose tokenizer loop this mirrors (checked against their source); with any
# other, every chunk goes to spaCy.
PORTED_VERSIONS = ("3.8.",)

AffixSplit = Callable[[str], "tuple[str, ...] | None"]


def _length(match) -> int:  # noqa: ANN001 (an re/regex match or None)
    return 0 if match is None else match.end() - match.start()


def affix_splitter(tokenizer) -> AffixSplit | None:  # noqa: ANN001 (a spacy.tokenizer.Tokenizer)
    """``chunk -> its tokens``, or None where spaCy must tokenize the chunk itself; None instead of
    a function for a spaCy version this module does not mirror."""
    if not spacy.__version__.startswith(PORTED_VERSIONS):
        return None
    rules = tokenizer.rules or {}
    specials = frozenset(rules)
    # Special cases are applied again over the tokens (a phrase matcher on their spaceless forms):
    # a run of tokens spelling one, or a single token that is one with several pieces, goes to spaCy.
    spelled = frozenset("".join(special.split()) for special in rules)
    reshaped = frozenset(special for special, pieces in rules.items() if len(pieces) > 1)
    token_match, url_match = tokenizer.token_match, tokenizer.url_match
    prefix_search, suffix_search, infix_finditer = tokenizer.prefix_search, tokenizer.suffix_search, tokenizer.infix_finditer

    def split(chunk: str) -> tuple[str, ...] | None:
        prefixes: list[str] = []
        suffixes: list[str] = []
        string, last_size = chunk, 0
        while string and len(string) != last_size:
            if token_match and token_match(string):
                break
            if string in specials:
                return None
            last_size = len(string)
            pre_len = _length(prefix_search(string)) if prefix_search else 0
            if pre_len and string[pre_len:] in specials:
                return None
            suf_len = _length(suffix_search(string[pre_len:])) if suffix_search else 0
            if suf_len and string[:-suf_len] in specials:
                return None
            if pre_len and suf_len and pre_len + suf_len <= len(string):
                prefixes.append(string[:pre_len])
                suffixes.append(string[-suf_len:])
                string = string[pre_len:-suf_len]
            elif pre_len:
                prefixes.append(string[:pre_len])
                string = string[pre_len:]
            elif suf_len:
                suffixes.append(string[-suf_len:])
                string = string[:-suf_len]
        tokens = prefixes
        if string:
            if string in specials:
                return None
            if (token_match and token_match(string)) or (url_match and url_match(string)):
                tokens.append(string)
            else:
                start = 0
                for match in infix_finditer(string) if infix_finditer else ():
                    infix_start, infix_end = match.start(), match.end()
                    if infix_start == 0:  # an infix at the very start stays with what follows
                        continue
                    if infix_start != start:
                        tokens.append(string[start:infix_start])
                    if infix_start != infix_end:
                        tokens.append(string[infix_start:infix_end])
                    start = infix_end
                if string[start:]:
                    tokens.append(string[start:])
        tokens.extend(reversed(suffixes))
        for first, token in enumerate(tokens):
            if token in reshaped:
                return None
            run = token
            for following in tokens[first + 1 :]:
                run += following
                if run in spelled:
                    return None
        return tuple(tokens)

    return split
