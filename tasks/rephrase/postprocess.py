"""Post-processing of a generated answer into a synthetic text, per task kind (Nemotron-CC's,
papers.md §c.7). Every one first removes the line the prompt asked the answer to start with,
where it is there (an answer without it is kept as it is), and trims the text.

- ``plain``: nothing more;
- ``wiki``: markdown emphasis and heading marks and quotes around the whole text removed;
- ``extract_knowledge``: "Passage:" label lines removed (a label before text on its line too);
- ``knowledge_list``: a first line that is not an item dropped, "- " markers and two-space
  indents removed;
- ``diverse_qa``: the answer parsed into question-answer pairs ("Question:" lines, with the lines
  after each one), shuffled, the first ``randint(1, max(1, int(max_pairs * tokens / 150)))`` kept
  (``tokens``: the input segment's) and appended to the input segment after a blank line; an
  answer with no pair, or with text before its first question, gives nothing (``no_pairs``).

A post-processor returns the text, or None with a reason for an answer that gives none.
"""

from __future__ import annotations

import random
import re

_PASSAGE = re.compile(r"^\s*\**\s*passage(?:\s*\d+)?\s*:\s*\**\s*", re.IGNORECASE)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1")
_QUOTES = {('"', '"'), ("“", "”"), ("'", "'"), ("«", "»"), ("„", "“")}


def strip_prefix(answer: str, prefix: str | None) -> str:
    """The answer without ``prefix`` at its start (ignoring case, whitespace and markdown emphasis
    around it); unchanged when it does not start with it."""
    text = answer.strip()
    if not prefix:
        return text
    bare = text.lstrip("*_# ").lower()
    wanted = prefix.strip().lower()
    if bare.startswith(wanted):
        rest = text[len(text) - len(bare) + len(wanted):]
        return rest.lstrip("*_ \t").lstrip("\n").strip()
    return text


def _unquoted(text: str) -> str:
    return text[1:-1].strip() if len(text) >= 2 and (text[0], text[-1]) in _QUOTES else text


def _wiki(text: str) -> str:
    lines = [_EMPHASIS.sub(r"\2", _HEADING.sub("", line)) for line in _unquoted(text).split("\n")]
    return _unquoted("\n".join(lines).strip())


def _extract_knowledge(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        if _PASSAGE.match(line):
            line = _PASSAGE.sub("", line)
            if not line.strip():
                continue
        lines.append(line)
    return "\n".join(lines).strip()


def _knowledge_list(text: str) -> str:
    lines = []
    for index, line in enumerate(text.split("\n")):
        if index == 0 and not line.lstrip().startswith("-"):
            continue  # an introduction before the list
        if line.startswith("- ") or line.startswith("  "):
            line = line[2:].strip()
        lines.append(line)
    return "\n".join(lines).strip()


def qa_pairs(text: str) -> list[str] | None:
    """The question-answer pairs of an answer (each "Question: ...\\nAnswer: ..."), None where a
    line comes before the first question."""
    pairs: list[str] = []
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        if line.startswith("- "):
            line = line[2:].strip()
        if line.startswith("Question:"):
            pairs.append(line)
        elif pairs:
            pairs[-1] += "\n" + line
        else:
            return None
    return pairs


def diverse_qa(segment: str, text: str, segment_tokens: int, max_pairs: int, rng: random.Random) -> str | None:
    pairs = qa_pairs(text)
    if not pairs:
        return None
    rng.shuffle(pairs)
    keep = rng.randint(1, max(1, int(max_pairs * segment_tokens / 150)))
    return segment + "\n\n" + "\n\n".join(pairs[:keep])


def apply(kind: str, answer: str, prefix: str | None, segment: str, segment_tokens: int, max_pairs: int,
          rng: random.Random) -> tuple[str | None, str | None]:
    """(synthetic text, None), or (None, why there is none)."""
    text = strip_prefix(answer, prefix)
    if kind == "diverse_qa":
        found = diverse_qa(segment, text, segment_tokens, max_pairs, rng)
        return (found, None) if found else (None, "no_pairs")
    if kind == "wiki":
        text = _wiki(text)
    elif kind == "extract_knowledge":
        text = _extract_knowledge(text)
    elif kind == "knowledge_list":
        text = _knowledge_list(text)
    return (text, None) if text else (None, "empty")
