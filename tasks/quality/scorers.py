"""Scorers: one number per document from a fastText model, an embedding head trained in the run,
or a Hugging Face sequence-classification model (torch optional; GPU when present).

A scorer spec (step parameters) is ``{"kind": "fasttext"|"head"|"hf", "path": ..., ...}``; a
model in object storage is copied to a local file once per worker process (``storage.local_file``).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache

import numpy as np

from fineflow import storage
from fineflow.tasks.quality import embedding, fasttext_model


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
    """``AutoModelForSequenceClassification`` from a local folder: the regression logit (FineWeb-Edu's
    classifier: ``score``, then clip-and-round for ``int_score``) or the probability of ``label``."""

    def __init__(self, path: str, label: str, device: str | None, batch_size: int) -> None:
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as error:
            raise ScorerError(f"hf scorer {path}: needs torch and transformers (pip install 'fineflow[hf-models]'): {error}") from None
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ScorerError(f"hf scorer: {path} is not a Hugging Face model folder (no config.json)")
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.regression = self.model.config.num_labels == 1
        labels = {str(v): int(k) for k, v in (self.model.config.id2label or {}).items()}
        self.index = labels.get(label.removeprefix("__label__"), self.model.config.num_labels - 1)
        self.batch_size = batch_size

    def score(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding="longest",
                                   truncation=True).to(self.device)
            with self.torch.no_grad():
                logits = self.model(**batch).logits.float()
            values = logits[:, 0] if self.regression else self.torch.softmax(logits, -1)[:, self.index]
            out.append(values.cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


@lru_cache(maxsize=8)
def _load(kind: str, path: str, label: str, device: str | None, batch_size: int):  # noqa: ANN202
    if kind == "fasttext":
        return fasttext_model.scorer(storage.local_file(path), label)
    if kind == "head":
        return HeadScorer(path)
    if kind == "hf":
        return HFScorer(storage.local_file(path), label, device, batch_size)
    raise ScorerError(f"unknown scorer kind {kind!r}")


def load(spec: dict):  # noqa: ANN201 (any object with score(texts) -> ndarray)
    return _load(spec["kind"], spec["path"], spec.get("label", fasttext_model.POSITIVE), spec.get("device"),
                 spec.get("batch_size", 64))


def int_score(scores: np.ndarray) -> np.ndarray:
    """FineWeb-Edu's int_score: clip to 0-5, round half to even (as Python's round)."""
    return np.rint(np.clip(scores, 0, 5)).astype(np.int8)
