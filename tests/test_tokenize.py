"""The tokenize stage's steps on real documents (the bundled sample, extracted once per module),
run in-process the way a Dask worker runs them; the Prefect path is covered by the demo tests."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import regex
from pydantic import ValidationError
from stage_runner import run_plan, run_plans
from tokenfile_reader import megatron_dtype, read_megatron, read_nanotron

from fineflow import registry, storage
from fineflow.planning import plan_stage, preflight_stage
from fineflow.steps import Source, StageInputs
from fineflow.tasks.tokenize.config import TokenizerSpec
from fineflow.tasks.tokenize.count import _encode
from fineflow.tasks.tokenize.encoders import TokenizerError, _hf_tokenizer, describe, load_encoder, token_dtype

REPO = Path(__file__).resolve().parent.parent


def run_stage(config: dict, root: Path, folder: Path, name: str = "tokenize") -> dict[str, tuple]:
    """Plan a stage over a folder of document shards and run every step's shards in order."""
    shards = len(list(folder.glob("part-*.parquet")))
    return run_plans(plan_stage(registry.validate_stage(config), str(root), StageInputs((Source("docs", "f" * 20, str(folder), shards),)), name))


def output_table(steps: dict, step: str = "count") -> pa.Table:
    plan, _ = steps[step]
    return pa.concat_tables([pq.read_table(f) for f in sorted(Path(plan.location.data_folder).glob("*.parquet"))])


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> Path:
    """The sample's documents (resiliparse: fast), as the crawl stage commits them: 3 shards."""
    root = tmp_path_factory.mktemp("crawl")
    config = registry.validate_stage(
        {"stage": "crawl", "inputs": sorted(str(p) for p in (REPO / "examples" / "data").glob("*.warc.gz")),
         "extractor": "resiliparse", "shard_bytes": 1_000_000}
    )
    (plan,) = plan_stage(config, str(root), None, "crawl")
    run_plan(plan)
    return Path(plan.location.data_folder)


def all_documents(folder: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob("part-*.parquet"))])


# -- tokenizers ------------------------------------------------------------------------------

KNOWN = [  # (packaged name, engine, text, raw ids, prefix, suffix): published ids
    ("gpt2", "auto", "Hello world", [15496, 995], (), (50256,)),
    ("gpt2", "hf", "Hello world", [15496, 995], (), (50256,)),
    ("cl100k", "auto", "Hello world", [9906, 1917], (), (100257,)),
    ("o200k", "auto", "Hello world", [13225, 2375], (), (199999,)),
    ("llama3.2", "auto", "Hello world", [9906, 1917], (128000,), (128001,)),
    ("qwen2.5", "auto", "Hello world", [9707, 1879], (), (151643,)),
]


@pytest.mark.parametrize(("name", "engine", "text", "ids", "prefix", "suffix"), KNOWN)
def test_packaged_tokenizers_give_their_published_ids(name, engine, text, ids, prefix, suffix):
    encoder = load_encoder(name, describe(TokenizerSpec(packaged=name, engine=engine)))
    assert encoder.encode_texts([text]) == [ids]
    assert (encoder.prefix, encoder.suffix) == (prefix, suffix)
    assert encoder.count_texts([text, ""]) == [len(ids), 0]
    assert encoder.decode(ids) == text


def _byte_level(text: str) -> str:
    """GPT-2's bytes-to-unicode map, from its definition, for looking words up in a vocabulary."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return "".join(mapping[b] for b in text.encode("utf-8"))


def test_arabic_tokenizer_compresses_arabic_far_better_than_gpt2(documents):
    vocab = json.loads(storage.read_bytes(describe(TokenizerSpec(packaged="aranizer-bpe-64k"))["files"][0]))["model"]["vocab"]
    aranizer = load_encoder("ar64", describe(TokenizerSpec(packaged="aranizer-bpe-64k")))
    for word in ("كتاب", " العربية"):  # whole words in its vocabulary: one token each
        assert aranizer.encode_texts([word]) == [[vocab[_byte_level(word)]]]
    assert aranizer.eos_token == "</s>" and aranizer.suffix == (vocab["</s>"],)
    table = all_documents(documents)
    pages = [t for t, lang in zip(table["text"].to_pylist(), table["language"].to_pylist()) if lang == "ar"]
    assert len(pages) >= 3
    # The Arabic prose of these pages (they quote commands and English terms as well).
    arabic = [" ".join(regex.findall(r"\p{Arabic}+", page)) for page in pages]
    size = sum(len(t.encode()) for t in arabic)
    gpt2 = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2")))
    # models.md: 6.18 vs 1.82 bytes per token on modern Arabic text
    assert size / sum(aranizer.count_texts(arabic)) > 2.5 * size / sum(gpt2.count_texts(arabic))


def test_gpt2_engines_agree_on_every_document(documents):
    texts = [t or "" for t in all_documents(documents)["text"].to_pylist()]
    hf = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2", engine="hf")))
    fast = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2", engine="tiktoken")))
    assert hf.engine == "hf" and fast.engine == "tiktoken"
    assert hf.encode_texts(texts) == fast.encode_texts(texts)


def test_special_token_strings_in_text_are_plain_text():
    for engine in ("hf", "tiktoken"):
        encoder = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2", engine=engine)))
        (ids,) = encoder.encode_texts(["a <|endoftext|> b"])
        assert 50256 not in ids and encoder.decode(ids) == "a <|endoftext|> b"


def test_smollm2_gguf_tokenizer_through_the_encoder():
    encoder = load_encoder("smol", describe(TokenizerSpec(packaged="smollm2")))
    assert encoder.eos_token is not None and len(encoder.suffix) == 1
    text = "Photosynthesis: 6CO2 + 6H2O → C6H12O6 (مرحبا, 你好)"
    assert encoder.decode(encoder.encode_texts([text])[0]) == text


def test_bad_tokenizer_files_are_configuration_errors(tmp_path):
    missing = {"stage": "tokenize", "tokenizers": {"x": {"file": str(tmp_path / "nope.json")}}}
    with pytest.raises(ValueError, match="nope.json"):
        preflight_stage(registry.validate_stage(missing))
    corrupt = tmp_path / "tokenizer.json"
    corrupt.write_text('{"model": {"type": "BPE"')
    with pytest.raises(TokenizerError, match="cannot load .*tokenizer.json"):
        preflight_stage(registry.validate_stage({"stage": "tokenize", "tokenizers": {"x": {"file": str(corrupt)}}}))
    ranks = tmp_path / "bad.tiktoken"
    ranks.write_text("not base64 at all\n")
    with pytest.raises(TokenizerError, match="not a tiktoken file"):
        preflight_stage(registry.validate_stage(
            {"stage": "tokenize", "tokenizers": {"x": {"tiktoken": str(ranks), "pattern": "cl100k"}}}))
    with pytest.raises(ValueError, match="unknown packaged tokenizer 'gpt5'"):
        preflight_stage(registry.validate_stage({"stage": "tokenize", "tokenizers": {"x": "gpt5"}}))


@pytest.mark.parametrize(
    ("tokenizers", "extra", "message"),
    [
        ({"a": {"packaged": "gpt2", "file": "x.json"}}, {}, "exactly one of"),
        ({"a": {}}, {}, "exactly one of"),
        ({"Bad-Name": "gpt2"}, {}, "column suffixes"),
        ({"a": "gpt2"}, {"write": "megatron", "write_tokenizer": "b"}, "not one of the tokenizers"),
        ({"a": "gpt2"}, {"partition_by": ["language"]}, "need write"),
        ({"a": {"tiktoken": "x.tiktoken"}}, {}, "split pattern"),
    ],
)
def test_config_errors_are_clear(tokenizers, extra, message):
    with pytest.raises(ValidationError, match=message):
        registry.validate_stage({"stage": "tokenize", "tokenizers": tokenizers, **extra})


def test_token_types_follow_each_format_and_never_overflow():
    assert token_dtype(50257, "megatron") == "uint16"
    assert token_dtype(65_499, "megatron") == "uint16"
    assert token_dtype(65_500, "megatron") == "int32"  # Megatron's own rule
    assert token_dtype(65_536, "nanotron") == "uint16" and token_dtype(65_537, "nanotron") == "uint32"
    with pytest.raises(TokenizerError, match="does not fit"):
        token_dtype(2**31, "megatron")


def test_texts_an_encoder_refuses_are_reported_not_fatal():
    for engine in ("hf", "tiktoken"):
        encoder = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2", engine=engine)))
        counts, failed = _encode(encoder, ["good", "bad \ud800 surrogate", "also good"], keep_ids=False, batch_size=10)
        if engine == "hf":  # tiktoken replaces a lone surrogate itself: the count step rejects it before (below)
            assert list(failed) == [1] and failed[1][0] == "tokenize:cannot_encode" and failed[1][1].startswith("gpt2: ")
        assert counts[0] == 1 and counts[2] == 2


# -- the stage's steps -----------------------------------------------------------------------

TRAINED = {"train": {"vocab_size": 2000, "sample_bytes": 300_000, "seed": 3}}


def _trained_file(steps: dict) -> Path:
    plan, _ = steps["train"]
    return Path(plan.location.artifact_url("bpe.tokenizer.json"))


def test_trained_tokenizer_round_trips_and_retrains_identically(documents, tmp_path):
    config = {"stage": "tokenize", "tokenizers": {"bpe": TRAINED}}
    first = run_stage(config, tmp_path / "a", documents)
    second = run_stage(config, tmp_path / "b", documents)
    assert _trained_file(first).read_bytes() == _trained_file(second).read_bytes()
    (train_result,) = first["train"][1]
    trained = train_result["stats"]["trained"]["bpe"]
    assert 300_000 <= trained["sample_bytes"] < 400_000 and trained["vocab_size"] == 2000
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(_trained_file(first)))
    for text in all_documents(documents)["text"].to_pylist():
        assert tokenizer.decode(tokenizer.encode(text or "").ids) == (text or "")
    # Another seed samples other documents: another tokenizer.
    other = run_stage({**config, "tokenizers": {"bpe": {"train": {**TRAINED["train"], "seed": 4}}}}, tmp_path / "c", documents)
    assert _trained_file(other).read_bytes() != _trained_file(first).read_bytes()
    # Counts with it agree with a fresh encoding, its EOS counted.
    table = output_table(first)
    texts = table["text"].to_pylist()
    expected = [len(tokenizer.encode(t or "").ids) + 1 for t in texts]
    assert table["n_tokens_bpe"].to_pylist() == expected


def test_training_on_a_language_that_is_absent_says_so(documents, tmp_path):
    config = {"stage": "tokenize", "tokenizers": {"bpe": {"train": {"languages": ["xx"]}}}}
    with pytest.raises(ValueError, match="no document of xx to train on"):
        run_stage(config, tmp_path, documents)


def _with_repeats(documents: Path, folder: Path) -> dict[str, int]:
    """A copy of the documents with a ``repeats`` column (0 to 3), as a rebalance stage writes it."""
    folder.mkdir()
    repeats = {}
    for index, path in enumerate(sorted(documents.glob("part-*.parquet"))):
        table = pq.read_table(path)
        values = [(index + row) % 4 for row in range(table.num_rows)]
        repeats.update(zip(table["id"].to_pylist(), values))
        pq.write_table(table.append_column("repeats", pa.array(values, pa.int32())), folder / path.name)
    return repeats


def _written(steps: dict, suffix: str = ".idx") -> list[str]:
    plan, _ = steps["merge"]
    return sorted(str(p)[: -len(suffix)] for p in Path(plan.location.artifacts_folder).glob(f"*{suffix}"))


def test_megatron_files_hold_every_document_exactly(documents, tmp_path):
    repeats = _with_repeats(documents, tmp_path / "docs")
    config = {"stage": "tokenize", "tokenizers": {"gpt2": "gpt2", "llama": "llama3.2"}, "write": "megatron",
              "partition_by": ["language"], "max_tokens_per_file": 20_000, "seed": 7}
    steps = run_stage(config, tmp_path / "root", tmp_path / "docs")
    table = output_table(steps)
    text_of = dict(zip(table["id"].to_pylist(), table["text"].to_pylist()))
    language_of = dict(zip(table["id"].to_pylist(), table["language"].to_pylist()))
    encoder = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2")))

    prefixes = _written(steps)
    assert len(prefixes) > len(set(language_of.values()) - {None}) - 1  # per language, some split by size
    copies = Counter()
    file_tokens = 0
    for prefix in prefixes:
        assert megatron_dtype(prefix) == np.uint16
        documents_in_file = read_megatron(prefix)
        sidecar = pq.read_table(f"{prefix}.provenance.parquet")
        assert sidecar["document"].to_pylist() == list(range(len(documents_in_file)))
        cell = Path(prefix).name.rsplit("-", 1)[0]
        for ids, doc_id, copy in zip(documents_in_file, sidecar["id"].to_pylist(), sidecar["copy"].to_pylist()):
            assert ids == encoder.document(encoder.encode_texts([text_of[doc_id]])[0])
            assert cell == f"language={language_of[doc_id] or 'none'}"
            copies[(doc_id, copy)] += 1
        tokens = sum(map(len, documents_in_file))
        assert tokens <= 20_000 or len(documents_in_file) == 1
        file_tokens += tokens
    # A permutation: every document exactly `repeats` times, copies numbered, nothing else.
    assert copies == Counter({(doc_id, c): 1 for doc_id, n in repeats.items() for c in range(n)})
    # Per-document counts sum to the written tokens and to the step totals.
    counts = dict(zip(table["id"].to_pylist(), table["n_tokens_gpt2"].to_pylist()))
    assert file_tokens == sum(counts[doc_id] * n for doc_id, n in repeats.items())
    _, merge_results = steps["merge"]  # one per merge task
    assert sum(sum(r["stats"]["written_tokens"].values()) for r in merge_results) == file_tokens
    assert sum(r["stats"]["token_totals"]["gpt2"] for r in steps["count"][1]) == sum(counts.values())
    # data_args.txt: one "weight prefix" line per file, weighted by its tokens, prefixes relative to it.
    data_args = Path(steps["merge"][0].location.artifact_url("data_args.txt")).read_text().splitlines()
    assert sorted(line.split(" ", 1)[1] for line in data_args) == [Path(prefix).name for prefix in prefixes]
    assert sum(int(line.split(" ", 1)[0]) for line in data_args) == file_tokens


def test_shuffle_depends_only_on_the_seed(documents, tmp_path):
    config = {"stage": "tokenize", "tokenizers": {"gpt2": "gpt2"}, "write": "megatron", "seed": 1}
    first = run_stage(config, tmp_path / "a", documents)
    again = run_stage(config, tmp_path / "b", documents)
    other = run_stage({**config, "seed": 2}, tmp_path / "c", documents)
    (a,), (b,), (c,) = _written(first), _written(again), _written(other)
    assert Path(f"{a}.bin").read_bytes() == Path(f"{b}.bin").read_bytes()
    order = pq.read_table(f"{a}.provenance.parquet")["id"].to_pylist()
    other_order = pq.read_table(f"{c}.provenance.parquet")["id"].to_pylist()
    assert order != other_order and sorted(order) == sorted(other_order)
    # Shuffled across shards too: the input order is not kept.
    assert order != all_documents(documents)["id"].to_pylist()


def test_nanotron_files_read_back(documents, tmp_path):
    config = {"stage": "tokenize", "tokenizers": {"gpt2": "gpt2"}, "write": "nanotron"}
    steps = run_stage(config, tmp_path, documents)
    (prefix,) = _written(steps, ".ds")
    table = output_table(steps)
    text_of = dict(zip(table["id"].to_pylist(), table["text"].to_pylist()))
    encoder = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2")))
    ids = pq.read_table(f"{prefix}.provenance.parquet")["id"].to_pylist()
    assert [encoder.document(encoder.encode_texts([text_of[i]])[0]) for i in ids] == read_nanotron(prefix)
    assert Path(f"{prefix}.ds.metadata").read_text().splitlines()[0].endswith("|2")


def test_counts_are_reused_only_for_the_same_tokenizer_file(documents, tmp_path):
    tokenizer_file = tmp_path / "gpt2.json"
    _hf_tokenizer(describe(TokenizerSpec(packaged="gpt2")))[0].save(str(tokenizer_file))
    config = {"stage": "tokenize", "tokenizers": {"g": {"file": str(tokenizer_file)}}}
    first = run_stage(config, tmp_path / "root", documents)
    counted = Path(first["count"][0].location.data_folder)
    again = run_stage(config, tmp_path / "root", counted, name="again")
    assert sum(r["stats"]["reused_counts"].get("g", 0) for r in again["count"][1]) == output_table(first).num_rows
    assert output_table(again)["n_tokens_g"] == output_table(first)["n_tokens_g"]
    # Any change to the file: another fingerprint, counted afresh.
    data = json.loads(tokenizer_file.read_text())
    data["model"]["vocab"]["zzzz-new"] = len(data["model"]["vocab"]) + 5
    tokenizer_file.write_text(json.dumps(data))
    changed = run_stage(config, tmp_path / "root", counted, name="again")
    assert changed["count"][0].fingerprint.value != again["count"][0].fingerprint.value
    assert not any(r["stats"]["reused_counts"] for r in changed["count"][1])


def test_bad_texts_go_to_rejects_with_their_reason(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    # Invalid UTF-8 inside a string column (another writer's bytes): built without validation.
    texts = [b"\xff\xfe broken", b"fine text", b"", b"x" * 50]
    offsets = np.cumsum([0] + [len(t) for t in texts]).astype(np.int32)
    text_array = pa.Array.from_buffers(pa.string(), len(texts), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(texts))])
    table = pa.table({"id": ["c", "a", "b", "d"], "url": ["http://x.org", "https://www.example.co.uk/x", None, "http://y.org"],
                      "text": text_array, "language": ["en", "en", "en", "en"]})
    pq.write_table(table, folder / "part-00000.parquet")
    config = {"stage": "tokenize", "tokenizers": {"gpt2": "gpt2"}, "max_chars": 40}
    steps = run_stage(config, tmp_path / "root", folder)
    kept = output_table(steps)
    assert kept["id"].to_pylist() == ["a", "b"]
    assert kept["n_tokens_gpt2"].to_pylist() == [3, 1]  # "fine text" + EOS; an empty text: its EOS only
    assert kept["source_domain"].to_pylist() == ["example.co.uk", None]
    rejects = pq.read_table(steps["count"][0].location.rejects_url(0))
    # The provenance sidecar points at the input shard's rows, rejected rows counted.
    written = run_stage({**config, "write": "megatron"}, tmp_path / "written", folder)
    (prefix,) = _written(written)
    sidecar = pq.read_table(f"{prefix}.provenance.parquet")
    assert {i: r for i, r in zip(sidecar["id"].to_pylist(), sidecar["row"].to_pylist())} == {"a": 1, "b": 2}
    reasons = dict(zip(rejects["id"].to_pylist(), rejects["drop_reason"].to_pylist()))
    assert reasons["c"] == "tokenize:not_utf8"
    assert rejects["text"].to_pylist()[0] == "\ufffd\ufffd broken"  # readable by every reader, the reason says why
    # Both folders load as they are, with one schema, in Hugging Face datasets, polars and DuckDB.
    import duckdb
    from test_dag import _read_everywhere

    plan = steps["count"][0]
    for folder, rows in ((plan.location.data_folder, 2), (plan.location.rejects_folder, 2)):
        assert _read_everywhere(folder, tmp_path / "hf") == {"datasets": rows, "polars": rows}, folder
        assert duckdb.sql(f"select count(*) from read_parquet('{folder}/**/*.parquet')").fetchall()[0][0] == rows
    assert reasons["d"] == "tokenize:too_long"


def test_counts_by_language_domain_and_key_columns(documents, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for path in sorted(documents.glob("part-*.parquet")):
        table = pq.read_table(path)
        levels = [len(t or "") % 3 for t in table["text"].to_pylist()]
        pq.write_table(table.append_column("quality_level", pa.array(levels, pa.int64())), folder / path.name)
    config = {"stage": "tokenize", "tokenizers": {"gpt2": "gpt2", "o200k": "o200k"}, "key_columns": ["quality_level"],
              "top_domains": 2}
    steps = run_stage(config, tmp_path / "root", folder)
    table = output_table(steps)
    counts = pq.read_table(steps["stats"][0].location.artifact_url("token_counts.parquet"))
    assert set(counts.column_names) >= {"language", "source_domain", "quality_level", "documents", "bytes", "words",
                                        "n_tokens_gpt2", "n_tokens_o200k"}
    assert pa.compute.sum(counts["n_tokens_gpt2"]).as_py() == pa.compute.sum(table["n_tokens_gpt2"]).as_py()
    assert pa.compute.sum(counts["documents"]).as_py() == table.num_rows
    _, (stats,) = steps["stats"]
    top = stats["stats"]["top_domains"]
    for language, entries in top.items():
        assert len([d for d in entries if d != "(other)"]) <= 2
        assert sum(e["documents"] for e in entries.values()) == sum(1 for lang in table["language"].to_pylist() if (lang or "und") == language)


def test_fineweb_edu_ar_preset_reports_bytes_per_token_for_each_tokenizer(documents, tmp_path):
    from fineflow.config import load_config
    from fineflow.tasks.tokenize.report import summary_fields

    config = load_config(REPO / "examples" / "fineweb-edu-ar.yaml", storage_override=str(tmp_path / "unused"))
    assert [s.stage for s in config.stages][-3:] == ["translate", "filter", "tokenize"]
    tokenize = config.stages[-1].model_dump(exclude={"input", "key_columns"})  # native pages only: no translation_model
    tokenize["tokenizers"]["arabic_bpe"]["train"].update(vocab_size=2000, sample_bytes=200_000)  # small sample, fast
    arabic = tmp_path / "arabic"
    arabic.mkdir()
    table = all_documents(documents)
    pq.write_table(table.filter(pa.compute.equal(table["language"], "ar")), arabic / "part-00000.parquet")
    steps = run_stage(tokenize, tmp_path / "root", arabic)
    totals = {}
    for step, (_, results) in steps.items():
        from fineflow.counters import merge_counts

        totals[step] = {"output": "x/data", **merge_counts(r["stats"] for r in results)}
    fields = summary_fields(totals)
    ratio = {name: fields["fertility"][name]["ar"]["bytes_per_token"] for name in ("aranizer", "arabic_bpe", "gpt2")}
    assert ratio["aranizer"] > ratio["gpt2"] and ratio["arabic_bpe"] > ratio["gpt2"]
    assert set(fields["tokens_by_language"]) == {"aranizer", "arabic_bpe", "gpt2"}
    assert fields["trained_tokenizers"]["arabic_bpe"]["sample_documents"] >= 3
