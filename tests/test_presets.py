"""The example pipelines as shipped: every one validates and plans on the bundled sample, and the
FineWeb, FineWeb2 and Fineweb-Edu-Chinese presets are their recipes (stage kinds and order, the
formatters' order, the settings the recipes name). Planning only: nothing runs, so this is fast;
each preset was run end to end on the sample when it was written (docs say how)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from fineflow.config import load_config
from fineflow.planning import all_steps

EXAMPLES = REPO / "examples"


def planned(name: str, tmp_path: Path):
    config = load_config(EXAMPLES / name, storage_override=str(tmp_path / "store"))
    return config, all_steps(config)


def shape(config) -> list[tuple[str, str]]:
    """(kind, name) of each stage, in the file's order."""
    return [(stage.stage, stage.label) for stage in config.stages]


def steps_of(plans, name: str) -> list[str]:
    return [plan.step for plan in plans if plan.name == name]


def stage(config, name: str):
    return next(s for s in config.stages if s.label == name)


def at_defaults(entries) -> bool:
    """Each formatter entry with nothing but its defaults (datatrove's settings, which the recipes used)."""
    return all(entry == type(entry).model_validate({"name": entry.name}) for entry in entries)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_validates_and_plans_on_the_sample(name, tmp_path):
    config, plans = planned(name, tmp_path)
    assert {plan.name for plan in plans} == {s.label for s in config.stages}  # every stage has steps
    crawls = [plan for plan in plans if plan.stage == "crawl"]
    assert crawls and all(plan.shards for plan in crawls)  # the sample's files were found
    assert not [warning for plan in plans for warning in plan.warnings]


def test_fineweb_preset_is_the_recipe(tmp_path):
    config, plans = planned("fineweb.yaml", tmp_path)
    # FineWeb: filters, then MinHash per dump, then PIIFormatter; an audit-only decontamination last
    assert shape(config) == [("crawl", "crawl"), ("filter", "filter"), ("dedup", "dedup"), ("format", "format"),
                             ("decontaminate", "decontaminate")]
    assert [rule.name for rule in stage(config, "filter").filters] == [
        "language", "gopher_repetition", "gopher_quality", "c4", "fineweb_quality"]
    dedup = stage(config, "dedup")
    assert (dedup.exact, dedup.url, dedup.near) == (False, False, True)
    assert (dedup.n_grams, dedup.bands, dedup.rows, dedup.hash_function) == (5, 14, 8, "sha1")
    formatters = stage(config, "format").formatters
    assert [entry.name for entry in formatters] == ["pii"] and at_defaults(formatters)
    assert stage(config, "decontaminate").mode == "audit"  # changes no document: the recipe's output stays FineWeb's
    assert steps_of(plans, "filter") == ["signals", "decide"]
    assert steps_of(plans, "dedup") == ["signatures", "buckets", "cluster", "remove"]
    assert config.export is not None


def test_fineweb2_preset_is_the_recipe(tmp_path):
    config, plans = planned("fineweb2.yaml", tmp_path)
    # FineWeb2: MinHash first (cluster sizes kept), per-language filters, FTFY -> PII -> symbol lines,
    # precision filtering last
    assert shape(config) == [("crawl", "crawl"), ("dedup", "dedup"), ("filter", "filter"), ("format", "format"),
                             ("filter", "precision")]
    dedup = stage(config, "dedup")
    assert (dedup.exact, dedup.url, dedup.near) == (False, False, True)
    assert (dedup.n_grams, dedup.bands, dedup.rows, dedup.hash_function) == (5, 14, 8, "xxhash")
    filters = stage(config, "filter")
    assert filters.language_configs is not None
    assert [rule.name for rule in filters.filters] == ["language", "gopher_repetition", "fineweb_quality", "gopher_quality"]
    repetition, quality = filters.filters[1], filters.filters[2]
    assert (repetition.dup_para_frac, repetition.dup_para_char_frac, repetition.dup_line_char_frac) == (0, 0, 0)
    assert (quality.short_line_thr, quality.char_duplicates_ratio) == (999, 0.1)
    formatters = stage(config, "format").formatters
    assert [entry.name for entry in formatters] == ["ftfy", "pii", "symbol_lines"] and at_defaults(formatters)
    assert (formatters[2].symbols, formatters[2].replace_with) == (["|"], "\n")
    (precision,) = stage(config, "precision").filters
    assert precision.name == "precision" and precision.languages and precision.wordlists == "build"
    assert precision.affinity_threshold == 0.85
    assert steps_of(plans, "dedup") == ["signatures", "buckets", "cluster", "remove"]
    assert steps_of(plans, "filter") == ["signals", "decide"]
    assert steps_of(plans, "precision") == ["wordlist_counts", "wordlist_parts", "wordlists", "signals", "decide"]
    assert config.export is not None and config.export.config_by == "language"


def test_fineweb_edu_chinese_preset_is_the_recipe(tmp_path):
    config, plans = planned("fineweb-edu-chinese.yaml", tmp_path)
    assert shape(config) == [("crawl", "crawl"), ("filter", "filter"), ("quality", "edu"), ("dedup", "dedup")]
    (language,) = stage(config, "filter").filters
    assert language.languages == ["zh"]
    edu = stage(config, "edu")
    assert edu.annotate.languages == ["zh"] and Path(edu.annotate.prompt).name == "edu-zh.txt"
    assert edu.classifiers["edu"].model == "embedding" and edu.classifiers["edu"].labels.annotations
    (keep,) = edu.keep
    assert (keep.scorer, keep.min) == ("edu", 4)  # OpenCSG's card: a score greater than 4
    dedup = stage(config, "dedup")
    assert (dedup.exact, dedup.url, dedup.near) == (False, False, True)
    assert steps_of(plans, "edu")[:2] == ["sample", "annotate"]
