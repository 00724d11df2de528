"""High-affinity wordlists built from the run's own documents (precision filtering's ``wordlists:
build``): two steps before the filter's signals step.

``wordlist_counts`` (one task per input shard): every document's distinct words counted per
(splitter, word, language label): in how many documents of each language a word occurs. Every
document is split by the word splitter of each language a list is built for (the one the
filter's rules use for that language), whatever its own language, as FineWeb2 counted every
language's corpus with each tokenizer: a word that only one splitter produces (German spaCy
keeps "don" of "don't" whole) must not look like that language's own. Only words with a letter
count; a row with the empty word holds a language's number of documents.

``wordlists`` (one task): those counts summed over the shards; a word's share in language L is
its documents in L over its documents in every language, both split by L's splitter; L's list
holds the words with share ≥ ``affinity_threshold`` seen in at least ``min_word_documents``
documents of L. Each list is
committed as the artifact ``<language>.txt`` (FineWeb2's format: one word a line, most frequent
first), beside ``wordlists.json`` (per language: documents, words, examples). Every signals
shard reads its language's list by URL; the signals fingerprint chains on this step's.

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

from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard, read_input_columns, read_table
from fineflow.languages import canonical_language
from fineflow.tasks.filter.precision import configured_language
from fineflow.tasks.filter.signals import input_problem, splitter_name
from fineflow.tasks.text.words import load_splitter, splitter_resources

STEP_VERSION = "1"
LIBRARIES = ("pyarrow", "polars")
COUNTS_STEP = "wordlist_counts"
LISTS_STEP = "wordlists"
INDEX = "wordlists.json"
EXAMPLES = 8  # most frequent words per language in the summary and the report
_LANGUAGE_DOCUMENTS = ""  # the word of the row counting a language's documents
_SCHEMA = pa.schema([("splitter", pa.string()), ("word", pa.string()), ("label", pa.string()), ("documents", pa.int64())])


def list_name(language: str) -> str:
    return f"{language}.txt"


def plan_build(ctx: Any, languages: list[str], build: dict, signal_params: dict) -> tuple[list, dict[str, str]]:
    """(the two steps, each language's wordlist URL) over the stage's input shards."""
    module = sys.modules[__name__]
    inputs = ctx.inputs.shards()
    splitters = {language: splitter_name(signal_params["word_splitters"], language) for language in languages}
    count_params = {"splitters": sorted(set(splitters.values())), "max_text_chars": signal_params["max_text_chars"]}
    counts = ctx.step(
        module, "count_shard", step=COUNTS_STEP, params=count_params, chained={"upstream": ctx.inputs.fingerprint},
        shards=inputs, resources=splitter_resources(),
    )
    list_params = {"languages": languages, "splitters": splitters, **build}
    lists = ctx.step(
        module, "wordlists_shard", step=LISTS_STEP,
        params={**list_params, "counts": [counts.location.shard_url(n) for n in range(len(inputs))]},
        fingerprint_params=list_params, chained={"counts": counts.fingerprint.value},
        shards=[{"shard": 0}], checks=f"{__name__}:check_wordlists",
    )
    return [counts, lists], {language: lists.location.artifact_url(list_name(language)) for language in languages}


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
    rows = sorted(counts.items())
    output = pa.Table.from_pydict(
        {name: [key[i] for key, _ in rows] for i, name in enumerate(("splitter", "word", "label"))} | {"documents": [n for _, n in rows]},
        schema=_SCHEMA,
    )
    counted = len(texts) - skipped
    return commit_shard(
        shard["shard"], output_url, output, docs_in=len(texts), docs_out=counted, word_rows=output.num_rows,
        seconds=round(time.perf_counter() - started, 3),
    )


def _configured(label: str, languages: list[str]) -> str:
    return configured_language(label, languages) or label


def summed_counts(urls: list[str], languages: list[str]):  # noqa: ANN201 (a polars DataFrame)
    """The count shards summed per (splitter, word, label), labels mapped to the configured languages: folded
    one shard at a time, so memory follows the distinct words, never shards × words."""
    import polars as pl

    total = pl.DataFrame(schema={"splitter": pl.String, "word": pl.String, "label": pl.String, "documents": pl.Int64})
    for url in urls:
        part = pl.from_arrow(read_table([url]).select(_SCHEMA.names))
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


def wordlists_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    """Sum the counts of every shard; commit each language's wordlist and the index."""
    import polars as pl

    started = time.perf_counter()
    languages = params["languages"]
    counts = summed_counts(params["counts"], languages)
    lists = build_wordlists(counts, params["splitters"], params["affinity_threshold"], params["min_word_documents"])
    documents = language_documents(counts, languages)
    artifacts = [commit_artifact(output_url, list_name(language), "".join(f"{w}\n" for w, _ in words).encode()) for language, words in lists.items()]
    index = {
        language: {"documents": documents[language], "words": len(words), "examples": [w for w, _ in words[:EXAMPLES]]}
        for language, words in lists.items()
    }
    artifacts.append(commit_artifact(output_url, INDEX, json.dumps(index, indent=1, ensure_ascii=False, sort_keys=True).encode()))
    output = pa.Table.from_pydict(
        {"wordlist": languages, "documents": [documents[lang] for lang in languages], "words": [len(lists[lang]) for lang in languages]}
    )
    distinct = counts.filter(pl.col("word") != _LANGUAGE_DOCUMENTS).select(pl.struct("splitter", "word").n_unique()).item()
    return commit_shard(
        shard["shard"], output_url, output, docs_in=int(distinct), docs_out=sum(len(words) for words in lists.values()), artifacts=artifacts,
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
