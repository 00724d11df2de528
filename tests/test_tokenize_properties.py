"""Property tests of the tokenize stage's count and merge steps on hostile documents (issue #27):
empty texts, NULs, typed special tokens, bytes that are not UTF-8, over-long texts, null
columns, corrupt ``repeats``, under generated configurations. The step functions are called
directly with the packaged gpt2 tokenizer."""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenfile_reader import read_megatron, read_nanotron

from fineflow import registry
from fineflow.planning import plan_stage
from fineflow.steps import Source, StageInputs
from fineflow.tasks.tokenize import count, groups, merge
from fineflow.tasks.tokenize.encoders import load_encoder

HOSTILE_TEXTS = st.one_of(
    st.none(),
    st.sampled_from([b"", b"\x00", b"<|endoftext|>", b"a<|endoftext|>b\x00", b"\xff\xfe", "x\ud800y".encode("utf-8", "surrogatepass"),
                     "مرحبا 你好 🙂".encode()]),
    st.text(max_size=60).map(str.encode),
    st.binary(max_size=40),  # mostly not UTF-8
)
REPEATS = st.sampled_from([0, 1, 2, 3, None, math.nan, math.inf, -1.0, 1.5, 1e12])
DOCUMENT = st.tuples(HOSTILE_TEXTS, st.sampled_from([None, "en", "ar"]), st.sampled_from([None, "https://a.org/x", "not a url"]),
                     REPEATS)
CONFIG = st.fixed_dictionaries({
    "write": st.sampled_from(["none", "megatron", "nanotron"]),
    "engine": st.sampled_from(["hf", "tiktoken"]),
    "max_chars": st.integers(1, 80),
    "batch_size": st.integers(1, 4),
    "partition": st.booleans(),
    "with_repeats": st.booleans(),
})


def _input(folder: Path, documents: list[tuple], with_repeats: bool) -> None:
    folder.mkdir()
    texts = pa.array([text for text, *_ in documents], pa.binary()).view(pa.string())  # unvalidated, as another writer's bytes
    columns = {"id": [f"d{n}" for n in range(len(documents))], "url": pa.array([url for _, _, url, _ in documents], pa.string()),
               "text": texts, "language": pa.array([language for _, language, _, _ in documents], pa.string())}
    if with_repeats:
        columns["repeats"] = pa.array([repeats for *_, repeats in documents], pa.float64())
    pq.write_table(pa.table(columns), folder / "part-00000.parquet")


def _decoded(text: bytes | None) -> str | None:
    try:
        return "" if text is None else text.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _copies(repeats: float | None) -> int | None:
    """How many times a document is written; None where its repeats reject it."""
    if repeats is None:
        return 0
    if math.isfinite(repeats) and repeats == int(repeats) and 0 <= repeats <= count.MAX_REPEATS:
        return int(repeats)
    return None


def _token_files(folder: Path, write: str) -> dict[str, list[list[int]]]:
    """Each written document's copies, by id, read back from the files and their provenance sidecars."""
    suffix = ".idx" if write == "megatron" else ".ds.index"
    found: dict[str, list[list[int]]] = {}
    for index in sorted(folder.glob(f"*{suffix}")):
        prefix = str(index)[: -len(suffix)]
        documents = read_megatron(prefix) if write == "megatron" else read_nanotron(prefix)
        ids = pq.read_table(f"{prefix}.provenance.parquet")["id"].to_pylist()
        assert len(ids) == len(documents)
        for name, tokens in zip(ids, documents):
            found.setdefault(name, []).append(tokens)
    return found


def _run(documents: list[tuple], config: dict, folder: Path) -> None:
    _input(folder / "docs", documents, config["with_repeats"])
    stage = {"stage": "tokenize", "tokenizers": {"gpt2": {"packaged": "gpt2", "engine": config["engine"]}}, "write": config["write"],
             "max_chars": config["max_chars"], "batch_size": config["batch_size"]}
    if config["partition"] and config["write"] != "none":
        stage["partition_by"] = ["language"]
    if config["write"] != "none":
        stage["merge_tasks"] = 3  # cells over several tasks, some idle
    plans = {plan.step: plan for plan in plan_stage(registry.validate_stage(stage), str(folder / "root"),
                                                    StageInputs((Source("docs", "f" * 20, str(folder / "docs"), 1),)), "tokenize")}
    plan = plans["count"]
    result = count.count_shard(plan.shards[0], plan.params, plan.location.shard_url(0), plan.location.rejects_url(0))
    kept = pq.read_table(plan.location.shard_url(0))
    rejects = pq.read_table(plan.location.rejects_url(0))

    # Every document exactly once, in the output or in the rejects, for the reason its input gives.
    assert Counter(kept["id"].to_pylist() + rejects["id"].to_pylist()) == Counter(f"d{n}" for n in range(len(documents)))
    assert set(rejects["drop_reason"].to_pylist()) <= set(count.REASONS)
    reasons = dict(zip(rejects["id"].to_pylist(), rejects["drop_reason"].to_pylist()))
    writing = config["write"] != "none"
    for n, (text, _, _, repeats) in enumerate(documents):
        decoded = _decoded(text)
        if decoded is None:
            assert reasons[f"d{n}"] == "tokenize:not_utf8"
        elif writing and config["with_repeats"] and _copies(repeats) is None:
            assert reasons[f"d{n}"] == "tokenize:bad_repeats"
        elif len(decoded) > config["max_chars"]:
            assert reasons[f"d{n}"] == "tokenize:too_long"
        else:
            assert f"d{n}" not in reasons

    # Counts: whole, non-negative, what a fresh encoding gives, and what the token files hold.
    encoder = load_encoder("gpt2", plan.params["tokenizers"]["gpt2"]["source"])
    counts = dict(zip(kept["id"].to_pylist(), kept["n_tokens_gpt2"].to_pylist()))
    assert all(isinstance(value, int) and value >= encoder.specials for value in counts.values())
    assert result["stats"]["token_totals"]["gpt2"] == sum(counts.values())
    expected = {f"d{n}": encoder.document(encoder.encode_texts([_decoded(text)])[0])
                for n, (text, *_) in enumerate(documents) if f"d{n}" in counts}
    assert {name: len(ids) for name, ids in expected.items()} == counts
    if not writing:
        return
    for step, function in (("groups", groups.groups_shard), ("merge", merge.merge_shard)):  # the groups, then every merge task
        for shard in plans[step].shards:
            function(shard, plans[step].params, plans[step].location.shard_url(shard["shard"]),
                     plans[step].location.rejects_url(shard["shard"]))
    merged = plans["merge"]
    files = _token_files(Path(merged.location.artifacts_folder), config["write"])
    for n, (*_, repeats) in enumerate(documents):
        name = f"d{n}"
        if name in counts:
            copies = _copies(repeats) if config["with_repeats"] else 1
            assert files.get(name, []) == [expected[name]] * copies
        else:
            assert name not in files


@settings(derandomize=True, deadline=None, max_examples=40)
@given(documents=st.lists(DOCUMENT, min_size=1, max_size=6), config=CONFIG)
@example(  # found while developing: a NaN repeats failed the whole step (int(nan))
    documents=[(b"fine", "en", None, math.nan), (b"\xff", None, None, 1.0)],
    config={"write": "megatron", "engine": "hf", "max_chars": 80, "batch_size": 1, "partition": True, "with_repeats": True},
)
@example(  # typed special tokens and NULs are text; a null text counts its EOS only
    documents=[(b"a<|endoftext|>b\x00", "ar", "not a url", 2.0), (None, None, None, 1.0)],
    config={"write": "nanotron", "engine": "tiktoken", "max_chars": 80, "batch_size": 4, "partition": False, "with_repeats": True},
)
def test_count_and_merge_account_for_every_hostile_document(documents, config):
    with tempfile.TemporaryDirectory(prefix="fineflow-tokenize-prop-") as folder:
        _run(documents, config, Path(folder))
