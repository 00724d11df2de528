"""filter's first step, ``signals``: every rule's measurements for every document of a shard.

Filters run in the configured order, each by its rule's ``measure`` (``rule.py``), over the text
as it stands at that point (C4 rewrites it, so filters after C4 see the rewritten text, as in
FineWeb's chain). Each document is split into words once per text version, on first use, and
the words are shared. Nothing is decided here: the output holds ``id``, the rewritten ``text``
(null when unchanged), the effective language, an ``input_problem`` for documents that cannot
be measured, and one column per signal.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_input
from fineflow.languages import canonical_language
from fineflow.tasks.filter import rules
from fineflow.tasks.filter.rule import Document, Rule
from fineflow.tasks.text.words import Splitter, default_splitter, load_splitter

STEP_VERSION = "2"  # 2: unlisted languages are not measured
LIBRARIES = ("numpy", "pyarrow", "pyahocorasick", "tldextract", "opencc-python-reimplemented", "fasttext-predict")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Configured:
    """One filter of the step: its rule, its signal spec and what the rule loaded from it."""

    rule: Rule
    spec: dict
    state: Any


def splitter_name(splitters: dict[str, str], language: str) -> str:
    """The word splitter for a language: configured for it (or its base language), else the default."""
    return splitters.get(language) or splitters.get(language.split("-")[0]) or default_splitter(language)


@dataclass
class SignalSettings:
    filters: list[Configured]
    splitters: dict[str, str]
    max_text_chars: int

    @classmethod
    def from_params(cls, params: dict) -> SignalSettings:
        filters = []
        for spec in params["filters"]:
            rule = rules.for_spec(spec)
            filters.append(Configured(rule, spec, rule.load(spec)))
        return cls(filters, params["word_splitters"], params["max_text_chars"])

    def splitter_for(self, language: str) -> Splitter:
        return load_splitter(splitter_name(self.splitters, language))

    def schema(self) -> list[pa.Field]:
        """The signal columns, in the configured order (the schema of every shard)."""
        return [pa.field(name, pa.type_for_alias(kind)) for f in self.filters for name, kind in f.rule.columns(f.spec)]


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
    document = Document(text, url, language, score, settings.splitter_for)
    # every screen runs (one may relabel the language); any may turn the document away
    admitted = [f.rule.screen(f.state, document) for f in settings.filters if f.rule.screen]
    measured = all(admitted)
    values: dict[str, Any] = {}
    for f in settings.filters:
        if measured or not f.rule.measured_by:  # else: dropped whatever the thresholds
            values.update(f.rule.measure(f.state, document))
    return DocumentSignals(document.text if document.text != text else None, document.language, document.language_score, None, values)


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
    table = read_input(shard)
    texts = _texts(table)
    ids = table.column("id").to_pylist()
    urls = table.column("url").to_pylist()
    languages = table.column("language").to_pylist()
    scores = table.column("language_score").to_pylist()

    fields = settings.schema()
    names = [field.name for field in fields]
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
    ] + fields
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
