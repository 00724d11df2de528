"""fineflow's one language-code scheme: normalized BCP-47 tags.

Every model's labels are mapped to the shortest standard tag: ISO 639-1 where one exists
(``en``, ``ru``, ``zh``), else ISO 639-3 (``ast``, ``ckb``), with a script subtag only when it is
not the language's usual script (``sr-Latn``, ``zh-Hant``); individual languages of a macrolanguage take its code. So
lid.176's ``ru``, FineWeb2's ``rus_Cyrl`` and ``rus`` all become ``ru``, and ``cmn_Hani`` becomes ``zh``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

import langcodes
from pydantic import AfterValidator

UNKNOWN = "und"
# language -> word splitter, keyed by canonical codes whatever form the config used
WordSplitters = Annotated[dict[str, str], AfterValidator(lambda mapping: canonical_keys(mapping))]
# Individual languages langcodes does not fold into their macrolanguage (lid.176 says "no").
_MACROLANGUAGES = {"nb": "no"}
# Scripts langcodes does not recognize as a language's usual one.
_USUAL_SCRIPTS = {"ko": ("Hang", "Kore"), "ja": ("Jpan", "Hira", "Kana")}


def canonical_keys(mapping: dict[str, str]) -> dict[str, str]:
    """A per-language mapping with its keys in the canonical scheme (config validation)."""
    return {canonical_language(key): value for key, value in mapping.items()}


@lru_cache(maxsize=4096)
def canonical_language(code: str) -> str:
    """Map a model label or a FineWeb2-style ``xxx_Scrp`` code to fineflow's canonical tag."""
    raw = code.strip()
    if raw.startswith("__label__"):
        raw = raw[len("__label__") :]
    if not raw:
        return UNKNOWN
    try:
        language = langcodes.Language.get(raw.replace("_", "-"), normalize=True)
        # Individual languages of a macrolanguage (FineWeb2's cmn, arb) take its code (zh, ar),
        # as lid.176 labels them; "Hani" only says "Han characters", which zh implies.
        language = language.prefer_macrolanguage()
        if language.script == "Hani" or language.script in _USUAL_SCRIPTS.get(language.language, ()):
            language = language.update_dict({"script": None})
        tag = language.simplify_script().to_tag()
        tag = _MACROLANGUAGES.get(tag, tag)
    except (ValueError, langcodes.tag_parser.LanguageTagError):
        return raw.lower()
    return tag or UNKNOWN


LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
          "nl": "Dutch", "ru": "Russian", "uk": "Ukrainian", "pl": "Polish", "cs": "Czech", "ar": "Arabic", "fa": "Persian",
          "tr": "Turkish", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "vi": "Vietnamese", "id": "Indonesian",
          "sw": "Swahili", "cy": "Welsh", "hi": "Hindi", "el": "Greek", "sv": "Swedish", "da": "Danish", "no": "Norwegian",
          "fi": "Finnish", "ro": "Romanian", "hr": "Croatian", "ca": "Catalan", "he": "Hebrew", "th": "Thai"}


@lru_cache(maxsize=512)
def language_name(code: str) -> str:
    """English name for prompts: ``fr`` -> ``French`` (langcodes' names need the optional
    language_data package: the common ones are here)."""
    if code in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[code]
    try:
        return langcodes.Language.get(code).display_name("en")
    except (ValueError, LookupError, ImportError):
        return code
