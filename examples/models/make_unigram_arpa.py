"""Build a small unigram KenLM model (ARPA) for the ``perplexity`` filter rule from documents.

CCNet scores text with 5-gram models trained on Wikipedia; this stand-in counts the words of a
reference set (e.g. the sample's Debian handbook pages) after the rule's own normalisation
(``ccnet_normalize``, whitespace words), so the nemotron-cc preset runs offline. A unigram model
only measures vocabulary: use a real model (lmplz on normalised Wikipedia) for real filtering.

    python examples/models/make_unigram_arpa.py DOCS_FOLDER --url 'debian-handbook\\.info/browse/en/' \\
        --out examples/models/en-handbook-unigram.arpa
"""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter
from pathlib import Path

import polars as pl

from fineflow.tasks.filter.perplexity import ccnet_normalize

UNKNOWN_SHARE = 0.01  # probability mass kept for words the reference never shows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("documents", help="a folder of fineflow Parquet documents (id, url, text)")
    parser.add_argument("--url", default=".", help="a regular expression the reference pages' URLs match")
    parser.add_argument("--min-count", type=int, default=2, help="rarer words go to <unk>")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    pages = pl.read_parquet(str(Path(args.documents) / "*.parquet")).filter(pl.col("url").str.contains(args.url))
    words: Counter[str] = Counter()
    lines = 0
    for text in pages["text"].to_list():
        for line in text.split("\n"):
            normal = ccnet_normalize(line)
            if normal:
                words.update(normal.split())
                lines += 1
    kept = {word: n for word, n in words.items() if n >= args.min_count and not re.search(r"\s", word)}
    total = sum(kept.values()) + lines  # every line ends with </s>
    scale = 1 - UNKNOWN_SHARE
    entries = [("<unk>", math.log10(UNKNOWN_SHARE)), ("<s>", -99.0), ("</s>", math.log10(scale * lines / total))]
    entries += [(word, math.log10(scale * n / total)) for word, n in sorted(kept.items())]
    # KenLM loads models of order 2 and up: one bigram, with the unigram's own probability and
    # backoff weights of 0, keeps every score the unigram model's
    end = entries[2][1]
    body = ["\\data\\", f"ngram 1={len(entries)}", "ngram 2=1", "", "\\1-grams:"]
    body += [f"{p:.6f}\t{w}\t0" for w, p in entries] + ["", "\\2-grams:", f"{end:.6f}\t<s> </s>"]
    Path(args.out).write_text("\n".join(body + ["", "\\end\\", ""]), encoding="utf-8")
    print(f"{len(pages)} pages, {lines} lines, {len(kept)} words -> {args.out}")


if __name__ == "__main__":
    main()
