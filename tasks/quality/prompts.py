"""Annotation prompts and reading their answers.

A prompt is a template holding ``{text}`` (replaced literally: other braces are left alone); the
built-in ``edu`` is fineflow's additive 0-5 educational-value rubric, in the spirit of
FineWeb-Edu's. An answer is read robustly: ``Score: N`` anywhere (the last one wins), else a
lone number; anything else is recorded as unparsed with the reason, never guessed.
"""

from __future__ import annotations

import re
from pathlib import Path

from fineflow import storage
from fineflow.llm import AnswerForm

PROMPTS = Path(__file__).parent / "prompts"
PLACEHOLDER = "{text}"
MAX_SCORE = 5

_SCORE = re.compile(r"score\s*(?:is|of|=|:)?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_LONE_NUMBER = re.compile(r"^\W*(-?\d+(?:\.\d+)?)\W*$")


class PromptError(ValueError):
    pass


def load_template(prompt: str) -> str:
    """The built-in rubric by name, or a prompt file (local or URL) holding {text}."""
    if (PROMPTS / f"{prompt}.txt").is_file() and "/" not in prompt:
        template = (PROMPTS / f"{prompt}.txt").read_text(encoding="utf-8")
    else:
        try:
            template = storage.read_bytes(prompt).decode("utf-8")
        except FileNotFoundError:
            raise PromptError(f"annotate.prompt: no such prompt file: {prompt}") from None
    if PLACEHOLDER not in template:
        raise PromptError(f"annotate.prompt {prompt}: the template has no {PLACEHOLDER} placeholder for the document")
    return template


def load_wrapper(wrapper: str | None) -> str:
    """A wrapper given inline (it holds {prompt}) or as a file."""
    if wrapper is None:
        return "{prompt}"
    if "{prompt}" not in wrapper:
        try:
            wrapper = storage.read_bytes(wrapper).decode("utf-8")
        except FileNotFoundError:
            raise PromptError(f"annotate.wrapper: no such file, and not a text holding {{prompt}}: {wrapper}") from None
        if "{prompt}" not in wrapper:
            raise PromptError("annotate.wrapper: the file has no {prompt} placeholder")
    return wrapper


def full_template(template: str, wrapper: str | None, answer_prefix: str | None) -> str:
    """What is sent, with {text} still in it: the rubric inside the wrapper, then the answer's start."""
    return load_wrapper(wrapper).replace("{prompt}", template) + (answer_prefix or "")


def render(template: str, text: str, max_chars: int) -> str:
    return template.replace(PLACEHOLDER, text[:max_chars])


def parse_score(answer: str | None) -> tuple[float | None, str | None]:
    """(score, None), or (None, why not)."""
    if answer is None:
        return None, "no answer"
    if not answer.strip():
        return None, "empty answer"
    found = _SCORE.findall(answer)
    if not found:
        lone = _LONE_NUMBER.match(answer.strip())
        found = [lone.group(1)] if lone else []
    if not found:
        return None, "no score in the answer"
    value = float(found[-1])
    if not 0 <= value <= MAX_SCORE:
        return None, f"score {found[-1]} outside 0-{MAX_SCORE}"
    return value, None


def score_form(answer_prefix: str | None) -> AnswerForm:
    """The answer's form for a server that constrains it (``server.answer_format``): "Score: N"
    with N a whole score from 0 to 5 (the digit alone where the prompt ends with "Score:")."""
    digits = f"[0-{MAX_SCORE}]"
    grammar = f'root ::= " "? {digits}' if (answer_prefix or "").strip().lower().endswith("score:") else f'root ::= "Score: " {digits}'
    schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": MAX_SCORE}},
              "required": ["score"], "additionalProperties": False}
    return AnswerForm(grammar=grammar, json_schema=schema, from_json=lambda value: f"Score: {int(value['score'])}")
