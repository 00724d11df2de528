"""Per-language filter settings, FineWeb2 style: one ``<lang>.yaml`` per language.

A file is named by a language code in any form fineflow understands (``ru.yaml``,
``rus_Cyrl.yml``; FineWeb2's ``configs/`` folder works as it is) and holds either FineWeb2's
flat keys (``language_score``, ``dup_line_frac``, ``top_n_grams`` as ``[[2, 0.184], ...]``,
``stopwords``, ...) or sections named after a filter (``gopher_quality: {min_stop_words: 1}``),
plus ``word_splitter``. Values override the stage's options for documents of that language.
``builtin`` is the set fineflow ships, FineWeb2's published values for the languages of its sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fineflow import storage
from fineflow.languages import canonical_language

BUILTIN = Path(__file__).parent / "languages"

# FineWeb2's flat keys -> (filter, option)
FLAT_KEYS = {
    "language_score": ("language", "min_score"),
    "dup_line_frac": ("gopher_repetition", "dup_line_frac"),
    "dup_para_frac": ("gopher_repetition", "dup_para_frac"),
    "dup_line_char_frac": ("gopher_repetition", "dup_line_char_frac"),
    "dup_para_char_frac": ("gopher_repetition", "dup_para_char_frac"),
    "top_n_grams": ("gopher_repetition", "top_n_grams"),
    "dup_n_grams": ("gopher_repetition", "dup_n_grams"),
    "min_doc_words": ("gopher_quality", "min_doc_words"),
    "max_doc_words": ("gopher_quality", "max_doc_words"),
    "min_avg_word_length": ("gopher_quality", "min_avg_word_length"),
    "max_avg_word_length": ("gopher_quality", "max_avg_word_length"),
    "max_non_alpha_words_ratio": ("gopher_quality", "max_non_alpha_words_ratio"),
    "min_stop_words": ("gopher_quality", "min_stop_words"),
    "stopwords": ("gopher_quality", "stop_words"),
    "stop_words": ("gopher_quality", "stop_words"),
    "line_punct_thr": ("fineweb_quality", "line_punct_thr"),
    "new_line_ratio": ("fineweb_quality", "new_line_ratio"),
    "char_duplicates_ratio": ("fineweb_quality", "char_duplicates_ratio"),
    "short_line_thr": ("fineweb_quality", "short_line_thr"),
}
SECTIONS = ("url", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb_quality", "zh_hant")


class LanguageConfigError(ValueError):
    pass


def _pairs_to_dict(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
        return {int(n): float(v) for n, v in value}
    if isinstance(value, dict):
        return {int(n): float(v) for n, v in value.items()}
    return value


def parse_language_config(data: Any, source: str) -> dict[str, Any]:
    """Normalize one file into ``{"word_splitter": ..., "<filter>": {option: value}}``."""
    if not isinstance(data, dict):
        raise LanguageConfigError(f"{source}: expected a mapping")
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key == "word_splitter":
            settings["word_splitter"] = str(value)
        elif key in FLAT_KEYS:
            section, option = FLAT_KEYS[key]
            if option in ("top_n_grams", "dup_n_grams"):
                value = _pairs_to_dict(value)
            settings.setdefault(section, {})[option] = value
        elif key in SECTIONS and isinstance(value, dict):
            for option, option_value in value.items():
                if option in ("top_n_grams", "dup_n_grams"):
                    option_value = _pairs_to_dict(option_value)
                settings.setdefault(key, {})[option] = option_value
        else:
            raise LanguageConfigError(f"{source}: unknown key {key!r}")
    return settings


def load_language_configs(source: str | None) -> dict[str, dict[str, Any]]:
    """All ``<lang>.yaml`` files of a folder (local or fsspec URL), keyed by canonical language."""
    if source is None:
        return {}
    folder = str(BUILTIN) if source == "builtin" else source
    names = sorted(n for n in storage.list_names(folder) if n.endswith((".yaml", ".yml")))
    if not names:
        raise LanguageConfigError(f"language config folder {folder} has no .yaml files")
    configs: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    for name in names:
        url = storage.join(folder, name)
        try:
            data = yaml.safe_load(storage.read_bytes(url))
        except yaml.YAMLError as error:
            raise LanguageConfigError(f"{url}: not valid YAML: {error}") from None
        language = canonical_language(name.rsplit(".", 1)[0])
        if language in configs:
            raise LanguageConfigError(f"{url} and {origin[language]} both configure language {language!r}")
        configs[language] = parse_language_config(data, url)
        origin[language] = url
    return configs
