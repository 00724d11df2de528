"""The translate stage's own steps judging given translations (translate QC evaluation).

``Judge`` runs the stage as a deployment runs it, in-process: a ``TranslateStage`` config is
validated by the registry and planned by the stage's planner; its select, choose, translate and
decide steps run on a one-shard input in a fresh storage root, with the ``http`` backend pointed
at a local server (stdlib ``http.server`` in a thread) that answers ``POST .../translate
{"texts", "src_lang", "tgt_lang"} -> {"translations"}`` from a table of the translations to serve.
So every threshold, segmenter and check is whatever the stage's code and defaults are today.

Each served table has its own URL path and ``model_name``: the segment cache never answers
across variants. A segment text that two documents translate differently cannot be served
both ways in one run (the stage translates each distinct segment once): such documents go to
separate rounds, each a run of its own. Inside one document the first occurrence's translation
is served for every repeat (counted as ``repeats_served_first``).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import unicodedata
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fineflow import registry
from fineflow.documents import DOCUMENT_SCHEMA
from fineflow.manifest import shard_name, write_manifest
from fineflow.planning import plan_stage
from fineflow.steps import Source, StageInputs, StepPlan, run_shard

SOURCE_LANGUAGE = "en"
BATCH_SIZE = 256  # texts per request: the backend's batching, not a quality setting
# Each run's storage root is thrown away after it: in memory where there is a tmpfs (the steps
# fsync every file they commit), else the system's temporary folder.
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def key(text: str) -> str:
    return unicodedata.normalize("NFC", text.strip())


class ReferenceServer:
    """``POST /<table>/translate``: each text's translation from that table; a text the table
    lacks gets "" and is counted in ``missing`` (a bug of the caller's mapping, never a model)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, str]] = {}
        self.missing: Counter[str] = Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                table = owner.tables.get(self.path.strip("/").rsplit("/", 1)[0], {})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                out = []
                for text in body["texts"]:
                    found = table.get(key(text))
                    if found is None:
                        owner.missing[self.path] += 1
                    out.append(found or "")
                data = json.dumps({"translations": out}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def stage_config(target: str, mode: str, url: str, model_name: str, window_tokens: int | None = None):  # noqa: ANN201
    """The TranslateStage config (validated by the registry, with every default the stage has)."""
    segment: dict = {"mode": mode}
    if window_tokens is not None:
        segment["window_tokens"] = window_tokens
    return registry.validate_stage({
        "stage": "translate", "targets": [target],
        # every document is chosen, however long (select's cap is a budget, not a quality check)
        "select": {"languages": [SOURCE_LANGUAGE], "max_chars": 10**9},
        "segment": segment,
        "backend": {"kind": "http", "url": url, "model_name": model_name, "batch_size": BATCH_SIZE},
    })


def plans(config, root: str, folder: str) -> dict[str, StepPlan]:  # noqa: ANN001
    """The stage's steps as its planner makes them, on a one-shard input folder."""
    inputs = StageInputs((Source("pairs", "0" * 20, folder, 1),))
    return {plan.step: plan for plan in plan_stage(config, root, inputs, "translate")}


def translate_params(target: str, mode: str, window_tokens: int | None = None) -> dict:
    """The translate step's params as the planner gives them (for its segmenter)."""
    with tempfile.TemporaryDirectory() as root:
        config = stage_config(target, mode, "http://127.0.0.1:9", "segmenter", window_tokens)
        return plans(config, root, str(Path(root) / "in"))["translate"].params


def rounds(documents: list[tuple[str, dict[str, str]]]) -> list[list[int]]:
    """Documents (index lists) in runs where every segment text has one translation: greedy,
    a document goes to the first round it agrees with."""
    tables: list[dict[str, str]] = []
    out: list[list[int]] = []
    for index, (_, served) in enumerate(documents):
        for number, table in enumerate(tables):
            if all(table.get(k, v) == v for k, v in served.items()):
                table.update(served)
                out[number].append(index)
                break
        else:
            tables.append(dict(served))
            out.append([index])
    return out


class Judge:
    """Judges documents' translations with the stage's steps; one per process (its server)."""

    def __init__(self) -> None:
        self.server = ReferenceServer()
        self.runs = 0

    def close(self) -> None:
        self.server.close()

    def judge(self, target: str, mode: str, name: str, documents: list[tuple[str, str, list[tuple[str, str]]]],
              window_tokens: int | None = None) -> dict:
        """``documents``: (id, source text, [(source segment, its translation), ...]). Returns
        {"verdicts": {id: {"reason": drop_reason or None, <the translate step's measures>}},
        "failed_checks": {check: documents}, "rounds": n, "repeats_served_first": n, "missing": n}."""
        served: list[tuple[str, dict[str, str]]] = []
        repeats = 0
        for doc_id, _, pairs in documents:
            table: dict[str, str] = {}
            for source, translation in pairs:
                if table.setdefault(key(source), translation) != translation:
                    repeats += 1
            served.append((doc_id, table))
        verdicts: dict[str, dict] = {}
        failed: Counter[str] = Counter()
        groups = rounds(served)
        missing_before = sum(self.server.missing.values())
        for number, group in enumerate(groups):
            table_name = f"{name}~r{number}".replace("/", "_")
            self.server.tables[table_name] = {k: v for i in group for k, v in served[i][1].items()}
            try:
                found, checks = self._run(target, mode, table_name, [documents[i][:2] for i in group], window_tokens)
            finally:
                del self.server.tables[table_name]
            verdicts.update(found)
            failed.update(checks)
        return {"verdicts": verdicts, "failed_checks": dict(failed), "rounds": len(groups), "repeats_served_first": repeats,
                "missing": sum(self.server.missing.values()) - missing_before}

    def _run(self, target: str, mode: str, table_name: str, documents: list[tuple[str, str]],
             window_tokens: int | None) -> tuple[dict[str, dict], Counter[str]]:
        self.runs += 1
        with tempfile.TemporaryDirectory(prefix="qc-eval-", dir=SCRATCH) as root:
            folder = Path(root) / "input"
            folder.mkdir()
            rows = [{"id": doc_id, "url": f"pairs://{doc_id}", "text": text, "language": SOURCE_LANGUAGE}
                    for doc_id, text in documents]
            pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA), folder / shard_name(0))
            config = stage_config(target, mode, f"{self.server.url}/{table_name}", f"qc-eval:{table_name}", window_tokens)
            steps = plans(config, str(Path(root) / "store"), str(folder))
            results: dict[str, list[dict]] = {}
            for step, plan in steps.items():
                results[step] = [run_shard(plan.function, shard, plan.params, plan.location) for shard in plan.shards]
                write_manifest(plan.location, plan.fingerprint.components, results[step], plan.name)
            translated = _read(steps["translate"].location.data_folder)
            rejects = _read(steps["decide"].location.rejects_folder)
        reasons = dict(zip(rejects.column("source_id").to_pylist(), rejects.column("drop_reason").to_pylist())) if rejects.num_rows else {}
        measures = [c for c in translated.column_names if c.startswith("translate_") or c == "language_score"]
        verdicts = {}
        for row in translated.select(["source_id", *measures]).to_pylist():
            doc_id = row.pop("source_id")
            verdicts[doc_id] = {"reason": reasons.get(doc_id), **row}
        checks: Counter[str] = Counter()
        for result in results["decide"]:
            for per_check in (result["stats"].get("failed_checks") or {}).values():
                checks.update(per_check)
        return verdicts, checks


def _read(folder: str) -> pa.Table:
    files = sorted(Path(folder).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default") if files else pa.table({})
