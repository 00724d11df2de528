"""The benchmark of record: datatrove's FineWeb recipe against fineflow's FineWeb preset, end to end.

Both run on the same WARC folder, one after the other, with the same number of worker processes:

* **datatrove 0.10.1** (its own virtual environment): ``WarcReader → URLFilter → Trafilatura
  (favour_precision) → LanguageFilter (en > 0.65) → GopherRepetition → GopherQuality → C4
  (terminal-punctuation rule off) → FineWebQuality → JsonlWriter``, each filter with an exclusion
  writer as in datatrove's ``examples/fineweb.py``, on a ``LocalPipelineExecutor`` with one task
  per WARC file. Its extraction timeout is raised (``--timeout``, 10 s like fineflow's CPU limit)
  so that its sandbox's restarts on a loaded 2-core machine do not turn into timeouts. Offline,
  its language model is the same ``lid.176.ftz`` file fineflow uses (placed where datatrove's
  downloader looks), and its URL lists are fineflow's default lists (``use_integrated_lists``
  off), so both sides make the same decisions.
* **fineflow**: ``fineflow run`` of ``examples/fineweb.yaml``'s stages up to ``filter`` (the
  preset's dedup, PII and audit after it have no counterpart here) with its inputs pointed at the
  folder, once per extractor (resiliparse and trafilatura), into empty storage, on a
  LocalCluster of the same number of workers. The Prefect server is started before timing (a
  private ``FINEFLOW_HOME``) and its CPU is reported separately.

Each side's **whole process tree** is measured (``bench/proctree.py``): wall seconds and exact
CPU seconds, datatrove's forkserver children and fineflow's Dask workers and extraction
subprocesses included. Reported: documents kept by each side, how many kept documents both keep,
and how many of those have byte-identical texts (trafilatura is the same version on both sides).

This machine's speed drifts by tens of percent within minutes (other tenants), so one pass can
flatter either side. The script runs ``--rounds`` rounds (3), datatrove first in odd rounds and
last in even ones, and reports every round's ratios and their medians (the figures of record).

Usage:
    .venv/bin/python bench/fineweb_e2e.py [--corpus DIR] [--workers 2] [--extractors resiliparse trafilatura]
        [--rounds 3] [--datatrove-python bench/.venv-datatrove/bin/python]

The datatrove environment (``trafilatura`` pinned to fineflow's version; datatrove's
``processing`` extra pins an older one, so its dependencies are named one by one):
    uv venv bench/.venv-datatrove -p 3.11 && VIRTUAL_ENV=bench/.venv-datatrove uv pip install \\
        "datatrove==0.10.1" "trafilatura==2.3.1" spacy jieba pyahocorasick tldextract nltk \\
        fasttext-numpy2-wheel warcio faust-cchardet python-magic fasteners requests aiohttp orjson

The worker side (``--datatrove-worker``) imports only the standard library and datatrove.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import datatrove_url_filter, machine_info, save_record, table_head  # bench/ is on sys.path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LISTS = ROOT / "tasks" / "filter" / "blocklists" / "default"
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "web-small"
DEFAULT_DATATROVE_PYTHON = os.environ.get("DATATROVE_PYTHON", str(ROOT / "bench" / ".venv-datatrove" / "bin" / "python"))
PRESET = ROOT / "examples" / "fineweb.yaml"


# ---------------------------------------------------------------- datatrove side (its own venv)


def datatrove_worker(corpus: str, out: str, workers: int, timeout: float, lists_dir: str, lid_model: str) -> None:
    """Run datatrove's FineWeb recipe over ``corpus`` into ``out`` (JSONL, one file per task)."""
    # No network: "download" the lid.176 model from the local file fineflow uses, into datatrove's
    # asset cache (HF_HOME), before the pool starts; its workers then find it there.
    import datatrove.io
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.io import cached_asset_path_or_download
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
    )
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.lid import FT176LID

    datatrove.io.download_file = lambda remote, local, progress=True: shutil.copyfile(lid_model, local)
    cached_asset_path_or_download(FT176LID.MODEL_URL, namespace="lid", subfolder=FT176LID.MODEL_SUBFOLDER)

    lists = Path(lists_dir)
    files = sorted(Path(corpus).glob("*.warc.gz"))

    def rejects(name: str) -> JsonlWriter:
        return JsonlWriter(f"{out}/removed/{name}")

    executor = LocalPipelineExecutor(
        pipeline=[
            WarcReader(corpus, glob_pattern="*.warc.gz"),
            datatrove_url_filter(lists, exclusion_writer=rejects("url")),
            Trafilatura(favour_precision=True, timeout=timeout),
            LanguageFilter(languages=["en"], language_threshold=0.65, exclusion_writer=rejects("language")),
            GopherRepetitionFilter(exclusion_writer=rejects("gopher_repetition")),
            GopherQualityFilter(exclusion_writer=rejects("gopher_quality")),
            C4QualityFilter(filter_no_terminal_punct=False, exclusion_writer=rejects("c4")),
            FineWebQualityFilter(exclusion_writer=rejects("fineweb_quality")),
            JsonlWriter(f"{out}/output"),
        ],
        tasks=len(files),
        workers=workers,
        logging_dir=f"{out}/logs",
    )
    executor.run()


# ---------------------------------------------------------------- fineflow side and comparison


def fineflow_config(corpus: Path, extractor: str, storage: Path, workers: int) -> dict:
    import yaml

    config = yaml.safe_load(PRESET.read_text())
    # The preset goes on to MinHash, PII and an audit; datatrove's side here is its base
    # processing (examples/fineweb.py's first pipeline), so fineflow runs the stages that match it.
    names = [stage.get("name", stage["stage"]) for stage in config["stages"]]
    config["stages"] = config["stages"][: names.index("filter") + 1]
    config.pop("export", None)
    crawl = next(stage for stage in config["stages"] if stage["stage"] == "crawl")
    crawl["inputs"] = [f"{corpus}/*.warc.gz"]
    crawl["extractor"] = extractor
    config["storage"] = str(storage)
    config["dask"] = {"n_workers": workers, "threads_per_worker": 1}
    return config


def role_of(command: str) -> str:
    if "extract_worker" in command:
        return "extraction subprocesses"
    if "spawn_main" in command and "resource_tracker" not in command:
        return "workers"
    if "forkserver" in command:
        return "workers"
    return "main process"


def datatrove_texts(out: Path) -> dict[str, str]:
    """Kept texts by fineflow's document id (blake2b-128 of the WARC-Record-ID)."""
    texts = {}
    for path in sorted((out / "output").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                doc = json.loads(line)
                texts[hashlib.blake2b(doc["id"].encode(), digest_size=16).hexdigest()] = doc["text"]
    return texts


def datatrove_removals(out: Path, ids: list[str]) -> dict[str, dict]:
    """Where datatrove's exclusion writers put these documents (by fineflow id): filter and URL."""
    found: dict[str, dict] = {}
    for path in sorted((out / "removed").glob("*/*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                doc = json.loads(line)
                key = hashlib.blake2b(doc["id"].encode(), digest_size=16).hexdigest()
                if key in ids:
                    found[key] = {"filter": path.parent.name, "url": (doc.get("metadata") or {}).get("url")}
    return found


def fineflow_texts(summary: dict) -> dict[str, str]:
    import polars as pl

    folder = summary["stages"][-1]["output"]
    frame = pl.read_parquet(f"{folder}/*.parquet", columns=["id", "text"])
    return dict(zip(frame["id"].to_list(), frame["text"].to_list()))


def compare(reference: dict[str, str], ours: dict[str, str]) -> dict:
    both = reference.keys() & ours.keys()
    return {
        "kept_by_both": len(both),
        "identical_texts": sum(reference[key] == ours[key] for key in both),
        "only_datatrove": len(reference.keys() - ours.keys()),
        "only_fineflow": len(ours.keys() - reference.keys()),
        # (document ids, to look a difference up in the other side's rejects; at most 20 each)
        "only_datatrove_ids": sorted(reference.keys() - ours.keys())[:20],
        "only_fineflow_ids": sorted(ours.keys() - reference.keys())[:20],
        "different_text_ids": sorted(key for key in both if reference[key] != ours[key])[:20],
    }


def run_datatrove(args: argparse.Namespace, work: Path) -> tuple[dict, dict[str, str]]:
    from proctree import run_tree

    import fineflow.tasks.text.langid as langid

    out = work / "datatrove"
    env = {**os.environ, "HF_HOME": str(work / "hf-home"), "PYTHONWARNINGS": "ignore"}
    Path(env["HF_HOME"]).mkdir(parents=True, exist_ok=True)
    command = [
        args.datatrove_python, __file__, "--datatrove-worker", str(args.corpus), str(out), str(args.workers),
        str(args.timeout), str(DEFAULT_LISTS), langid.resolve_model_path("lid.176"),
    ]
    print("[datatrove] FineWeb recipe ...", file=sys.stderr, flush=True)
    with open(work / "datatrove.log", "w") as log:
        tree = run_tree(command, env=env, role=role_of, stdout=log, stderr=subprocess.STDOUT)
    if tree.returncode != 0:
        raise RuntimeError(f"datatrove failed ({tree.returncode}); see {work / 'datatrove.log'}:\n"
                           + (work / "datatrove.log").read_text()[-3000:])
    texts = datatrove_texts(out)
    return {"wall_s": tree.wall_s, "cpu_s": tree.cpu_s, "cpu_by_role": tree.by_role(), "kept": len(texts)}, texts


def run_fineflow(args: argparse.Namespace, extractor: str, work: Path, env: dict[str, str]) -> tuple[dict, dict[str, str]]:
    import yaml
    from proctree import process_cpu, run_tree

    spec = work / f"fineweb-{extractor}.yaml"
    spec.write_text(yaml.safe_dump(fineflow_config(args.corpus, extractor, work / f"storage-{extractor}", args.workers)))
    summary_path = work / f"summary-{extractor}.json"
    fineflow = str(Path(sys.executable).with_name("fineflow"))
    server = json.loads((Path(env["FINEFLOW_HOME"]) / "prefect" / "server.json").read_text())["pid"]
    print(f"[fineflow] FineWeb preset, {extractor} ...", file=sys.stderr, flush=True)
    server_before = process_cpu(server)
    with open(work / f"fineflow-{extractor}.log", "w") as log:
        tree = run_tree([fineflow, "run", str(spec), "--summary-json", str(summary_path)], env=env, role=role_of,
                        stdout=log, stderr=subprocess.STDOUT)
    if tree.returncode != 0:
        raise RuntimeError(f"fineflow failed ({tree.returncode}):\n" + (work / f"fineflow-{extractor}.log").read_text()[-3000:])
    summary = json.loads(summary_path.read_text())
    texts = fineflow_texts(summary)
    return {
        "wall_s": tree.wall_s, "cpu_s": tree.cpu_s, "cpu_by_role": tree.by_role(), "kept": len(texts),
        "prefect_server_cpu_s": round(process_cpu(server) - server_before, 2),
        "stage_seconds": {stage["name"]: stage["seconds"] for stage in summary["stages"]},
    }, texts


def markdown_table(record: dict) -> str:
    lines = table_head(
        "round", "run", "wall", "CPU s (process tree)", "× datatrove wall", "× datatrove CPU", "kept", "kept by both",
        "identical texts", "Prefect server CPU s",
    )
    for number, result in enumerate(record["rounds"], 1):
        dt = result["datatrove"]
        lines.append(
            f"| {number} | datatrove 0.10.1, trafilatura | {dt['wall_s']:.1f} s | {dt['cpu_s']:.1f} | 1.00× | 1.00× | {dt['kept']:,} | – | – | – |"
        )
        for extractor, run in result["fineflow"].items():
            same = run["comparison"]
            lines.append(
                f"| {number} | fineflow, {extractor} | {run['wall_s']:.1f} s | {run['cpu_s']:.1f} | {run['wall_ratio']:.2f}× | "
                f"{run['cpu_ratio']:.2f}× | {run['kept']:,} | {same['kept_by_both']:,} | {same['identical_texts']:,} | "
                f"{run['prefect_server_cpu_s']:.1f} |"
            )
    for extractor, median in record["median"].items():
        lines.append(
            f"| median | fineflow, {extractor} | | | **{median['wall_ratio']:.2f}×** | **{median['cpu_ratio']:.2f}×** | | | | |"
        )
    return "\n".join(lines)


def run_round(args: argparse.Namespace, work: Path, env: dict[str, str], fineflow_first: bool) -> dict:
    """datatrove and each fineflow run, one after the other (fineflow first when asked)."""
    work.mkdir(parents=True)
    runs: dict[str, tuple[dict, dict[str, str]]] = {}
    if not fineflow_first:
        datatrove, reference = run_datatrove(args, work)
    for extractor in args.extractors:
        runs[extractor] = run_fineflow(args, extractor, work, env)
    if fineflow_first:
        datatrove, reference = run_datatrove(args, work)
    result = {"datatrove": datatrove, "fineflow": {}, "fineflow_first": fineflow_first}
    for extractor, (run, texts) in runs.items():
        run["comparison"] = compare(reference, texts)
        run["comparison"]["only_fineflow_removed_by_datatrove"] = datatrove_removals(
            work / "datatrove", run["comparison"]["only_fineflow_ids"]
        )
        run["cpu_ratio"] = round(datatrove["cpu_s"] / run["cpu_s"], 3)
        run["wall_ratio"] = round(datatrove["wall_s"] / run["wall_s"], 3)
        result["fineflow"][extractor] = run
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--datatrove-worker":
        corpus, out, workers, timeout, lists_dir, lid_model = sys.argv[2:8]
        datatrove_worker(corpus, out, int(workers), float(timeout), lists_dir, lid_model)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--workers", type=int, default=2, help="worker processes on each side")
    parser.add_argument("--extractors", nargs="+", default=["resiliparse", "trafilatura"], choices=["resiliparse", "trafilatura"])
    parser.add_argument("--timeout", type=float, default=10.0, help="datatrove's extraction timeout per document (s)")
    parser.add_argument("--datatrove-python", default=DEFAULT_DATATROVE_PYTHON)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every run; the ratios reported are their medians")
    args = parser.parse_args()
    args.corpus = args.corpus.resolve()
    if not list(args.corpus.glob("*.warc.gz")):
        parser.error(f"no *.warc.gz files in {args.corpus}")

    sys.path.insert(0, str(Path(__file__).parent))
    from crawl_bench import bench_environment, fineflow_cli

    record: dict = {
        "corpus": str(args.corpus), "workers": args.workers, "datatrove_timeout_s": args.timeout, "rounds": [],
        "machine": machine_info(("fineflow", "trafilatura", "resiliparse", "prefect", "distributed")),
    }
    with tempfile.TemporaryDirectory(prefix="fineweb-e2e-") as tmp:
        work = Path(tmp)
        env = bench_environment(dict(os.environ), work / "fineflow-home")
        fineflow_cli(["server", "start"], env)
        try:
            for number in range(args.rounds):
                print(f"round {number + 1} of {args.rounds}", file=sys.stderr, flush=True)
                record["rounds"].append(run_round(args, work / f"round-{number + 1}", env, fineflow_first=number % 2 == 1))
        finally:
            fineflow_cli(["server", "stop"], env)
    record["median"] = {
        extractor: {
            ratio: round(statistics.median(result["fineflow"][extractor][ratio] for result in record["rounds"]), 3)
            for ratio in ("cpu_ratio", "wall_ratio")
        }
        for extractor in args.extractors
    }
    record["table"] = markdown_table(record)
    save_record(record, "fineweb-e2e")

if __name__ == "__main__":
    main()
