"""Tokenizers trained in the run: byte-level BPE (Hugging Face ``tokenizers``) on a seeded sample.

The BPE trainer's memory grows with its input (its pair table), and it has blown up on tens of GB
(tokenizers#1681, #1824), so it never sees the corpus: each tokenizer trains on at most
``sample_bytes`` of text. Two steps keep that exact and parallel:

- ``sample`` (map): every document of the tokenizer's languages gets a key, a hash of the seed and
  its id; each shard keeps its documents of smallest keys up to the byte budget.
- ``train`` (one task per trained tokenizer): the smallest keys over all shards' samples, up to
  the budget (the global choice is always inside the shards' choices), in key order; train;
  commit ``<name>.tokenizer.json``.

The sample depends only on the seed, the ids and the texts, never on shard order or count, and
training on the same sample gives the same file: a re-run, or a run on more workers, trains the
same tokenizer.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fineflow import storage
from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard, read_input
from fineflow.tasks.text.sampling import seeded_keys
from fineflow.tasks.tokenize.columns import check_columns

STEP_VERSION = "2"  # 2: asked_vocab_size in its stats
LIBRARIES = ("tokenizers", "xxhash", "pyarrow")

SAMPLE_SCHEMA = pa.schema([("tokenizer", pa.string()), ("key", pa.uint64()), ("id", pa.string()), ("text", pa.string())])


def artifact_name(tokenizer: str) -> str:
    return f"{tokenizer}.tokenizer.json"


def _smallest_keys(table: pa.Table, budget: int) -> pa.Table:
    """The rows of smallest ``key`` whose texts fit in ``budget`` UTF-8 bytes (the row crossing it included)."""
    if table.num_rows == 0:
        return table
    table = table.sort_by([("key", "ascending"), ("id", "ascending")])
    sizes = pc.binary_length(table["text"].cast(pa.binary())).to_numpy(zero_copy_only=False)
    cumulative = sizes.cumsum()
    keep = int((cumulative < budget).sum()) + 1
    return table.slice(0, min(keep, table.num_rows))


def sample_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    """One input shard's candidates for every trained tokenizer (``params["train"]``: name -> spec)."""
    documents = read_input(shard)
    check_columns(documents, [("language", f"tokenizers.{name}.train.languages") for name, spec in params["train"].items()
                              if spec["languages"] is not None])
    samples = []
    for name, spec in params["train"].items():
        selected = documents
        if spec["languages"] is not None:
            selected = documents.filter(pc.is_in(documents["language"], pa.array(spec["languages"], pa.string())))
        selected = selected.filter(pc.invert(pc.is_null(selected["text"])))
        ids = selected["id"].to_pylist()
        keys = pa.array(seeded_keys(ids, spec["seed"]), pa.uint64())
        candidates = pa.table(
            {"tokenizer": pa.array([name] * len(ids), pa.string()), "key": keys, "id": selected["id"], "text": selected["text"]},
            schema=SAMPLE_SCHEMA,
        )
        samples.append(_smallest_keys(candidates, spec["sample_bytes"]))
    table = pa.concat_tables(samples) if samples else SAMPLE_SCHEMA.empty_table()
    return commit_shard(shard["shard"], output_url, table, docs_in=documents.num_rows)


def train_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    """Train tokenizer ``shard["tokenizer"]`` on the global sample; commit its ``tokenizer.json``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    name, spec = shard["tokenizer"], params["train"][shard["tokenizer"]]
    sample = SAMPLE_SCHEMA.empty_table()
    for url in params["samples"]:  # one shard at a time: memory stays within twice the budget
        table = pq.read_table(io.BytesIO(storage.read_bytes(url)), filters=[("tokenizer", "=", name)])
        sample = _smallest_keys(pa.concat_tables([sample, table.cast(SAMPLE_SCHEMA)]), spec["sample_bytes"])
    texts = sample["text"].to_pylist()
    if not texts:
        languages = ", ".join(spec["languages"] or []) or "any language"
        raise ValueError(f"tokenizer {name}: no document of {languages} to train on in this stage's input")

    tokenizer = Tokenizer(models.BPE())
    # GPT-2's byte-level pre-tokenizer: every byte is representable, and words never merge across
    # spaces (without a pre-tokenizer the trainer builds huge chains, tokenizers#994).
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec["vocab_size"],
        min_frequency=spec["min_frequency"],
        special_tokens=spec["special_tokens"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    data = tokenizer.to_str(pretty=False).encode("utf-8")
    artifact = commit_artifact(output_url, artifact_name(name), data)
    learned = tokenizer.get_vocab_size(with_added_tokens=True)
    info = pa.table({
        "tokenizer": [name],
        "vocab_size": [learned],
        "sample_documents": [len(texts)],
        "sample_bytes": [sum(len(text.encode("utf-8")) for text in texts)],
        "languages": [json.dumps(spec["languages"])],
    })
    return commit_shard(shard["shard"], output_url, info, docs_in=len(texts), artifacts=[artifact],
                        trained={name: {"vocab_size": learned, "asked_vocab_size": spec["vocab_size"],
                                        "sample_documents": len(texts), "sample_bytes": info["sample_bytes"][0].as_py()}})


def vocabulary_warnings(totals: dict) -> list[str]:
    """The train step's warnings (its plan's ``checks``): a tokenizer that learned fewer tokens
    than asked (its sample holds no more merges seen ``min_frequency`` times)."""
    return [
        f"tokenizer {name}: asked for a vocabulary of {info['asked_vocab_size']:,}, the trainer learned {info['vocab_size']:,} "
        "(its sample has no more frequent merges: give a larger sample_bytes or a smaller vocab_size)"
        for name, info in sorted(totals.get("trained", {}).items())
        if info.get("asked_vocab_size", 0) > info.get("vocab_size", 0)
    ]
