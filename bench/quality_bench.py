"""Quality-stage throughput on web-small: fastText scoring and the embedding head, per core, against
the reference tools; LLM annotation requests/s against llama.cpp's server on this machine.

    .venv/bin/python bench/quality_bench.py [--corpus DIR] [--embed-docs 400] [--phases fasttext,embedding,annotate]
        [--datatrove-python PY] [--torch-python PY] [--llm-python PY] [--out FILE]

Sides (each in its own process, one core: OPENBLAS/OMP/RAYON threads 1, torch.set_num_threads(1)):
- fasttext: fineflow's ``score_shard`` (read the shard, score, write the scores Parquet) with a
  fastText model of DCLM's shape (word bigrams, dim 100, 2,000,000 buckets; trained here on
  arbitrary labels: throughput only) against datatrove 0.10.1's ``FastTextClassifierFilter``
  (``newline_replacement=" "``, DCLM's setting) on Documents in memory. Per-document P(hq) compared.
- embedding: fineflow's numpy forward pass of all-MiniLM-L6-v2 (256 tokens, batches of 16, sorted
  by length) on the first ``--embed-docs`` texts, against sentence-transformers on torch's CPU
  build (``bench/.venv-torch``: torch==2.13.0 from the local wheel, sentence-transformers). Embeddings compared.
- annotate: ``LLMClient.ask_all`` with the FineWeb-Edu preset's prompt (1,000 characters, 3 answer
  tokens) on 16 documents against llama.cpp's server on SmolLM2-135M (2 threads), with 1 and 2
  requests in flight. No reference tool; requests/s and prompt tokens/s.

Environments (never fineflow's): the datatrove one as in tokenize_bench.py; the torch one:
    python3 -m venv bench/.venv-torch && bench/.venv-torch/bin/pip install /opt/wheels/torch-2.13.0+cpu-*.whl \\
        sentence-transformers pyarrow
the LLM server: ``uv sync --extra llm`` (or any interpreter with llama-cpp-python[server], ``--llm-python``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import ROOT, machine_info, table_head

RESULTS = ROOT / "bench" / "results"
SINGLE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
                 "TOKENIZERS_PARALLELISM": "false"}


def _cpu() -> float:
    return time.process_time()


# -- reference workers (run under the other environments' interpreters) -------------------------


def datatrove_worker(docs: str, model: str, out: str) -> None:
    import pyarrow.parquet as pq
    from datatrove.data import Document
    from datatrove.pipeline.filters import FastTextClassifierFilter

    table = pq.read_table(docs, columns=["id", "text"])
    documents = [Document(text=t, id=i) for i, t in zip(table["id"].to_pylist(), table["text"].to_pylist())]
    block = FastTextClassifierFilter(model, keep_labels=[("hq", 0.0)], newline_replacement=" ", save_labels_in_metadata=True)
    block.filter(documents[0])  # load the model untimed
    started = _cpu()
    for doc in documents:
        block.filter(doc)
    seconds = _cpu() - started
    scores = [doc.metadata.get("__label__hq") for doc in documents]
    Path(out).write_text(json.dumps({"seconds": seconds, "scores": scores, "rss_mb": _rss()}))


def torch_worker(texts: str, model: str, out: str) -> None:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    encoder = SentenceTransformer(model, device="cpu")
    encoder.max_seq_length = 256
    items = json.loads(Path(texts).read_text())
    encoder.encode(items[:4], batch_size=16)
    started = _cpu()
    vectors = encoder.encode(items, batch_size=16, normalize_embeddings=True)
    seconds = _cpu() - started
    np.save(out + ".npy", vectors)
    Path(out).write_text(json.dumps({"seconds": seconds, "rss_mb": _rss(), "torch": torch.__version__}))


def _rss() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))


# -- fineflow sides ------------------------------------------------------------------------------


def documents(corpus: Path):
    sys.path.insert(0, str(ROOT / "bench"))
    import pyarrow as pa
    from filter_bench import extracted_documents

    docs, info = extracted_documents(corpus, workers=2)
    return pa.Table.from_pylist(docs) if isinstance(docs, list) else docs, info


def fasttext_phase(table, work: Path, datatrove_python: str) -> dict:
    import numpy as np
    import pyarrow.parquet as pq

    from fineflow.manifest import StepLocation
    from fineflow.steps import run_shard
    from fineflow.tasks.quality import fasttext_model

    texts = table["text"].to_pylist()
    model = work / "dclm-shape.bin"
    labels = [int(hashlib.md5(i.encode()).hexdigest(), 16) % 2 == 0 for i in table["id"].to_pylist()]  # arbitrary: throughput only
    params = {"epoch": 1, "lr": 0.1, "dim": 100, "word_ngrams": 2, "min_count": 1, "ws": 5, "bucket": 2_000_000}
    fasttext_model.train(texts[:2000], labels[:2000], params, 0, str(model))
    shards = 8
    folder = work / "docs"
    folder.mkdir()
    step = len(texts) // shards + 1
    for n in range(shards):
        pq.write_table(table.slice(n * step, step), folder / f"part-{n:05d}.parquet")
    scorer = {"kind": "fasttext", "path": str(model), "label": "__label__hq", "max_chars": 10_000_000, "regression": False}
    location = StepLocation(str(work / "store"), "quality", "score", "bench")
    fasttext_model.scorer(str(model), "__label__hq")  # load untimed
    started = _cpu()
    for n in range(shards):
        run_shard("fineflow.tasks.quality.score:score_shard", {"shard": n, "input": str(folder / f"part-{n:05d}.parquet")},
                  {"scorers": {"m": scorer}, "max_chars": 10_000_000}, location)
    step_seconds = _cpu() - started
    started = _cpu()
    direct = fasttext_model.scorer(str(model), "__label__hq").score(texts)
    apply_seconds = _cpu() - started
    ours = np.concatenate([pq.read_table(location.shard_url(n))["quality_m"].to_numpy() for n in range(shards)])

    all_docs = work / "all.parquet"
    pq.write_table(table.select(["id", "text"]), all_docs)
    out = work / "datatrove.json"
    subprocess.run([datatrove_python, __file__, "--datatrove-worker", str(all_docs), str(model), str(out)],
                   check=True, env={**os.environ, **SINGLE_THREAD})
    reference = json.loads(out.read_text())
    theirs = np.array(reference["scores"], dtype=np.float64)
    return {
        "documents": len(texts), "model_mb": round(model.stat().st_size / 1e6, 1),
        "fineflow_step_cpu_s": round(step_seconds, 2), "fineflow_apply_cpu_s": round(apply_seconds, 2),
        "datatrove_cpu_s": round(reference["seconds"], 2), "datatrove_rss_mb": round(reference["rss_mb"]),
        "fineflow_rss_mb": round(_rss()),
        "max_abs_difference_step": float(np.max(np.abs(ours.astype(np.float64) - theirs))),
        "max_abs_difference_apply": float(np.max(np.abs(direct - theirs))),
    }


def embedding_phase(table, work: Path, torch_python: str, count: int) -> dict:
    import numpy as np

    from fineflow.tasks.quality import embedding

    texts = [t[:4000] for t in table["text"].to_pylist()[:count]]
    encoder = embedding.encoder(embedding.PACKAGED, 256)
    encoder.embed(texts[:4])
    started = _cpu()
    ours = encoder.embed(texts)
    seconds = _cpu() - started
    result = {"documents": len(texts), "fineflow_cpu_s": round(seconds, 2)}
    if torch_python and Path(torch_python).exists():
        items = work / "texts.json"
        items.write_text(json.dumps(texts))
        out = work / "torch.json"
        subprocess.run([torch_python, __file__, "--torch-worker", str(items), str(embedding.model_folder(embedding.PACKAGED)), str(out)],
                       check=True, env={**os.environ, **SINGLE_THREAD})
        reference = json.loads(out.read_text())
        theirs = np.load(str(out) + ".npy")
        result |= {"torch_cpu_s": round(reference["seconds"], 2), "torch": reference["torch"],
                   "max_abs_difference": float(np.max(np.abs(ours - theirs)))}
    return result


def annotate_phase(table, work: Path, llm_python: str | None) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    if llm_python:
        os.environ["FINEFLOW_LLM_PYTHON"] = llm_python
    from llm_server import LlamaServer

    from fineflow import llm
    from fineflow.tasks.quality.prompts import full_template, load_template, render

    template = full_template(load_template("edu"), str(ROOT / "examples" / "prompts" / "smollm2-chatml.txt"), "Score: ")
    texts = table["text"].to_pylist()[:16]
    server = LlamaServer(work / "llama.log").start()
    result = {}
    try:
        for concurrency in (1, 2):
            config = llm.LLMServer(base_url=server.base_url, model="smollm2", endpoint="completions", max_tokens=3,
                                   concurrency=concurrency, temperature=0.0)
            with llm.LLMClient(config) as client:  # a fresh client and no cache: every document is asked
                client.ask_all([(f"{concurrency}-{n}", render(template, text, 1000)) for n, text in enumerate(texts)])
                result[f"concurrency_{concurrency}"] = client.stats.as_dict()
    finally:
        server.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "web-small")
    parser.add_argument("--phases", default="fasttext,embedding,annotate")
    parser.add_argument("--embed-docs", type=int, default=400)
    parser.add_argument("--datatrove-python", default=os.environ.get("DATATROVE_PYTHON", str(ROOT / "bench" / ".venv-datatrove" / "bin" / "python")))
    parser.add_argument("--torch-python", default=str(ROOT / "bench" / ".venv-torch" / "bin" / "python"))
    parser.add_argument("--llm-python", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--datatrove-worker", nargs=3)
    parser.add_argument("--torch-worker", nargs=3)
    args = parser.parse_args()
    if args.datatrove_worker:
        return datatrove_worker(*args.datatrove_worker)
    if args.torch_worker:
        return torch_worker(*args.torch_worker)
    if any(os.environ.get(k) != v for k, v in SINGLE_THREAD.items()):  # one core: re-run with single-threaded math
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **SINGLE_THREAD})

    machine = machine_info(("fineflow", "fasttext-numpy2", "numpy", "tokenizers"))
    table, info = documents(args.corpus)
    phases = args.phases.split(",")
    results: dict = {"machine": machine, "corpus": info, "started": datetime.now().isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="quality-bench-") as tmp:
        work = Path(tmp)
        if "fasttext" in phases:
            (work / "ft").mkdir()
            results["fasttext"] = fasttext_phase(table, work / "ft", args.datatrove_python)
            print(json.dumps(results["fasttext"]), flush=True)
        if "embedding" in phases:
            (work / "emb").mkdir()
            results["embedding"] = embedding_phase(table, work / "emb", args.torch_python, args.embed_docs)
            print(json.dumps(results["embedding"]), flush=True)
        if "annotate" in phases:
            (work / "llm").mkdir()
            results["annotate"] = annotate_phase(table, work / "llm", args.llm_python)
            print(json.dumps(results["annotate"]), flush=True)
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out = args.out or RESULTS / f"quality-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    lines = table_head("side", "documents", "CPU s", "docs/s per core", "ratio")
    if "fasttext" in results:
        r = results["fasttext"]
        n = r["documents"]
        lines += [f"| fineflow score step (fastText) | {n} | {r['fineflow_step_cpu_s']} | {n / r['fineflow_step_cpu_s']:,.0f} | {r['datatrove_cpu_s'] / r['fineflow_step_cpu_s']:.2f}x |",
                  f"| fineflow fastText apply only | {n} | {r['fineflow_apply_cpu_s']} | {n / r['fineflow_apply_cpu_s']:,.0f} | {r['datatrove_cpu_s'] / r['fineflow_apply_cpu_s']:.2f}x |",
                  f"| datatrove FastTextClassifierFilter | {n} | {r['datatrove_cpu_s']} | {n / r['datatrove_cpu_s']:,.0f} | - |"]
    if "embedding" in results:
        r = results["embedding"]
        n = r["documents"]
        lines.append(f"| fineflow numpy MiniLM (256 tokens) | {n} | {r['fineflow_cpu_s']} | {n / r['fineflow_cpu_s']:,.1f} | "
                     + (f"{r['torch_cpu_s'] / r['fineflow_cpu_s']:.2f}x |" if "torch_cpu_s" in r else "- |"))
        if "torch_cpu_s" in r:
            lines.append(f"| sentence-transformers, torch {r['torch']} | {n} | {r['torch_cpu_s']} | {n / r['torch_cpu_s']:,.1f} | - |")
    print("\n".join(lines))
    print(f"\nresult: {out}")


if __name__ == "__main__":
    main()
