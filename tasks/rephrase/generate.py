"""rephrase's ``generate`` step (map, the document step): every chosen document through every task
that chose it.

A document's inputs are its lines joined up to the task's ``max_input_tokens`` (``segments``
mode) or its start (``seed`` mode) (``fineflow.tasks.text.segment.join_lines``). Each input is
one request to the server, through the response cache shared with every run and stage (a second
run asks nothing); each answer is post-processed (``postprocess.py``) and checked: an answer cut
at ``max_output_tokens`` (``truncated``; Nemotron-CC drops over-long outputs), none left after
post-processing (``empty``, ``no_pairs``), under ``min_output_tokens`` (``too_short``), not in the
source's language by lid.176 (``language``), repetitive (``repetition``); refused or unreadable
requests say so. A document's passing outputs, in order, joined by a blank line, are its synthetic
text; one with none is rejected as ``rephrase:<the first input's reason>`` (``rephrase:no_input``
when no input was long enough to send), the count of inputs per reason in ``drop_detail``.

Synthetic rows: ``id`` ``<source id>#<task>``, ``kind`` ``synthetic``, ``synthetic_task``,
``source_id``, ``generator_model``, the source's other columns except those measured on its text
(``stale``), which are null, unless inherited (its quality columns: the level it was chosen at).
With ``sources: keep`` every input document comes first, unchanged, as ``kind`` ``actual``.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard, read_input, read_table, rejects_schema, stale_columns, undecodable_rows
from fineflow.languages import language_name
from fineflow.llm import Answer, LLMClient, LLMServer, text_key
from fineflow.tasks.rephrase import postprocess
from fineflow.tasks.text import langid
from fineflow.tasks.text.qc.repetition import repetition
from fineflow.tasks.text.segment import join_lines
from fineflow.tasks.text.window import token_counter

STEP_VERSION = "1"
LIBRARIES = ("httpx", "fasttext", "tokenizers")

ADDED = [("kind", pa.string()), ("synthetic_task", pa.string()), ("source_id", pa.string()), ("generator_model", pa.string()),
         ("rephrase_inputs", pa.int64()), ("rephrase_kept", pa.int64()), ("rephrase_output_tokens", pa.int64())]
EXAMPLES_PER_TASK = 2
# The LLM client's counts summed over the tasks (its rates are computed from them, in the report)
LLM_COUNTS = ("llm_requests", "llm_retries", "llm_cache_hits", "llm_refused", "llm_truncated", "llm_prompt_tokens",
              "llm_completion_tokens", "llm_seconds")


def output_schema(source: pa.Schema) -> pa.Schema:
    """The input's columns, then those this stage adds (an input that has one keeps its type)."""
    return pa.schema(list(source) + [pa.field(name, kind) for name, kind in ADDED if name not in source.names])


def render(template: str, text: str, language: str) -> str:
    """A prompt: ``{text}`` and ``{language_name}`` filled in (other braces stay as written)."""
    return template.replace("{language_name}", language_name(language)).replace("{text}", text)


def template_identity(task: dict) -> str:
    """What a task's answers depend on besides the server and the text: the response cache's template."""
    return json.dumps({"system": task["system_text"], "prompt": task["prompt_text"]}, sort_keys=True)


def inputs_of(text: str, task: dict, count: Any) -> tuple[list[str], int, int]:
    """(inputs, lines too long alone, joined inputs too short) of a document for a task."""
    joined = join_lines(text, count, task["max_input_tokens"], task["min_segment_tokens"])
    inputs = joined.inputs[:1] if task["mode"] == "seed" else joined.inputs
    return inputs, joined.long_lines, joined.short_inputs


@dataclass
class Verdict:
    text: str | None = None
    reason: str | None = None
    detail: str = ""
    tokens: int = 0
    raw: str = ""  # the answer as it came (kept with a rejected document, to see why)


@dataclass
class Tally:
    """Per task: documents and inputs by outcome (summed over shards in the report)."""

    documents: int = 0
    kept: int = 0
    inputs: int = 0
    kept_inputs: int = 0
    cached: int = 0
    output_tokens: int = 0
    long_lines: int = 0
    short_inputs: int = 0
    input_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    drop_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def as_dict(self) -> dict[str, Any]:
        return {"documents": self.documents, "kept": self.kept, "inputs": self.inputs, "kept_inputs": self.kept_inputs,
                "cached_inputs": self.cached, "output_tokens": self.output_tokens, "long_lines": self.long_lines,
                "short_inputs": self.short_inputs, "input_reasons": dict(self.input_reasons),
                "drop_reasons": dict(self.drop_reasons)}


def judge(answer: Answer, segment: str, language: str, task: dict, params: dict, count: Any, rng: random.Random) -> Verdict:
    """One input's answer through the task's post-processing and the checks."""
    if answer.error is not None:
        return Verdict(reason="refused" if answer.refused else "unreadable", detail=answer.error[:300])
    raw = answer.text or ""
    if answer.truncated:
        return Verdict(reason="truncated", detail=f"cut at max_output_tokens {task['max_output_tokens']}", raw=raw)
    segment_tokens = count(segment)
    text, why = postprocess.apply(task["post"], answer.text or "", task["prefix"], segment, segment_tokens,
                                  task["max_pairs"], rng)
    if text is None:
        return Verdict(reason=why, detail=raw[:200], raw=raw)
    tokens = count(text)
    if tokens < task["min_output_tokens"]:
        return Verdict(reason="too_short", detail=f"{tokens} tokens, under {task['min_output_tokens']}", raw=raw)
    generated = text[len(segment):] if task["post"] == "diverse_qa" else text  # the pairs, not the source segment
    detected, score = langid.identify(generated) if generated.strip() else ("und", 0.0)
    wanted = language.split("-")[0]
    if detected.split("-")[0] != wanted or score < params["qc"]["min_language_score"]:
        return Verdict(reason="language", detail=f"{detected} ({score:.2f}), not {language}", raw=raw)
    repeated = repetition(generated)
    if repeated > params["qc"]["max_repetition"]:
        return Verdict(reason="repetition", detail=f"{repeated:.2f} of its n-grams repeated", raw=raw)
    return Verdict(text=text, tokens=answer.completion_tokens or tokens, raw=raw)


def _synthetic(doc: dict, task: dict, text: str, params: dict, schema: pa.Schema, stale: set[str], **counts: int) -> dict:
    row = {name: (None if name in stale else doc.get(name)) for name in schema.names}
    row.update({"id": f"{doc['id']}#{task['name']}", "text": text, "kind": "synthetic", "synthetic_task": task["name"],
                "source_id": doc["id"], "generator_model": params["model_name"], **counts})
    return row


def _ask(task: dict, docs: list[dict], server: LLMServer, params: dict, count: Any, tally: Tally,
         stats: dict[str, float]) -> tuple[list[tuple[dict, list[str]]], dict[str, Answer]]:
    """Each document's inputs for the task, and the answers to them (from the cache where it has them)."""
    work: list[tuple[dict, list[str]]] = []
    items: dict[str, tuple[str, str, int]] = {}
    for doc in docs:
        inputs, long_lines, short = inputs_of(doc["text"], task, count)
        tally.long_lines += long_lines
        tally.short_inputs += short
        work.append((doc, inputs))
        for segment in inputs:
            prompt = render(task["prompt_text"], segment, doc["language"] or "en")
            items.setdefault(text_key(prompt), (text_key(prompt), prompt, task["max_output_tokens"]))
    with LLMClient(server, system=task["system_text"]) as client:
        answers = client.ask_all(list(items.values()), client.cache(params["cache"], template_identity(task)))
        for key in LLM_COUNTS:
            stats[key] = stats.get(key, 0) + client.stats.as_dict()[key]
    return work, answers


def _outcome(doc: dict, inputs: list[str], answers: dict[str, Answer], task: dict, params: dict, count: Any,
             tally: Tally, schema: pa.Schema, stale: set[str]) -> tuple[dict, str | None, str | None]:
    """A document's synthetic row for the task, with (drop reason, detail) where no output passed."""
    language = doc["language"] or "en"
    verdicts = []
    for index, segment in enumerate(inputs):
        answer = answers[text_key(render(task["prompt_text"], segment, language))]
        tally.cached += answer.cached
        rng = random.Random(f"{params['seed']}:{doc['id']}:{task['name']}:{index}")
        verdicts.append(judge(answer, segment, language, task, params, count, rng))
    tally.documents += 1
    tally.inputs += len(inputs)
    passed = [v for v in verdicts if v.text is not None]
    for verdict in verdicts:
        if verdict.reason:
            tally.input_reasons[verdict.reason] += 1
    counts = {"rephrase_inputs": len(inputs), "rephrase_kept": len(passed), "rephrase_output_tokens": sum(v.tokens for v in passed)}
    if passed:
        tally.kept += 1
        tally.kept_inputs += len(passed)
        tally.output_tokens += counts["rephrase_output_tokens"]
        return _synthetic(doc, task, "\n\n".join(v.text for v in passed if v.text), params, schema, stale, **counts), None, None
    first = next((v for v in verdicts if v.reason), None)
    reason = f"rephrase:{first.reason}" if first else "rephrase:no_input"
    reasons: dict[str, int] = defaultdict(int)
    for verdict in verdicts:
        reasons[verdict.reason or "?"] += 1
    detail = (f"{len(inputs)} inputs: " + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) +
              (f"; first: {first.detail}" if first and first.detail else "")) if inputs else \
        f"no input of {task['min_segment_tokens']} to {task['max_input_tokens']} tokens in its lines"
    tally.drop_reasons[reason] += 1
    answered = "\n\n".join(v.raw for v in verdicts if v.raw)  # what the model wrote, else the source
    return _synthetic(doc, task, answered or doc["text"], params, schema, stale, **counts), reason, detail


def _native(documents: pa.Table, schema: pa.Schema) -> pa.Table:
    """The input documents as they are, ``kind`` ``actual`` (where they have no kind yet)."""
    for name, kind in ADDED:
        if name not in documents.column_names:
            documents = documents.append_column(pa.field(name, kind), pa.nulls(documents.num_rows, kind))
    documents = documents.set_column(documents.schema.get_field_index("kind"), schema.field("kind"),
                                     pc.fill_null(documents["kind"].cast(pa.string()), "actual"))
    return documents.select(schema.names).cast(schema)


def generate_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    documents = read_input(shard)
    repaired, _ = undecodable_rows(documents)  # chosen texts are valid UTF-8 (select); the table is read whole
    schema = output_schema(documents.schema)
    names = documents.column_names
    stale = set(stale_columns(names, params["stale"])) - set(stale_columns(names, params["inherit"])) - {"text"}
    chosen = read_table([params["chosen"]])
    if chosen.num_rows:
        chosen = chosen.filter(pc.equal(chosen["shard"], shard["shard"]))
    count = token_counter(params["tokenizer"])
    tasks = {task["name"]: task for task in params["tasks"]}
    server = LLMServer.model_validate(params["server"])
    tallies = {name: Tally() for name in tasks}
    kept_rows: list[dict] = []
    rejected: list[dict] = []
    examples: dict[str, list[dict]] = defaultdict(list)
    stats: dict[str, float] = {}
    by_task: dict[str, list[int]] = defaultdict(list)
    for row, name in zip(chosen["row"].to_pylist(), chosen["task"].to_pylist()):
        by_task[name].append(row)
    for name, rows in by_task.items():
        docs = repaired.take(pa.array(rows, pa.int64())).to_pylist()
        work, answers = _ask(tasks[name], docs, server, params, count, tallies[name], stats)
        for doc, inputs in work:
            row, reason, detail = _outcome(doc, inputs, answers, tasks[name], params, count, tallies[name], schema, stale)
            if reason is not None:
                rejected.append({**row, "drop_reason": reason, "drop_detail": detail})
                continue
            kept_rows.append(row)
            if len(examples[name]) < EXAMPLES_PER_TASK:
                examples[name].append({"source_id": doc["id"], "source": doc["text"][:400], "synthetic": row["text"][:400]})
    synthetic = pa.Table.from_pylist(kept_rows, schema=schema)
    table = pa.concat_tables([_native(documents, schema), synthetic]) if params["sources"] == "keep" else synthetic
    rejects = pa.Table.from_pylist(rejected, schema=rejects_schema(schema, detail=True))
    artifact = commit_artifact(output_url, f"examples-{shard['shard']:05d}.json", json.dumps(examples, ensure_ascii=False).encode())
    drop_reasons: dict[str, int] = defaultdict(int)
    for tally in tallies.values():
        for reason, n in tally.drop_reasons.items():
            drop_reasons[reason] += n
    return commit_shard(shard["shard"], output_url, table, rejects_url, rejects,
                        docs_in=documents.num_rows, artifacts=[artifact],
                        native=table.num_rows - synthetic.num_rows, synthetic=synthetic.num_rows,
                        by_task={name: t.as_dict() for name, t in tallies.items() if name in by_task},
                        drop_reasons=dict(drop_reasons), seconds=round(time.perf_counter() - started, 3),
                        **{key: round(value, 3) for key, value in stats.items()})
