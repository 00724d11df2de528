"""Benchmark the format stage's formatters against datatrove 0.10.1's: byte-identical output and speed.

Both tools get the SAME extracted documents (fineflow's crawl step, trafilatura, over ``--corpus``;
the cache ``bench/results/filter-input-<crawl fingerprint>.parquet`` that ``filter_bench.py``
writes, so both benchmarks read one extraction) and rewrite every text with:

* each formatter ALONE on the extracted text: ``ftfy`` (datatrove ``FTFYFormatter()``), ``pii``
  (``PIIFormatter()``), ``symbol_lines`` (``SymbolLinesFormatter(symbols_to_remove=["|"],
  replace_char="\\n")``), fineflow with each formatter's defaults;
* FineWeb2's chain ftfy -> pii -> symbol_lines (each tool's formatter sees the previous one's text).

datatrove's ``PIIReplacer`` keeps its round-robin position across the documents a formatter
instance sees; fineflow's restarts at each document. The worker therefore builds a FRESH
datatrove formatter for every document (construction is outside the timed part), which is what
fineflow computes. Everything else is datatrove's own code, called as its pipeline step calls it
(``formatter.format(text)``).

Reported: documents compared, documents whose output differs (goal 0 everywhere; the first few
differences are printed and saved with both outputs around the first differing character), and
CPU seconds of each side per mode (``time.process_time`` around the formatting loop, one
process each, run one after the other) with the ratio fineflow / datatrove; the load average
(``os.getloadavg``, what ``uptime`` shows) before and after.

Usage::

    .venv/bin/python bench/format_bench.py [--corpus DIR] [--limit N] [--datatrove-python PY] [--out FILE]

datatrove runs in its own environment with the ``ftfy`` version fineflow pins::

    uv venv bench/.venv-datatrove && VIRTUAL_ENV=bench/.venv-datatrove uv pip install "datatrove[processing]==0.10.1" "ftfy==6.3.1"

(the fuller environment of ``dedup_bench.py``'s docstring works too, with ``ftfy==6.3.1`` added).
The worker side runs as ``<datatrove python> bench/format_bench.py --datatrove-worker IN.jsonl OUT.jsonl``
and imports only the standard library and datatrove.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_info, save_record, table_head  # bench/common.py (the script's folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
# the shared corpus beside the checkout (/work/main) or beside the worktrees' folder (/work/wt/NAME)
DEFAULT_CORPUS = next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.is_dir()), ROOT.parent / "shared") / "corpus" / "web-small"
DEFAULT_DATATROVE_PYTHON = os.environ.get("DATATROVE_PYTHON", str(ROOT / "bench" / ".venv-datatrove" / "bin" / "python"))
MODES = ("ftfy", "pii", "symbol_lines", "chain")
CHAIN = ("ftfy", "pii", "symbol_lines")
SAVED_DIFFERENCES = 20


# ---------------------------------------------------------------------------------------------
# datatrove side (its own interpreter)
# ---------------------------------------------------------------------------------------------


def datatrove_worker(in_path: str, out_path: str) -> None:
    from importlib.metadata import version

    from datatrove.pipeline.formatters import FTFYFormatter, PIIFormatter, SymbolLinesFormatter

    makers = {
        "ftfy": FTFYFormatter,
        "pii": PIIFormatter,
        "symbol_lines": lambda: SymbolLinesFormatter(symbols_to_remove=["|"], replace_char="\n"),
    }
    with open(in_path, encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle]
    outputs: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    for mode in MODES:
        names = CHAIN if mode == "chain" else (mode,)
        results, spent = [], 0.0
        for text in texts:
            formatters = [makers[name]() for name in names]  # fresh per document: the PII turn restarts
            started = time.process_time()
            for formatter in formatters:
                text = formatter.format(text)
            spent += time.process_time() - started
            results.append(text)
        outputs[mode], seconds[mode] = results, spent
    with open(out_path, "w", encoding="utf-8") as out:
        out.write(json.dumps({"datatrove": version("datatrove"), "ftfy": version("ftfy"), "seconds": seconds}) + "\n")
        for row in range(len(texts)):
            out.write(json.dumps({mode: outputs[mode][row] for mode in MODES}) + "\n")


# ---------------------------------------------------------------------------------------------
# fineflow side
# ---------------------------------------------------------------------------------------------


def fineflow_outputs(texts: list[str]) -> tuple[dict[str, list[str]], dict[str, float]]:
    """Each mode's texts through fineflow's format step's chain (each formatter's defaults)."""
    from fineflow.tasks.format.config import FormatStage
    from fineflow.tasks.format.plan import build_params
    from fineflow.tasks.format.step import Chain

    outputs, seconds = {}, {}
    for mode in MODES:
        names = CHAIN if mode == "chain" else (mode,)
        config = FormatStage.model_validate({"stage": "format", "formatters": list(names)})
        chain = Chain(build_params(config)["formatters"])
        started = time.process_time()
        outputs[mode] = [chain.run(text)[0] for text in texts]
        seconds[mode] = time.process_time() - started
    return outputs, seconds


def _difference(doc: dict, ours: str, theirs: str) -> dict:
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    return {"id": doc["id"], "url": doc["url"], "at": at, "fineflow": ours[max(0, at - 80): at + 120],
            "datatrove": theirs[max(0, at - 80): at + 120], "lengths": [len(ours), len(theirs)]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--datatrove-worker":
        datatrove_worker(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of *.warc.gz files")
    parser.add_argument("--limit", type=int, default=None, help="only the first N extracted documents")
    parser.add_argument("--datatrove-python", default=DEFAULT_DATATROVE_PYTHON, help="python of a datatrove 0.10.1 environment")
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default: bench/results/format-<timestamp>.json)")
    parser.add_argument("--extract-workers", type=int, default=os.cpu_count() or 1, help="processes for the one-time extraction")
    args = parser.parse_args()

    from filter_bench import extracted_documents  # the extraction (and its cache) filter_bench uses

    load_before = [round(x, 2) for x in os.getloadavg()]
    docs, input_info = extracted_documents(args.corpus.resolve(), args.extract_workers)
    docs = [d for d in docs if isinstance(d["text"], str)]
    if args.limit:
        docs = docs[: args.limit]
    texts = [d["text"] for d in docs]
    print(f"{len(docs):,} documents", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="format-bench-") as tmp:
        inputs, outputs = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        inputs.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
        subprocess.run([args.datatrove_python, str(Path(__file__).resolve()), "--datatrove-worker", str(inputs), str(outputs)], check=True)
        with outputs.open(encoding="utf-8") as handle:
            meta = json.loads(handle.readline())
            theirs = [json.loads(line) for line in handle]
    ours, ff_seconds = fineflow_outputs(texts)

    results, differences = {}, {}
    for mode in MODES:
        differing = [row for row in range(len(docs)) if ours[mode][row] != theirs[row][mode]]
        changed = sum(ours[mode][row] != texts[row] for row in range(len(docs)))
        results[mode] = {"documents": len(docs), "changed_by_fineflow": changed, "differences": len(differing),
                         "fineflow_cpu_s": round(ff_seconds[mode], 3), "datatrove_cpu_s": round(meta["seconds"][mode], 3),
                         "ratio": round(ff_seconds[mode] / max(meta["seconds"][mode], 1e-9), 3)}
        differences[mode] = [_difference(docs[row], ours[mode][row], theirs[row][mode]) for row in differing[:SAVED_DIFFERENCES]]
        for difference in differences[mode][:3]:
            print(f"{mode}: {difference['id']} differs at {difference['at']}:\n  fineflow:  {difference['fineflow']!r}\n"
                  f"  datatrove: {difference['datatrove']!r}", file=sys.stderr)

    lines = table_head("mode", "documents", "changed", "differences", "fineflow CPU s", "datatrove CPU s", "fineflow / datatrove")
    for mode, row in results.items():
        lines.append(f"| {mode} | {row['documents']:,} | {row['changed_by_fineflow']:,} | {row['differences']} | "
                     f"{row['fineflow_cpu_s']:.2f} | {row['datatrove_cpu_s']:.2f} | {row['ratio']:.2f} |")
    host = machine_info(("fineflow", "ftfy"))
    host["load_average"] = load_before
    record = {
        "input": {**input_info, "documents": len(docs), "limit": args.limit},
        "machine": host,
        "versions": {"datatrove": meta["datatrove"], "ftfy (datatrove env)": meta["ftfy"]},
        "method": "a fresh datatrove formatter per document (PII round robin restarts, as fineflow's); "
                  "time.process_time around the formatting loops, one process per tool, run one after the other",
        "results": results,
        "differences": differences,
        "table": "\n".join(lines),
    }
    out = save_record(record, "format")
    if args.out:
        args.out.write_text(out.read_text())


if __name__ == "__main__":
    main()
