"""quality's annotate step split into tasks: the same labels whatever the split, one response cache
shared by the tasks, a failed task re-run without asking again what the others (or it) answered,
and the server's concurrency shared by tasks running at once. A stand-in OpenAI-compatible server
(each answer a function of the prompt) and in-process steps: fast, no llama.cpp."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from http_reply import reply
from pydantic import ValidationError
from stage_runner import run_plan

from fineflow import llm, registry
from fineflow.planning import plan_stage
from fineflow.steps import Source, StageInputs, StepPlan, run_shard
from fineflow.tasks.quality.annotate import bounds, read_annotations, slots

SHARDS = 9  # input shards (so the sample's rows come from many sample shards)
LABEL_COLUMNS = ["id", "language", "group", "key", "text", "score", "answer", "problem"]


class PlantedOpenAI:
    """``/v1/chat/completions``: "Score: N" with N from the prompt's hash (one in seven answers has no
    score); a prompt holding ``poison`` is refused with 401 (fails its task at once). Counts requests
    and the most in flight at once."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.poison: str | None = None
        self.in_flight = self.most_in_flight = 0
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                reply(self, 200, json.dumps({"data": [{"id": "planted", "object": "model"}]}).encode())

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                if owner.poison and owner.poison in prompt:
                    reply(self, 401, b'{"error": "no"}')
                    return
                with lock:
                    owner.asked.append(prompt)
                    owner.in_flight += 1
                    owner.most_in_flight = max(owner.most_in_flight, owner.in_flight)
                time.sleep(0.005)  # long enough for the requests of tasks running at once to overlap
                value = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
                text = "I cannot tell." if value % 7 == 0 else f"Score: {value % 6}"
                with lock:
                    owner.in_flight -= 1
                choice = {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                reply(self, 200, json.dumps({"choices": [choice], "usage": {"prompt_tokens": 50, "completion_tokens": 3}}).encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def planted():
    server = PlantedOpenAI()
    yield server
    server.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """9 shards of English and German documents (and some French, never sampled)."""
    folder = tmp_path_factory.mktemp("docs")
    for shard in range(SHARDS):
        ids = [f"s{shard}-d{n}" for n in range(12)]
        pq.write_table(pa.table({
            "id": ids, "text": [f"Lesson <{i}> on topic {n % 5}: how plants grow, with {n} examples." for n, i in enumerate(ids)],
            "language": [("en", "de", "fr")[n % 3] for n in range(12)], "url": [f"https://example.org/{i}" for i in ids],
        }), folder / f"part-{shard:05d}.parquet")
    return folder


def quality(base_url: str, tasks: int | None, concurrency: int = 7, sample_size: int = 15) -> dict:
    return {
        "stage": "quality",
        "annotate": {"server": {"base_url": base_url, "model": "planted", "concurrency": concurrency, "flush_every": 2,
                                "api_key_env": None, "retries": 0},
                     "sample_size": sample_size, "languages": ["en", "de"], "max_chars": 200,
                     **({"tasks": tasks} if tasks is not None else {})},
        "classifiers": {"edu": {"model": "fasttext", "labels": {"annotations": True}, "fasttext": {"epoch": 2, "bucket": 1000}}},
        "scorers": {"edu": {"trained": "edu"}},
    }


def plans(config: dict, root: Path, inputs: Path) -> dict[str, StepPlan]:
    planned = plan_stage(registry.validate_stage(config), str(root), StageInputs((Source("docs", "f" * 20, str(inputs), SHARDS),)), "q")
    return {plan.step: plan for plan in planned}


def annotate(steps: dict[str, StepPlan], at_once: int = 1) -> list[dict]:
    """The sample step, then every annotate task, ``at_once`` of them in threads (as a Dask worker's)."""
    run_plan(steps["sample"])
    plan = steps["annotate"]
    with ThreadPoolExecutor(at_once) as pool:
        return list(pool.map(lambda shard: run_shard(plan.function, shard, plan.params, plan.location), plan.shards))


def labels(plan: StepPlan) -> pa.Table:
    return read_annotations([plan.location.shard_url(n) for n in range(len(plan.shards))])


def test_seven_tasks_write_the_labels_of_one_and_a_second_run_asks_nothing(planted, inputs, tmp_path):
    planted.asked.clear()
    one = plans(quality(planted.base_url, 1), tmp_path / "one", inputs)
    annotate(one)
    reference = labels(one["annotate"])
    assert reference.num_rows == 30 and len(planted.asked) == 30  # 15 English + 15 German of 72
    assert 0 < reference["problem"].null_count < 30  # scores and scoreless answers (with their reason)

    planted.asked.clear()
    planted.most_in_flight = 0
    seven = plans(quality(planted.base_url, 7), tmp_path / "seven", inputs)  # a fresh storage: a cache of its own
    assert len(seven["annotate"].shards) == 7
    assert seven["annotate"].fingerprint.value != one["annotate"].fingerprint.value
    assert seven["train"].fingerprint.value == one["train"].fingerprint.value  # same labels: no retraining
    results = annotate(seven, at_once=7)
    assert len(planted.asked) == 30 and 1 <= planted.most_in_flight <= 7  # the tasks share the 7 slots
    parts = [pq.read_table(seven["annotate"].location.shard_url(n)) for n in range(7)]
    assert sorted(part.num_rows for part in parts) == [4, 4, 4, 4, 4, 5, 5]
    merged = labels(seven["annotate"])
    assert merged.select(LABEL_COLUMNS).equals(reference.select(LABEL_COLUMNS))
    # train reads the parts: the same documents, classes and split as from one task's file
    counts = [{k: run_plan(steps["train"])[0]["stats"]["classifiers"]["edu"][k] for k in ("trained_on", "held_out", "positives")}
              for steps in (one, seven)]
    assert counts[0] == counts[1] and counts[0]["trained_on"] > 0
    stats = [result["stats"] for result in results]
    assert sum(s["docs_in"] for s in stats) == 30 and sum(s["llm_requests"] for s in stats) == 30
    assert sum(s["annotated"] for s in stats) == 30 - reference["score"].null_count

    planted.asked.clear()  # again: every answer from the cache, whichever task flushed it
    again = [result["stats"] for result in annotate(seven, at_once=3)]
    assert planted.asked == [] and sum(s["llm_cache_hits"] for s in again) == 30
    assert labels(seven["annotate"]).select(LABEL_COLUMNS).equals(reference.select(LABEL_COLUMNS))
    assert all(labels(seven["annotate"])["cached"].to_pylist())

    planted.asked.clear()  # another split of the same storage reads the same cache
    five = plans(quality(planted.base_url, 5), tmp_path / "seven", inputs)
    annotate(five, at_once=5)
    assert planted.asked == [] and labels(five["annotate"]).select(LABEL_COLUMNS).equals(reference.select(LABEL_COLUMNS))


def test_a_failed_task_leaves_the_others_answers_cached_for_the_rerun(planted, inputs, tmp_path):
    steps = plans(quality(planted.base_url, 7), tmp_path, inputs)
    run_plan(steps["sample"])
    plan = steps["annotate"]
    poisoned = plan.shards[3]
    part = _part_texts(plan, poisoned["shard"])
    victim = part[1]  # the second document of the fourth task
    token = victim[victim.index("<"): victim.index(">") + 1]
    planted.poison = token
    planted.asked.clear()
    failed = []
    try:
        for shard in plan.shards:
            try:
                run_shard(plan.function, shard, plan.params, plan.location)
            except llm.LLMError as error:
                failed.append((shard["shard"], str(error)))
    finally:
        planted.poison = None
    assert [number for number, _ in failed] == [poisoned["shard"]] and "refused the request" in failed[0][1]
    committed = {n for n in range(7) if Path(plan.location.shard_url(n)).exists()}
    assert committed == set(range(7)) - {poisoned["shard"]}
    # The failed task's one slot had its first document answered (and flushed to the cache) when the
    # second was refused; the other tasks asked about all of theirs.
    first_asked = len(planted.asked)
    assert first_asked == 30 - len(part) + 1

    planted.asked.clear()  # a re-run of every task asks only what the failed task had not been answered
    results = [run_shard(plan.function, shard, plan.params, plan.location) for shard in plan.shards]
    assert len(planted.asked) == len(part) - 1 and any(token in prompt for prompt in planted.asked)
    asked_by = {result["shard"]: result["stats"]["llm_requests"] for result in results}
    assert {n for n, asked in asked_by.items() if asked} == {poisoned["shard"]}
    assert labels(plan).num_rows == 30


def test_more_tasks_than_sampled_documents_leave_empty_parts(planted, inputs, tmp_path):
    planted.asked.clear()
    steps = plans(quality(planted.base_url, 7, sample_size=1), tmp_path, inputs)
    results = annotate(steps)
    assert [result["stats"]["docs_in"] for result in results] == [0, 0, 0, 1, 0, 0, 1]
    assert len(planted.asked) == 2 and labels(steps["annotate"]).num_rows == 2
    assert sorted(labels(steps["annotate"])["language"].to_pylist()) == ["de", "en"]


def _part_texts(plan: StepPlan, task: int) -> list[str]:
    """The texts task ``task`` annotates, from its part of the sample."""
    from fineflow.tasks.quality.annotate import sample_part

    spec = plan.params["annotate"]
    part, _ = sample_part(plan.params["samples"], spec["sample_size"], plan.params["tasks"], task)
    return part["text"].to_pylist()


def test_task_counts_are_checked_and_the_slots_add_up(planted):
    config = quality(planted.base_url, None, concurrency=3)
    assert registry.validate_stage(config).annotate.task_count == 3  # default: the concurrency, at most 8
    assert registry.validate_stage(quality(planted.base_url, None, concurrency=64)).annotate.task_count == 8
    for tasks, problem in ((4, r"tasks \(4\) is more than server.concurrency \(3\)"), (0, "greater than or equal to 1"),
                           (10**6, "less than or equal to 1024")):
        with pytest.raises(ValidationError, match=problem):
            registry.validate_stage(quality(planted.base_url, tasks, concurrency=3))
    for concurrency, tasks in ((7, 7), (10, 3), (64, 8), (5, 1)):
        shares = [slots(concurrency, tasks, task) for task in range(tasks)]
        assert sum(shares) == concurrency and max(shares) - min(shares) <= 1
    for rows, tasks in ((30, 7), (3, 7), (0, 2), (100, 1)):
        cuts = [bounds(rows, tasks, task) for task in range(tasks)]
        assert cuts[0][0] == 0 and cuts[-1][1] == rows and all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
