"""quality's ``annotate`` step (``tasks`` shards): the LLM scores a seeded sample with a rubric prompt.

The sample is the global k smallest keys per group over the sample step's shards. Each task
finds it from the keys alone (ranged reads of three small columns per sample shard), then takes
its own part: the sample's rows in sample-shard order, cut into ``tasks`` near-equal contiguous
parts, so a task reads the texts of the few sample shards its rows are in. Every part is written
in the sample's (group, key) order; the parts read together and sorted by (group, key) are the
table one task would write (``read_annotations``), whatever ``tasks`` is. The tasks share the
server's ``concurrency`` slots, so the server never has more requests than that in flight.

Answers come from the response cache in object storage where the same question was asked before
(another sample, another run, another task); new ones are asked with bounded concurrency and
flushed to the cache in batches (each task its own uniquely named files). An answer without a
readable score is kept with the reason; too many of them in a task (a prompt or a model that
does not work) fail it rather than train on a sliver, the first task to finish failing the step.
"""

from __future__ import annotations

import time
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from fineflow import llm
from fineflow.documents import commit_shard, read_columns, read_table
from fineflow.tasks.quality.prompts import full_template, load_template, parse_score, render, score_form
from fineflow.tasks.quality.sample import SAMPLE_SCHEMA, smallest

STEP_VERSION = "1"
LIBRARIES = ("pyarrow", "httpx")

ANNOTATION_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("language", pa.string()),
    ("group", pa.string()),
    ("key", pa.uint64()),
    ("text", pa.string()),
    ("score", pa.float64()),
    ("answer", pa.string()),
    ("problem", pa.string()),
    ("cached", pa.bool_()),
])
ORDER = [("group", "ascending"), ("key", "ascending")]  # the sample's order (stable: ties keep shard order)


class EmptySample(ValueError):
    pass


class TooManyUnparsed(RuntimeError):
    pass


def global_sample(urls: list[str], purpose: str, k: int) -> pa.Table:
    """The k smallest keys per group over every shard's candidates for ``purpose``."""
    found = SAMPLE_SCHEMA.empty_table()
    for url in urls:
        table = read_table([url]).cast(SAMPLE_SCHEMA)
        table = table.filter(pc.equal(table["purpose"], purpose))
        found = smallest(pa.concat_tables([found, table]), k, ["group"])
    return found.sort_by(ORDER)


def sample_index(urls: list[str], k: int) -> pa.Table:
    """Where the annotation sample's rows are: (group, key, shard, row), in sample-shard and row order;
    the same rows ``global_sample(urls, "annotate", k)`` holds, read without the texts."""
    found = pa.table({"group": pa.array([], pa.string()), "key": pa.array([], pa.uint64()),
                      "shard": pa.array([], pa.int64()), "row": pa.array([], pa.int64())})
    for number, url in enumerate(urls):
        columns = read_columns(url, ["purpose", "group", "key"])
        rows = pc.indices_nonzero(pc.fill_null(pc.equal(columns["purpose"], "annotate"), False))
        table = pa.table({"group": columns["group"].cast(pa.string()).take(rows), "key": columns["key"].cast(pa.uint64()).take(rows),
                          "shard": pa.array([number] * len(rows), pa.int64()), "row": rows.cast(pa.int64())})
        found = smallest(pa.concat_tables([found, table]), k, ["group"])
    return found.sort_by([("shard", "ascending"), ("row", "ascending")])


def bounds(rows: int, tasks: int, task: int) -> tuple[int, int]:
    """Task ``task``'s contiguous part of ``rows`` rows cut into ``tasks`` near-equal parts."""
    return rows * task // tasks, rows * (task + 1) // tasks


def sample_part(urls: list[str], k: int, tasks: int, task: int) -> tuple[pa.Table, int]:
    """This task's rows of the annotation sample (SAMPLE_SCHEMA, in the sample's order), and the sample's size."""
    index = sample_index(urls, k)
    start, end = bounds(index.num_rows, tasks, task)
    part = index.slice(start, end - start)
    pieces = []
    for number in sorted(set(part["shard"].to_pylist())):
        rows = part.filter(pc.equal(part["shard"], number))["row"]
        pieces.append(read_table([urls[number]]).cast(SAMPLE_SCHEMA).take(rows))
    table = pa.concat_tables(pieces) if pieces else SAMPLE_SCHEMA.empty_table()
    return table.sort_by(ORDER), index.num_rows


def read_annotations(urls: list[str]) -> pa.Table:
    """The annotate step's parts as one table, in the sample's order: what one task would have written."""
    return read_table(urls).sort_by(ORDER)


def slots(concurrency: int, tasks: int, task: int) -> int:
    """Task ``task``'s share of the server's request slots (the shares add up to ``concurrency``)."""
    return max(1, concurrency // tasks + (task < concurrency % tasks))


def annotate_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    spec = params["annotate"]
    tasks, task = params.get("tasks", 1), shard["shard"]
    sample, sample_size = sample_part(params["samples"], spec["sample_size"], tasks, task)
    if sample_size == 0:
        languages = ", ".join(spec.get("languages") or []) or "any language"
        raise EmptySample(f"annotate: no document of {languages} in this stage's input to annotate")
    server = llm.LLMServer.model_validate({**spec["server"], "concurrency": slots(spec["server"]["concurrency"], tasks, task)})
    template = full_template(load_template(spec["prompt"]), spec.get("wrapper"), spec.get("answer_prefix"))
    prefix = spec.get("answer_prefix") or ""
    texts = sample["text"].to_pylist()
    items = [(llm.text_key(text), render(template, text, spec["max_chars"])) for text in texts]
    answers: dict[str, llm.Answer] = {}
    call_stats = llm.CallStats().as_dict()
    if items:  # (a part may be empty: more tasks than sampled documents)
        with llm.LLMClient(server, form=score_form(prefix)) as client:
            cache = client.cache(params["cache"], template)
            answers = client.ask_all(items, cache)
            call_stats = client.stats.as_dict()

    scores, problems, raw, cached = [], [], [], []
    for key, _ in items:
        answer = answers[key]
        score, problem = parse_score(prefix + answer.text) if answer.error is None else (None, answer.error)
        scores.append(score)
        problems.append(problem)
        raw.append(answer.text)
        cached.append(answer.cached)
    table = pa.table({
        "id": sample["id"], "language": sample["language"], "group": sample["group"], "key": sample["key"],
        "text": sample["text"], "score": pa.array(scores, pa.float64()), "answer": pa.array(raw, pa.string()),
        "problem": pa.array(problems, pa.string()), "cached": pa.array(cached, pa.bool_()),
    }, schema=ANNOTATION_SCHEMA)
    unparsed = Counter("unreadable response" if p.startswith("unreadable") else p for p in problems if p)
    share = sum(unparsed.values()) / len(problems) if problems else 0.0
    if share > spec["max_unparsed_share"]:
        examples = "; ".join(repr((a or "")[:60]) for a, p in zip(raw, problems) if p)[:300]
        kept = sum(1 for a in answers.values() if a.error is None)
        # Only answers the server gave in full are cached (scoreless ones too: the server said them);
        # a changed prompt, model, server or answer_format asks again in a namespace of its own.
        where = (f"{kept} server answers are in the response cache ({cache.folder}; `fineflow cache drop` removes them)"
                 if kept else "nothing was cached")
        part = f" (task {task + 1} of {tasks}, {len(problems)} of the sample's {sample_size})" if tasks > 1 else ""
        raise TooManyUnparsed(
            f"annotate: {sum(unparsed.values())} of {len(problems)} answers{part} have no readable score "
            f"(over max_unparsed_share {spec['max_unparsed_share']}): {dict(unparsed)}; e.g. {examples}. "
            f"{where}; fix the prompt, the model or server.answer_format (grammar/json_schema constrains the answer "
            "to a score) and re-run."
        )
    histogram = Counter(str(int(s)) if s == int(s) else "fractional" for s in scores if s is not None)
    return commit_shard(
        shard["shard"], output_url, table, docs_in=sample.num_rows,
        annotated=sum(s is not None for s in scores), unparsed=dict(sorted(unparsed.items())),
        score_histogram=dict(sorted(histogram.items())),
        **call_stats, seconds=round(time.perf_counter() - started, 3),
    )
