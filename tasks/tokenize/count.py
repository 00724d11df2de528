"""The count step (map, the stage's document step): ``n_tokens_<tokenizer>`` on every document.

Per input shard: the texts are checked (valid UTF-8, at most ``max_chars``; others go to rejects
with their reason), each tokenizer counts them in batches (a count already in the input for the
same tokenizer fingerprint is kept, not recomputed), ``source_domain`` is added, and the counts
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
from fineflow.documents import commit_shard, read_input, rejects_schema, set_columns, table_to_parquet_bytes
from fineflow.tasks.common.cells import cell_name
from fineflow.tasks.text.words import count_words
from fineflow.tasks.tokenize.domains import registered_domain
from fineflow.tasks.tokenize.encoders import Encoder, load_encoder

STEP_VERSION = "1"
LIBRARIES = ("tokenizers", "tiktoken", "gguf", "numpy", "pyarrow", "tldextract", "regex")

FINGERPRINT_KEY = b"fineflow.tokenizer"  # field metadata of n_tokens_<name>: the tokenizer's fingerprint
DOMAIN_COLUMN = "source_domain"


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


def _texts(table: pa.Table) -> tuple[pa.Table, list[str | None], dict[int, str]]:
    """The texts as Python strings, and the rows that cannot be read with why (invalid UTF-8).
    Such a text is kept in the table decoded with U+FFFD replacements (its reason says so), so
    the rejects folder stays readable by every Parquet reader that checks UTF-8."""
    column = table["text"]
    try:
        return table, column.to_pylist(), {}
    except UnicodeDecodeError:
        pass
    texts: list[str | None] = []
    repaired: list[str | None] = []
    bad: dict[int, str] = {}
    for row, raw in enumerate(column.cast(pa.binary()).to_pylist()):
        try:
            texts.append(None if raw is None else raw.decode("utf-8"))
            repaired.append(texts[-1])
        except UnicodeDecodeError as error:
            texts.append(None)
            repaired.append(raw.decode("utf-8", errors="replace"))
            bad[row] = f"tokenize: text is not valid UTF-8 ({error.reason} at byte {error.start})"
    table = table.set_column(table.schema.get_field_index("text"), table.schema.field("text"), pa.array(repaired, pa.string()))
    return table, texts, bad


def _encode(encoder: Encoder, texts: list[str], keep_ids: bool, batch_size: int) -> tuple[list[Any], dict[int, str]]:
    """Per text its ids (``keep_ids``) or count, without specials; texts the encoder refuses
    (e.g. lone surrogates) come back as None with the reason, the rest of their batch encoded."""
    run = encoder.encode_texts if keep_ids else encoder.count_texts
    results: list[Any] = []
    failed: dict[int, str] = {}
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
                failed[start + offset] = f"tokenize: {encoder.name} cannot encode the text ({type(error).__name__})"
    return results, failed


def _reusable(table: pa.Table, column: str, fingerprint: str) -> bool:
    if column not in table.schema.names:
        return False
    metadata = table.schema.field(column).metadata or {}
    return metadata.get(FINGERPRINT_KEY) == fingerprint.encode() and table[column].null_count == 0


def _counts_field(tokenizer: str, fingerprint: str) -> pa.Field:
    return pa.field(count_column(tokenizer), pa.int64(), metadata={FINGERPRINT_KEY: fingerprint.encode()})


def _aggregate(table: pa.Table, sizes: list[int], words: list[int], tokenizers: list[str], key_columns: list[str]) -> pa.Table:
    """Documents, bytes, words and tokens per (language, source_domain, key columns...)."""
    missing = [column for column in key_columns if column not in table.schema.names]
    if missing:
        raise ValueError(f"key_columns: {', '.join(missing)} not in the documents (columns: {', '.join(table.schema.names)})")
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
                 input_rows: np.ndarray) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Shuffle the shard's documents (each ``repeats`` times) and commit their ids per cell."""
    write = params["write"]
    partition = write["partition_by"]
    missing = [column for column in partition if column not in kept.schema.names]
    if missing:
        raise ValueError(f"partition_by: {', '.join(missing)} not in the documents (columns: {', '.join(kept.schema.names)})")
    repeats_column = params["repeats_column"]
    repeats = (
        [max(0, int(value or 0)) for value in kept[repeats_column].to_pylist()]
        if repeats_column in kept.schema.names else [1] * kept.num_rows
    )
    values = list(zip(*(kept[column].to_pylist() for column in partition))) if partition else [()] * kept.num_rows
    rows_by_cell: dict[str, list[int]] = defaultdict(list)
    for row, (value, times) in enumerate(zip(values, repeats)):
        rows_by_cell[cell_name(partition, value)].extend([row] * times)

    dtype = np.dtype(write["dtype"]).newbyteorder("<")
    if encoder.vocab_size - 1 > np.iinfo(dtype).max:  # e.g. a trained tokenizer larger than planned: never wrap ids
        raise ValueError(f"tokenizer {encoder.name}: {encoder.vocab_size:,} ids do not fit the token files' {dtype.name}")
    prefix, suffix = np.array(encoder.prefix, dtype), np.array(encoder.suffix, dtype)
    rng = np.random.default_rng([write["seed"], shard["shard"]])
    artifacts, provenance, written = [], [], {"documents": {}, "tokens": {}}
    for cell in sorted(rows_by_cell):
        order = np.array(rows_by_cell[cell], dtype=np.int64)
        order = order[rng.permutation(len(order))]  # a copy of a repeated document lands at its own place
        arrays = []
        for row in order:
            arrays += [prefix, np.asarray(ids[row], dtype=dtype), suffix]
        data = np.concatenate(arrays) if arrays else np.array([], dtype)
        artifacts.append(commit_artifact(output_url, tokens_artifact(cell, shard["shard"]), data.tobytes()))
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


def _check_texts(texts: list[str | None], reasons: dict[int, str], max_chars: int) -> np.ndarray:
    """The texts' UTF-8 sizes; rows that must not reach an encoder get their reason (in place)."""
    sizes = np.zeros(len(texts), dtype=np.int64)
    for row, text in enumerate(texts):
        if row in reasons:
            continue
        if text is None:
            texts[row] = ""  # no text: counts its special tokens only
        elif len(text) > max_chars:
            reasons[row] = f"tokenize: text over {max_chars:,} characters"
        else:
            try:
                sizes[row] = len(text.encode("utf-8"))
            except UnicodeEncodeError:  # a lone surrogate: some encoders would replace it silently
                reasons[row] = "tokenize: text has a lone surrogate (not encodable as UTF-8)"
    return sizes


def _count(documents: pa.Table, texts: list[str], reasons: dict[int, str], params: dict, encoders: dict[str, Encoder],
           writer: str | None) -> tuple[dict[str, np.ndarray], list[Any], list[str]]:
    """Per tokenizer the documents' counts (specials included), the writer's ids, the reused counts."""
    encodable = [row for row in range(len(texts)) if row not in reasons]
    counts: dict[str, np.ndarray] = {}
    writer_ids: list[Any] = [None] * len(texts)
    reused = []
    for name, encoder in encoders.items():
        if name != writer and _reusable(documents, count_column(name), params["tokenizers"][name]["fingerprint"]):
            counts[name] = documents[count_column(name)].to_numpy()
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
    documents, texts, reasons = _texts(read_input(shard))
    sizes = _check_texts(texts, reasons, params["max_chars"])
    writer = params["write"]["tokenizer"] if params["write"] else None
    encoders = {name: load_encoder(name, tokenizer["source"]) for name, tokenizer in params["tokenizers"].items()}
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
    rejects = None
    if rejected_rows:
        rejects = set_columns(table.take(pa.array(rejected_rows, pa.int64())),
                              {"drop_reason": pa.array([reasons[row] for row in rejected_rows], pa.string())})
        rejects = rejects.cast(rejects_schema(kept.schema))
    kept_texts = [texts[row] for row in kept_rows]
    kept_sizes = sizes[kept_rows].tolist()
    words = [count_words(text) for text in kept_texts]

    artifacts = []
    aggregate = _aggregate(kept, kept_sizes, words, list(encoders), params["key_columns"])
    artifacts.append(commit_artifact(output_url, counts_artifact(shard["shard"]), table_to_parquet_bytes(aggregate)))
    written = None
    if writer is not None:
        ids = [writer_ids[row] for row in kept_rows]  # every kept row was encoded by the writer
        more, written = _write_cells(shard, params, output_url, kept, ids, encoders[writer], kept_rows)
        artifacts += more

    stats: dict[str, Any] = {
        "tokens": {name: _sum_by_language(kept, counts[name][kept_rows].tolist()) for name in encoders},
        "token_totals": {name: int(counts[name][kept_rows].sum()) for name in encoders},
        "text_bytes": _sum_by_language(kept, kept_sizes),
        "words": _sum_by_language(kept, words),
        "drop_reasons": dict(Counter(reasons[row] for row in rejected_rows)),
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
