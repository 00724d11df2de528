"""Per-language filter settings, FineWeb2 style: one ``<lang>.yaml`` per language.

A file is named by a language code in any form fineflow understands (``ru.yaml``,
``rus_Cyrl.yml``; FineWeb2's ``configs/`` folder works as it is) and holds either FineWeb2's
flat keys (``language_score``, ``dup_line_frac``, ``top_n_grams`` as ``[[2, 0.184], ...]``,
``stopwords``, ...; each rule declares the flat keys it reads) or sections named after a filter
(``gopher_quality: {min_stop_words: 1}``), plus ``word_splitter``. Values override the stage's
options for documents of that language. ``builtin`` is the set fineflow ships, FineWeb2's
published values for the languages of its sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fineflow import storage
from fineflow.languages import canonical_language
from fineflow.tasks.filter import rules

BUILTIN = Path(__file__).parent / "languages"


class LanguageConfigError(ValueError):
    pass


def parse_language_config(data: Any, source: str) -> dict[str, Any]:
    """Normalize one file into ``{"word_splitter": ..., "<filter>": {option: value}}``."""
    if not isinstance(data, dict):
        raise LanguageConfigError(f"{source}: expected a mapping")
    known = rules.registered()  # a section per rule; flat keys as each rule declares them
    flat = {key: (rule, option) for rule in known.values() for key, option in rule.language_keys.items()}
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key == "word_splitter":
            settings["word_splitter"] = str(value)
        elif key in flat:
            rule, option = flat[key]
            settings.setdefault(rule.name, {})[option] = rule.language_value(option, value)
        elif key in known and isinstance(value, dict):
            for option, option_value in value.items():
                settings.setdefault(key, {})[option] = known[key].language_value(option, option_value)
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
