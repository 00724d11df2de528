"""Plan the translate stage: select (map) -> choose (one task) -> translate (map) -> decide
(map, the document step).

The backend enters fingerprints and the segment cache's namespace by what changes a translation:
the model (a server's model name; a local model file or folder by content), the prompt, the
decoding parameters and the language codes; never a URL, a key or a concurrency. A ``max_tokens``
derived from each segment (``budget.py``) enters as its formula's name, not a number. ``decide``'s own
parameters are only the thresholds: a changed threshold never translates again.
"""

from __future__ import annotations

import hashlib
import os

from fineflow import storage
from fineflow.fingerprint import file_content_hash
from fineflow.steps import PlanContext, StepPlan
from fineflow.tasks.translate import budget, choose, decide, select, translation, window
from fineflow.tasks.translate.backends import MODEL_FILES
from fineflow.tasks.translate.config import TranslateStage

CACHE_FOLDER = ("_cache", "translate")  # under the storage root: shared by runs and stages, never collected by gc


def backend_params(config: TranslateStage) -> dict:
    spec = config.backend.model_dump(mode="json")
    if spec["kind"] == "ctranslate2" and not spec["tokenizer"]:
        spec["tokenizer"] = storage.join(spec["model"], "tokenizer.json")
    spec["max_input_tokens"] = spec["max_input_tokens"] or window.DEFAULT_INPUT_TOKENS[spec["kind"]]
    if spec["kind"] == "openai":  # the translate backends read one configured limit: None derives it per segment
        spec["max_tokens"] = spec["server"]["max_tokens"]
    return spec


def model_identity(config: TranslateStage, root: str) -> tuple[dict, str]:
    """(what identifies the model and its decoding, for fingerprints and the cache; a readable name)."""
    b = config.backend
    prompt = hashlib.sha256(b.prompt.encode()).hexdigest()
    if b.kind == "openai":
        assert b.server is not None
        decoding = b.server.decoding()
        if b.server.max_tokens is None:
            decoding["max_tokens"] = budget.FORMULA
        return {"kind": "openai", "model": b.server.model, "decoding": decoding, "prompt": prompt}, f"openai:{b.server.model}"
    if b.kind == "llama":
        return ({"kind": "llama", "model": file_content_hash(b.model, root), "max_tokens": b.max_tokens or budget.FORMULA,
                 "prompt": prompt},
                f"llama:{os.path.basename(b.model)}")
    if b.kind == "ctranslate2":
        files = [storage.join(b.model, name) for name in MODEL_FILES if storage.exists(storage.join(b.model, name))]
        tokenizer = b.tokenizer or storage.join(b.model, "tokenizer.json")
        return ({"kind": "ctranslate2", "model": [file_content_hash(f, root) for f in files],
                 "tokenizer": file_content_hash(tokenizer, root), "beam_size": b.beam_size,
                 "max_tokens": b.max_tokens or budget.FORMULA,
                 "codes": b.codes, "language_codes": b.language_codes}, f"ctranslate2:{os.path.basename(b.model.rstrip('/'))}")
    if b.kind == "http":
        return {"kind": "http", "model": b.model_name, "codes": b.codes, "language_codes": b.language_codes}, f"http:{b.model_name}"
    return {"kind": "identity"}, "identity"


def plan_translate(config: TranslateStage, ctx: PlanContext) -> list[StepPlan]:
    assert ctx.inputs is not None  # a document-reading kind: the DAG gives it inputs
    inputs = ctx.inputs.shards()
    upstream = {"upstream": ctx.inputs.fingerprint}
    s = config.select
    token_column = f"n_tokens_{s.tokens}" if s.tokens else None
    select_params = {"languages": s.languages, "where": [r.model_dump() for r in s.where], "max_chars": s.max_chars,
                     "seed": s.seed, "token_column": token_column}
    select_plan = ctx.step(select, "select_shard", step="select", params=select_params, chained=upstream, shards=inputs)
    choose_params = {"candidates": [select_plan.location.shard_url(n) for n in range(len(inputs))],
                     "max_documents": s.max_documents, "max_tokens": s.max_tokens}
    choose_plan = ctx.step(choose, "choose_shard", step="choose", params=choose_params,
                           fingerprint_params={k: v for k, v in choose_params.items() if k != "candidates"},
                           chained={"select": select_plan.fingerprint.value}, shards=[{"shard": 0}])
    identity, name = model_identity(config, ctx.root)
    segment = config.segment.model_dump(mode="json")
    backend = backend_params(config)
    translate_params = {
        "chosen": choose_plan.location.shard_url(0), "targets": config.targets, "segment": segment,
        "backend": backend, "model_id": identity, "model_name": name,
        "cache": storage.join(ctx.root, *CACHE_FOLDER), "flush_every": config.flush_every,
        "runaway_ratio": config.qc.max_segment_ratio,
    }
    fingerprinted = {"targets": config.targets, "model": identity, "model_name": name, "runaway_ratio": config.qc.max_segment_ratio,
                     "max_input_tokens": backend["max_input_tokens"],  # the hard window changes what is sent
                     # the context caps derived budgets and retries (a budget in a cache entry's key, not its namespace)
                     "n_ctx": backend["n_ctx"] if backend["kind"] in ("openai", "llama") else None,
                     "segment": {**segment, "tokenizer": file_content_hash(segment["tokenizer"], ctx.root) if segment["tokenizer"] else None}}
    block = config.backend.server.api_key_block if config.backend.server else None
    translate_plan = ctx.step(
        translation, "translate_shard", step="translate", params=translate_params, fingerprint_params=fingerprinted,
        chained={**upstream, "choose": choose_plan.fingerprint.value}, shards=inputs, secrets=(block,) if block else (),
    )
    decide_plan = ctx.step(
        decide, "decide_shard", step="decide", params={"qc": config.qc.model_dump(mode="json")},
        chained={"translate": translate_plan.fingerprint.value},
        shards=[{"shard": n, "input": translate_plan.location.shard_url(n)} for n in range(len(inputs))],
    )
    return [select_plan, choose_plan, translate_plan, decide_plan]


def preflight(config: TranslateStage) -> list[str]:
    """Local models must exist and load their tokenizer before any work."""
    b = config.backend
    if b.kind in ("llama", "ctranslate2") and not storage.exists(b.model):
        raise ValueError(f"backend {b.kind}: model {b.model} does not exist")
    if b.kind == "ctranslate2":
        tokenizer = b.tokenizer or storage.join(b.model, "tokenizer.json")
        if not storage.exists(tokenizer):
            raise ValueError(f"backend ctranslate2: no tokenizer.json at {tokenizer} (set backend.tokenizer)")
    if config.segment.tokenizer and not storage.exists(config.segment.tokenizer):
        raise ValueError(f"segment.tokenizer {config.segment.tokenizer} does not exist")
    warnings = []
    if config.select.max_documents is None and config.select.max_tokens is None:
        warnings.append("select has no cap (max_documents, max_tokens): every matching document is translated")
    return warnings
