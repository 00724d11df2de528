"""``symbol_lines``: lines made only of symbols (``|`` by default: the debris trafilatura leaves
of tables) removed, each run of them replaced by ``replace_with`` (FineWeb2's
``SymbolLinesFormatter(symbols_to_remove=["|"], replace_char="\\n")``).

A line counts when it is not blank and holds nothing but the symbols and spaces. By default the
text is rebuilt as datatrove rebuilds it, which every document sees: its lines (split where
Python's ``str.splitlines`` splits, so ``\\r\\n`` and Unicode line separators too) joined with
``\\n``, a final line break dropped. ``normalize_line_breaks: false`` leaves a document without
any symbol line exactly as it was.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fineflow.tasks.format.formatter import Applied, Formatter, FormatterOptions


class SymbolLinesOptions(FormatterOptions):
    name: Literal["symbol_lines"] = "symbol_lines"
    symbols: list[str] = Field(default_factory=lambda: ["|"], min_length=1, max_length=256, description="single characters")
    replace_with: str = Field(default="\n", max_length=16, description="what a run of symbol lines becomes ('' removes it)")
    normalize_line_breaks: bool = Field(
        default=True, description="rejoin every document's lines with \\n as datatrove does (false: only documents with a symbol line)"
    )

    @field_validator("symbols")
    @classmethod
    def _characters(cls, symbols: list[str]) -> list[str]:
        if any(len(symbol) != 1 for symbol in symbols):
            raise ValueError("each symbol is one character")
        if any(symbol.isspace() for symbol in symbols):
            raise ValueError("a symbol cannot be whitespace: a blank line is never a symbol line")
        return symbols


def load(options: dict) -> SymbolLinesOptions:
    return SymbolLinesOptions.model_validate(options)


def apply(settings: SymbolLinesOptions, text: str) -> Applied:
    symbols = frozenset(settings.symbols) | {" "}
    if not any(symbol in text for symbol in settings.symbols):  # the common case: no line to look at
        return Applied(text="\n".join(text.splitlines()) if settings.normalize_line_breaks else text, counts={"symbol_lines": 0}, chars=0)
    kept: list[str] = []
    removed = chars = 0
    in_run = False
    for line in text.splitlines():
        if line.strip() and all(character in symbols for character in line):
            removed += 1
            chars += len(line)
            if not in_run and settings.replace_with:
                kept.append(settings.replace_with)
            in_run = True
        else:
            kept.append(line)
            in_run = False
    if not removed and not settings.normalize_line_breaks:
        return Applied(text=text, counts={"symbol_lines": 0}, chars=0)
    return Applied(text="\n".join(kept), counts={"symbol_lines": removed}, chars=chars)


FORMATTER = Formatter(name="symbol_lines", options=SymbolLinesOptions, load=load, apply=apply, counts=("symbol_lines",))
