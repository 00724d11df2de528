"""quality's ``annotate`` step (one task): the LLM scores a seeded sample with a rubric prompt.

The sample is the global k smallest keys per group over the sample step's shards. Answers come
from the response cache in object storage where the same question was asked before (another
sample, another run); new ones are asked with bounded concurrency and flushed to the cache in
batches. An answer without a readable score is kept with the reason; too many of them (a prompt
or a model that does not work) fail the step rather than train on a sliver.
"""

from __future__ import annotations

import time
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from fineflow import llm
from fineflow.documents import commit_shard, read_table
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
    return found.sort_by([("group", "ascending"), ("key", "ascending")])


def annotate_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    spec = params["annotate"]
    sample = global_sample(params["samples"], "annotate", spec["sample_size"])
    if sample.num_rows == 0:
        languages = ", ".join(spec.get("languages") or []) or "any language"
        raise EmptySample(f"annotate: no document of {languages} in this stage's input to annotate")
    server = llm.LLMServer.model_validate(spec["server"])
    template = full_template(load_template(spec["prompt"]), spec.get("wrapper"), spec.get("answer_prefix"))
    prefix = spec.get("answer_prefix") or ""
    texts = sample["text"].to_pylist()
    items = [(llm.text_key(text), render(template, text, spec["max_chars"])) for text in texts]
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
    share = sum(unparsed.values()) / len(problems)
    if share > spec["max_unparsed_share"]:
        examples = "; ".join(repr((a or "")[:60]) for a, p in zip(raw, problems) if p)[:300]
        kept = sum(1 for a in answers.values() if a.error is None)
        # Only answers the server gave in full are cached (scoreless ones too: the server said them);
        # a changed prompt, model, server or answer_format asks again in a namespace of its own.
        where = (f"{kept} server answers are in the response cache ({cache.folder}; `fineflow cache drop` removes them)"
                 if kept else "nothing was cached")
        raise TooManyUnparsed(
            f"annotate: {sum(unparsed.values())} of {len(problems)} answers have no readable score "
            f"(over max_unparsed_share {spec['max_unparsed_share']}): {dict(unparsed)}; e.g. {examples}. "
            f"{where}; fix the prompt, the model or server.answer_format (grammar/json_schema constrains the answer "
            "to a score) and re-run."
        )
    histogram = Counter(str(int(s)) if s == int(s) else "fractional" for s in scores if s is not None)
    return commit_shard(
        shard["shard"], output_url, table, docs_in=sample.num_rows,
        annotated=sum(s is not None for s in scores), unparsed=dict(sorted(unparsed.items())),
        score_histogram=dict(sorted(histogram.items())), cache_entries=len(cache),
        **call_stats, seconds=round(time.perf_counter() - started, 3),
    )
