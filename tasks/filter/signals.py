"""filter's first step, ``signals``: every rule's measurements for every document of a shard.

Filters run in the configured order over the text as it stands at that point (C4 rewrites it,
so filters after C4 see the rewritten text, as in FineWeb's chain). Each document is split into
words once per text version and the words are shared. Nothing is decided here: the output
holds ``id``, the rewritten ``text`` (null when unchanged), the effective language, an
``input_problem`` for documents that cannot be measured, and one column per signal.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_table
from fineflow.languages import canonical_language
from fineflow.tasks.filter import c4, fineweb_quality, gopher_quality, gopher_repetition, url_filter, zh_hant
from fineflow.tasks.filter import language as language_filter
from fineflow.tasks.filter.gopher_quality import ENGLISH_STOP_WORDS
from fineflow.tasks.text.words import Splitter, default_splitter, load_splitter

STEP_VERSION = "2"  # 2: unlisted languages are not measured
_SURROGATE = re.compile("[\ud800-\udfff]")
NEEDS_WORDS = {"gopher_repetition", "gopher_quality", "fineweb_quality"}  # C4 splits its kept lines itself

_BOOL = {"c4_lorem_ipsum", "c4_curly_bracket", "url_subword"}
_STRING = {"url_block"}
_INT = {
    "url_soft_words",
    "gopher_qual_words",
    "gopher_qual_non_symbol_words",
    "gopher_qual_stop_words_distinct",
    "gopher_qual_stop_words_count",
    "c4_sentences",
    "c4_lines_removed",
    "c4_kept_words",
    "fineweb_non_empty_lines",
    "zh_hant_simplified_only_chars",
    "zh_hant_traditional_chars",
}


def signal_type(name: str) -> pa.DataType:
    if name in _BOOL:
        return pa.bool_()
    if name in _STRING:
        return pa.string()
    if name in _INT:
        return pa.int64()
    return pa.float64()


_FIXED_SIGNALS = {
    "url": ["url_block", "url_soft_words", "url_subword"],
    "gopher_quality": [
        gopher_quality.PREFIX + n
        for n in (
            "words",
            "non_symbol_words",
            "mean_word_length",
            "hash_ratio",
            "ellipsis_ratio",
            "bullet_lines_ratio",
            "ellipsis_lines_ratio",
            "alpha_words_ratio",
            "stop_words_distinct",
            "stop_words_count",
        )
    ],
    "c4": [c4.PREFIX + n for n in ("sentences", "lorem_ipsum", "curly_bracket", "lines_removed", "kept_words")],
    "fineweb_quality": [
        fineweb_quality.PREFIX + n
        for n in ("non_empty_lines", "line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio")
    ],
    "zh_hant": [zh_hant.PREFIX + n for n in ("simplified_only_chars", "traditional_chars")],
    "language": [],
}


def signal_names(filters: list[dict]) -> list[str]:
    """The signal columns these filters produce, in a stable order (the schema of every shard)."""
    names: list[str] = []
    for spec in filters:
        if spec["name"] == "gopher_repetition":
            prefix = gopher_repetition.PREFIX
            names += [prefix + n for n in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac")]
            names += [f"{prefix}top_{n}_gram_frac" for n in spec["top_ns"]]
            names += [f"{prefix}dup_{n}_gram_frac" for n in spec["dup_ns"]]
        else:
            names += _FIXED_SIGNALS[spec["name"]]
    return names


@dataclass
class SignalSettings:
    filters: list[dict]
    stop_words: dict[str, frozenset[str]]
    splitters: dict[str, str]
    max_text_chars: int
    blocklist: Any = None
    lid_model: str | None = None
    languages: list[str] | None = None  # only these are measured (the language filter's list)
    default_stop_words: frozenset[str] = field(default=frozenset(ENGLISH_STOP_WORDS))

    @classmethod
    def from_params(cls, params: dict) -> SignalSettings:
        blocklist = lid_model = languages = None
        for spec in params["filters"]:
            if spec["name"] == "url":
                blocklist = url_filter.load_blocklist(spec["lists"])
            if spec["name"] == "language":
                lid_model, languages = spec.get("model"), spec.get("languages")
        stop_words = {lang: frozenset(words) for lang, words in params["stop_words_by_language"].items()}
        gopher = next((f for f in params["filters"] if f["name"] == "gopher_quality"), None)
        default = frozenset(gopher["stop_words"]) if gopher and gopher.get("stop_words") is not None else frozenset(ENGLISH_STOP_WORDS)
        return cls(params["filters"], stop_words, params["word_splitters"], params["max_text_chars"], blocklist, lid_model, languages, default)

    def splitter_for(self, language: str) -> Splitter:
        name = self.splitters.get(language) or self.splitters.get(language.split("-")[0]) or default_splitter(language)
        return load_splitter(name)

    def stop_words_for(self, language: str) -> frozenset[str]:
        return self.stop_words.get(language) or self.stop_words.get(language.split("-")[0]) or self.default_stop_words


@dataclass
class DocumentSignals:
    text: str | None  # the rewritten text, None when unchanged
    language: str
    language_score: float | None
    problem: str | None
    values: dict[str, Any]


def input_problem(text: Any, max_chars: int) -> str | None:
    """Why a document cannot be measured at all (it is then dropped with ``input:<problem>``)."""
    if not isinstance(text, str) or not text or text.isspace():
        return "empty_text"
    if len(text) > max_chars:
        return "too_long"
    if _SURROGATE.search(text):  # lone UTF-16 surrogates cannot be stored or tokenized
        return "invalid_unicode"
    return None


def document_signals(text: Any, url: str | None, language: str | None, score: float | None, settings: SignalSettings) -> DocumentSignals:
    """Measure one document for every configured filter (a pure function of its inputs)."""
    language = language or "und"
    problem = input_problem(text, settings.max_text_chars)
    if problem:
        return DocumentSignals(None, language, score, problem, {})
    if settings.lid_model:
        from fineflow.tasks.text import langid

        language, score = langid.identify(text, settings.lid_model)
    measured = language_filter.listed(language, settings.languages)
    original = text
    split = settings.splitter_for(language)
    words: list[str] | None = None
    word_count: int | None = None  # known without a split after C4's rewrite
    values: dict[str, Any] = {}
    for spec in settings.filters:
        kind = spec["name"]
        if not measured and kind != "url":
            continue  # the language filter drops it whatever the thresholds
        if kind in NEEDS_WORDS and words is None and not (kind == "fineweb_quality" and word_count is not None):
            words = split(text)
        if kind == "url":
            block, soft, subword = settings.blocklist.check(url or "")
            values.update(url_block=block, url_soft_words=soft, url_subword=subword)
        elif kind == "gopher_repetition":
            values.update(gopher_repetition.signals(text, words, spec["line_split"], spec["top_ns"], spec["dup_ns"]))
        elif kind == "gopher_quality":
            values.update(gopher_quality.signals(text, words, settings.stop_words_for(language)))
        elif kind == "c4":
            rewritten, c4_values = c4.rewrite(text, split, spec)
            values.update(c4_values)
            if rewritten != text:
                text, words, word_count = rewritten, None, c4_values[c4.PREFIX + "kept_words"]
        elif kind == "fineweb_quality":
            n_words = len(words) if words is not None else word_count
            values.update(fineweb_quality.signals(text, n_words, spec["short_line_length"], spec["legacy_lines"]))
        elif kind == "zh_hant":
            if language in spec["languages"] or language.split("-")[0] in spec["languages"]:
                values.update(zh_hant.signals(text))
    return DocumentSignals(text if text != original else None, language, score, None, values)


def _texts(table: pa.Table) -> list[Any]:
    """Texts as Python strings; a value that is not valid UTF-8 becomes a string with lone surrogates
    (``surrogateescape``), which ``input_problem`` then reports instead of crashing the shard."""
    column = table.column("text")
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        raw = pc.cast(column, pa.binary()).to_pylist()
        return [None if b is None else b.decode("utf-8", errors="surrogateescape") for b in raw]


def signals_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    """Measure every document of one upstream shard; write one row per document, in input order."""
    started = time.perf_counter()
    settings = SignalSettings.from_params(params)
    table = read_table([shard["input"]])
    texts = _texts(table)
    ids = table.column("id").to_pylist()
    urls = table.column("url").to_pylist()
    languages = table.column("language").to_pylist()
    scores = table.column("language_score").to_pylist()

    names = signal_names(params["filters"])
    columns: dict[str, list] = {name: [] for name in names}
    rewritten, out_languages, out_scores, problems = [], [], [], []
    problem_counts: Counter[str] = Counter()
    for text, url, language, score in zip(texts, urls, languages, scores):
        result = document_signals(text, url, canonical_language(language) if language else None, score, settings)
        rewritten.append(result.text)
        out_languages.append(result.language)
        out_scores.append(result.language_score)
        problems.append(result.problem)
        if result.problem:
            problem_counts[result.problem] += 1
        for name in names:
            columns[name].append(result.values.get(name))

    schema = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("language", pa.string()),
        pa.field("language_score", pa.float32()),
        pa.field("input_problem", pa.string()),
    ] + [pa.field(name, signal_type(name)) for name in names]
    output = pa.Table.from_pydict(
        {"id": ids, "text": rewritten, "language": out_languages, "language_score": out_scores, "input_problem": problems, **columns},
        schema=pa.schema(schema),
    )
    return commit_shard(
        shard["shard"],
        output_url,
        output,
        input_problems=dict(sorted(problem_counts.items())),
        rewritten=sum(t is not None for t in rewritten),
        text_chars=sum(len(t) for t in texts if isinstance(t, str)),
        seconds=round(time.perf_counter() - started, 3),
    )
