"""Translate-stage throughput per local backend on the Debian handbook's English pages, the
segment cache's hit rate on an overlapping second selection, and chrF of the output against the
handbook's human French translations (the same page at the parallel URL).

    .venv/bin/python bench/translate_bench.py [--corpus DIR] [--pages 4] [--more 2] [--target fr]
        [--backends llama,ctranslate2,openai] [--llm-python PY] [--ct2-model DIR] [--server URL] [--out FILE]

Input: the ``--pages + --more`` shortest English handbook pages of web-small that have a French
page that is really translated (chrF of the English page against it under 40; trafilatura, filter_bench.py's cached crawl). Each backend runs the stage's steps in a fresh
process on one core (llama and ctranslate2 with 1 thread; the server has its own 2 threads):
first with ``max_documents: --pages`` (a seeded choice), then with ``--pages + --more`` and the
same cache (the hit rate of the second run is its cached segments over its segments). Target tokens are GPT-2 tokens of the
translations. chrF (sacrebleu, document level) compares each translation with the French page.

Backends: ``llama`` (SmolLM2-135M-Instruct's GGUF in-process, needs ``--llm-python``: an
interpreter with llama-cpp-python, e.g. CI's .ci-state/llm-env), ``ctranslate2`` (``--ct2-model``:
a converted model folder with its tokenizer.json; by default a tiny random model built here, which
measures the engine's plumbing only), ``openai`` (``--server``: llama.cpp's server on SmolLM2),
``identity`` (the English page itself: the chrF a translation must beat, as names, commands and
URLs match the reference untranslated).
Small models translate badly: the numbers are the instrument, a real model is the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from common import ROOT, machine_info, table_head

RESULTS = ROOT / "bench" / "results"
RUNNER = """
import json, resource, sys, time
from fineflow import registry
from fineflow.manifest import write_manifest
from fineflow.planning import plan_stage
from fineflow.steps import Source, StageInputs, run_shard
config, root, folder = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
stage = registry.validate_stage(config)
out = {}
started, cpu = time.perf_counter(), time.process_time()
for plan in plan_stage(stage, root, StageInputs((Source("docs", "f" * 20, folder, 1),)), "bench"):
    results = [run_shard(plan.function, shard, plan.params, plan.location) for shard in plan.shards]
    write_manifest(plan.location, plan.fingerprint.components, results, plan.name)
    out[plan.step] = {"stats": results[0]["stats"], "data": plan.location.shard_url(0)}
out["wall"] = round(time.perf_counter() - started, 2)
out["cpu"] = round(time.process_time() - cpu + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime, 2)
print(json.dumps(out))
"""


def pages(corpus: Path, count: int) -> list[dict]:
    from filter_bench import extracted_documents

    docs, _ = extracted_documents(corpus, workers=2)
    english = {d["url"].split("/en-US/stable/")[1]: d for d in docs if "/browse/en-US/stable/" in (d["url"] or "")}
    french = {d["url"].split("/fr-FR/stable/")[1]: d for d in docs if "/browse/fr-FR/stable/" in (d["url"] or "")}
    # Only pages the French handbook really translated (some short ones are still in English there).
    import sacrebleu

    pairs = sorted((len(english[k]["text"]), k) for k in english if k in french
                   and sacrebleu.sentence_chrf(english[k]["text"], [french[k]["text"]]).score < 40)
    return [{**english[k], "reference": french[k]["text"]} for _, k in pairs[:count]]


def write_input(chosen: list[dict], folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    pq.write_table(pa.table({"id": [d["id"] for d in chosen], "url": [d["url"] for d in chosen],
                             "text": [d["text"] for d in chosen], "language": ["en"] * len(chosen)}), folder / "part-00000.parquet")


def backend_spec(name: str, args: argparse.Namespace, work: Path) -> dict:
    if name == "llama":
        from llm_model import gguf

        return {"kind": "llama", "model": gguf(), "max_tokens": 96, "threads": 1}
    if name == "ctranslate2":
        model = args.ct2_model
        if model is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from ct2_model import build

            model = build(work / "ct2-model", [d["text"] for d in pages(args.corpus, args.pages + args.more)])
        return {"kind": "ctranslate2", "model": str(model), "threads": 1, "beam_size": 4, "max_tokens": 96}
    if name == "identity":  # the source as its own "translation": chrF's floor on these pages
        return {"kind": "identity"}
    return {"kind": "openai", "server": {"base_url": args.server, "model": "smollm2", "max_tokens": 96, "concurrency": 1}}


def run_side(python: str, config: dict, root: Path, folder: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
    done = subprocess.run([python, "-c", RUNNER, json.dumps(config), str(root), str(folder)], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{config['backend']['kind']} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "web-small")
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--more", type=int, default=2)
    parser.add_argument("--target", default="fr")
    parser.add_argument("--backends", default="identity,llama,ctranslate2,openai")
    parser.add_argument("--llm-python", default=str(ROOT / ".ci-state" / "llm-env" / "bin" / "python"))
    parser.add_argument("--ct2-model", type=Path)
    parser.add_argument("--server", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import sacrebleu

    from fineflow.tasks.tokenize.config import TokenizerSpec
    from fineflow.tasks.tokenize.encoders import describe, load_encoder

    gpt2 = load_encoder("gpt2", describe(TokenizerSpec(packaged="gpt2")))
    machine = machine_info(("fineflow", "ctranslate2", "sentencex", "sacrebleu"))
    both = pages(args.corpus, args.pages + args.more)
    references = {d["id"]: d["reference"] for d in both}
    record: dict = {"machine": machine, "pages": [d["url"] for d in both], "sides": {}}
    with tempfile.TemporaryDirectory(prefix="translate-bench-") as tmp:
        work = Path(tmp)
        write_input(both, work / "input")
        for name in args.backends.split(","):
            spec = backend_spec(name, args, work)
            python = args.llm_python if name == "llama" else sys.executable
            config = {"stage": "translate", "targets": [args.target], "backend": spec}
            root = work / f"store-{name}"
            first = run_side(python, {**config, "select": {"max_documents": args.pages}}, root, work / "input")
            second = run_side(python, {**config, "select": {"max_documents": args.pages + args.more}}, root, work / "input")
            rows = pq.read_table(first["translate"]["data"]).to_pylist()
            stats = first["translate"]["stats"]
            target_tokens = sum(gpt2.count_texts([r["text"] for r in rows])) if rows else 0
            chrf = sacrebleu.corpus_chrf([r["text"] for r in rows], [[references[r["source_id"]] for r in rows]]).score
            record["sides"][name] = {
                "model": rows[0]["translation_model"] if rows else None, "documents": len(rows), "segments": stats["segments"],
                "backend_seconds": stats["backend_seconds"], "wall": first["wall"], "cpu": first["cpu"],
                "segments_per_s": round(stats["segments"] / max(stats["backend_seconds"], 1e-6), 3),
                "target_tokens": target_tokens, "target_tokens_per_s": round(target_tokens / max(stats["backend_seconds"], 1e-6), 2),
                "second_run_hit_rate": round(second["translate"]["stats"]["cache_hits"] / second["translate"]["stats"]["segments"], 4),
                "second_run_sent": second["translate"]["stats"]["sent"], "chrf": round(chrf, 2),
                "passed_qc": second["decide"]["stats"].get("passed", {}),
            }
            print(name, json.dumps(record["sides"][name]), flush=True)
    out = args.out or RESULTS / f"translate-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    lines = table_head("backend", "model", "documents", "segments", "backend s", "segments/s", "target tok/s",
                       "2nd run hit rate", "chrF vs human fr")
    for name, side in record["sides"].items():
        lines.append(f"| {name} | {side['model']} | {side['documents']} | {side['segments']} | {side['backend_seconds']} | "
                     f"{side['segments_per_s']} | {side['target_tokens_per_s']} | {side['second_run_hit_rate']:.0%} | {side['chrf']} |")
    print("\n".join(lines))
    print(f"load average at start: {machine['load_average']}; raw: {out}")


if __name__ == "__main__":
    main()
