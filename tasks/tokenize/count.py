"""The count step (map, the stage's document step): ``n_tokens_<tokenizer>`` on every document.

Per input shard: the texts are checked (valid UTF-8, at most ``max_chars``, a sane ``repeats``;
others go to rejects with a reason from ``REASONS`` and the specifics in ``drop_detail``), each
tokenizer counts them in batches (a count already in the input for the same tokenizer
fingerprint is kept, not recomputed), ``source_domain`` is added, and the counts
per language x domain x key columns are committed as a small Parquet artifact for the ``stats``
step. With a token writer, the same encoding is kept: the shard's documents (each ``repeats``
times) are shuffled with a seed and written per cell as raw ids, with a provenance table, for the
``merge`` step to interleave into token files.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fineflow.artifacts import commit_artifact
from fineflow.documents import (
    commit_shard,
    read_input,
    rejects_schema,
    set_columns,
    table_to_parquet_bytes,
    undecodable_rows,
)
from fineflow.tasks.common.cells import cell_name
from fineflow.tasks.text.words import count_words
from fineflow.tasks.tokenize.columns import check_columns
from fineflow.tasks.tokenize.domains import registered_domain
from fineflow.tasks.tokenize.encoders import Encoder, load_encoder

STEP_VERSION = "2"  # 2: bounded drop reasons with drop_detail, repeats checked
LIBRARIES = ("tokenizers", "tiktoken", "gguf", "numpy", "pyarrow", "tldextract", "regex")

FINGERPRINT_KEY = b"fineflow.tokenizer"  # field metadata of n_tokens_<name>: the tokenizer's fingerprint
DOMAIN_COLUMN = "source_domain"
MAX_REPEATS = 10_000  # copies of one document: more is a corrupt column, not a mix

# The bounded set of drop reasons (a report counts them); what varies goes to ``drop_detail``.
NOT_UTF8 = "tokenize:not_utf8"
LONE_SURROGATE = "tokenize:lone_surrogate"
TOO_LONG = "tokenize:too_long"
CANNOT_ENCODE = "tokenize:cannot_encode"
BAD_REPEATS = "tokenize:bad_repeats"
REASONS = (NOT_UTF8, LONE_SURROGATE, TOO_LONG, CANNOT_ENCODE, BAD_REPEATS)


PROVENANCE_SCHEMA = pa.schema([
    ("cell", pa.string()), ("id", pa.string()), ("url", pa.string()), ("language", pa.string()),
    ("input", pa.string()), ("row", pa.int64()), ("copy", pa.int32()), ("n_tokens", pa.int64()),
])


def count_column(tokenizer: str) -> str:
    return f"n_tokens_{tokenizer}"


def counts_artifact(shard: int) -> str:
    return f"counts-{shard:05d}.parquet"


def provenance_artifact(shard: int) -> str:
    return f"provenance-{shard:05d}.parquet"


def tokens_artifact(cell: str, shard: int) -> str:
    return f"tokens-{cell}-{shard:05d}.bin"


def _texts(table: pa.Table) -> tuple[pa.Table, list[str | None], dict[int, tuple[str, str]]]:
    """The texts as Python strings, and the rows that cannot be read with (reason, detail). Text
    that is not UTF-8 stays in the table decoded with U+FFFD replacements, so the rejects folder
    stays readable by every Parquet reader that checks UTF-8."""
    table, bad = undecodable_rows(table)
    texts = table["text"].to_pylist()
    for row in bad:
        texts[row] = None
    return table, texts, {row: (NOT_UTF8, detail) for row, detail in bad.items()}


def _encode(encoder: Encoder, texts: list[str], keep_ids: bool, batch_size: int,
            ) -> tuple[list[Any], dict[int, tuple[str, str]]]:
    """Per text its ids (``keep_ids``) or count, without specials; texts the encoder refuses
    (e.g. lone surrogates) come back as None with (reason, detail), the rest of their batch encoded."""
    run = encoder.encode_texts if keep_ids else encoder.count_texts
    results: list[Any] = []
    failed: dict[int, tuple[str, str]] = {}
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        try:
            results += run(batch)
            continue
        except Exception:  # noqa: BLE001 (one bad text fails its whole batch: find it below)
            pass
        for offset, text in enumerate(batch):
            try:
                results += run([text])
            except Exception as error:  # noqa: BLE001 (the encoder library's own error types)
                results.append(None)
                failed[start + offset] = (CANNOT_ENCODE, f"{encoder.name}: {type(error).__name__}: {str(error)[:200]}")
    return results, failed


def _reusable(table: pa.Table, column: str, fingerprint: str) -> bool:
    if column not in table.schema.names:
        return False
    metadata = table.schema.field(column).metadata or {}
    if metadata.get(FINGERPRINT_KEY) != fingerprint.encode() or table[column].null_count:
        return False
    # Counts are kept only as whole non-negative numbers: anything else is counted afresh.
    values = table[column]
    return pa.types.is_integer(values.type) and (table.num_rows == 0 or pc.min(values).as_py() >= 0)


def _counts_field(tokenizer: str, fingerprint: str) -> pa.Field:
    return pa.field(count_column(tokenizer), pa.int64(), metadata={FINGERPRINT_KEY: fingerprint.encode()})


def _aggregate(table: pa.Table, sizes: list[int], words: list[int], tokenizers: list[str], key_columns: list[str]) -> pa.Table:
    """Documents, bytes, words and tokens per (language, source_domain, key columns...)."""
    keys = ["language", DOMAIN_COLUMN, *key_columns]
    columns = {key: pc.cast(table[key], pa.string()) if key in table.schema.names else pa.nulls(table.num_rows, pa.string())
               for key in keys}
    columns["documents"] = pa.array(np.ones(table.num_rows, dtype=np.int64))
    columns["bytes"] = pa.array(sizes, pa.int64())
    columns["words"] = pa.array(words, pa.int64())
    for name in tokenizers:
        columns[count_column(name)] = table[count_column(name)]
    values = [c for c in columns if c not in keys]
    grouped = pa.table(columns).group_by(keys, use_threads=False).aggregate([(c, "sum") for c in values])
    return grouped.rename_columns([c.removesuffix("_sum") if c.endswith("_sum") else c for c in grouped.column_names])


def _write_cells(shard: dict, params: dict, output_url: str, kept: pa.Table, ids: list[list[int]], encoder: Encoder,
                 input_rows: np.ndarray, repeats: list[int]) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Shuffle the shard's documents (each ``repeats`` times) and commit their ids per cell."""
    write = params["write"]
    partition = write["partition_by"]
    values = list(zip(*(kept[column].to_pylist() for column in partition))) if partition else [()] * kept.num_rows
    rows_by_cell: dict[str, list[int]] = defaultdict(list)
    for row, (value, times) in enumerate(zip(values, repeats)):
        rows_by_cell[cell_name(partition, value)].extend([row] * times)

    dtype = np.dtype(write["dtype"]).newbyteorder("<")
    prefix, suffix = np.array(encoder.prefix, np.int64), np.array(encoder.suffix, np.int64)
    rng = np.random.default_rng([write["seed"], shard["shard"]])
    artifacts, provenance, written = [], [], {"documents": {}, "tokens": {}}
    for cell in sorted(rows_by_cell):
        order = np.array(rows_by_cell[cell], dtype=np.int64)
        order = order[rng.permutation(len(order))]  # a copy of a repeated document lands at its own place
        arrays = []
        for row in order:
            arrays += [prefix, np.asarray(ids[row], dtype=np.int64), suffix]
        data = np.concatenate(arrays) if arrays else np.array([], np.int64)
        artifacts.append(commit_artifact(output_url, tokens_artifact(cell, shard["shard"]), _narrowed(data, dtype, encoder).tobytes()))
        lengths = [len(ids[row]) + encoder.specials for row in order]
        copies = Counter()
        copy = []
        for row in order:
            copies[row] += 1
            copy.append(copies[row] - 1)
        provenance.append(pa.table({
            "cell": pa.array([cell] * len(order), pa.string()),
            "id": kept["id"].take(order),
            "url": kept["url"].take(order) if "url" in kept.schema.names else pa.nulls(len(order), pa.string()),
            "language": kept["language"].take(order) if "language" in kept.schema.names else pa.nulls(len(order), pa.string()),
            "input": pa.array([shard["input"]] * len(order), pa.string()),
            "row": pa.array(input_rows[order], pa.int64()),  # in the input shard (rejected rows counted)
            "copy": pa.array(copy, pa.int32()),
            "n_tokens": pa.array(lengths, pa.int64()),
        }, schema=PROVENANCE_SCHEMA))
        written["documents"][cell] = len(order)
        written["tokens"][cell] = int(sum(lengths))
    # Every shard has one, empty too: the merge step reads them by shard number.
    table = pa.concat_tables(provenance) if provenance else PROVENANCE_SCHEMA.empty_table()
    artifacts.append(commit_artifact(output_url, provenance_artifact(shard["shard"]), table_to_parquet_bytes(table)))
    return artifacts, written


def _narrowed(ids: np.ndarray, dtype: np.dtype, encoder: Encoder) -> np.ndarray:
    """The ids in the token files' type; an id outside it fails the step (a cast would wrap it silently)."""
    info = np.iinfo(dtype)
    outside = ids[(ids > info.max) | (ids < info.min)]
    if len(outside):
        raise ValueError(f"tokenizer {encoder.name}: id {int(outside[0]):,} does not fit the token files' {dtype.name}")
    return ids.astype(dtype)


def _check_writer(encoder: Encoder, dtype_name: str) -> None:
    """Before any encoding: a writer whose ids can exceed the planned type (e.g. a tokenizer
    file changed since planning) would fail every document."""
    dtype = np.dtype(dtype_name)
    if encoder.vocab_size - 1 > np.iinfo(dtype).max:
        raise ValueError(f"tokenizer {encoder.name}: its largest token id {encoder.vocab_size - 1:,} does not fit "
                         f"the token files' {dtype.name}")


def _repeats(documents: pa.Table, column: str, reasons: dict[int, tuple[str, str]]) -> list[int]:
    """Per document how many copies are written (1 without the column; a null: none); a value
    that is not a whole number from 0 to ``MAX_REPEATS`` rejects its document (in place)."""
    if column not in documents.schema.names:
        return [1] * documents.num_rows
    repeats = []
    for row, value in enumerate(documents[column].to_pylist()):
        if value is None:
            repeats.append(0)
            continue
        try:
            whole = int(value) if float(value) == int(value) else -1
        except (TypeError, ValueError, OverflowError):  # NaN, inf, text
            whole = -1
        if not 0 <= whole <= MAX_REPEATS:
            reasons.setdefault(row, (BAD_REPEATS, f"{column} = {str(value)[:50]} (a whole number from 0 to {MAX_REPEATS:,})"))
            whole = 0
        repeats.append(whole)
    return repeats


def _check_texts(texts: list[str | None], reasons: dict[int, tuple[str, str]], max_chars: int) -> np.ndarray:
    """The texts' UTF-8 sizes; rows that must not reach an encoder get (reason, detail) (in place)."""
    sizes = np.zeros(len(texts), dtype=np.int64)
    for row, text in enumerate(texts):
        if row in reasons:
            continue
        if text is None:
            texts[row] = ""  # no text: counts its special tokens only
        elif len(text) > max_chars:
            reasons[row] = (TOO_LONG, f"{len(text):,} characters (max_chars {max_chars:,})")
        else:
            try:
                sizes[row] = len(text.encode("utf-8"))
            except UnicodeEncodeError as error:  # a lone surrogate: some encoders would replace it silently
                reasons[row] = (LONE_SURROGATE, f"at character {error.start}")
    return sizes


def _count(documents: pa.Table, texts: list[str], reasons: dict[int, tuple[str, str]], params: dict, encoders: dict[str, Encoder],
           writer: str | None) -> tuple[dict[str, np.ndarray], list[Any], list[str]]:
    """Per tokenizer the documents' counts (specials included), the writer's ids, the reused counts."""
    encodable = [row for row in range(len(texts)) if row not in reasons]
    counts: dict[str, np.ndarray] = {}
    writer_ids: list[Any] = [None] * len(texts)
    reused = []
    for name, encoder in encoders.items():
        if name != writer and _reusable(documents, count_column(name), params["tokenizers"][name]["fingerprint"]):
            counts[name] = documents[count_column(name)].to_numpy().astype(np.int64)
            reused.append(name)
            continue
        found, failed = _encode(encoder, [texts[row] for row in encodable], name == writer, params["batch_size"])
        values = np.zeros(len(texts), dtype=np.int64)
        for index, row in enumerate(encodable):
            if index in failed:
                reasons.setdefault(row, failed[index])
                continue
            values[row] = (len(found[index]) if name == writer else found[index]) + encoder.specials
            if name == writer:
                writer_ids[row] = found[index]
        counts[name] = values
    return counts, writer_ids, reused


def count_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    write = params["write"]
    documents = read_input(shard)
    check_columns(documents, [(c, "partition_by") for c in (write["partition_by"] if write else [])]
                  + [(c, "key_columns") for c in params["key_columns"]])
    writer = write["tokenizer"] if write else None
    encoders = {name: load_encoder(name, tokenizer["source"]) for name, tokenizer in params["tokenizers"].items()}
    if writer is not None:
        _check_writer(encoders[writer], write["dtype"])
    documents, texts, reasons = _texts(documents)
    repeats = _repeats(documents, params["repeats_column"], reasons) if writer is not None else []
    sizes = _check_texts(texts, reasons, params["max_chars"])
    counts, writer_ids, reused = _count(documents, texts, reasons, params, encoders, writer)

    rejected_rows = sorted(reasons)
    keep_mask = np.ones(len(texts), dtype=bool)
    keep_mask[rejected_rows] = False
    kept_rows = np.flatnonzero(keep_mask)
    domains = pa.array([registered_domain(url) for url in documents["url"].to_pylist()], pa.string()) \
        if "url" in documents.schema.names else pa.nulls(documents.num_rows, pa.string())
    columns: dict[str, pa.Array] = {DOMAIN_COLUMN: domains}
    for name in encoders:
        columns[count_column(name)] = pa.array(counts[name], pa.int64())
    table = set_columns(documents, columns)
    count_fields = {count_column(name): _counts_field(name, params["tokenizers"][name]["fingerprint"]) for name in encoders}
    table = table.cast(pa.schema([count_fields.get(f.name, f) for f in table.schema], metadata=table.schema.metadata))
    kept = table.take(pa.array(kept_rows, pa.int64()))
    rejects = set_columns(table.take(pa.array(rejected_rows, pa.int64())), {
        "drop_reason": pa.array([reasons[row][0] for row in rejected_rows], pa.string()),
        "drop_detail": pa.array([reasons[row][1] for row in rejected_rows], pa.string()),
    }).cast(rejects_schema(kept.schema, detail=True))  # empty too: every shard's rejects have one schema
    kept_texts = [texts[row] for row in kept_rows]
    kept_sizes = sizes[kept_rows].tolist()
    words = [count_words(text) for text in kept_texts]

    artifacts = []
    aggregate = _aggregate(kept, kept_sizes, words, list(encoders), params["key_columns"])
    artifacts.append(commit_artifact(output_url, counts_artifact(shard["shard"]), table_to_parquet_bytes(aggregate)))
    written = None
    if writer is not None:
        ids = [writer_ids[row] for row in kept_rows]  # every kept row was encoded by the writer
        more, written = _write_cells(shard, params, output_url, kept, ids, encoders[writer], kept_rows,
                                     [repeats[row] for row in kept_rows])
        artifacts += more

    stats: dict[str, Any] = {
        "tokens": {name: _sum_by_language(kept, counts[name][kept_rows].tolist()) for name in encoders},
        "token_totals": {name: int(counts[name][kept_rows].sum()) for name in encoders},
        "text_bytes": _sum_by_language(kept, kept_sizes),
        "words": _sum_by_language(kept, words),
        "drop_reasons": dict(Counter(reasons[row][0] for row in rejected_rows)),
        "reused_counts": {name: kept.num_rows for name in reused},
    }
    if written is not None:
        stats["written_documents"] = written["documents"]
        stats["written_tokens"] = written["tokens"]
    return commit_shard(shard["shard"], output_url, kept, rejects_url, rejects, docs_in=documents.num_rows,
                        artifacts=artifacts, **stats)


def _sum_by_language(table: pa.Table, values: list[int]) -> dict[str, int]:
    totals: Counter = Counter()
    languages = table["language"].to_pylist() if "language" in table.schema.names else ["und"] * len(values)
    for language, value in zip(languages, values):
        totals[language or "und"] += value
    return dict(sorted(totals.items()))
