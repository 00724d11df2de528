"""quality's ``train`` step (a task per classifier): labelled documents, a seeded train/held-out
split, a fastText model or an embedding head, its held-out agreement with the labels.

Labels come from the annotate step (LLM scores), from an input column, or from positive and
negative document sets (a URL pattern among the input, or document files: PreSelect/DCLM-style).
Each class is a seeded sample of at most ``max_per_class`` documents (smallest keys), and a
document is held out by another key, so the split depends only on the seed and the ids.
The model is committed as an artifact (``<name>.bin`` or ``<name>.head.json``) with its
evaluation (``<name>.eval.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fineflow import storage
from fineflow.artifacts import commit_artifact, commit_artifact_file
from fineflow.documents import commit_shard, read_table, undecodable_rows
from fineflow.tasks.quality import embedding, fasttext_model
from fineflow.tasks.quality.annotate import global_sample, read_annotations
from fineflow.tasks.quality.metrics import evaluate
from fineflow.tasks.quality.sample import keys, smallest

STEP_VERSION = "1"
LIBRARIES = ("fasttext-numpy2", "numpy", "tokenizers", "safetensors", "xxhash")

SPLIT_RESOLUTION = 10_000


class TrainingDataError(ValueError):
    pass


def model_artifact(name: str, model: str) -> str:
    return f"{name}.bin" if model == "fasttext" else f"{name}.head.json"


def eval_artifact(name: str) -> str:
    return f"{name}.eval.json"


def _documents(urls: list[str], what: str, name: str, seed: int, label: float, k: int) -> pa.Table:
    """(key, id, text, label) of the k documents of smallest key among these files (a text that is not valid
    UTF-8 is left out: it is not known what it says)."""
    if not urls:
        raise TrainingDataError(f"classifier {name}: no file in {what}")
    table = read_table(urls)
    if "text" not in table.column_names:
        raise TrainingDataError(f"classifier {name}: {what} has no `text` column")
    table, undecodable = undecodable_rows(table)
    if undecodable:
        table = table.filter(pa.array([row not in undecodable for row in range(table.num_rows)], pa.bool_()))
    texts = table["text"].cast(pa.string()).to_pylist()
    ids = (table["id"].cast(pa.string()).to_pylist() if "id" in table.column_names
           else [hashlib.sha256((t or "").encode()).hexdigest() for t in texts])
    rows = pa.table({"key": pa.array(keys(ids, f"{seed}:{name}"), pa.uint64()), "id": ids,
                     "text": pa.array(texts, pa.string()), "label": pa.array([label] * len(ids), pa.float64())})
    rows = rows.filter(pc.invert(pc.is_null(rows["text"])))
    return smallest(rows, k)


def labelled(name: str, spec: dict, params: dict) -> tuple[pa.Table, float]:
    """(key, id, text, label) rows, and the label value from which a document is positive."""
    labels, k = spec["labels"], spec["max_per_class"]
    if labels.get("annotations"):
        table = read_annotations(params["annotations"])
        table = table.filter(pc.invert(pc.is_null(table["score"])))
        ids = table["id"].to_pylist()
        rows = pa.table({"key": pa.array(keys(ids, f"{spec['seed']}:{name}"), pa.uint64()), "id": ids,
                         "text": table["text"], "label": table["score"]})
        group = pc.if_else(pc.greater_equal(rows["label"], spec["positive_from"]), "pos", "neg")
        rows = smallest(rows.append_column("group", group), k, ["group"]).drop_columns(["group"])
        return rows, spec["positive_from"]
    parts = []
    if labels.get("column") or any((labels.get(c) or {}).get("url") or (labels.get(c) or {}).get("rest")
                                   for c in ("positives", "negatives")):
        sampled = global_sample(params["samples"], name, k)
        parts.append(sampled.select(["key", "id", "text", "label"]))
    for side, value in (("positives", 1.0), ("negatives", 0.0)):
        chosen = labels.get(side) or {}
        if chosen.get("files"):
            parts.append(_documents(storage.expand(chosen["files"]), chosen["files"], name, spec["seed"], value, k))
        elif chosen.get("stage"):
            urls = params["label_stages"][f"{name}.{side}"]
            parts.append(_documents(urls, f"stage {chosen['stage']}", name, spec["seed"], value, k))
    rows = pa.concat_tables([p.cast(parts[0].schema) for p in parts])
    return rows, (spec["positive_from"] if labels.get("column") else 1.0)


def balanced(rows: pa.Table, positive_from: float) -> pa.Table:
    """Both classes cut to the smaller one's size (their smallest keys)."""
    group = pc.if_else(pc.greater_equal(rows["label"], positive_from), "pos", "neg")
    size = min(pc.sum(pc.equal(group, "pos")).as_py() or 0, pc.sum(pc.equal(group, "neg")).as_py() or 0)
    return smallest(rows.append_column("group", group), size, ["group"]).drop_columns(["group"])


def split(rows: pa.Table, name: str, seed: int, held_out: float) -> tuple[pa.Table, pa.Table]:
    marks = keys(rows["id"].to_pylist(), f"{seed}:{name}:split") % SPLIT_RESOLUTION
    test = pa.array(marks < int(round(held_out * SPLIT_RESOLUTION)))
    return rows.filter(pc.invert(test)), rows.filter(test)


def _check(rows: pa.Table, name: str, positive_from: float, what: str, regression: bool = False) -> None:
    labels = np.asarray(rows["label"].to_pylist(), dtype=np.float64)
    positives = int((labels >= positive_from).sum())
    if rows.num_rows == 0:
        raise TrainingDataError(f"classifier {name}: no labelled document in its {what} set")
    if regression:  # a regressor needs spread in its targets, not two classes
        if len(set(labels.tolist())) < 2:
            raise TrainingDataError(f"classifier {name}: every label in its {what} set is {labels[0]:g}: nothing to learn")
        return
    if positives in (0, len(labels)):
        only = "positive" if positives else "negative"
        raise TrainingDataError(
            f"classifier {name}: its {what} set has only {only} documents ({len(labels)}; positive from "
            f"{positive_from:g}): a classifier needs both classes (more labels, another positive_from, or a larger held-out share)"
        )


def train_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    name = shard["classifier"]
    spec = params["classifiers"][name]
    regression = bool(spec["regression"])
    rows, positive_from = labelled(name, spec, params)
    _check(rows, name, positive_from, "labelled", regression)
    if spec["balance"] and not regression:
        rows = balanced(rows, positive_from)
    train_rows, test_rows = split(rows, name, spec["seed"], spec["held_out"])
    _check(train_rows, name, positive_from, "training", regression)
    if test_rows.num_rows == 0:
        raise TrainingDataError(f"classifier {name}: nothing held out of {rows.num_rows} documents (raise held_out)")
    texts = [t[: spec["max_chars"]] for t in train_rows["text"].to_pylist()]
    labels = np.asarray(train_rows["label"].to_pylist(), dtype=np.float64)
    test_texts = [t[: spec["max_chars"]] for t in test_rows["text"].to_pylist()]
    test_labels = np.asarray(test_rows["label"].to_pylist(), dtype=np.float64)

    artifact_name = model_artifact(name, spec["model"])
    if spec["model"] == "fasttext":
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, artifact_name)
            fasttext_model.train(texts, list(labels >= positive_from), spec["fasttext"], spec["seed"], path)
            predicted = fasttext_model.FastTextScorer(path, fasttext_model.POSITIVE).score(test_texts)
            model = commit_artifact_file(output_url, artifact_name, path)
    else:
        options = spec["embedding"]
        encoder = embedding.encoder(options["model"], options["max_tokens"])
        target = labels if regression else (labels >= positive_from).astype(np.float64)
        weights = embedding.fit_head(encoder.embed(texts), target, options["ridge"])
        predicted = embedding.apply_head(encoder.embed(test_texts), weights)
        head = {"encoder": options["model"], "max_tokens": options["max_tokens"], "regression": regression,
                "weights": [float(w) for w in weights]}
        model = commit_artifact(output_url, artifact_name, json.dumps(head).encode())

    metrics = evaluate(test_labels, predicted, positive_from, regression)
    report = {"classifier": name, "model": spec["model"], "regression": regression, "positive_from": positive_from,
              "trained_on": train_rows.num_rows, **metrics}
    evaluation = commit_artifact(output_url, eval_artifact(name), json.dumps(report, indent=1).encode())
    numbers = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    info = pa.table({"classifier": [name], "model": [spec["model"]], "report": [json.dumps(report)]})
    return commit_shard(shard["shard"], output_url, info, docs_in=rows.num_rows, artifacts=[model, evaluation],
                        classifiers={name: numbers}, seconds=round(time.perf_counter() - started, 3))
