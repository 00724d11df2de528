"""Scorers: one number per document from a fastText model, an embedding head trained in the run,
or a Hugging Face sequence-classification model (torch optional; GPU when present).

A scorer spec (step parameters) is ``{"kind": "fasttext"|"head"|"hf", "path": ..., ...}``; a
model in object storage is copied to a local file once per worker process (``storage.local_file``).
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

from fineflow import storage
from fineflow.tasks.quality import embedding, fasttext_model, hf_config


class ScorerError(ValueError):
    pass


class HeadScorer:
    def __init__(self, url: str) -> None:
        head = json.loads(storage.read_bytes(url))
        self.encoder = embedding.encoder(head["encoder"], head["max_tokens"])
        self.weights = np.asarray(head["weights"], dtype=np.float64)

    def score(self, texts: list[str]) -> np.ndarray:
        return embedding.apply_head(self.encoder.embed(texts), self.weights) if texts else np.zeros(0)


class HFScorer:
    """``AutoModelForSequenceClassification`` from a local folder: a 0-5 regressor's output (FineWeb-Edu's
    classifier: ``score``, then clip-and-round for ``int_score``) or a classifier's probability of
    ``label`` (``hf_config`` decides which, from ``regression`` or the model's config.json)."""

    def __init__(self, path: str, label: str, device: str | None, batch_size: int, regression: bool | None = None) -> None:
        try:  # the config first: a wrong label or kind fails in one line, before torch loads the weights
            self.spec = hf_config.resolve(path, label, regression)
        except hf_config.HFModelError as error:
            raise ScorerError(f"hf scorer: {error}") from None
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as error:
            raise ScorerError(f"hf scorer {path}: needs torch and transformers (pip install 'fineflow[hf-models]'): {error}") from None
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).to(self.device).eval()
        if self.model.config.num_labels != len(self.spec.labels):
            raise ScorerError(f"hf scorer {path}: the model has {self.model.config.num_labels} outputs, its config.json "
                              f"{len(self.spec.labels)} labels")
        self.regression = self.spec.regression
        self.batch_size = batch_size

    def score(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding="longest",
                                   truncation=True).to(self.device)
            with self.torch.no_grad():
                logits = self.model(**batch).logits.float()
            if self.regression:
                values = logits[:, 0]
            elif self.spec.multi_label:  # independent labels: each output's own sigmoid
                values = self.torch.sigmoid(logits[:, self.spec.index])
            else:
                values = self.torch.softmax(logits, -1)[:, self.spec.index]
            out.append(values.cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


@lru_cache(maxsize=8)
def _load(kind: str, path: str, label: str, device: str | None, batch_size: int, regression: bool | None):  # noqa: ANN202
    if kind == "fasttext":
        return fasttext_model.scorer(storage.local_file(path), label)
    if kind == "head":
        return HeadScorer(path)
    if kind == "hf":
        return HFScorer(storage.local_file(path), label, device, batch_size, regression)
    raise ScorerError(f"unknown scorer kind {kind!r}")


def load(spec: dict):  # noqa: ANN201 (any object with score(texts) -> ndarray)
    return _load(spec["kind"], spec["path"], spec.get("label", fasttext_model.POSITIVE), spec.get("device"),
                 spec.get("batch_size", 64), spec.get("regression") if spec["kind"] == "hf" else None)


def int_score(scores: np.ndarray) -> np.ndarray:
    """FineWeb-Edu's int_score: clip to 0-5, round half to even (as Python's round)."""
    return np.rint(np.clip(scores, 0, 5)).astype(np.int8)
