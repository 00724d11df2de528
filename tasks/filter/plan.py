"""Plan the filter stage: a ``signals`` step, then a ``decide`` step, over the upstream shards.

The signals fingerprint covers the upstream output, every parameter that changes the text or a
measurement (C4's line rules, n-gram sizes, stop words, word splitters, blocklist contents, the
LID model) and the segmenting libraries' versions. The decide fingerprint covers the signals
fingerprint and the thresholds only, so a threshold change leaves the signals Cached.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from fineflow import storage
from fineflow.steps import PlanContext, StepPlan
from fineflow.tasks.filter import decide, rules, signals
from fineflow.tasks.filter.config import FilterStage
from fineflow.tasks.filter.language_configs import LanguageConfigError, load_language_configs
from fineflow.tasks.filter.rule import RuleOptions
from fineflow.tasks.text import langid, words
from fineflow.tasks.text.words import splitter_resources

# About half of a web crawl is English: a step that measures any language will most likely split it.
_MOST_COMMON_LANGUAGE = "en"


def _spec(options: RuleOptions, body: dict) -> dict:
    """A filter's spec in step parameters; the rule's module lets a worker import the rule."""
    rule = rules.get(options.name)
    return {"name": rule.name, "module": rule.module, **body}


def _signal_specs(config: FilterStage, language_configs: dict[str, dict]) -> list[dict]:
    return [_spec(options, rules.get(options.name).prepare(options, language_configs)) for options in config.filters]


def _threshold_specs(config: FilterStage) -> list[dict]:
    """Thresholds and the condition on which documents a rule judges (decide fingerprint only)."""
    return [
        _spec(options, {**options.split()[1], **({"where": options.where.model_dump(mode="json")} if options.where else {})})
        for options in config.filters
    ]


def input_columns(config: FilterStage) -> list[tuple[str, str]]:
    """The input columns the stage reads beyond the documents' own: each ``where`` condition's."""
    return [(options.where.column, f"filters.{options.name}.where.column") for options in config.filters if options.where]


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


def build_params(config: FilterStage, language_configs: dict[str, dict] | None = None) -> tuple[dict, dict]:
    """(signals step parameters, decide step parameters) of a filter stage configuration."""
    if language_configs is None:
        language_configs = load_language_configs(config.language_configs)
    specs = _signal_specs(config, language_configs)
    splitters = {lang: s["word_splitter"] for lang, s in language_configs.items() if "word_splitter" in s}
    splitters.update(config.word_splitters)
    signal_params = {
        "filters": specs,
        "word_splitters": dict(sorted(splitters.items())),
        "max_text_chars": config.max_text_chars,
    }
    decide_params = {
        "filters": _threshold_specs(config),
        "per_language": _per_language_thresholds(config, language_configs),
    }
    # As JSON sees them (n-gram sizes become string keys), so a plan compares equal to a stored one.
    return json.loads(json.dumps(signal_params)), json.loads(json.dumps(decide_params))


def warm_up(config: FilterStage, signal_params: dict, language_configs: dict[str, dict]) -> tuple[tuple[str, str], ...]:
    """What the signals step's workers load, built before they fork: the word splitters of the
    languages it measures (those the language filter lists, else those with a language config or
    a configured splitter, and English) and a re-identifying language filter's model."""
    warm: list[tuple[str, str]] = []
    for options in config.filters:
        if options.name == "language" and getattr(options, "model", None):
            warm.append((f"{langid.__name__}:load_model", options.model))
    if any(rules.get(options.name).splits_words for options in config.filters):
        splitters = signal_params["word_splitters"]
        listed = next((options.languages for options in config.filters if options.name == "language" and options.languages), None)
        languages = set(listed) if listed else {*language_configs, *splitters, _MOST_COMMON_LANGUAGE}
        names = {signals.splitter_name(splitters, language) for language in languages}
        warm += [(f"{words.__name__}:load_splitter", name) for name in sorted(names)]
    return tuple(warm)


def preflight(config: FilterStage) -> list[str]:
    """A language filter's own fastText model is checked before any work, in a child process
    with limits (a truncated file must not take a worker down): one line naming the file."""
    from fineflow.model_check import ModelCheckError
    from fineflow.tasks.text import fasttext_file

    for options in config.filters:
        model = getattr(options, "model", None) if options.name == "language" else None
        if model and model != langid.DEFAULT_MODEL:
            try:
                fasttext_file.check(storage.local_file(langid.resolve_model_path(model)))
            except (FileNotFoundError, ModelCheckError) as error:
                raise ValueError(f"filters.language.model: {error}") from None
    return []


def rewrites_text(config: FilterStage) -> bool:
    """Whether a rule of this stage rewrites the text (C4's line rules)."""
    return any(rules.get(options.name, options.module).rewrites_text for options in config.filters)


def plan_filter(config: FilterStage, ctx: PlanContext) -> list[StepPlan]:
    assert ctx.inputs is not None  # a document-reading kind: the DAG gives it inputs
    language_configs = load_language_configs(config.language_configs)
    signal_params, decide_params = build_params(config, language_configs)
    specs = signal_params["filters"]
    resources = splitter_resources()
    for spec in specs:
        resources.update(rules.for_spec(spec).resources(spec))  # the lists and models it reads, by content
    inputs = ctx.inputs.shards()
    built, worker_specs, built_fingerprints = [], [], {}
    for spec in specs:
        rule = rules.for_spec(spec)
        if rule.build is None:
            worker_specs.append(spec)
            continue
        steps, worker_spec = rule.build(spec, ctx, signal_params)  # e.g. wordlists from these documents
        built += steps
        worker_specs.append(worker_spec)
        built_fingerprints[rule.name] = [step.fingerprint.value for step in steps]
    signals_plan = ctx.step(
        signals, "signals_shard", step="signals", params={**signal_params, "filters": worker_specs},
        fingerprint_params=signal_params,  # the built artifacts' URLs name the storage root: chained instead
        chained={"upstream": ctx.inputs.fingerprint, **({"built": built_fingerprints} if built_fingerprints else {})},
        shards=inputs, resources=resources, warm=warm_up(config, signal_params, language_configs),
    )
    signals_location = signals_plan.location
    decide_plan = ctx.step(
        decide, "decide_shard", step="decide", params=decide_params,
        chained={"upstream": ctx.inputs.fingerprint, "signals": signals_plan.fingerprint.value},
        shards=[{**shard, "signals": signals_location.shard_url(shard["shard"])} for shard in inputs],
    )
    return [*built, signals_plan, decide_plan]
