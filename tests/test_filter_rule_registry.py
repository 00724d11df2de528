"""A filter rule from a module fineflow does not ship, named by ``module:`` in its filter entry:
validated by its own options model, measured by ``signals_shard`` and decided by ``decide_shard``
in a fresh process that only gets the step parameters (as a Dask worker does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from fineflow.documents import DOCUMENT_SCHEMA, read_input, write_table
from fineflow.tasks.filter.config import FilterStage
from fineflow.tasks.filter.plan import build_params

REPO = Path(__file__).resolve().parent.parent
TOY = "fineflow_toy_rule"
TOY_SOURCE = '''
"""Drops a document that says a word too often."""
from fineflow.tasks.filter.rule import Rule, RuleOptions


class ToyOptions(RuleOptions):
    word: str = "spam"  # a signal parameter: what is counted
    max_count: int = 2
    THRESHOLDS = ("max_count",)


def measure(spec, document):
    return {"toy_count": document.words.count(spec["word"])}


def decide(row, limits):
    return "too_much_spam" if row["toy_count"] > limits["max_count"] else None


RULE = Rule(
    name="toy", options=ToyOptions, signals=[("toy_count", "int64")], measure=measure, decide=decide,
    measured_by="toy_count", language_keys={"toy_max_count": "max_count"},
)
'''


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rules")
    (folder / f"{TOY}.py").write_text(TOY_SOURCE)
    (folder / "fineflow_fake_c4.py").write_text("from fineflow.tasks.filter.c4 import RULE\n")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


def stage(filters: list[dict], **options) -> FilterStage:
    return FilterStage.model_validate({"stage": "filter", "filters": filters, **options})


def test_a_rule_of_another_module_is_configured_by_its_own_options(toy_folder):
    config = stage([{"name": "toy", "module": TOY, "word": "eggs"}, {"name": "c4"}])
    toy = config.filters[0]
    assert type(toy).__name__ == "ToyOptions" and toy.word == "eggs" and toy.max_count == 2
    dumped = config.model_dump(mode="json")  # what flows and run records receive
    assert dumped["filters"][0] == {"name": "toy", "module": TOY, "word": "eggs", "max_count": 2}
    assert dumped["filters"][1]["name"] == "c4" and "module" not in dumped["filters"][1]  # built-ins dump as written
    assert FilterStage.model_validate(dumped) == config

    signal_params, decide_params = build_params(config)
    assert signal_params["filters"][0] == {"name": "toy", "module": TOY, "word": "eggs"}
    assert decide_params["filters"][0] == {"name": "toy", "module": TOY, "max_count": 2}
    assert signal_params["filters"][1]["module"] == "fineflow.tasks.filter.c4"


def test_config_errors_name_the_rule_entry(toy_folder):
    from fineflow.config import ConfigError, parse_config

    def parse(entry: dict) -> None:
        parse_config({"name": "x", "stages": [{"stage": "crawl", "inputs": ["a"]}, {"stage": "filter", "filters": [entry]}]})

    with pytest.raises(ConfigError, match=r"stages\.1\.filters\.0\.max_count: Input should be a valid integer"):
        parse({"name": "toy", "module": TOY, "max_count": "many"})
    with pytest.raises(ConfigError, match=r"stages\.1\.filters\.0\.wrod: Extra inputs are not permitted"):
        parse({"name": "toy", "module": TOY, "wrod": "spam"})
    with pytest.raises(ConfigError, match=f"module '{TOY}' defines filter 'toy', not 'spam'"):
        parse({"name": "spam", "module": TOY})
    with pytest.raises(ConfigError, match="module 'no_such_rules' cannot be imported"):
        parse({"name": "toy", "module": "no_such_rules"})
    with pytest.raises(ConfigError, match="filter 'c4' is defined twice: by fineflow.tasks.filter.c4 and by fineflow_fake_c4"):
        parse({"name": "c4", "module": "fineflow_fake_c4"})


def test_signals_and_decide_run_the_rule_from_the_step_parameters(toy_folder, tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "fr.yaml").write_text("toy_max_count: 0\n")  # the rule's own flat key
    config = stage(
        [{"name": "toy", "module": TOY}, {"name": "language", "languages": ["en", "fr"]}],
        language_configs=str(tmp_path / "configs"),
    )
    signal_params, decide_params = build_params(config)
    assert decide_params["per_language"] == {"fr": {"toy": {"max_count": 0}}}

    texts = {
        "spammy": ("en", "spam spam spam and eggs"),
        "fine": ("en", "spam and eggs"),
        "french": ("fr", "un spam et des oeufs"),  # one is too many in French
        "german": ("de", "spam spam spam und Eier"),  # not listed: never measured
        "empty": ("en", ""),
    }
    rows = [{"id": i, "url": f"https://example.com/{i}", "text": t, "language": lang, "language_score": 0.9} for i, (lang, t) in texts.items()]
    write_table(str(tmp_path / "input.parquet"), pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA))
    shard = {"shard": 0, "input": str(tmp_path / "input.parquet"), "signals": str(tmp_path / "signals.parquet")}
    worker = (
        "import json, sys\n"
        "from fineflow.tasks.filter import rules\n"
        "assert 'toy' not in rules.registered()\n"  # nothing but the parameters names the rule here
        "from fineflow.tasks.filter.signals import signals_shard\n"
        "from fineflow.tasks.filter.decide import decide_shard\n"
        "shard, signal_params, decide_params, out = json.loads(sys.argv[1])\n"
        "signals_shard(shard, signal_params, shard['signals'], out + '/unused.parquet')\n"
        "decide_shard(shard, decide_params, out + '/kept.parquet', out + '/rejects.parquet')\n"
    )
    arguments = json.dumps([shard, signal_params, decide_params, str(tmp_path)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(toy_folder), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", worker, arguments], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    signals = read_input({"input": shard["signals"]})
    assert signals.schema.field("toy_count").type == pa.int64()
    counts = dict(zip(signals.column("id").to_pylist(), signals.column("toy_count").to_pylist()))
    assert counts == {"spammy": 3, "fine": 1, "french": 1, "german": None, "empty": None}

    kept = read_input({"input": str(tmp_path / "kept.parquet")})
    rejects = read_input({"input": str(tmp_path / "rejects.parquet")})
    assert kept.column("id").to_pylist() == ["fine"]
    reasons = dict(zip(rejects.column("id").to_pylist(), rejects.column("drop_reason").to_pylist()))
    assert reasons == {
        "spammy": "toy:too_much_spam",
        "french": "toy:too_much_spam",
        "german": "language:not_listed",  # its unmeasured toy signal was skipped, not compared
        "empty": "input:empty_text",
    }
    assert dict(zip(rejects.column("id").to_pylist(), rejects.column("toy_count").to_pylist()))["spammy"] == 3


def test_a_filter_stage_with_c4s_line_rules_reads_its_inputs_without_text_derived_columns(tmp_path):
    """C4 rewrites the text, so token counts and scores measured on the old text must not survive it."""
    from fineflow import registry
    from fineflow.steps import Source, StageInputs

    kind = registry.get("filter")
    upstream = StageInputs((Source("up", "f" * 20, str(tmp_path / "up"), 1),))
    with_c4 = kind.plan(stage([{"name": "c4"}]), str(tmp_path), "f", upstream)
    without = kind.plan(stage([{"name": "gopher_quality"}]), str(tmp_path), "f", upstream)
    assert kind.rewrites(stage([{"name": "c4"}])) and not kind.rewrites(stage([{"name": "gopher_quality"}]))
    shard = next(s for plan in with_c4 if plan.step == "signals" for s in plan.shards)
    assert {"n_tokens_*", "quality_*"} <= set(shard["drop_columns"])
    assert all("drop_columns" not in s for plan in without for s in plan.shards)
    docs = pa.Table.from_pylist([{"id": "a", "text": "One line. Two lines.", "n_tokens_gpt2": 5, "quality_edu": 2.5}])
    write_table(str(tmp_path / "in.parquet"), docs)
    read = read_input({**shard, "input": str(tmp_path / "in.parquet")})
    assert "n_tokens_gpt2" not in read.column_names and "quality_edu" not in read.column_names
