"""Plan the filter stage: a ``signals`` step, then a ``decide`` step, over the upstream shards.

The signals fingerprint covers the upstream output, every parameter that changes the text or a
measurement (C4's line rules, n-gram sizes, stop words, word splitters, blocklist contents, the
LID model) and the segmenting libraries' versions. The decide fingerprint covers the signals
fingerprint and the thresholds only, so a threshold change leaves the signals Cached.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from fineflow import storage
from fineflow.filter_config import FilterStage
from fineflow.fingerprint import file_content_hash, step_fingerprint
from fineflow.manifest import StepLocation, shard_name
from fineflow.steps import StepPlan
from fineflow.tasks.filter import decide, signals, url_filter
from fineflow.tasks.filter.language_configs import LanguageConfigError, load_language_configs
from fineflow.tasks.text.words import splitter_resources

LIBRARIES = ("numpy", "pyarrow", "pyahocorasick", "tldextract", "opencc-python-reimplemented", "fasttext-predict")


class MissingUpstream(ValueError):
    pass


def _signal_specs(config: FilterStage, language_configs: dict[str, dict]) -> list[dict]:
    specs = []
    for options in config.filters:
        signal_params, _ = options.split()
        spec: dict[str, Any] = {"name": options.name, **signal_params}
        if options.name == "url":
            defaults = url_filter.default_lists()
            spec = {"name": "url", "lists": {k: (defaults[k] if v == "default" else v) for k, v in signal_params.items()}}
        elif options.name == "language":
            spec["languages"] = options.languages  # unlisted languages are not measured
        elif options.name == "gopher_repetition":
            top = set(options.top_n_grams)
            dup = set(options.dup_n_grams)
            for settings in language_configs.values():
                section = settings.get("gopher_repetition", {})
                top |= set(section.get("top_n_grams", {}))
                dup |= set(section.get("dup_n_grams", {}))
            spec.update(top_ns=sorted(top), dup_ns=sorted(dup))
        specs.append(spec)
    return specs


def _threshold_specs(config: FilterStage) -> list[dict]:
    return [{"name": options.name, **options.split()[1]} for options in config.filters]


def _per_language_thresholds(config: FilterStage, language_configs: dict[str, dict]) -> dict[str, dict]:
    """Language config values that are thresholds (stop words and splitters are signals)."""
    per_language: dict[str, dict] = {}
    names = {options.name: options for options in config.filters}
    for lang, settings in sorted(language_configs.items()):
        for section, values in settings.items():
            if section not in names:
                continue
            model = type(names[section])
            thresholds = {k: v for k, v in values.items() if k in model.THRESHOLDS}
            try:
                model.model_validate({**names[section].model_dump(), **values})
            except ValidationError as error:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
                raise LanguageConfigError(f"language config {lang!r}, section {section}: {problems}") from None
            if thresholds:
                per_language.setdefault(lang, {})[section] = thresholds
    return per_language


def build_params(config: FilterStage) -> tuple[dict, dict]:
    """(signals step parameters, decide step parameters) of a filter stage configuration."""
    language_configs = load_language_configs(config.language_configs)
    specs = _signal_specs(config, language_configs)
    splitters = {lang: s["word_splitter"] for lang, s in language_configs.items() if "word_splitter" in s}
    splitters.update(config.word_splitters)
    stop_words = {
        lang: sorted(s["gopher_quality"]["stop_words"])
        for lang, s in sorted(language_configs.items())
        if "stop_words" in s.get("gopher_quality", {})
    }
    signal_params = {
        "filters": specs,
        "stop_words_by_language": stop_words,
        "word_splitters": dict(sorted(splitters.items())),
        "max_text_chars": config.max_text_chars,
    }
    decide_params = {
        "filters": _threshold_specs(config),
        "per_language": _per_language_thresholds(config, language_configs),
    }
    # As JSON sees them (n-gram sizes become string keys), so a plan compares equal to a stored one.
    return json.loads(json.dumps(signal_params)), json.loads(json.dumps(decide_params))


def plan_filter(config: FilterStage, root: str, upstream: dict | None) -> list[StepPlan]:
    if upstream is None:
        raise MissingUpstream("the filter stage reads documents: put a crawl (or another document) stage before it")
    signal_params, decide_params = build_params(config)
    specs = signal_params["filters"]
    resources = splitter_resources()
    for spec in specs:
        if spec["name"] == "url":
            for key, url in spec["lists"].items():
                if url:
                    resources[f"url_filter.{key}"] = file_content_hash(url)["blake2b"]
        if spec["name"] == "language" and spec.get("model"):
            from fineflow.tasks.text import langid

            resources["language.model"] = langid.model_hash(spec["model"])
    signals_fp = step_fingerprint(
        stage="filter",
        step="signals",
        step_version=signals.STEP_VERSION,
        params=signal_params,
        inputs={"upstream": upstream["fingerprint"]},
        libraries=LIBRARIES,
        resources=resources,
    )
    inputs = [storage.join(upstream["output"], shard_name(n)) for n in range(upstream["shards"])]
    signals_plan = StepPlan(
        stage="filter",
        step="signals",
        function="fineflow.tasks.filter.signals:signals_shard",
        params=signal_params,
        shards=[{"shard": n, "input": url} for n, url in enumerate(inputs)],
        fingerprint=signals_fp,
        root=root,
    )
    decide_fp = step_fingerprint(
        stage="filter",
        step="decide",
        step_version=decide.STEP_VERSION,
        params=decide_params,
        inputs={"upstream": upstream["fingerprint"], "signals": signals_fp.value},
        libraries=("pyarrow",),
    )
    signals_location = StepLocation(root, "filter", "signals", signals_fp.value)
    decide_plan = StepPlan(
        stage="filter",
        step="decide",
        function="fineflow.tasks.filter.decide:decide_shard",
        params=decide_params,
        shards=[
            {"shard": n, "input": url, "signals": signals_location.shard_url(n)} for n, url in enumerate(inputs)
        ],
        fingerprint=decide_fp,
        root=root,
    )
    return [signals_plan, decide_plan]
