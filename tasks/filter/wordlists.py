"""High-affinity wordlists built from the run's own documents (precision filtering's ``wordlists:
build``): two steps before the filter's signals step.

``wordlist_counts`` (one task per input shard): every document's distinct words counted per
(splitter, word, language label): in how many documents of each language a word occurs. Every
document is split by the word splitter of each language a list is built for (the one the
filter's rules use for that language), whatever its own language, as FineWeb2 counted every
language's corpus with each tokenizer: a word that only one splitter produces (German spaCy
keeps "don" of "don't" whole) must not look like that language's own. Only words with a letter
count; a row with the empty word holds a language's number of documents.

``wordlist_parts`` (one task per word partition): those counts summed over the shards for the
words of one partition (``word_partitions``; words are hashed into 65,536 buckets, stored with
the counts in bucket order, and a partition is a range of buckets, so each task reads only its
row groups and holds only its words: memory follows the distinct words over the partitions,
never the whole vocabulary); a word's share in language L is its documents in L over its
documents in every language, both split by L's splitter; the partition's listed words are those
with share ≥ ``affinity_threshold`` seen in at least ``min_word_documents`` documents of L.

``wordlists`` (one task): the partitions' listed words (only those) and the languages' document
counts, merged; each list is committed as the artifact ``<language>.txt`` (FineWeb2's format: one
word a line, most frequent first), beside ``wordlists.json`` (per language: documents, words,
examples). The lists are the same for any number of partitions. Every signals shard reads its
language's list by URL; the signals fingerprint chains on this step's.

Documents count once per word (not per occurrence, as FineWeb2's term frequencies did) so a page
repeating a word cannot make it a language's own. A language's list is only as clean as its
labels: the contamination being filtered dilutes it, which ``affinity_threshold`` tolerates.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from fineflow import storage
from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard, read_input_columns, read_table
from fineflow.languages import canonical_language
from fineflow.tasks.filter.precision import configured_language
from fineflow.tasks.filter.signals import input_problem, splitter_name
from fineflow.tasks.text.words import load_splitter, splitter_resources

STEP_VERSION = "2"  # 2: counts carry their word's bucket, in bucket order; lists summed per partition
LIBRARIES = ("pyarrow", "polars", "xxhash")
COUNTS_STEP = "wordlist_counts"
PARTS_STEP = "wordlist_parts"
LISTS_STEP = "wordlists"
BUCKETS = 1 << 16  # words hash into this many buckets; a partition is a contiguous range of them
INDEX = "wordlists.json"
EXAMPLES = 8  # most frequent words per language in the summary and the report
_LANGUAGE_DOCUMENTS = ""  # the word of the row counting a language's documents
_SCHEMA = pa.schema([("splitter", pa.string()), ("word", pa.string()), ("label", pa.string()), ("documents", pa.int64())])
_COUNTS = pa.schema([("bucket", pa.int32()), *_SCHEMA])  # in bucket order: commit_shard's row groups (65,536 rows)
# have bucket statistics, and a partition reads only the groups its buckets fall in


def list_name(language: str) -> str:
    return f"{language}.txt"


def bucket_of(splitter: str, word: str) -> int:
    return xxhash.xxh64_intdigest(f"{splitter}\0{word}".encode("utf-8", "surrogatepass")) % BUCKETS


def bucket_ranges(partitions: int) -> list[tuple[int, int]]:
    """[low, high) buckets of each partition (contiguous, covering every bucket)."""
    return [(BUCKETS * p // partitions, BUCKETS * (p + 1) // partitions) for p in range(partitions)]


def plan_build(ctx: Any, languages: list[str], build: dict, signal_params: dict) -> tuple[list, dict[str, str]]:
    """(the three steps, each language's wordlist URL) over the stage's input shards."""
    module = sys.modules[__name__]
    inputs = ctx.inputs.shards()
    splitters = {language: splitter_name(signal_params["word_splitters"], language) for language in languages}
    count_params = {"splitters": sorted(set(splitters.values())), "max_text_chars": signal_params["max_text_chars"]}
    counts = ctx.step(
        module, "count_shard", step=COUNTS_STEP, params=count_params, chained={"upstream": ctx.inputs.fingerprint},
        shards=inputs, resources=splitter_resources(),
    )
    settings = {key: value for key, value in build.items() if key != "partitions"}
    list_params = {"languages": languages, "splitters": splitters, **settings}
    ranges = bucket_ranges(build.get("partitions", 1))
    parts = ctx.step(
        module, "parts_shard", step=PARTS_STEP,
        params={**list_params, "counts": [counts.location.shard_url(n) for n in range(len(inputs))]},
        fingerprint_params={**list_params, "partitions": len(ranges)}, chained={"counts": counts.fingerprint.value},
        shards=[{"shard": p, "buckets": list(bounds)} for p, bounds in enumerate(ranges)],
    )
    lists = ctx.step(
        module, "wordlists_shard", step=LISTS_STEP,
        params={"languages": languages, "parts": [parts.location.shard_url(p) for p in range(len(ranges))]},
        fingerprint_params={"languages": languages}, chained={"parts": parts.fingerprint.value},
        shards=[{"shard": 0}], checks=f"{__name__}:check_wordlists",
    )
    return [counts, parts, lists], {language: lists.location.artifact_url(list_name(language)) for language in languages}


def document_words(text: str, splitter: str) -> set[str]:
    """The distinct words of a document that have a letter (numbers and punctuation are no one's)."""
    return {word for word in load_splitter(splitter)(text) if word.isalpha() or any(ch.isalpha() for ch in word)}


def count_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    """Documents per (word, language label) in one input shard."""
    started = time.perf_counter()
    table = read_input_columns(shard, ["text", "language"])
    texts = table.column("text").to_pylist() if "text" in table.column_names else []
    labels = table.column("language").to_pylist() if "language" in table.column_names else [None] * len(texts)
    counts: Counter[tuple[str, str, str]] = Counter()
    skipped = 0
    for text, label in zip(texts, labels):
        if input_problem(text, params["max_text_chars"]):
            skipped += 1  # the filter drops it as input:<problem>; it says nothing of any language
            continue
        language = canonical_language(label) if label else "und"
        counts[("", _LANGUAGE_DOCUMENTS, language)] += 1
        for splitter in params["splitters"]:
            counts.update((splitter, word, language) for word in document_words(text, splitter))
    rows = sorted((bucket_of(key[0], key[1]), *key, n) for key, n in counts.items())
    output = pa.Table.from_pydict({name: [row[i] for row in rows] for i, name in enumerate(_COUNTS.names)}, schema=_COUNTS)
    counted = len(texts) - skipped
    return commit_shard(
        shard["shard"], output_url, output, docs_in=len(texts), docs_out=counted, word_rows=output.num_rows,
        seconds=round(time.perf_counter() - started, 3),
    )


def _configured(label: str, languages: list[str]) -> str:
    return configured_language(label, languages) or label


def read_buckets(url: str, low: int, high: int) -> pa.Table:
    """The rows of a counts file whose bucket is in [low, high): only the row groups holding them are read."""
    with storage.open_input(url, block_size=1024 * 1024) as handle:
        parquet = pq.ParquetFile(handle)
        index = parquet.schema_arrow.get_field_index("bucket")
        groups = []
        for group in range(parquet.metadata.num_row_groups):
            stats = parquet.metadata.row_group(group).column(index).statistics
            if stats is None or not stats.has_min_max or (stats.min < high and stats.max >= low):
                groups.append(group)
        table = parquet.read_row_groups(groups, columns=_COUNTS.names) if groups else _COUNTS.empty_table()
    import pyarrow.compute as pc

    inside = pc.and_(pc.greater_equal(table["bucket"], low), pc.less(table["bucket"], high))
    return table.filter(inside).select(_SCHEMA.names)


def summed_counts(urls: list[str], languages: list[str], buckets: tuple[int, int] = (0, BUCKETS)):  # noqa: ANN201 (a polars DataFrame)
    """The count shards summed per (splitter, word, label) for the words in ``buckets``, labels mapped to the
    configured languages: folded one shard at a time, so memory follows the distinct words, never shards × words."""
    import polars as pl

    total = pl.DataFrame(schema={"splitter": pl.String, "word": pl.String, "label": pl.String, "documents": pl.Int64})
    for url in urls:
        part = pl.from_arrow(read_buckets(url, *buckets))
        assert isinstance(part, pl.DataFrame)
        if not part.height:
            continue
        mapping = {label: _configured(label, languages) for label in part.get_column("label").unique().to_list()}
        part = part.with_columns(pl.col("label").replace_strict(mapping, return_dtype=pl.String), pl.col("documents").cast(pl.Int64))
        total = pl.concat([total, part]).group_by("splitter", "word", "label").agg(pl.col("documents").sum())
    return total


def build_wordlists(counts, splitters: dict[str, str], affinity_threshold: float,  # noqa: ANN001 (summed_counts)
                    min_word_documents: int) -> dict[str, list[tuple[str, int]]]:
    """Per configured language (``splitters``: language -> its splitter), its high-affinity words
    with their documents, most frequent first."""
    import polars as pl

    languages = sorted(splitters)
    words = counts.filter(pl.col("word") != _LANGUAGE_DOCUMENTS).with_columns(
        share=pl.col("documents") / pl.col("documents").sum().over("splitter", "word")
    )
    own = pl.DataFrame({"label": languages, "splitter": [splitters[language] for language in languages]})
    chosen = words.join(own, on=["label", "splitter"]).filter(
        (pl.col("documents") >= min_word_documents) & (pl.col("share") >= affinity_threshold)
    ).sort(["label", "documents", "word"], descending=[False, True, False])
    lists: dict[str, list[tuple[str, int]]] = {language: [] for language in languages}
    for word, label, documents in chosen.select("word", "label", "documents").iter_rows():
        lists[label].append((word, documents))
    return lists


def language_documents(counts, languages: list[str]) -> dict[str, int]:  # noqa: ANN001 (summed_counts)
    import polars as pl

    rows = counts.filter(pl.col("word") == _LANGUAGE_DOCUMENTS).group_by("label").agg(pl.col("documents").sum())
    documents = dict(rows.iter_rows())
    return {language: int(documents.get(language, 0)) for language in languages}


_LISTED = pa.schema([("word", pa.string()), ("label", pa.string()), ("documents", pa.int64())])


def parts_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    """One partition's words summed over every counts shard: its listed words and (where the
    language rows fall) each language's documents, as (word, label, documents) rows."""
    import polars as pl

    started = time.perf_counter()
    languages = params["languages"]
    low, high = shard["buckets"]
    counts = summed_counts(params["counts"], languages, (low, high))
    lists = build_wordlists(counts, params["splitters"], params["affinity_threshold"], params["min_word_documents"])
    documents = counts.filter(pl.col("word") == _LANGUAGE_DOCUMENTS).group_by("label").agg(pl.col("documents").sum())
    rows = [(word, language, n) for language, words in lists.items() for word, n in words]
    rows += [(_LANGUAGE_DOCUMENTS, label, int(n)) for label, n in documents.iter_rows() if label in languages]
    output = pa.Table.from_pydict({name: [row[i] for row in rows] for i, name in enumerate(_LISTED.names)}, schema=_LISTED)
    distinct = counts.filter(pl.col("word") != _LANGUAGE_DOCUMENTS).select(pl.struct("splitter", "word").n_unique()).item()
    return commit_shard(shard["shard"], output_url, output, docs_in=int(distinct), docs_out=output.num_rows,
                        partition_words=int(distinct), seconds=round(time.perf_counter() - started, 3))


def wordlists_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    """The partitions' listed words merged; commit each language's wordlist and the index."""
    started = time.perf_counter()
    languages = params["languages"]
    lists: dict[str, list[tuple[str, int]]] = {language: [] for language in languages}
    documents = {language: 0 for language in languages}
    for word, label, n in zip(*(read_table(params["parts"]).column(c).to_pylist() for c in _LISTED.names)):
        if word == _LANGUAGE_DOCUMENTS:
            documents[label] += n
        else:
            lists[label].append((word, n))
    for words in lists.values():  # most frequent first, then by word: as one summed table sorts them
        words.sort(key=lambda item: (-item[1], item[0]))
    artifacts = [commit_artifact(output_url, list_name(language), "".join(f"{w}\n" for w, _ in words).encode()) for language, words in lists.items()]
    index = {
        language: {"documents": documents[language], "words": len(words), "examples": [w for w, _ in words[:EXAMPLES]]}
        for language, words in lists.items()
    }
    artifacts.append(commit_artifact(output_url, INDEX, json.dumps(index, indent=1, ensure_ascii=False, sort_keys=True).encode()))
    output = pa.Table.from_pydict(
        {"wordlist": languages, "documents": [documents[lang] for lang in languages], "words": [len(lists[lang]) for lang in languages]}
    )
    return commit_shard(
        shard["shard"], output_url, output, docs_in=sum(len(words) for words in lists.values()),
        docs_out=sum(len(words) for words in lists.values()), artifacts=artifacts,
        wordlist_words={lang: len(lists[lang]) for lang in languages},
        wordlist_documents=documents,
        wordlist_examples={lang: dict(lists[lang][:EXAMPLES]) for lang in languages},
        seconds=round(time.perf_counter() - started, 3),
    )


def check_wordlists(totals: dict) -> list[str]:
    """A language with an empty list is not precision-filtered at all: say so."""
    documents = totals.get("wordlist_documents", {})
    return [
        f"precision: no high-affinity word for {language} ({documents.get(language, 0)} documents): its documents are not precision-filtered"
        for language, words in totals.get("wordlist_words", {}).items()
        if not words
    ]
