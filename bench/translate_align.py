"""Parallel documents for the translate QC evaluation: read, filtered, split in halves, segmented
by the stage and aligned onto its segments by length (Gale & Church 1993).

The API the evaluation (``translate_qc_eval.py``) and a QC fitter use:

    load_aligned(pairs_dir, "en-fr", "sentences", "calibration") -> (documents, counts)

``documents`` is a list of ``Document`` (``name``; ``paragraphs``, each a ``Paragraph`` with
``source`` (the line fed to the stage), ``target`` (its human translation), ``segments`` (the
stage's source segments of that line, in order) and ``translations`` (the human translation cut
into one non-empty group per segment)); ``Document.text`` is what the stage translates (the kept
paragraphs joined with "\\n", so segments stay inside lines). ``counts`` says what was kept and
dropped (see ``load_aligned``). ``translate_corrupt.py`` takes the same structure.

Pairs: ``PAIRS_DIR/<src>-<tgt>/<name>.src.txt`` and ``<name>.tgt.txt``, one paragraph a line,
line i of one the translation of line i of the other (``translate_pairs.py`` builds them).

Filter: a paragraph is kept when its translation differs from the source and lid.176
(``fineflow.tasks.text.langid``) labels it the target language, and (after alignment) no segment
of it with words is left as it is (``dropped_partly_untranslated``: a caption whose label alone
was translated, "Příklad 15.1. Rebuilding a package") (for a target with a script
subtag, ``zh-Hant``, lid.176's label is the language alone, ``zh``: that counts as a match). A
document with no kept paragraph is dropped.

Halves: ``sha256(name)`` even -> ``calibration``, odd -> ``evaluation``; the same pages for every
pair and every run.

Alignment: each paragraph's source is segmented by the stage's own segmenter for the mode
(``translation.segmenter`` with the translate step's planned params). Its translation is cut
into units, sentences in the target language (sentencex, as the stage splits), split further
while there are fewer units than segments (the longest splittable unit: at clause punctuation,
else at the whitespace nearest its middle, else at its middle character). A dynamic programme
partitions the units into contiguous non-empty groups, one per segment, minimising the sum of
Gale–Church costs ``-log P(|Z| >= |delta|)``, ``delta = (l_t - c l_s) / sqrt(S2 c l_s)`` with
``c`` the paragraph's own character ratio and ``S2 = 6.8`` (the paper's variance, stated per
target character at c = 1; scaled by c so a script with denser characters is held to the same
relative spread). It fails when there are fewer units than segments after every split, when
a group's ``|delta|`` exceeds ``MAX_DELTA``, or (``build_document``) when a group other than a
paragraph's last ends inside a sentence (neither sentence nor clause punctuation, the QC's
``finished``) while its source segment ends one (``SplitInsideSentence``: the translator joined
sentences that the stage translates apart): that document is left out of the mode's figures and
counted as an alignment failure (never as a QC reject); the last kind is counted apart too.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from sentencex import segment as split_sentences

from fineflow.tasks.text.qc.lengths import ends_sentence, finished

S2 = 6.8  # Gale & Church (1993): variance of target length per source character
MAX_DELTA = 4.0  # |delta| beyond this for any group is a failed alignment (two-sided p ~ 6e-5)
HALVES = ("calibration", "evaluation", "all")
# A document is at most this many consecutive kept paragraphs of a page: a web document is often
# a few paragraphs (a handbook page is ~30), and a pair's half then holds ~150-300 documents,
# enough for a 95 % upper bound under 5 % at a false-reject rate of 2-3 % (whole pages, ~60 a
# half, leave 6 % even at 0 rejects). The calibration is fitted on the same documents.
DEFAULT_MAX_PARAGRAPHS = 8
_SPACELESS = frozenset({"ja", "zh", "th", "lo", "km", "my", "bo"})
# a clause break: ASCII clause punctuation before whitespace, or a full-width mark (no space follows it)
_CLAUSE = re.compile(r"[,;:](?=\s)|[，；：、]")


class AlignmentError(ValueError):
    """The human translation cannot be aligned onto these segments."""


class SplitInsideSentence(AlignmentError):
    """The alignment had to end a segment's translation inside a sentence where its source ends
    one (the translator joined sentences the stage sends apart): the stage, translating each
    segment on its own, would get a finished sentence back, so such a cut measures the aligner,
    not a translation."""


@dataclass
class Paragraph:
    source: str
    target: str
    segments: list[str] = field(default_factory=list)
    translations: list[str] = field(default_factory=list)
    line: int = -1  # its line in the pair's files (the same paragraph in every pair of the page)


@dataclass
class Document:
    name: str
    paragraphs: list[Paragraph]

    @property
    def text(self) -> str:
        return "\n".join(p.source for p in self.paragraphs)


def spaceless(language: str) -> bool:
    """A language written without spaces between words (cut at characters, not words)."""
    return language.split("-")[0] in _SPACELESS


def half_of(name: str) -> str:
    return "calibration" if int(hashlib.sha256(name.encode()).hexdigest(), 16) % 2 == 0 else "evaluation"


def lid_matches(label: str, target: str) -> bool:
    return label == target or label == target.split("-")[0]


# -- units and the dynamic programme -------------------------------------------------------------

def _sentence_spans(text: str, language: str) -> list[tuple[int, int]]:
    chunks = list(split_sentences(language, text))
    if "".join(chunks) != text:
        chunks = [text]
    spans, at = [], 0
    for chunk in chunks:
        core = chunk.strip()
        if core:
            start = at + chunk.index(core)
            spans.append((start, start + len(core)))
        at += len(chunk)
    return spans


def _split_clauses(text: str, span: tuple[int, int]) -> list[tuple[int, int]]:
    start, end = span
    out, at = [], start
    for found in _CLAUSE.finditer(text, start, end):
        cut = found.end()
        if at < cut < end:
            out.append((at, cut))
            at = cut
            while at < end and text[at].isspace():
                at += 1
    out.append((at, end))
    return [s for s in out if s[1] > s[0]]


def _split_middle(text: str, span: tuple[int, int], at_space: bool) -> list[tuple[int, int]]:
    start, end = span
    middle = (start + end) // 2
    if at_space:
        spaces = [i for i in range(start + 1, end - 1) if text[i].isspace()]
        if not spaces:
            return [span]
        at = min(spaces, key=lambda i: abs(i - middle))
        left_end, right_start = at, at
        while left_end > start and text[left_end - 1].isspace():
            left_end -= 1
        while right_start < end and text[right_start].isspace():
            right_start += 1
        return [(start, left_end), (right_start, end)]
    if end - start < 2:
        return [span]
    at = max(start + 1, middle)
    while at < end - 1 and unicodedata.combining(text[at]):
        at += 1
    return [(start, at), (at, end)]


# What a group boundary inside a sentence costs, like Gale & Church's priors on match types: a
# sentence end is free, a clause break -log(0.05), a word (or character) break -log(0.01).
BREAK_COSTS = (0.0, -math.log(0.05), -math.log(0.01))
LEVELS = ("sentences", "clauses", "words")


def _units(text: str, language: str, needed: int, level: int) -> list[tuple[int, int, float]]:
    """(start, end, cost of a boundary after it) of ``text`` at ``level`` (0 sentences, split
    further only while fewer than ``needed``; 1 every clause; 2 every word, characters for a
    language without spaces), then split further while fewer than ``needed``."""
    units = [(a, b, BREAK_COSTS[0]) for a, b in _sentence_spans(text, language)]
    if level >= 1:
        units = [(a, b, BREAK_COSTS[1] if b < end else cost) for start, end, cost in units
                 for a, b in _split_clauses(text, (start, end))]
    if level >= 2:
        finer = []
        for start, end, cost in units:
            if spaceless(language):
                parts = [(i, i + 1) for i in range(start, end)]
            else:
                parts = [(m.start(), m.end()) for m in re.finditer(r"\S+", text[start:end])]
                parts = [(start + a, start + b) for a, b in parts]
            finer += [(a, b, BREAK_COSTS[2] if b < end else cost) for a, b in parts]
        units = finer
    splitters = ((lambda s: _split_clauses(text, s), BREAK_COSTS[1]), (lambda s: _split_middle(text, s, True), BREAK_COSTS[2]),
                 (lambda s: _split_middle(text, s, False), BREAK_COSTS[2]))
    while len(units) < needed:
        for splitter, cost in splitters:
            options = sorted(((u[1] - u[0], i, parts) for i, u in enumerate(units) if len(parts := splitter(u[:2])) > 1),
                             reverse=True)
            if options:
                _, index, parts = options[0]
                last = units[index][2]
                units[index:index + 1] = [(a, b, cost) for a, b in parts[:-1]] + [(*parts[-1], last)]
                break
        else:
            break  # no unit splits further
    return units


def target_units(text: str, language: str, needed: int, level: int = 0) -> list[tuple[int, int]]:
    """Spans of ``text``: its sentences (or finer, by ``level``), split further while fewer than ``needed``."""
    return [(a, b) for a, b, _ in _units(text, language, needed, level)]


def _cost(target_chars: int, source_chars: int, ratio: float) -> tuple[float, float]:
    """(Gale–Church cost, delta) of a group of ``target_chars`` for a segment of ``source_chars``."""
    source_chars = max(source_chars, 1)
    delta = (target_chars - ratio * source_chars) / math.sqrt(S2 * max(ratio, 1e-6) * source_chars)
    tail = math.erfc(abs(delta) / math.sqrt(2))
    return -math.log(max(tail, 1e-300)), delta


def _partition(segments: list[str], target: str, units: list[tuple[int, int, float]]) -> tuple[list[str], float]:
    """The least-cost partition of ``units`` into one group per segment, and its largest |delta|."""
    n, m = len(segments), len(units)
    prefix = [0]
    for start, end, _ in units:
        prefix.append(prefix[-1] + end - start)
    ratio = prefix[-1] / max(sum(len(s) for s in segments), 1)
    inf = float("inf")
    # best[i][j]: the cost of segments[:i] over units[:j]; back[i][j]: where group i starts
    best = [[inf] * (m + 1) for _ in range(n + 1)]
    back = [[0] * (m + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for i in range(1, n + 1):
        source = len(segments[i - 1])
        for j in range(i, m - (n - i) + 1):
            boundary = units[j - 1][2] if j < m else 0.0
            for k in range(i - 1, j):
                if best[i - 1][k] == inf:
                    continue
                cost = best[i - 1][k] + _cost(prefix[j] - prefix[k], source, ratio)[0] + boundary
                if cost < best[i][j]:
                    best[i][j], back[i][j] = cost, k
    groups: list[str] = []
    worst = 0.0
    j = m
    for i in range(n, 0, -1):
        k = back[i][j]
        worst = max(worst, abs(_cost(prefix[j] - prefix[k], len(segments[i - 1]), ratio)[1]))
        groups.append(target[units[k][0]:units[j - 1][1]])
        j = k
    return groups[::-1], worst


def align_at(segments: list[str], target: str, language: str) -> tuple[list[str], int]:
    """``align``, and the unit level it took (0 sentences, 1 clauses, 2 words)."""
    n = len(segments)
    if n == 0:
        return [], 0
    worst = float("inf")
    for level in range(len(LEVELS)):
        units = _units(target, language, n, level)
        if len(units) < n:
            raise AlignmentError(f"{len(units)} target units for {n} segments")
        groups, worst = _partition(segments, target, units)
        if worst <= MAX_DELTA:
            return groups, level
    raise AlignmentError(f"|delta| {worst:.2f} > {MAX_DELTA} at every level")


def align(segments: list[str], target: str, language: str) -> list[str]:
    """``target`` cut into one non-empty group per segment (contiguous, in order): at sentence
    boundaries where lengths allow, else at clauses, else at words; raises ``AlignmentError``
    when no partition exists or a group's |delta| exceeds MAX_DELTA at every level."""
    return align_at(segments, target, language)[0]


# -- reading, filtering, segmenting ----------------------------------------------------------------

def read_pair(pairs_dir: str | Path, pair: str) -> dict[str, list[tuple[str, str]]]:
    """{document name: [(source paragraph, target paragraph), ...]} of one pair's folder."""
    folder = Path(pairs_dir) / pair
    out = {}
    for source_file in sorted(folder.glob("*.src.txt")):
        name = source_file.name[: -len(".src.txt")]
        target_file = folder / f"{name}.tgt.txt"
        if not target_file.is_file():
            continue
        sources = source_file.read_text(encoding="utf-8").splitlines()
        targets = target_file.read_text(encoding="utf-8").splitlines()
        if len(sources) != len(targets):
            raise ValueError(f"{folder}/{name}: {len(sources)} source lines, {len(targets)} target lines")
        out[name] = [(" ".join(s.split()), " ".join(t.split())) for s, t in zip(sources, targets)]
    return out


def pairs_in(pairs_dir: str | Path) -> list[str]:
    return sorted(p.name for p in Path(pairs_dir).iterdir() if p.is_dir() and "-" in p.name and any(p.glob("*.src.txt")))


def split_pair(pair: str) -> tuple[str, str]:
    source, _, target = pair.partition("-")
    return source, target


def filter_pair(pairs_dir: str | Path, pair: str, half: str = "evaluation") -> tuple[dict[str, list[tuple[int, str, str]]], dict]:
    """The kept paragraphs {name: [(line number, source, target), ...]} of the half's documents,
    and the counts kept and dropped."""
    from fineflow.tasks.text import langid

    if half not in HALVES:
        raise ValueError(f"half must be one of {HALVES}")
    target = split_pair(pair)[1]
    counts = {"documents": 0, "documents_kept": 0, "paragraphs": 0, "paragraphs_kept": 0,
              "dropped_untranslated": 0, "dropped_language": 0}
    kept: dict[str, list[tuple[int, str, str]]] = {}
    for name, lines in read_pair(pairs_dir, pair).items():
        if half != "all" and half_of(name) != half:
            continue
        counts["documents"] += 1
        paragraphs = []
        for number, (source, translation) in enumerate(lines):
            if not source or not translation:
                continue
            counts["paragraphs"] += 1
            if translation == source:
                counts["dropped_untranslated"] += 1
            elif not lid_matches(langid.identify(translation)[0], target):
                counts["dropped_language"] += 1
            else:
                paragraphs.append((number, source, translation))
        counts["paragraphs_kept"] += len(paragraphs)
        if paragraphs:
            kept[name] = paragraphs
            counts["documents_kept"] += 1
    return kept, counts


@lru_cache(maxsize=16)
def _splitter(target: str, mode: str, window_tokens: int | None):  # noqa: ANN202
    # Through the translation module, where the step takes it (segmentation may move to tasks/text).
    from translate_qc_stage import translate_params

    from fineflow.tasks.translate import translation

    return translation.segmenter(translate_params(target, mode, window_tokens))


def segment_lines(text: str, target: str, mode: str, window_tokens: int | None = None) -> tuple[list[list[str]], list[str]]:
    """The stage's segments of ``text`` per line, and each line's untranslated lead (a list marker)."""
    pieces = _splitter(target, mode, window_tokens)(text, "en")
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    per_line: list[list[str]] = [[] for _ in starts]
    leads = [""] * len(starts)
    at = 0
    for piece in pieces:
        line = bisect.bisect_right(starts, at) - 1
        if piece.translate:
            per_line[line].append(piece.text)
        elif not per_line[line] and "\n" not in piece.text:
            leads[line] += piece.text
        at += len(piece.text)
    return per_line, leads


def build_document(name: str, paragraphs: list[tuple[int, str, str]], target: str, mode: str,
                   window_tokens: int | None = None) -> Document:
    """A document of (line, source, human translation) paragraphs, segmented and aligned
    (raises ``AlignmentError``)."""
    text = "\n".join(source for _, source, _ in paragraphs)
    per_line, leads = segment_lines(text, target, mode, window_tokens)
    out = []
    for (line, source, translation), segments, lead in zip(paragraphs, per_line, leads):
        lead = lead.strip()
        if lead and translation.startswith(lead):  # the same list marker stays in the output as it is
            translation = translation[len(lead):].lstrip() or translation
        groups = align(segments, translation, target)
        for segment, group in zip(segments[:-1], groups[:-1]):
            if ends_sentence(segment) and not finished(group):
                raise SplitInsideSentence(f"line {line}: {group[-40:]!r} ends inside a sentence for {segment[-40:]!r}")
        if any(untranslated(segment, group) for segment, group in zip(segments, groups)):
            continue  # a caption whose label alone was translated: not a human translation of it
        out.append(Paragraph(source, translation, segments, groups, line))
    return Document(name, out)


def untranslated(segment: str, group: str) -> bool:
    """A segment with words whose aligned translation is the segment itself."""
    return len(segment) >= 20 and bool(re.search(r"[^\W\d_]{2}", segment)) and " ".join(segment.split()) == " ".join(group.split())


def chunked(kept: dict[str, list[tuple[int, str, str]]], max_paragraphs: int) -> dict[str, list[tuple[int, str, str]]]:
    """Each document's kept paragraphs in documents of at most ``max_paragraphs`` consecutive
    ones, named ``<name>#<n>`` (0: whole documents). The half stays the page's."""
    if max_paragraphs <= 0:
        return kept
    return {f"{name}#{start // max_paragraphs}": paragraphs[start:start + max_paragraphs]
            for name, paragraphs in kept.items() for start in range(0, len(paragraphs), max_paragraphs)}


def page_of(name: str) -> str:
    return name.split("#", 1)[0]


def load_aligned(pairs_dir: str | Path, pair: str, mode: str, half: str = "evaluation",
                 window_tokens: int | None = None, max_paragraphs: int = DEFAULT_MAX_PARAGRAPHS) -> tuple[list[Document], dict]:
    """The half's documents of ``pair``, filtered, segmented for ``mode`` and aligned (pages cut
    into documents of at most ``max_paragraphs`` kept paragraphs, ``chunked``; 0: whole pages).
    Counts: documents / documents_kept / paragraphs / paragraphs_kept / dropped_untranslated /
    dropped_language (the filter, in pages), chunks (the documents judged before alignment),
    alignment_failures (of which split_inside_sentence: ``SplitInsideSentence``), no_segment (kept paragraphs the stage leaves as they are, code or
    numbers only) and aligned (the documents returned)."""
    kept, counts = filter_pair(pairs_dir, pair, half)
    kept = chunked(kept, max_paragraphs)
    counts["chunks"] = len(kept)
    target = split_pair(pair)[1]
    documents, failures = [], []
    no_segment = inside = partly = 0
    for name, paragraphs in kept.items():
        try:
            document = build_document(name, paragraphs, target, mode, window_tokens)
        except AlignmentError as error:
            failures.append(f"{name}: {error}")
            inside += isinstance(error, SplitInsideSentence)
            continue
        partly += len(paragraphs) - len(document.paragraphs)
        if not any(p.segments for p in document.paragraphs):
            no_segment += 1
            continue
        documents.append(document)
    counts.update(alignment_failures=len(failures), split_inside_sentence=inside, dropped_partly_untranslated=partly, alignment_failure_examples=failures[:3],
                  no_segment=no_segment,
                  aligned=len(documents))
    return documents, counts
