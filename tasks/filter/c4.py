"""C4's rules (Raffel et al. 2020) as FineWeb applies them: line rules rewrite the text.

Line rules (they change the text, so they belong to the signal step): a word longer than
``max_word_length``, no terminal punctuation (off in FineWeb), fewer than
``min_words_per_line`` words, "javascript", cookie/terms-of-use phrases; citations like
``[12]`` are cut out of kept lines. Document rules (pure decisions): "lorem ipsum", a curly
bracket, fewer than ``min_num_sentences`` sentences in the kept lines. The rewrite is computed
as if the document rules were off, so switching them only re-runs the decision.

Sentences are counted on each kept line's words (the document's splitter, after citation
removal) the way spaCy's sentencizer counts them: a token made of the sentencizer's
sentence-final characters ends a sentence, the next token that is not punctuation starts one.
"""

from __future__ import annotations

import re

from pydantic import Field

from fineflow.tasks.filter.rule import Document, Rule, RuleOptions
from fineflow.tasks.filter.text import is_punct_token, sentencizer_punctuation
from fineflow.tasks.text.words import Splitter

PREFIX = "c4_"
CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4Options(RuleOptions):
    remove_citations: bool = True
    filter_no_terminal_punct: bool = Field(default=False, description="off in FineWeb")
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_javascript: bool = True
    filter_policy: bool = True
    filter_lorem_ipsum: bool = True
    filter_curly_bracket: bool = True
    min_num_sentences: int = 5
    THRESHOLDS = ("filter_lorem_ipsum", "filter_curly_bracket", "min_num_sentences")


def _sentences(tokens: list[str]) -> int:
    terminal = sentencizer_punctuation()
    count = 1 if tokens else 0
    if terminal.isdisjoint(tokens):
        return count  # no sentence end in the line: the loop below would count nothing more
    after_terminal = False
    for token in tokens:
        is_terminal = token in terminal
        if after_terminal and not is_terminal and not is_punct_token(token):
            count += 1
            after_terminal = False
        elif is_terminal:
            after_terminal = True
    return count


def rewrite(text: str, split: Splitter, options: dict) -> tuple[str, dict]:
    """Apply the line rules; return the kept text and the signals the document rules read.

    ``kept_words`` counts the words of the kept lines: the rewritten text's word count, so a
    later FineWeb-quality filter needs no second split.
    """
    kept: list[str] = []
    sentences = 0
    lorem = curly = False
    removed = kept_words = 0
    max_len = options["max_word_length"]
    for line in text.splitlines():
        line = line.strip()
        parts = line.split()
        if max_len != -1 and parts and max(map(len, parts)) > max_len:
            removed += 1
            continue
        if options["remove_citations"]:
            line = CITATION.sub("", line)
        if options["filter_no_terminal_punct"] and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
            removed += 1
            continue
        if len(parts) < options["min_words_per_line"]:
            removed += 1
            continue
        lowered = line.lower()
        lorem = lorem or "lorem ipsum" in lowered
        if options["filter_javascript"] and "javascript" in lowered:
            removed += 1
            continue
        curly = curly or "{" in line
        if options["filter_policy"] and any(p in lowered for p in POLICY_PHRASES):
            removed += 1
            continue
        tokens = split(line)
        sentences += _sentences(tokens)
        kept_words += len(tokens)
        kept.append(line)
    new_text = "\n".join(kept).strip()
    values = {
        "sentences": sentences,
        "lorem_ipsum": lorem,
        "curly_bracket": curly,
        "lines_removed": removed,
        "kept_words": kept_words,
    }
    return new_text, {PREFIX + key: value for key, value in values.items()}


def decide(values: dict, thresholds: dict) -> str | None:
    if thresholds.get("filter_lorem_ipsum") and values[PREFIX + "lorem_ipsum"]:
        return "lorem_ipsum"
    if thresholds.get("filter_curly_bracket") and values[PREFIX + "curly_bracket"]:
        return "curly_bracket"
    minimum = thresholds.get("min_num_sentences", -1)
    if minimum != -1 and values[PREFIX + "sentences"] < minimum:
        return "too_few_sentences"
    return None


def measure(spec: dict, document: Document) -> dict:
    rewritten, values = rewrite(document.text, document.split, spec)
    if rewritten != document.text:
        document.rewrite(rewritten, values[PREFIX + "kept_words"])
    return values


RULE = Rule(
    name="c4",
    options=C4Options,
    splits_words=True,
    rewrites_text=True,  # its line rules
    signals=[
        (PREFIX + "sentences", "int64"),
        (PREFIX + "lorem_ipsum", "bool"),
        (PREFIX + "curly_bracket", "bool"),
        (PREFIX + "lines_removed", "int64"),
        (PREFIX + "kept_words", "int64"),
    ],
    measure=measure,
    decide=decide,
    measured_by=PREFIX + "sentences",
)
