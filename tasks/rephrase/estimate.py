"""What a run of the rephrase stage would do, before it runs (``fineflow run --dry-run``).

Per task: the documents chosen, their inputs, how many the response cache already answers, the
input tokens still to send, the tokens to generate (each input's expected output: the measured
output / input ratio of the last run in this storage, else the input's length, at most the task's
``max_output_tokens``) and the hours that takes at a throughput that is configured, measured
(generated tokens per LLM second of the last run) or assumed. It reads the input like ``select``;
the cache's namespace includes what the server reports about its model, so the cached counts
need the server up (else every input counts as to send).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from fineflow import storage
from fineflow.documents import read_input_columns, undecodable_rows
from fineflow.llm import LLMClient, LLMServer, entry_key, text_key
from fineflow.steps import StepPlan
from fineflow.tasks.common import cost
from fineflow.tasks.rephrase import select
from fineflow.tasks.rephrase.config import RephraseStage
from fineflow.tasks.rephrase.generate import inputs_of, render, template_identity
from fineflow.tasks.text.sampling import pick
from fineflow.tasks.text.window import token_counter

ASSUMED_TOKENS_PER_S = 30.0  # SmolLM2-135M on 2 CPU cores through llama.cpp; a real model on a GPU server: far more


def estimate(config: RephraseStage, plans: list[StepPlan]) -> list[dict[str, Any]]:
    steps = {plan.step: plan for plan in plans}
    select_plan, generate_plan = steps["select"], steps["generate"]
    inputs = [shard["input"] for shard in select_plan.shards]
    if not inputs or not all(storage.exists(url) for url in inputs):
        return [{"task": "(all)", "note": "its input is not committed yet: the estimate needs the stages before it"}]
    params = select_plan.params
    tables, found = {}, []
    for n, shard in enumerate(select_plan.shards):
        table, undecodable = undecodable_rows(read_input_columns(shard, select.needed_columns(params)))
        tables[n] = table
        found.append(select.candidates(table, undecodable, params, n)[0])
    candidates = pa.concat_tables(found)
    spent = cost.measured(generate_plan, "llm_completion_tokens", "llm_seconds")
    rate, origin = cost.throughput(config.throughput, spent, ASSUMED_TOKENS_PER_S)
    ratio = cost.measured(generate_plan, "llm_completion_tokens", "llm_prompt_tokens")  # output / prompt tokens
    count = token_counter(config.tokenizer)
    server = LLMServer.model_validate(generate_plan.params["server"])
    rows = []
    for task in generate_plan.params["tasks"]:
        offered = candidates.filter(pc.equal(candidates["task"], task["name"]))
        chosen = pick(offered, task["max_documents"], task["max_tokens"])
        # the namespace as the step's client makes it (the server says what model it serves, where it is up)
        with LLMClient(server, system=task["system_text"]) as client:
            cache = client.cache(generate_plan.params["cache"], template_identity(task))
        total = cached = send_tokens = generate_tokens = 0
        for shard, row, language in zip(*(chosen[c].to_pylist() for c in ("shard", "row", "language"))):
            text = tables[shard]["text"][row].as_py()
            for segment in inputs_of(text, task, count)[0]:
                total += 1
                if cache.get(entry_key(text_key(render(task["prompt_text"], segment, language)), task["max_output_tokens"])):
                    cached += 1
                    continue
                tokens = count(segment)
                send_tokens += tokens
                generate_tokens += min(task["max_output_tokens"], int(tokens * ratio) if ratio else tokens)
        rows.append({"task": task["name"], "documents": chosen.num_rows, "inputs": total, "cached": cached,
                     "input_tokens": send_tokens, "tokens_to_generate": generate_tokens,
                     "throughput": f"{rate:,.0f} generated tok/s ({origin})", "server_hours": cost.hours(generate_tokens, rate)})
    return rows
