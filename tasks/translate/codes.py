"""Language names and model language codes from fineflow's codes (fineflow/languages.py)."""

from __future__ import annotations

from functools import lru_cache

import langcodes

from fineflow.languages import LANGUAGE_NAMES, language_name

name = language_name  # the name this stage's modules use

# FLORES-200 codes (NLLB's) that are not simply ISO 639-3 + the usual script.
_NLLB = {"ar": "arb_Arab", "zh": "zho_Hans", "zh-Hant": "zho_Hant", "fa": "pes_Arab", "sw": "swh_Latn", "no": "nob_Latn",
         "nb": "nob_Latn", "ms": "zsm_Latn", "et": "est_Latn", "lv": "lvs_Latn", "uz": "uzn_Latn", "mn": "khk_Cyrl",
         "ps": "pbt_Arab", "sq": "als_Latn", "az": "azj_Latn", "qu": "quy_Latn", "yi": "ydd_Hebr", "gn": "gug_Latn"}


@lru_cache(maxsize=512)
def nllb_code(code: str) -> str:
    """``fr`` -> ``fra_Latn``, ``ar`` -> ``arb_Arab``."""
    if code in _NLLB:
        return _NLLB[code]
    language = langcodes.Language.get(code)
    script = language.maximize().script or "Latn"
    return f"{language.to_alpha3()}_{script}"


def known(code: str) -> bool:
    """A code fineflow can translate into or from: one it names, or a valid BCP-47 language
    (``xx`` and ``und`` are not; neither is a private-use ``qaa``-``qtz``)."""
    if code in LANGUAGE_NAMES or code in _NLLB:
        return True
    if code == "und" or not langcodes.tag_is_valid(code):
        return False
    language = langcodes.Language.get(code).language or ""
    return not ("qaa" <= language <= "qtz")


def model_code(code: str, scheme: str, overrides: dict[str, str]) -> str:
    if code in overrides:
        return overrides[code]
    return nllb_code(code) if scheme == "nllb" else code
