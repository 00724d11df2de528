"""Read fineflow's Megatron token files with Megatron-LM's own reader and check every document.

For a run's storage root (default ``./fineflow-data``) this finds the current tokenize merge step
(``<root>/tokenize/merge/_latest.<stage>.json``, the newest one if several stages wrote there; or
``--fingerprint``), and for every ``<prefix>.idx`` its manifest lists:

1. opens the prefix with ``megatron.core.datasets.indexed_dataset.IndexedDataset`` (megatron-core,
   in its own virtual environment, as a subprocess of this file) and dumps every document's ids,
   its sequence lengths and document boundaries;
2. maps each document to its text: ``<prefix>.provenance.parquet`` gives document index -> id,
   the count step's output (``<root>/tokenize/count/<fp>/data/*.parquet``, the fingerprint the merge
   manifest chains on) gives id -> text;
3. encodes the text afresh, ``enc.document(enc.encode_texts([text])[0])`` for the tokenizer the merge
   step wrote (its name in the merge manifest; its configuration from the run's ``config.yaml``
   under ``<root>/_runs/``, else the packaged tokenizer of that name, accepted only when its
   fingerprint equals the one in the count manifest), and compares the ids, the provenance's
   ``n_tokens`` and the count column ``n_tokens_<tokenizer>``.

Exit status 0 when every document matches, 1 on any mismatch, 2 when the setup is missing.
``--engine hf`` / ``--engine tiktoken`` re-encodes with that library instead of the configured one
(e.g. check tiktoken-written files against Hugging Face ``tokenizers``).

Usage:
    .venv/bin/python bench/check_megatron.py [ROOT] [--engine auto|hf|tiktoken|both] [--fingerprint FP]
    .venv/bin/python bench/check_megatron.py --setup     # creates bench/.venv-megatron (once; a few minutes)

The Megatron environment (``--megatron-python``, default ``$MEGATRON_PYTHON`` or
``bench/.venv-megatron/bin/python``) is made with the standard library's venv and pip, torch's
CPU build first (pip, not uv, picks the CPU wheel here):
    python3 -m venv bench/.venv-megatron && bench/.venv-megatron/bin/pip install torch==2.13.0 \\
        && bench/.venv-megatron/bin/pip install megatron-core numpy
The worker side (``--megatron-worker OUT_DIR PREFIX...``) imports only the standard library,
numpy and megatron-core; everything fineflow is imported by fineflow's interpreter.
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

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MEGATRON_PYTHON = os.environ.get("MEGATRON_PYTHON", str(ROOT / "bench" / ".venv-megatron" / "bin" / "python"))
SETUP = (
    ["python3", "-m", "venv", "{venv}"],
    ["{venv}/bin/pip", "install", "torch==2.13.0"],
    ["{venv}/bin/pip", "install", "megatron-core", "numpy"],
)
SHOWN_MISMATCHES = 5


# ---------------------------------------------------------------------------------------------
# Megatron side (runs under the megatron-core interpreter: standard library, numpy, megatron-core)
# ---------------------------------------------------------------------------------------------


def megatron_worker(out_dir: str, prefixes: list[str]) -> None:
    """Dump every document of each prefix, read through IndexedDataset, as ``<n>.npz``."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from importlib.metadata import version

    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    for number, prefix in enumerate(prefixes):
        dataset = IndexedDataset(prefix, multimodal=False, mmap=True)
        documents = dataset.document_indices  # sequence boundaries of the documents
        lengths = dataset.sequence_lengths
        # One document may be several sequences: Megatron's own accessor per sequence, joined per document.
        sequences = [np.asarray(dataset[i]) for i in range(len(dataset))]
        dtype = sequences[0].dtype if sequences else np.dtype(np.int64)
        tokens = np.concatenate(sequences) if sequences else np.array([], dtype)
        np.savez(
            os.path.join(out_dir, f"{number}.npz"),
            tokens=tokens,
            sequence_lengths=np.asarray(lengths, np.int64),
            document_indices=np.asarray(documents, np.int64),
            dtype=str(dtype),
        )
    print(json.dumps({"megatron_core": version("megatron-core"), "torch": version("torch")}))


# ---------------------------------------------------------------------------------------------
# fineflow side
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def find_merge_step(root: Path, fingerprint: str | None) -> Path:
    """The merge step folder: ``--fingerprint``, else the newest ``_latest.*.json``'s."""
    merge_dir = root / "tokenize" / "merge"
    if fingerprint:
        folder = merge_dir / fingerprint
        if not (folder / "_manifest.json").is_file():
            raise SystemExit(f"{folder} has no _manifest.json (the merge step did not finish there)")
        return folder
    latest = sorted(merge_dir.glob("_latest.*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not latest:
        raise SystemExit(f"no tokenize merge step under {merge_dir} (a tokenize stage with write: megatron)")
    for record in latest:
        folder = merge_dir / _read_json(record)["fingerprint"]
        if (folder / "_manifest.json").is_file():
            if len(latest) > 1:
                print(f"{len(latest)} stages wrote merge steps here; checking {record.name} (the newest)", file=sys.stderr)
            return folder
    raise SystemExit(f"no finished merge step under {merge_dir}")


def _run_configs(root: Path) -> list[dict]:
    """The tokenize stages of the run configurations recorded under ``<root>/_runs``, newest first."""
    import yaml

    stages = []
    for path in sorted(root.glob("_runs/*/config.yaml"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        stages += [s for s in config.get("stages") or [] if isinstance(s, dict) and s.get("stage") == "tokenize"]
    return stages


def tokenizer_source(root: Path, name: str, count_manifest: dict) -> tuple[dict, str]:
    """(source, where it came from) of tokenizer ``name``, whose fingerprint matches the count step's."""
    from fineflow.tasks.tokenize import train
    from fineflow.tasks.tokenize.config import TokenizerSpec
    from fineflow.tasks.tokenize.encoders import describe, source_fingerprint

    components = count_manifest["components"]
    wanted = components["params"]["tokenizers"][name]
    train_fp = components.get("inputs", {}).get("train")
    candidates = [(stage["tokenizers"][name], "the run's config.yaml") for stage in _run_configs(root)
                  if name in (stage.get("tokenizers") or {})]
    candidates.append((name, f"packaged tokenizer {name!r}"))
    tried = []
    for raw, origin in candidates:
        try:
            spec = TokenizerSpec.model_validate(raw)
            trained_url = None
            if spec.train is not None:
                if not train_fp:
                    continue
                trained_url = str(root / "tokenize" / "train" / train_fp / "artifacts" / train.artifact_name(name))
            source = describe(spec, trained_url)
            found = source_fingerprint(source, train_fp)
        except Exception as error:  # noqa: BLE001 (a candidate that does not load is just not it)
            tried.append(f"{origin}: {type(error).__name__}: {error}")
            continue
        if found == wanted:
            return source, origin
        tried.append(f"{origin}: fingerprint {found}")
    raise SystemExit(f"tokenizer {name}: none of the known configurations has the count step's fingerprint {wanted} "
                     f"({'; '.join(tried)})")


def texts_by_id(count_folder: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    texts: dict[str, str] = {}
    for path in sorted((count_folder / "data").glob("part-*.parquet")):
        table = pq.read_table(path, columns=["id", "text"])
        for doc_id, text in zip(table["id"].to_pylist(), table["text"].to_pylist()):
            if doc_id in texts and texts[doc_id] != text:
                raise SystemExit(f"id {doc_id!r} has two different texts in {count_folder}: ids are not unique")
            texts[doc_id] = text if text is not None else ""
    return texts


def count_columns(count_folder: Path, tokenizer: str) -> dict[str, int]:
    import pyarrow.parquet as pq

    column = f"n_tokens_{tokenizer}"
    counts: dict[str, int] = {}
    for path in sorted((count_folder / "data").glob("part-*.parquet")):
        table = pq.read_table(path, columns=["id", column])
        counts.update(zip(table["id"].to_pylist(), table[column].to_pylist()))
    return counts


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--megatron-worker":
        megatron_worker(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="./fineflow-data", help="the run's storage root (local)")
    parser.add_argument("--fingerprint", default=None, help="the merge step's fingerprint (default: the newest _latest)")
    parser.add_argument("--engine", choices=("auto", "hf", "tiktoken", "configured", "both"), default="configured",
                        help="encoder library for the fresh encoding: the configured one (default), one of them, or both")
    parser.add_argument("--megatron-python", default=DEFAULT_MEGATRON_PYTHON, help="python of a megatron-core environment")
    parser.add_argument("--setup", action="store_true", help="create the megatron-core environment (bench/.venv-megatron)")
    args = parser.parse_args()

    megatron_python = Path(args.megatron_python)
    if args.setup:
        venv = str(ROOT / "bench" / ".venv-megatron")
        for command in SETUP:
            command = [part.format(venv=venv) for part in command]
            print("+", " ".join(command), file=sys.stderr, flush=True)
            subprocess.run(command, check=True)
        return
    if not megatron_python.exists():
        print(f"no megatron-core environment at {megatron_python}: run `{sys.executable} {__file__} --setup` "
              "(or set MEGATRON_PYTHON / --megatron-python)", file=sys.stderr)
        raise SystemExit(2)

    import numpy as np
    import pyarrow.parquet as pq

    from fineflow.tasks.tokenize.encoders import load_encoder

    root = Path(args.root).resolve()
    merge_folder = find_merge_step(root, args.fingerprint)
    merge_manifest = _read_json(merge_folder / "_manifest.json")
    write = merge_manifest["components"]["params"]["write"]
    if write["format"] != "megatron":
        raise SystemExit(f"{merge_folder} holds {write['format']} token files, not Megatron's")
    tokenizer = write["tokenizer"]
    count_fp = merge_manifest["components"]["inputs"]["count"]
    count_folder = root / "tokenize" / "count" / count_fp
    count_manifest = _read_json(count_folder / "_manifest.json")
    listed = [a["file"] for shard in merge_manifest["shards"] for a in shard.get("artifacts") or []]
    prefixes = [str(merge_folder / "artifacts" / name[: -len(".idx")]) for name in sorted(listed) if name.endswith(".idx")]
    print(f"merge step {merge_folder.relative_to(root)}: {len(prefixes)} Megatron file(s), tokenizer {tokenizer}, "
          f"count step {count_fp}", file=sys.stderr, flush=True)

    source, origin = tokenizer_source(root, tokenizer, count_manifest)
    engines = {"configured": [source["engine"]], "both": ["hf", "tiktoken"]}.get(args.engine, [args.engine])
    encoders = {}
    for engine in engines:
        if engine == "tiktoken" and source["format"] not in ("tiktoken", "gpt2-bpe"):
            print(f"engine tiktoken cannot read a {source['format']} tokenizer: skipped", file=sys.stderr)
            continue
        encoder = load_encoder(tokenizer, {**source, "engine": engine})
        encoders[encoder.engine if engine != "auto" else f"auto ({encoder.engine})"] = encoder
    print(f"tokenizer {tokenizer} from {origin}; fresh encoding with {', '.join(encoders)}", file=sys.stderr, flush=True)

    texts = texts_by_id(count_folder)
    counted = count_columns(count_folder, tokenizer)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="check-megatron-") as tmp:
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        done = subprocess.run([str(megatron_python), __file__, "--megatron-worker", tmp, *prefixes],
                              capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"the megatron-core reader failed (exit code {done.returncode})")
        versions = json.loads(done.stdout.strip().splitlines()[-1])
        dumps = [dict(np.load(os.path.join(tmp, f"{n}.npz"))) for n in range(len(prefixes))]
    read_s = time.perf_counter() - started

    documents = tokens = 0
    mismatches: list[str] = []
    problems = 0
    for prefix, dump in zip(prefixes, dumps):
        name = Path(prefix).name
        provenance = pq.read_table(f"{prefix}.provenance.parquet")
        boundaries = dump["document_indices"]
        lengths = dump["sequence_lengths"]
        starts = np.concatenate([[0], np.cumsum(lengths)])
        if len(boundaries) - 1 != provenance.num_rows:
            mismatches.append(f"{name}: Megatron reads {len(boundaries) - 1} documents, the provenance lists {provenance.num_rows}")
            problems += 1
            continue
        if str(dump["dtype"]) != write["dtype"]:
            mismatches.append(f"{name}: Megatron reads {dump['dtype']} tokens, the step wrote {write['dtype']}")
            problems += 1
        ids = provenance["id"].to_pylist()
        n_tokens = provenance["n_tokens"].to_pylist()
        order = provenance["document"].to_pylist()
        if order != list(range(provenance.num_rows)):
            mismatches.append(f"{name}: the provenance's document column is not 0..{provenance.num_rows - 1}")
            problems += 1
        for document, (doc_id, expected_length) in enumerate(zip(ids, n_tokens)):
            first, last = int(boundaries[document]), int(boundaries[document + 1])
            got = dump["tokens"][int(starts[first]) : int(starts[last])].tolist()
            documents += 1
            tokens += len(got)
            if doc_id not in texts:
                mismatches.append(f"{name} document {document}: id {doc_id!r} is not in the count step's output")
                problems += 1
                continue
            if len(got) != expected_length or counted.get(doc_id) != expected_length:
                mismatches.append(f"{name} document {document} ({doc_id}): {len(got)} ids read, provenance n_tokens "
                                  f"{expected_length}, count column {counted.get(doc_id)}")
                problems += 1
            for engine, encoder in encoders.items():
                want = encoder.document(encoder.encode_texts([texts[doc_id]])[0])
                if got != want:
                    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                    mismatches.append(f"{name} document {document} ({doc_id}), {engine}: {len(got)} ids read, "
                                      f"{len(want)} encoded; first difference at {at}: read {got[at:at + 5]}, "
                                      f"encoded {want[at:at + 5]}")
                    problems += 1
    result = {
        "merge_step": str(merge_folder),
        "files": len(prefixes),
        "documents": documents,
        "tokens": tokens,
        "tokenizer": tokenizer,
        "tokenizer_from": origin,
        "engines": list(encoders),
        "mismatches": problems,
        "megatron_read_s": round(read_s, 1),
        **versions,
    }
    for line in mismatches[:SHOWN_MISMATCHES]:
        print("MISMATCH", line, file=sys.stderr)
    print(json.dumps(result, indent=1))
    if problems:
        print(f"{problems} mismatch(es) in {documents:,} documents", file=sys.stderr)
        raise SystemExit(1)
    print(f"ok: {documents:,} documents, {tokens:,} tokens in {len(prefixes)} file(s) read by megatron-core "
          f"{versions['megatron_core']} equal a fresh {'/'.join(encoders)} encoding", file=sys.stderr)


if __name__ == "__main__":
    main()
