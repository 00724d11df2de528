"""``ftfy``: mojibake and broken Unicode repaired with the ``ftfy`` library, with FineWeb2's
settings (datatrove's ``FTFYFormatter``) by default.

Fixed: text decoded with the wrong encoding (``fix_encoding`` and its helpers), C1 control
characters, surrogate pairs, terminal escapes, control characters, HTML entities where the text
has no tags (``unescape_html: auto``). Left alone, because they impose one way of writing that
models then never see otherwise: no Unicode normalization, Latin ligatures, character width
(half-width would be wrong for Chinese and Japanese punctuation), curly quotes, line breaks.
The library's version is pinned in fineflow's dependencies and enters the step's fingerprint.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fineflow.tasks.format.formatter import Applied, Formatter, FormatterOptions


class FtfyOptions(FormatterOptions):
    name: Literal["ftfy"] = "ftfy"
    unescape_html: Literal["auto"] | bool = "auto"
    remove_terminal_escapes: bool = True
    fix_encoding: bool = True
    restore_byte_a0: bool = True
    replace_lossy_sequences: bool = True
    decode_inconsistent_utf8: bool = True
    fix_c1_controls: bool = True
    fix_latin_ligatures: bool = False
    fix_character_width: bool = False
    uncurl_quotes: bool = False
    fix_line_breaks: bool = False
    fix_surrogates: bool = True
    remove_control_chars: bool = True
    normalization: Literal["NFC", "NFD", "NFKC", "NFKD"] | None = Field(default=None, description="None: no normalization")


def load(options: dict) -> object:
    from ftfy import TextFixerConfig

    settings = FtfyOptions.model_validate(options)
    return TextFixerConfig(**settings.model_dump(exclude={"name", "module"}))


def apply(config: object, text: str) -> Applied:
    import ftfy

    return Applied(text=ftfy.fix_text(text, config=config))


FORMATTER = Formatter(name="ftfy", options=FtfyOptions, load=load, apply=apply, libraries=("ftfy",))
