"""What a run of the translate stage would do, before it runs (``fineflow run --dry-run``).

Per target language: the documents chosen, their segments, how many of those the segment cache
already holds, the source tokens still to translate, and the hours that takes at a throughput
that is configured (``throughput``), measured (the last run of this stage in this storage:
characters sent per backend second) or assumed (a figure per backend kind, stated as such).
It reads the input like the ``select`` step does (the texts, to segment the chosen documents),
so it needs the stages before it committed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pyarrow as pa

from fineflow import storage
from fineflow.documents import read_input_columns, undecodable_rows
from fineflow.llm import ResponseCache
from fineflow.steps import StepPlan
from fineflow.tasks.common import cost
from fineflow.tasks.text.sampling import pick
from fineflow.tasks.translate import backends, select
from fineflow.tasks.translate.config import TranslateStage
from fineflow.tasks.translate.segment import segments
from fineflow.tasks.translate.translation import cache_folder, segmenter

# Source tokens per second per worker when nothing was measured: rough figures for a small model
# on CPU (next-stages.md §4.6: OPUS-MT on 4 threads ~525-700 target tok/s; NLLB-600M ~60-100, estimated).
ASSUMED = {"openai": 50.0, "llama": 30.0, "ctranslate2": 80.0, "http": 100.0, "identity": 1e9}


def throughput(config: TranslateStage, plan: StepPlan) -> tuple[float, str]:
    """Source tokens per second per worker: characters sent per backend second, measured."""
    found = cost.measured(plan, "sent_chars", "backend_seconds", per=cost.CHARS_PER_TOKEN)
    return cost.throughput(config.throughput, found, ASSUMED[config.backend.kind])


def estimate(config: TranslateStage, plans: list[StepPlan]) -> list[dict[str, Any]]:
    steps = {plan.step: plan for plan in plans}
    select_plan, translate_plan = steps["select"], steps["translate"]
    inputs = [shard["input"] for shard in select_plan.shards]
    if not inputs or not all(storage.exists(url) for url in inputs) or not all(storage.exists(u) for u in select_plan.shards[0].get("union", [])):
        return [{"target": "(all)", "note": "its input is not committed yet: the estimate needs the stages before it"}]
    params = select_plan.params
    tables, found = {}, []
    for n, shard in enumerate(select_plan.shards):
        tables[n] = undecodable_rows(read_input_columns(shard, select.needed_columns(params)))[0]  # as translate reads them
        found.append(select.candidates(tables[n], params, n)[0])
    chosen = pick(pa.concat_tables(found), config.select.max_documents, config.select.max_tokens)
    split = segmenter(translate_plan.params)
    documents = []
    for shard, row, language, tokens in zip(*(chosen[c].to_pylist() for c in ("shard", "row", "language", "tokens"))):
        text = tables[shard]["text"][row].as_py()
        documents.append((language, tokens, segments(split(text, language))))
    rate, origin = throughput(config, translate_plan)
    unit = "GPU" if config.backend.kind == "ctranslate2" and config.backend.device == "cuda" else \
        "server" if config.backend.kind in ("openai", "http") else "CPU"
    rows = []
    for target in config.targets:
        texts: dict[str, set[str]] = defaultdict(set)
        source_tokens = docs = 0
        for language, tokens, parts in documents:
            if language == target:
                continue
            docs += 1
            source_tokens += tokens
            texts[language].update(parts)
        total = cached = send_chars = 0
        for language, distinct in texts.items():
            cache = ResponseCache(cache_folder(translate_plan.params, language, target))
            for text in distinct:
                total += 1
                if cache.get(backends.first_attempt(translate_plan.params["backend"], text, language, target).entry) is not None:
                    cached += 1
                else:
                    send_chars += len(text)
        send_tokens = send_chars / cost.CHARS_PER_TOKEN
        rows.append({"target": target, "documents": docs, "segments": total, "cached": cached, "to_send": total - cached,
                     "source_tokens": source_tokens, "tokens_to_translate": int(send_tokens),
                     "throughput": f"{rate:,.0f} tok/s ({origin})", f"{unit}_hours": cost.hours(send_tokens, rate)})
    return rows
