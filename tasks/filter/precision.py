"""FineWeb2's precision filtering: for languages whose documents are contaminated by other
languages, keep a document only with evidence that it is in its labelled language.

A document in a language the rule applies to stays if its URL gives evidence of the language (a
whitelisted top-level domain, the language code as a URL part, a whitelisted word in the URL) or
it has at least ``min_affinity_words`` distinct words from the language's high-affinity wordlist
(words seen in that language at least ``affinity_threshold`` of the time); otherwise it is
dropped as ``precision:no_language_evidence``. Documents in other languages are not measured.

Wordlists come from a folder in FineWeb2's format (``<code>.txt``, one word a line, e.g. its
``wordlists-0.85``) or are built from the run's own documents (``wordlists: build``, see
``wordlists.py``). The languages come from ``languages`` or a FineWeb2 ``cont_scores.json``.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, field_validator, model_validator

from fineflow import storage
from fineflow.languages import canonical_language
from fineflow.tasks.filter.rule import Document, Rule, RuleOptions

BUILD = "build"
REASON = "no_language_evidence"
PREFIX = "precision_"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
# a path segment naming a locale: the code, then a region (de-DE, pt_br, es-419) or a script (sr-Latn)
_LOCALE_TAIL = r"(?:[-_](?:[a-z]{2}|\d{3}|[a-z]{4}))?"
_lock = threading.Lock()


class PrecisionOptions(RuleOptions):
    languages: list[str] | None = Field(default=None, description="the languages it applies to (or cont_scores_file)")
    cont_scores_file: str | None = Field(
        default=None, description="FineWeb2's cont_scores.json ({code: contamination score}): it applies where score > cont_score_threshold"
    )
    cont_score_threshold: float = Field(default=0.1, ge=0, lt=1, description="FineWeb2 filtered languages scoring above 0.1")
    wordlists: str = Field(
        default=BUILD, description="'build' (from this run's documents) or a folder of <code>.txt wordlists (FineWeb2's wordlists-0.85)"
    )
    affinity_threshold: float = Field(
        default=0.85, ge=0.5, le=1, description="build: a word's share of its documents in the language (above 1/2: one language per word)"
    )
    min_word_documents: int = Field(default=5, ge=1, le=1_000_000_000, description="build: documents of the language a listed word is in, at least")
    word_partitions: int = Field(
        default=8, ge=1, le=4096,
        description="build: the words are summed in this many hash partitions, one task each (memory per task: the distinct words "
                    "/ partitions); the lists are the same for any number",
    )
    url_whitelist_file: str | None = Field(
        default=None, description="FineWeb2's url_whitelist.json ({code: [words, '.tld', ...]})"
    )
    url_whitelist: dict[str, list[str]] = Field(default_factory=dict, description="more URL words and '.tld's per language")
    url_codes: bool = Field(default=True, description="the language code as a URL part (subdomain, path segment, file name part, query value) is evidence")
    min_affinity_words: int = Field(default=1, ge=1, le=10_000, description="distinct high-affinity words a document needs without URL evidence")
    THRESHOLDS = ("min_affinity_words",)

    @field_validator("languages")
    @classmethod
    def _canonical(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty list filters nothing: name at least one language, or leave it unset")
        return None if value is None else sorted({canonical_language(code) for code in value})

    @field_validator("url_whitelist")
    @classmethod
    def _canonical_keys(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {canonical_language(code): words for code, words in value.items()}

    @model_validator(mode="after")
    def _one_language_source(self) -> PrecisionOptions:
        if (self.languages is None) == (self.cont_scores_file is None):
            raise ValueError("precision: give either `languages` or `cont_scores_file` (which languages it applies to)")
        return self

    def file_options(self) -> list[str]:
        return super().file_options() + (["wordlists"] if self.wordlists != BUILD else [])


# ---------------------------------------------------------------- planning


@lru_cache(maxsize=4096)
def _likely_script(language: str) -> str | None:
    import langcodes

    try:
        return langcodes.Language.get(language).maximize().script
    except (LookupError, ValueError):
        return None


def configured_language(label: str, languages: list[str] | dict) -> str | None:
    """The configured language a label falls under: itself, its base language (zh-Hant under zh),
    or the configured language naming the script the label's language is written in when the
    label names none (lid.176's bar under GlotLID's bar-Latn; sr, Cyrillic, is not sr-Latn)."""
    if label in languages:
        return label
    base = label.split("-")[0]
    if base in languages:
        return base
    if "-" in label:
        return None
    script = _likely_script(label)
    scripted = [language for language in languages if language.split("-")[0] == label and language.split("-")[-1] == script]
    return scripted[0] if len(scripted) == 1 else None


def _read_json(url: str, option: str) -> Any:
    try:
        return json.loads(storage.read_bytes(url))
    except FileNotFoundError:
        raise ValueError(f"precision.{option}: {url} does not exist") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"precision.{option}: {url} is not valid JSON ({error})") from None


def contaminated_languages(url: str, threshold: float) -> list[str]:
    """The languages of a FineWeb2 ``cont_scores.json`` scoring above ``threshold`` (FineWeb2: > 0.1)."""
    scores = _read_json(url, "cont_scores_file")
    if not isinstance(scores, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()):
        raise ValueError(f"precision.cont_scores_file: {url} is not a mapping of language codes to scores")
    chosen = sorted({canonical_language(code) for code, score in scores.items() if score > threshold})
    if not chosen:
        raise ValueError(f"precision.cont_scores_file: no language of {url} scores above {threshold}")
    return chosen


def language_codes(language: str) -> list[str]:
    """The codes a URL may name a language by: fineflow's code and its ISO 639-3 code (de, deu)."""
    import langcodes

    base = language.split("-")[0].lower()
    try:
        alpha3 = langcodes.Language.get(base).to_alpha3()
    except (LookupError, ValueError):
        alpha3 = base
    return sorted({base, alpha3})


def url_evidence_spec(options: PrecisionOptions, languages: list[str]) -> dict[str, dict[str, list[str]]]:
    """Per language: its codes, its top-level domains and its URL words (FineWeb2's whitelist:
    entries starting with '.' are domains, the others words looked for in the URL)."""
    whitelist: dict[str, set[str]] = {}
    if options.url_whitelist_file:
        data = _read_json(options.url_whitelist_file, "url_whitelist_file")
        if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(w, str) for w in v) for v in data.values()):
            raise ValueError(f"precision.url_whitelist_file: {options.url_whitelist_file} is not a mapping of language codes to lists of words")
        for code, words in data.items():
            whitelist.setdefault(canonical_language(code), set()).update(words)
    for code, words in options.url_whitelist.items():
        whitelist.setdefault(code, set()).update(words)
    evidence = {}
    for language in languages:
        entries = whitelist.get(language, set()) | whitelist.get(language.split("-")[0], set())
        evidence[language] = {
            "codes": language_codes(language) if options.url_codes else [],
            "tlds": sorted({"." + e.strip().lower().strip(".") for e in entries if e.strip().startswith(".") and e.strip(".")}),
            # FineWeb2 compares words with the URL's letters and digits only: "korupun-sela" matches korupunsela.com
            "words": sorted({_NON_ALNUM.sub("", e.lower()) for e in entries if not e.strip().startswith(".")} - {""}),
        }
    return evidence


def wordlist_files(folder: str, languages: list[str]) -> dict[str, list[str]]:
    """The wordlist files of each language in a FineWeb2-style folder (``bar_Latn.txt``; several
    files naming one fineflow language, such as ``cmn_Hani`` and ``zho_Hani``, are merged)."""
    names = sorted(name for name in storage.list_names(folder) if name.endswith(".txt"))
    if not names:
        raise ValueError(f"precision.wordlists: {folder} holds no <language>.txt wordlist (or does not exist)")
    found: dict[str, list[str]] = {}
    for name in names:
        found.setdefault(canonical_language(name[: -len(".txt")]), []).append(storage.join(folder, name))
    chosen = {language: configured_language(language, found) for language in languages}
    missing = [language for language, match in chosen.items() if match is None]
    if missing:
        raise ValueError(f"precision.wordlists: {folder} has no wordlist for {', '.join(missing)}")
    return {language: found[match] for language, match in chosen.items() if match}


def prepare(options: PrecisionOptions, language_configs: dict[str, dict]) -> dict:
    """The signal spec: languages, URL evidence and the wordlists' files (or how to build them)."""
    languages = options.languages or contaminated_languages(options.cont_scores_file, options.cont_score_threshold)  # type: ignore[arg-type]
    spec: dict[str, Any] = {"languages": languages, "url_evidence": url_evidence_spec(options, languages)}
    if options.wordlists == BUILD:
        spec["build"] = {"affinity_threshold": options.affinity_threshold, "min_word_documents": options.min_word_documents,
                         "partitions": options.word_partitions}
    else:
        spec["wordlists"] = wordlist_files(options.wordlists, languages)
    return spec


def build(spec: dict, ctx: Any, signal_params: dict) -> tuple[list, dict]:
    """With ``wordlists: build``: the steps counting words per language and writing the lists."""
    if "build" not in spec:
        return [], spec

    from fineflow.tasks.filter import wordlists  # imports this module

    steps, files = wordlists.plan_build(ctx, spec["languages"], spec["build"], signal_params)
    worker_spec = {key: value for key, value in spec.items() if key != "build"}
    return steps, {**worker_spec, "wordlists": {language: [url] for language, url in files.items()}}


def resources(spec: dict) -> dict[str, str]:
    """A wordlist folder's files by content (built lists chain on their steps' fingerprints instead)."""
    from fineflow.fingerprint import file_content_hash

    files = spec.get("wordlists") or {}
    return {f"precision.{language}.{i}": file_content_hash(url)["blake2b"] for language, urls in files.items() for i, url in enumerate(urls)}


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Evidence:
    codes: re.Pattern | None  # a URL part that is one of the language's codes (with a locale tail)
    tlds: tuple[str, ...]
    words: tuple[str, ...]

    @classmethod
    def of(cls, spec: dict) -> Evidence:
        codes = "|".join(re.escape(code) for code in spec["codes"])
        return cls(re.compile(f"(?:{codes}){_LOCALE_TAIL}") if codes else None, tuple(spec["tlds"]), tuple(spec["words"]))


@dataclass
class Loaded:
    wordlists: dict[str, frozenset[str]]
    evidence: dict[str, Evidence]
    extractor: Any  # tldextract.TLDExtract

    def language_of(self, language: str) -> str | None:
        """The configured language a document's label falls under (zh-Hant under zh), if any."""
        return configured_language(language, self.wordlists)


def read_wordlist(urls: list[str]) -> frozenset[str]:
    words: set[str] = set()
    for url in urls:
        text = storage.read_bytes(url).decode("utf-8", errors="replace")
        words.update(line.strip() for line in text.splitlines() if line.strip())
    return frozenset(words)


@lru_cache(maxsize=4)
def _load(key: str) -> Loaded:
    import tldextract

    spec = json.loads(key)
    return Loaded(
        wordlists={language: read_wordlist(urls) for language, urls in spec["wordlists"].items()},
        evidence={language: Evidence.of(e) for language, e in spec["url_evidence"].items()},
        # the public-suffix snapshot bundled with tldextract: no network access at run time
        extractor=tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None),
    )


def load(spec: dict) -> Loaded:
    """The wordlists and URL evidence, read once per process (and shared by its threads)."""
    with _lock:
        return _load(json.dumps({"wordlists": spec["wordlists"], "url_evidence": spec["url_evidence"]}, sort_keys=True))


def url_evidence(url: str | None, evidence: Evidence, extractor: Any) -> str | None:
    """What in the URL says it is in the language: ``tld:.mx``, ``code:bar`` or ``word:jamaica``."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower().rstrip(".")
    except ValueError:
        return None
    for tld in evidence.tlds:
        if host.endswith(tld) or host == tld[1:]:
            return f"tld:{tld}"
    if evidence.codes:
        subdomains = extractor(host).subdomain.split(".") if host else []
        segments = [segment.lower() for segment in parts.path.split("/") if segment]
        file_parts = segments[-1].split(".")[:-1] if segments and "." in segments[-1] else []  # apt.fr.html
        values = [value.lower() for _, value in parse_qsl(parts.query)]  # ?lang=fr
        for part in (*subdomains, *segments, *file_parts, *values):
            if evidence.codes.fullmatch(part):
                return f"code:{part}"
    if evidence.words:
        letters = _NON_ALNUM.sub("", f"{host}{parts.path}?{parts.query}".lower())
        word = next((w for w in evidence.words if w in letters), None)
        if word:
            return f"word:{word}"
    return None


def measure(loaded: Loaded, document: Document) -> dict:
    language = loaded.language_of(document.language)
    if language is None or not loaded.wordlists[language]:
        return {}  # not a language it applies to (or no wordlist was built for it): not decided
    found = url_evidence(document.url, loaded.evidence[language], loaded.extractor)
    # words are counted even with URL evidence: the rejects and the report show both
    words = len(loaded.wordlists[language].intersection(document.words))
    return {PREFIX + "url_evidence": found, PREFIX + "affinity_words": words}


def decide(row: dict, limits: dict) -> str | None:
    if row.get(PREFIX + "url_evidence") or row[PREFIX + "affinity_words"] >= limits["min_affinity_words"]:
        return None
    return REASON


RULE = Rule(
    name="precision",
    options=PrecisionOptions,
    signals=[(PREFIX + "url_evidence", "string"), (PREFIX + "affinity_words", "int64")],
    measure=measure,
    load=load,
    prepare=prepare,
    build=build,
    resources=resources,
    decide=decide,
    measured_by=PREFIX + "affinity_words",
    splits_words=True,
)
