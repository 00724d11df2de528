"""How well the translate stage's quality checks judge real translations: the false-reject rate on
human translations and the detection rate of corrupted ones, per language pair and segmentation
mode, judged by the stage's own steps (issue #28).

    uv run python bench/translate_pairs.py /tmp/pairs            # the Debian Handbook's pairs
    uv run python bench/translate_qc_eval.py /tmp/pairs [--pairs en-fr,en-de] [--modes sentences,windows]
        [--half evaluation|calibration|all] [--min-docs 50] [--window-tokens N] [--jobs 2]

``PAIRS_DIR/<src>-<tgt>/<name>.src.txt`` and ``<name>.tgt.txt`` hold a document and its human
translation, one paragraph a line. Per pair: paragraphs that are untranslated or not in the
target language (lid.176) are dropped, documents are split into halves by a fixed hash of their
name, segmented by the stage and their human translation aligned onto the segments
(``translate_align.py``: Gale–Church; alignment failures are counted apart and left out, never
QC rejects). Each document then goes through the stage's select, choose, translate and decide
steps, with the ``http`` backend served its human translation (``translate_qc_stage.py``), then
each corruption of it (``translate_corrupt.py``). A document counts as rejected when decide
rejects it, whatever the reason. Figures come only for pairs with at least ``--min-docs`` kept
documents in the half; rates with 95 % Wilson intervals. A document is at most ``--max-paragraphs`` (8) consecutive
kept paragraphs of a page (``translate_align.DEFAULT_MAX_PARAGRAPHS``: a web document is often a
few paragraphs, and the handbook's ~60 pages per half would leave a Wilson upper bound of 6 %
even with 0 rejects; ~200 documents per pair bring it under 5 % at 2-3 %); the shipped
calibration is fitted on documents cut the same way. ``--min-docs`` counts aligned documents.

For fitting a check on the calibration half, the same pieces as functions:
``translate_align.load_aligned(pairs_dir, pair, mode, "calibration")`` gives the aligned
documents, ``translate_corrupt.CORRUPTIONS[name](document, target, other)`` a corruption of one,
``translate_qc_stage.Judge().judge(target, mode, name, [(id, text, [(segment, translation)])])``
every document's measures (the translate step's columns) and decide's verdict, and
``evaluate(pairs_dir, pair, mode, half)`` all of it for one pair and mode (``--details FILE``
writes those results for every pair).

Output: tables (rich), then as the last line one JSON object
``{"<src>-<tgt>": {"<mode>": {"false_reject_rate": x, "false_reject_upper_95": u, "documents": n,
"detection_rate": {"<corruption>": y, ...}, "detection_lower_95": {...}}}}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import translate_align as align  # noqa: E402
import translate_corrupt as corrupt  # noqa: E402
from translate_qc_stage import Judge  # noqa: E402

Z95 = 1.959963984540054
MODES = ("sentences", "windows", "lines")
_judge: Judge | None = None


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); (0, 1) without trials."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _get_judge() -> Judge:
    global _judge
    if _judge is None:
        _judge = Judge()
    return _judge


def _other_paragraphs(pairs_dir: str, pair: str, half: str,
                      documents: list[align.Document]) -> dict[str, list[tuple[str, str] | None]]:
    """Per document, each paragraph's human translation into the first other language that
    translated it (kept by the same filter), matched by line and source text."""
    source, target = align.split_pair(pair)
    found: dict[str, list[tuple[str, str] | None]] = {d.name: [None] * len(d.paragraphs) for d in documents}
    for language in corrupt.other_languages(target):
        other_pair = f"{source}-{language}"
        if not (Path(pairs_dir) / other_pair).is_dir():
            continue
        kept, _ = align.filter_pair(pairs_dir, other_pair, half)
        for document in documents:
            lines = {line: (s, t) for line, s, t in kept.get(align.page_of(document.name), [])}
            slots = found[document.name]
            for index, p in enumerate(document.paragraphs):
                if slots[index] is None and p.line in lines and lines[p.line][0] == p.source:
                    slots[index] = (language, lines[p.line][1])
    return found


def _judge_variant(judge: Judge, target: str, mode: str, name: str, documents: list[align.Document],
                   translations: dict[str, list[list[str]]], window_tokens: int | None) -> dict:
    items = []
    for document in documents:
        if document.name not in translations:
            continue
        pairs = [(s, t) for paragraph, found in zip(document.paragraphs, translations[document.name])
                 for s, t in zip(paragraph.segments, found)]
        items.append((document.name, document.text, pairs))
    result = judge.judge(target, mode, name, items, window_tokens)
    reasons = Counter(v["reason"] for v in result["verdicts"].values() if v["reason"])
    n = len(result["verdicts"])
    rejected = sum(reasons.values())
    low, high = wilson(rejected, n)
    return {"documents": n, "rejected": rejected, "rate": rejected / n if n else None, "low_95": low, "high_95": high,
            "reasons": dict(reasons.most_common()), "failed_checks": result["failed_checks"], "rounds": result["rounds"],
            "repeats_served_first": result["repeats_served_first"], "missing": result["missing"]}


def evaluate(pairs_dir: str, pair: str, mode: str, half: str = "evaluation", min_docs: int = 50,
             window_tokens: int | None = None, corruptions: tuple[str, ...] = tuple(corrupt.CORRUPTIONS),
             max_paragraphs: int = align.DEFAULT_MAX_PARAGRAPHS) -> dict:
    """One pair in one mode: the filter's counts, then (with enough documents) the human
    translations' verdicts and each corruption's."""
    started = time.perf_counter()
    documents, counts = align.load_aligned(pairs_dir, pair, mode, half, window_tokens, max_paragraphs)
    out: dict = {"pair": pair, "mode": mode, "counts": counts}
    if len(documents) < min_docs:  # judged documents: after chunking and alignment
        out["skipped"] = f"{len(documents)} documents aligned, fewer than {min_docs}"
        return out
    target = align.split_pair(pair)[1]
    judge = _get_judge()
    tag = f"{pair}/{mode}/{half}/{window_tokens}/{max_paragraphs}"
    human = {d.name: [list(p.translations) for p in d.paragraphs] for d in documents}
    out["human"] = _judge_variant(judge, target, mode, f"{tag}/human", documents, human, window_tokens)
    others = _other_paragraphs(pairs_dir, pair, half, documents) if "other_language" in corruptions else {}
    out["corruptions"] = {}
    for name in corruptions:
        made: dict[str, list[list[str]]] = {}
        skipped: Counter[str] = Counter()
        human_chars = chars = 0
        for document in documents:
            try:
                result = corrupt.CORRUPTIONS[name](document, target, others.get(document.name))
            except corrupt.Skip as why:
                skipped[str(why).split(":")[0]] += 1
                continue
            made[document.name] = result.translations
            human_chars += result.human_chars
            chars += result.chars
        figures = _judge_variant(judge, target, mode, f"{tag}/{name}", documents, made, window_tokens) if made else {
            "documents": 0, "rejected": 0, "rate": None, "low_95": 0.0, "high_95": 1.0, "reasons": {}, "failed_checks": {}}
        figures["skipped"] = dict(skipped)
        figures["length_change"] = chars / human_chars - 1 if human_chars else None
        out["corruptions"][name] = figures
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def _task(args: tuple) -> dict:
    return evaluate(*args)


def summary_json(results: list[dict]) -> dict:
    out: dict = {}
    for result in results:
        if "human" not in result:
            continue
        human = result["human"]
        out.setdefault(result["pair"], {})[result["mode"]] = {
            "false_reject_rate": human["rate"], "false_reject_upper_95": human["high_95"], "documents": human["documents"],
            "alignment_failures": result["counts"]["alignment_failures"],
            "detection_rate": {k: v["rate"] for k, v in result["corruptions"].items()},
            "detection_lower_95": {k: v["low_95"] for k, v in result["corruptions"].items()},
        }
    return out


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.0f}"


def _reason(reasons: dict) -> str:
    return ", ".join(f"{k.removeprefix('translate:')} {v}" for k, v in list(reasons.items())[:2])


def print_tables(results: list[dict], corruptions: tuple[str, ...], console) -> None:  # noqa: ANN001
    from rich.table import Table

    counts = Table(title="Pairs: paragraphs and documents kept (filter, alignment)", title_justify="left")
    for column in ("pair", "mode", "pages", "kept", "paragraphs", "kept", "untranslated", "other lang", "documents",
                   "align fail", "judged"):
        counts.add_column(column, justify="right" if column not in ("pair", "mode") else "left")
    for r in results:
        c = r["counts"]
        counts.add_row(r["pair"], r["mode"], str(c["documents"]), str(c["documents_kept"]), str(c["paragraphs"]),
                       str(c["paragraphs_kept"]), str(c["dropped_untranslated"]), str(c["dropped_language"]), str(c["chunks"]),
                       str(c["alignment_failures"]), str(r["human"]["documents"]) if "human" in r else r.get("skipped", ""))
    console.print(counts)
    table = Table(title="False rejects of human translations and detection of corruptions (% of documents rejected, "
                        "95 % Wilson interval)", title_justify="left")
    table.add_column("pair")
    table.add_column("mode")
    table.add_column("n", justify="right")
    table.add_column("false rejects", justify="right")
    table.add_column("why (first failing check)")
    for name in corruptions:
        table.add_column(name, justify="right")
    for r in results:
        if "human" not in r:
            continue
        h = r["human"]
        cells = [f"{_pct(h['rate'])} [{_pct(h['low_95'])}-{_pct(h['high_95'])}]", _reason(h["reasons"])]
        for name in corruptions:
            c = r["corruptions"][name]
            top = next(iter(c["reasons"]), "").removeprefix("translate:")
            cells.append(f"{_pct(c['rate'])} [{_pct(c['low_95'])}] {top}".rstrip())
        table.add_row(r["pair"], r["mode"], str(h["documents"]), *cells)
    console.print(table)
    sizes = Table(title="Corruption sizes (all judged pairs): documents, skipped, length change of the translation",
                  title_justify="left")
    for column in ("corruption", "documents", "skipped", "length change %", "checks failing (documents)"):
        sizes.add_column(column)
    for name in corruptions:
        rows = [r["corruptions"][name] for r in results if "corruptions" in r]
        changes = [c["length_change"] for c in rows if c["length_change"] is not None]
        checks: Counter[str] = Counter()
        for c in rows:
            checks.update(c["failed_checks"])
        sizes.add_row(name, str(sum(c["documents"] for c in rows)), str(sum(sum(c["skipped"].values()) for c in rows)),
                      f"{100 * sum(changes) / len(changes):+.0f} (mean of pairs)" if changes else "-",
                      ", ".join(f"{k} {v}" for k, v in checks.most_common(4)))
    console.print(sizes)
    checks = Table(title="Human translations: every check failing (documents), per pair and mode", title_justify="left")
    checks.add_column("pair")
    checks.add_column("mode")
    checks.add_column("checks failing")
    for r in results:
        if "human" in r:
            failing = sorted(r["human"]["failed_checks"].items(), key=lambda kv: -kv[1])
            checks.add_row(r["pair"], r["mode"], ", ".join(f"{k} {v}" for k, v in failing) or "none")
    console.print(checks)
    missing = sum(v.get("missing", 0) for r in results if "human" in r for v in [r["human"], *r["corruptions"].values()])
    if missing:
        console.print(f"[red]{missing} segments the stage sent had no served translation (answered empty): a mapping bug[/red]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs_dir")
    parser.add_argument("--pairs", help="comma-separated pairs (default: every folder of PAIRS_DIR)")
    parser.add_argument("--modes", default="sentences,windows", help="comma-separated: sentences, windows, lines")
    parser.add_argument("--half", default="evaluation", choices=align.HALVES)
    parser.add_argument("--min-docs", type=int, default=50)
    parser.add_argument("--window-tokens", type=int, default=None, help="windows mode (default: the stage's default)")
    parser.add_argument("--corruptions", default=",".join(corrupt.CORRUPTIONS))
    parser.add_argument("--max-paragraphs", type=int, default=align.DEFAULT_MAX_PARAGRAPHS,
                        help="cut pages into documents of at most this many kept paragraphs (0: whole pages; the "
                             "calibration is fitted with the default)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--details", help="write every figure (counts, reasons, checks, sizes) to this JSON file")
    args = parser.parse_args(argv)
    from rich.console import Console

    console = Console(stderr=False, width=200)
    available = align.pairs_in(args.pairs_dir)
    pairs = args.pairs.split(",") if args.pairs else available
    unknown = [p for p in pairs if p not in available]
    modes = args.modes.split(",")
    corruptions = tuple(c for c in args.corruptions.split(",") if c)
    problems = ([f"no pair folder {p} in {args.pairs_dir}" for p in unknown] + [f"unknown mode {m}" for m in modes if m not in MODES]
                + [f"unknown corruption {c}" for c in corruptions if c not in corrupt.CORRUPTIONS])
    if args.min_docs < 1 or args.jobs < 1 or args.max_paragraphs < 0 or (args.window_tokens is not None and args.window_tokens < 8):
        problems.append("--min-docs and --jobs must be at least 1, --max-paragraphs at least 0, --window-tokens at least 8")
    if problems:
        parser.error("; ".join(problems))
    started = time.perf_counter()
    tasks = [(args.pairs_dir, pair, mode, args.half, args.min_docs, args.window_tokens, corruptions, args.max_paragraphs)
             for pair in pairs for mode in modes]
    if args.jobs == 1:
        results = [_task(t) for t in tasks]
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(_task, tasks))
    print_tables(results, corruptions, console)
    console.print(f"{len(tasks)} pair-modes, half {args.half}, in {time.perf_counter() - started:.0f} s")
    if args.details:
        Path(args.details).write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(summary_json(results), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
