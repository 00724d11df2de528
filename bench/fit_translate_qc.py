"""Fit the translate QC's shipped calibration (``tasks/text/qc/calibration.json``) on human
translations: per language pair, the expected length ratio, the document band and the
per-segment length model, from one half of the pages only (the other half is for
``translate_qc_eval.py``).

    uv run python bench/fit_translate_qc.py PAIRS_DIR [--half calibration] [--min-docs 50] [--max-paragraphs 8]
        [--out tasks/text/qc/calibration.json] [--report FILE]

Input: ``PAIRS_DIR/<src>-<tgt>/<name>.src.txt|.tgt.txt`` (``translate_pairs.py``), read, filtered,
split in halves, cut into documents of at most ``--max-paragraphs`` kept paragraphs (the
evaluation's documents: ``translate_align.DEFAULT_MAX_PARAGRAPHS``), segmented by the stage and aligned onto its segments by ``translate_align.py``
(``load_aligned``). Per pair (at least ``--min-docs`` documents in the half):

- ``ratio``: the median over documents of translated / source characters (over the segments);
- ``length_ratio``: [q(LOW_Q) / LOW_MARGIN, q(HIGH_Q) * HIGH_MARGIN] of those document ratios
  (the margin covers what a half of ~60 documents cannot show of the tails);
- per mode, ``variance`` and ``spread`` of ``d = translated / ratio - source`` (source
  characters): a least-squares fit of ``d**2 ~ variance * source + spread**2 * source**2`` over
  the segments (Gale & Church's linear term plus a document-style term for long segments), and
  ``max_z``: the LOW_Z_Q quantile of the segments' z, made positive, floored at MIN_MAX_Z;
  ``document_spread`` and ``document_max_z``: the same for whole documents' totals (``variance``
  kept, the spread a document's style adds, fitted on ``d**2 - variance * source``), the
  DOC_Z_Q quantile.

``default`` (pairs the file lacks and cannot derive through English): the band [0.3, 3.0] and the
medians of the fitted pairs' variance, spread and max_z. The file records the corpus, the half,
the documents per pair and the quantiles used.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import ROOT
from translate_align import DEFAULT_MAX_PARAGRAPHS, load_aligned, pairs_in

MODES = ("sentences", "windows")
LOW_Q, HIGH_Q = 0.01, 0.99
LOW_MARGIN, HIGH_MARGIN = 1.08, 1.25
LOW_Z_Q = 0.002
DOC_Z_Q = 0.005
MIN_MAX_Z = 3.0
DEFAULT_BAND = (0.3, 3.0)
TRUNCATED_SHARE = 0.6  # an unfinished segment under 60 % of its expected length (a cut answer is ~50 %)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def segment_lengths(document) -> list[tuple[int, int]]:  # noqa: ANN001 (translate_align.Document)
    return [(len(s), len(t.strip())) for p in document.paragraphs for s, t in zip(p.segments, p.translations)]


def fit_lengths(segments: list[tuple[int, int]], ratio: float) -> tuple[float, float, float]:
    """(variance, spread, max_z) of the segments' residuals around ``ratio``."""
    # least squares of d^2 on (l, l^2), no intercept, both coefficients kept non-negative
    rows = [(s, s * s, (t / ratio - s) ** 2) for s, t in segments if s > 0]
    a11 = sum(x * x for x, _, _ in rows)
    a12 = sum(x * y for x, y, _ in rows)
    a22 = sum(y * y for _, y, _ in rows)
    b1 = sum(x * d for x, _, d in rows)
    b2 = sum(y * d for _, y, d in rows)
    det = a11 * a22 - a12 * a12
    variance, spread2 = ((a22 * b1 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det) if det else (b1 / a11, 0.0)
    if variance < 0:
        variance, spread2 = 0.5, b2 / a22
    if spread2 < 0:
        variance, spread2 = b1 / a11, 0.0
    variance = max(variance, 0.5)
    from fineflow.tasks.text.qc.lengths import z_scores

    z = z_scores([s for s, _ in segments], [t for _, t in segments], ratio, variance, math.sqrt(spread2))
    return variance, math.sqrt(spread2), max(MIN_MAX_Z, -quantile(z, LOW_Z_Q))


def fit_pair(pairs_dir: str, pair: str, half: str, max_paragraphs: int = DEFAULT_MAX_PARAGRAPHS) -> dict:
    per_mode = {mode: load_aligned(pairs_dir, pair, mode, half, max_paragraphs=max_paragraphs) for mode in MODES}
    documents = {mode: docs for mode, (docs, _) in per_mode.items()}
    ratios = []
    for document in documents["windows"] or documents["sentences"]:
        lengths = segment_lengths(document)
        source = sum(s for s, _ in lengths)
        if source:
            ratios.append(sum(t for _, t in lengths) / source)
    entry: dict = {"documents": {mode: len(docs) for mode, docs in documents.items()},
                   "counts": {mode: {k: v for k, v in counts.items() if k != "alignment_failure_examples"}
                              for mode, (_, counts) in per_mode.items()}}
    if not ratios:
        return entry
    ratio = statistics.median(ratios)
    entry.update(ratio=round(ratio, 4),
                 length_ratio=[round(quantile(ratios, LOW_Q) / LOW_MARGIN, 4), round(quantile(ratios, HIGH_Q) * HIGH_MARGIN, 4)],
                 document_ratio_quantiles={str(q): round(quantile(ratios, q), 4) for q in (0.0, LOW_Q, 0.5, HIGH_Q, 1.0)},
                 variance={}, spread={}, max_z={})
    for mode, docs in documents.items():
        segments = [pair_ for document in docs for pair_ in segment_lengths(document)]
        if len(segments) < 50:
            continue
        variance, spread, max_z = fit_lengths(segments, ratio)
        entry["variance"][mode], entry["spread"][mode], entry["max_z"][mode] = round(variance, 3), round(spread, 4), round(max_z, 2)
        entry.setdefault("segments", {})[mode] = len(segments)
        doc_spread, doc_max_z = fit_documents([(sum(s for s, _ in lengths), sum(t for _, t in lengths))
                                               for lengths in map(segment_lengths, docs)], ratio, variance)
        entry.setdefault("document_spread", {})[mode] = round(doc_spread, 4)
        entry.setdefault("document_max_z", {})[mode] = round(doc_max_z, 2)
    return entry


def fit_documents(documents: list[tuple[int, int]], ratio: float, variance: float) -> tuple[float, float]:
    """(spread, max_z) of whole documents' residuals around ``ratio``: ``d**2 - variance * source
    ~ spread**2 * source**2`` (least squares, non-negative), and the DOC_Z_Q quantile of their z,
    made positive, floored at MIN_MAX_Z."""
    rows = [(s, (t / ratio - s) ** 2 - variance * s) for s, t in documents if s > 0]
    spread2 = max(0.0, sum(s * s * e for s, e in rows) / sum(s ** 4 for s, _ in rows)) if rows else 0.0
    from fineflow.tasks.text.qc.lengths import z_scores

    z = z_scores([s for s, _ in documents], [t for _, t in documents], ratio, variance, math.sqrt(spread2))
    return math.sqrt(spread2), max(MIN_MAX_Z, -quantile(z, DOC_Z_Q)) if z else MIN_MAX_Z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs_dir")
    parser.add_argument("--half", default="calibration", choices=("calibration", "evaluation", "all"))
    parser.add_argument("--min-docs", type=int, default=50, help="pairs with fewer documents in the half are left to the default")
    parser.add_argument("--max-paragraphs", type=int, default=DEFAULT_MAX_PARAGRAPHS,
                        help="documents of at most this many kept paragraphs (as the evaluation cuts them; 0: whole pages)")
    parser.add_argument("--out", default=str(ROOT / "tasks" / "text" / "qc" / "calibration.json"))
    parser.add_argument("--pairs", default=None, help="comma-separated pairs (default: every pair in PAIRS_DIR)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    pairs = args.pairs.split(",") if args.pairs else pairs_in(args.pairs_dir)
    fitted, skipped = {}, {}
    with ProcessPoolExecutor(args.jobs) as pool:
        entries = list(pool.map(fit_pair, *zip(*[(args.pairs_dir, pair, args.half, args.max_paragraphs) for pair in pairs])))
    for pair, entry in zip(pairs, entries):
        n = min(entry["documents"].values())
        if n < args.min_docs or "ratio" not in entry or not entry["variance"]:
            skipped[pair] = n
            print(f"{pair:11s} skipped: {n} documents", file=sys.stderr)
            continue
        fitted[pair] = entry
        print(f"{pair:11s} n={entry['documents']} ratio={entry['ratio']} band={entry['length_ratio']} "
              f"variance={entry['variance']} spread={entry['spread']} max_z={entry['max_z']}", file=sys.stderr)

    def pooled(key: str, mode: str) -> float:
        return round(statistics.median(e[key][mode] for e in fitted.values() if mode in e[key]), 4)

    data = {
        "about": "Written by bench/fit_translate_qc.py: per language pair, the expected length ratio (translated / "
                 "source characters over the segments), the document band, and per segmentation mode the segment "
                 "length model (variance, spread, max_z; tasks/text/qc/lengths.py).",
        "fitted_on": {"corpus": "The Debian Administrator's Handbook, debian-handbook.info/browse/<lang>/stable "
                                "(/work/shared/corpus/web-small; bench/translate_pairs.py, bench/translate_align.py)",
                      "half": args.half, "split": "sha256(page name) even: calibration, odd: evaluation",
                      "band": f"[q{LOW_Q} / {LOW_MARGIN}, q{HIGH_Q} * {HIGH_MARGIN}] of the documents' ratios",
                      "max_z": f"the {LOW_Z_Q} quantile of the segments' z, at least {MIN_MAX_Z}",
                      "documents": f"at most {args.max_paragraphs} consecutive kept paragraphs of a page" if args.max_paragraphs
                                   else "whole pages",
                      "min_documents": args.min_docs, "skipped_pairs": skipped},
        "default": {"length_ratio": list(DEFAULT_BAND),
                    "variance": {mode: pooled("variance", mode) for mode in MODES},
                    "spread": {mode: pooled("spread", mode) for mode in MODES},
                    "max_z": {mode: pooled("max_z", mode) for mode in MODES},
                    "document_spread": {mode: pooled("document_spread", mode) for mode in MODES},
                    "document_max_z": {mode: pooled("document_max_z", mode) for mode in MODES},
                    "truncated_share": TRUNCATED_SHARE},
        "pairs": fitted,
    }
    Path(args.out).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(fitted)} pairs", file=sys.stderr)


if __name__ == "__main__":
    main()
