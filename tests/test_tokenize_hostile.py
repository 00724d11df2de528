"""The tokenize stage under hostile input and configuration (issue #27): token ids beyond the
files' integer type, columns the input lacks, trained vocabularies smaller than asked,
data_args.txt paths, bounded drop reasons, corrupt repeats and reused counts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stage_runner import run_plans
from tokenfile_reader import megatron_dtype, read_megatron

from fineflow import registry
from fineflow.planning import plan_stage, preflight_stage
from fineflow.steps import Source, StageInputs, resolve_function
from fineflow.tasks.tokenize import count, train
from fineflow.tasks.tokenize.count import FINGERPRINT_KEY
from fineflow.tasks.tokenize.encoders import TokenizerError, _load_cached

TEXTS = ["w1 w2 big", "w3", "big big w4 w5"]


def _documents(folder: Path, extra: dict | None = None, texts: list[str] = TEXTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    columns = {"id": [f"d{n}" for n in range(len(texts))], "url": [f"https://site{n}.org/p" for n in range(len(texts))],
               "text": texts, "language": ["en"] * len(texts), **(extra or {})}
    pq.write_table(pa.table(columns), folder / "part-00000.parquet")
    return folder


def _plans(config: dict, root: Path, folder: Path) -> dict:
    plans = plan_stage(registry.validate_stage(config), str(root), StageInputs((Source("docs", "f" * 20, str(folder), 1),)),
                       "tokenize")
    return {plan.step: plan for plan in plans}


def _sparse_tokenizer(path: Path, largest: int) -> Path:
    """A word-level tokenizer.json of 299 entries whose word ``big`` has id ``largest``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{n}": n for n in range(296)} | {"[UNK]": 296, "<|endoftext|>": 297, "big": 298}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    data = json.loads(tokenizer.to_str())
    data["model"]["vocab"]["big"] = largest  # edited, not saved by the library: it writes every id up to the largest
    path.write_text(json.dumps(data))
    assert Tokenizer.from_file(str(path)).get_vocab_size() == 299
    return path


# -- finding 5: the largest id, not the number of entries, picks the token files' type ------------


def test_a_sparse_vocabulary_is_written_in_a_type_that_holds_its_largest_id(tmp_path):
    tokenizer = _sparse_tokenizer(tmp_path / "tokenizer.json", 70_000)
    config = {"stage": "tokenize", "tokenizers": {"sparse": {"file": str(tokenizer)}}, "write": "megatron"}
    steps = run_plans(list(_plans(config, tmp_path / "root", _documents(tmp_path / "docs")).values()))
    (prefix,) = [str(p)[:-4] for p in Path(steps["merge"][0].location.artifacts_folder).glob("*.idx")]
    assert megatron_dtype(prefix) == "int32"
    assert sorted(read_megatron(prefix)) == sorted([[1, 2, 70_000, 297], [3, 297], [70_000, 70_000, 4, 5, 297]])


def test_an_id_beyond_the_widest_type_stops_the_run_before_any_work(tmp_path):
    tokenizer = _sparse_tokenizer(tmp_path / "tokenizer.json", 2**31)
    config = {"stage": "tokenize", "tokenizers": {"sparse": {"file": str(tokenizer)}}, "write": "megatron"}
    with pytest.raises(TokenizerError) as error:
        preflight_stage(registry.validate_stage(config))
    assert str(error.value) == ("tokenizer sparse: its largest token id 2,147,483,648 does not fit the megatron token files' "
                                "widest integer type int32 (at most 2,147,483,647)")


def test_the_count_step_refuses_ids_its_planned_type_cannot_hold(tmp_path):
    """A tokenizer file changed after planning: one clear step error before encoding, never wrapped ids."""
    tokenizer = _sparse_tokenizer(tmp_path / "tokenizer.json", 300)
    config = {"stage": "tokenize", "tokenizers": {"sparse": {"file": str(tokenizer)}}, "write": "nanotron"}
    plan = _plans(config, tmp_path / "root", _documents(tmp_path / "docs"))["count"]
    assert plan.params["write"]["dtype"] == "uint16"
    _sparse_tokenizer(tmp_path / "tokenizer.json", 70_000)
    _load_cached.cache_clear()  # a fresh worker process: it loads the file as it is now
    with pytest.raises(ValueError, match="^tokenizer sparse: its largest token id 70,000 does not fit the token files' uint16$"):
        count.count_shard(plan.shards[0], plan.params, plan.location.shard_url(0), plan.location.rejects_url(0))


# -- finding 6: columns, trained vocabulary sizes ----------------------------------------------------


def test_required_columns_name_the_option_that_reads_them():
    from fineflow.tasks.tokenize.plan import required_columns

    config = registry.validate_stage({
        "stage": "tokenize", "write": "megatron", "partition_by": ["language", "quality_level"], "key_columns": ["source"],
        "tokenizers": {"gpt2": "gpt2", "ar": {"train": {"languages": ["ar"]}}, "all": {"train": {}}},
    })
    assert required_columns(config) == [("language", "partition_by"), ("quality_level", "partition_by"),
                                        ("source", "key_columns"), ("language", "tokenizers.ar.train.languages")]


def test_a_missing_column_is_one_line_naming_the_option_and_the_input_columns(tmp_path):
    folder = _documents(tmp_path / "docs")
    config = {"stage": "tokenize", "tokenizers": {"gpt2": "gpt2"}, "write": "megatron", "partition_by": ["quality_level"]}
    plan = _plans(config, tmp_path / "root", folder)["count"]
    with pytest.raises(ValueError) as error:
        count.count_shard(plan.shards[0], plan.params, plan.location.shard_url(0), plan.location.rejects_url(0))
    assert str(error.value) == "partition_by: quality_level not in the documents (columns: id, url, text, language)"

    no_language = tmp_path / "bare"
    no_language.mkdir()
    pq.write_table(pq.read_table(folder / "part-00000.parquet").drop_columns(["language"]), no_language / "part-00000.parquet")
    config = {"stage": "tokenize", "tokenizers": {"ar": {"train": {"languages": ["ar"]}}}}
    plan = _plans(config, tmp_path / "root", no_language)["sample"]
    with pytest.raises(ValueError, match=r"^tokenizers\.ar\.train\.languages: language not in the documents \(columns: id, url, text\)$"):
        train.sample_shard(plan.shards[0], plan.params, plan.location.shard_url(0), plan.location.rejects_url(0))


def test_a_trained_vocabulary_smaller_than_asked_is_a_step_warning(tmp_path):
    folder = _documents(tmp_path / "docs", texts=["the cat sat on the mat"] * 20)
    config = {"stage": "tokenize", "tokenizers": {"bpe": {"train": {"vocab_size": 1_000_000, "sample_bytes": 1_000}}}}
    plans = _plans(config, tmp_path / "root", folder)
    steps = run_plans([plans["sample"], plans["train"]])
    plan, (result,) = steps["train"]
    trained = result["stats"]["trained"]["bpe"]
    assert trained["asked_vocab_size"] == 1_000_000 and 256 < trained["vocab_size"] < 1_000
    warnings = resolve_function(plan.checks)({"trained": {"bpe": trained}})
    assert warnings == [f"tokenizer bpe: asked for a vocabulary of 1,000,000, the trainer learned {trained['vocab_size']:,} "
                        "(its sample has no more frequent merges: give a larger sample_bytes or a smaller vocab_size)"]


@pytest.mark.parametrize(("key", "value"), [("vocab_size", 1_000_001), ("vocab_size", 299), ("seed", 2**64), ("min_frequency", 0)])
def test_trained_tokenizer_numbers_are_range_checked(key, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=key):
        registry.validate_stage({"stage": "tokenize", "tokenizers": {"bpe": {"train": {key: value}}}})


# -- finding 7: data_args.txt, bounded drop reasons --------------------------------------------------


def test_data_args_prefixes_are_relative_to_the_file_and_rebased_by_the_cli(tmp_path):
    from typer.testing import CliRunner

    from fineflow.cli import app

    config = {"stage": "tokenize", "tokenizers": {"gpt2": "gpt2"}, "write": "megatron", "partition_by": ["language"]}
    steps = run_plans(list(_plans(config, tmp_path / "root", _documents(tmp_path / "docs")).values()))
    data_args = Path(steps["merge"][0].location.artifact_url("data_args.txt"))
    ((weight, prefix),) = [line.split() for line in data_args.read_text().splitlines()]
    assert prefix == "language=en-00000" and (data_args.parent / f"{prefix}.bin").is_file() and int(weight) > 0
    done = CliRunner().invoke(app, ["data-args", str(data_args), "--root", "/mnt/tokens/"])
    assert done.exit_code == 0, done.output
    assert done.output == f"{weight} /mnt/tokens/language=en-00000\n"


def test_drop_reasons_are_bounded_and_the_specifics_are_details(tmp_path):
    texts = [b"\xff\xfe broken", b"fine", "x\ud800y".encode("utf-8", "surrogatepass"), b"y" * 50]
    offsets = pa.array([0, *(sum(len(t) for t in texts[: n + 1]) for n in range(len(texts)))], pa.int32())
    text = pa.Array.from_buffers(pa.string(), len(texts), [None, offsets.buffers()[1], pa.py_buffer(b"".join(texts))])
    folder = _documents(tmp_path / "docs", {"text": text, "repeats": [1.0, math.nan, 1.0, 1.0]}, texts=["", "", "", ""])
    config = {"stage": "tokenize", "tokenizers": {"gpt2": "gpt2"}, "max_chars": 40, "write": "megatron"}
    steps = run_plans(list(_plans(config, tmp_path / "root", folder).values()))
    plan, (result,) = steps["count"]
    rejects = pq.read_table(plan.location.rejects_url(0))
    found = {row["id"]: (row["drop_reason"], row["drop_detail"]) for row in rejects.to_pylist()}
    assert found == {
        "d0": ("tokenize:not_utf8", "text is not valid UTF-8 (invalid start byte at byte 0)"),
        "d1": ("tokenize:bad_repeats", "repeats = nan (a whole number from 0 to 10,000)"),
        "d2": ("tokenize:not_utf8", "text is not valid UTF-8 (invalid continuation byte at byte 1)"),
        "d3": ("tokenize:too_long", "50 characters (max_chars 40)"),
    }
    assert set(result["stats"]["drop_reasons"]) <= set(count.REASONS)
    # A shard without rejects has the same rejects schema, detail column included.
    clean = run_plans(list(_plans(config, tmp_path / "clean", _documents(tmp_path / "fine")).values()))
    assert pq.read_schema(clean["count"][0].location.rejects_url(0)).names[-2:] == ["drop_reason", "drop_detail"]


def test_reused_counts_that_are_negative_are_counted_again(tmp_path):
    config = {"stage": "tokenize", "tokenizers": {"gpt2": "gpt2"}}
    first = _plans(config, tmp_path / "root", _documents(tmp_path / "docs"))["count"]
    fingerprint = first.params["tokenizers"]["gpt2"]["fingerprint"]
    field = pa.field("n_tokens_gpt2", pa.int64(), metadata={FINGERPRINT_KEY: fingerprint.encode()})
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    table = pq.read_table(tmp_path / "docs" / "part-00000.parquet")
    pq.write_table(table.append_column(field, pa.array([-5, 2, 3], pa.int64())), hostile / "part-00000.parquet")
    plan = _plans(config, tmp_path / "root", hostile)["count"]
    result = count.count_shard(plan.shards[0], plan.params, plan.location.shard_url(0), plan.location.rejects_url(0))
    assert result["stats"]["reused_counts"] == {}
    assert pq.read_table(plan.location.shard_url(0))["n_tokens_gpt2"].to_pylist() == [6, 3, 7]
    assert json.loads(json.dumps(result["stats"]["token_totals"])) == {"gpt2": 16}
