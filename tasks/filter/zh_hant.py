"""FineWeb-zhtw's Traditional-Chinese rule: drop a document that uses any simplified-only
character, or no traditional character at all.

Character sets come from OpenCC's conversion tables (as FineWeb-zhtw used them, as sets, not
for conversion): simplified-only = keys of ``STCharacters`` minus the keys of ``TSCharacters`` minus a few characters both scripts use.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from fineflow.tasks.filter.rule import Document, Rule, RuleOptions

PREFIX = "zh_hant_"
# Characters the OpenCC tables list as simplified but Traditional text uses as well.
_SHARED = set("床峰群秘霉庄痴雇简体踪")


class ZhHantOptions(RuleOptions):
    languages: list[str] = Field(default_factory=lambda: ["zh"], description="documents this rule applies to")


def _table(name: str) -> list[list[str]]:
    import opencc

    path = Path(opencc.__file__).parent / "dictionary" / name
    return [line.split("\t")[0:1] + line.split("\t")[1].split() for line in path.read_text("utf-8").splitlines() if "\t" in line]


@lru_cache(maxsize=1)
def character_sets() -> tuple[frozenset[str], frozenset[str]]:
    simplified = {row[0] for row in _table("STCharacters.txt")}
    traditional = {row[0] for row in _table("TSCharacters.txt")}
    simplified_only = simplified - traditional - _SHARED
    return frozenset(simplified_only), frozenset(traditional)


def signals(text: str) -> dict:
    simplified_only, traditional = character_sets()
    chars = set(text)
    return {
        PREFIX + "simplified_only_chars": len(chars & simplified_only),
        PREFIX + "traditional_chars": len(chars & traditional),
    }


def decide(values: dict) -> str | None:
    if values[PREFIX + "simplified_only_chars"] > 0:
        return "simplified_chars"
    if values[PREFIX + "traditional_chars"] == 0:
        return "no_traditional_chars"
    return None


def measure(spec: dict, document: Document) -> dict:
    language = document.language
    if language in spec["languages"] or language.split("-")[0] in spec["languages"]:
        return signals(document.text)
    return {}  # other languages: not measured, so not decided


RULE = Rule(
    name="zh_hant",
    options=ZhHantOptions,
    signals=[(PREFIX + "simplified_only_chars", "int64"), (PREFIX + "traditional_chars", "int64")],
    measure=measure,
    decide=lambda row, limits: decide(row),
    measured_by=PREFIX + "traditional_chars",
)
