"""Plan the rephrase stage: select (map) -> choose (one task) -> generate (map, the document step).

The generator enters fingerprints by what changes an answer: the model's name and the decoding
parameters (``LLMServer.decoding``: never a URL's port on loopback, a key or a concurrency), each
task's prompt and system message by content, its limits and post-processing; the response cache
is keyed the same way, so a changed check re-runs ``generate`` from the cache without asking.
"""

from __future__ import annotations

import fnmatch

from fineflow import storage
from fineflow.fingerprint import digest, file_content_hash
from fineflow.registry import stale_text_columns
from fineflow.steps import PlanContext, StepPlan
from fineflow.tasks.rephrase import choose, generate, select
from fineflow.tasks.rephrase.config import RephraseStage

CACHE_FOLDER = ("_cache", "llm")  # under the storage root: the LLM response cache every stage shares, never collected by gc


def task_specs(config: RephraseStage) -> list[dict]:
    """Every task resolved, with its prompt and system message read (workers get the text, not a path)."""
    found = []
    for task in config.resolved():
        spec = task.model_dump(mode="json")
        spec["prompt_text"] = storage.read_bytes(task.prompt).decode("utf-8")
        spec["system_text"] = storage.read_bytes(task.system).decode("utf-8").strip() if task.system else None
        if "{text}" not in spec["prompt_text"]:
            raise ValueError(f"rephrase task {task.name}: its prompt {task.prompt} does not hold {{text}}")
        found.append(spec)
    return found


def stale_patterns(config: RephraseStage) -> list[str]:
    """Text-derived column patterns a synthetic document does not carry over (not inherited)."""
    return [p for p in stale_text_columns() if not any(fnmatch.fnmatchcase(p, keep) for keep in config.inherit)]


def plan_rephrase(config: RephraseStage, ctx: PlanContext) -> list[StepPlan]:
    assert ctx.inputs is not None  # a document-reading kind: the DAG gives it inputs
    inputs = ctx.inputs.shards()
    upstream = {"upstream": ctx.inputs.fingerprint}
    tasks = task_specs(config)
    tokenizer = file_content_hash(config.tokenizer, ctx.root) if config.tokenizer else None
    select_params = {"tasks": [{"name": t["name"], "where": t["where"]} for t in tasks], "languages": config.languages,
                     "min_document_tokens": config.min_document_tokens, "max_chars": config.max_chars, "seed": config.seed,
                     "tokenizer": config.tokenizer}
    select_plan = ctx.step(select, "select_shard", step="select", params=select_params,
                           fingerprint_params={**select_params, "tokenizer": tokenizer}, chained=upstream, shards=inputs)
    caps = [{"name": t["name"], "max_documents": t["max_documents"], "max_tokens": t["max_tokens"]} for t in tasks]
    choose_params = {"candidates": [select_plan.location.shard_url(n) for n in range(len(inputs))], "tasks": caps}
    choose_plan = ctx.step(choose, "choose_shard", step="choose", params=choose_params, fingerprint_params={"tasks": caps},
                           chained={"select": select_plan.fingerprint.value}, shards=[{"shard": 0}])
    server = config.server
    generate_params = {
        "chosen": choose_plan.location.shard_url(0), "tasks": tasks, "server": server.model_dump(mode="json"),
        "model_name": server.model, "cache": storage.join(ctx.root, *CACHE_FOLDER), "tokenizer": config.tokenizer,
        "qc": config.qc.model_dump(mode="json"), "seed": config.seed, "sources": config.sources,
        "stale": stale_patterns(config), "inherit": list(config.inherit),
    }
    fingerprinted = {
        "model": server.model, "decoding": server.decoding(), "tokenizer": tokenizer, "qc": generate_params["qc"],
        "seed": config.seed, "sources": config.sources, "stale": generate_params["stale"], "inherit": generate_params["inherit"],
        "tasks": [{**{k: v for k, v in t.items() if k not in ("prompt", "system", "prompt_text", "system_text")},
                   "prompt": digest(t["prompt_text"]), "system": digest(t["system_text"]) if t["system_text"] else None}
                  for t in tasks],
    }
    block = server.api_key_block
    generate_plan = ctx.step(
        generate, "generate_shard", step="generate", params=generate_params, fingerprint_params=fingerprinted,
        chained={**upstream, "choose": choose_plan.fingerprint.value}, shards=inputs, secrets=(block,) if block else (),
    )
    return [select_plan, choose_plan, generate_plan]


def preflight(config: RephraseStage) -> list[str]:
    """Prompt files hold {text}; a tokenizer loads; a task without a cap is said."""
    for task in config.resolved():
        for path in (task.prompt, task.system):
            if path and not storage.exists(path):
                raise ValueError(f"rephrase task {task.name}: {path} does not exist")
    if config.tokenizer and not storage.exists(config.tokenizer):
        raise ValueError(f"rephrase: tokenizer {config.tokenizer} does not exist")
    return [f"rephrase task {t.name} has no cap (max_documents, max_tokens): every matching document is rewritten"
            for t in config.resolved() if t.max_documents is None and t.max_tokens is None]
