"""The rephrase stage: Nemotron-CC's segmentation and post-processing on planted LLM answers (a
stand-in OpenAI server whose answers depend on the task's prompt), the choice per task by a
column condition, synthetic rows beside native ones, rejects by check, a second run that asks
nothing, and the dry-run estimate. The real model runs in tests/test_nemotron_cc.py."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from http_reply import reply
from pydantic import ValidationError
from stage_runner import run_plans

from fineflow import registry
from fineflow.counters import merge_counts
from fineflow.planning import plan_stage
from fineflow.steps import Source, StageInputs
from fineflow.tasks.rephrase import postprocess
from fineflow.tasks.rephrase.estimate import estimate
from fineflow.tasks.text.segment import join_lines
from fineflow.tasks.text.window import estimate as estimate_tokens

WORDS = ("The river flows through the valley and the farmers grow wheat, barley and apples on the "
         "slopes where the soil is rich and the summers are long and warm.").split()
WIKI = ("The valley is crossed by a river. Farmers in the region cultivate wheat, barley and apples on its "
        "slopes, which benefit from fertile soil and long, warm summers. Agriculture has shaped the local "
        "economy for centuries, and the harvest season remains an important event for the communities.")
QA = ("Here are the questions and answers based on the provided text:\n"
      "- Question: What crops do the farmers grow?\nAnswer: Wheat, barley and apples.\n"
      "- Question: Is the soil on the slopes poor?\nAnswer: No, it is rich.\n"
      "- Question: How are the summers in the valley?\nAnswer: They are long and warm.")
LIST = ("Here is the list:\n- The river flows through the valley.\n- Farmers grow wheat, barley and apples.\n"
        "  The crops grow on the slopes.\n- The soil is rich and the summers are long and warm, which favours "
        "the harvest of the valley's farms every year.")


def sentence(n: int, length: int = 14) -> str:
    rng = random.Random(n)
    return " ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + "."


def page(n: int, lines: int = 6) -> str:
    return "\n".join(" ".join(sentence(n * 100 + i * 10 + j) for j in range(3)) for i in range(lines))


class PlantedLLM:
    """``/v1/chat/completions`` answering by the task its prompt is for; ``LONG`` in a prompt gets an
    answer cut at its max_tokens (``finish_reason`` "length")."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.bodies.append(body)
                prompt = body["messages"][-1]["content"]
                cut = "LONG" in prompt
                if "questions" in prompt:
                    text = QA
                elif "list of the knowledge" in prompt:
                    text = LIST
                elif "paraphrase in clear" in prompt:
                    text = WIKI if "MISSING" in prompt else "Here is a paraphrased version:\n" + WIKI
                else:
                    text = "Passage:\n" + WIKI
                choice = {"message": {"role": "assistant", "content": text}, "finish_reason": "length" if cut else "stop"}
                usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": body["max_tokens"] if cut else len(text) // 4}
                reply(self, 200, json.dumps({"choices": [choice], "usage": usage}).encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def planted():
    server = PlantedLLM()
    yield server
    server.close()


def documents(folder: Path) -> Path:
    """Ten English pages over two shards, quality levels 0-4; doc3 asks for an over-long answer,
    doc1 for a wiki answer without its prefix line."""
    folder.mkdir(parents=True)
    rows = []
    for n in range(10):
        text = page(n)
        if n == 3:
            text = "LONG " + text
        if n == 1:
            text = "MISSING " + text
        rows.append({"id": f"doc{n}", "url": f"https://example.org/{n}", "text": text, "language": "en",
                     "quality_level": n % 5, "quality_score": n / 10, "n_tokens_gpt2": len(text.split())})
    for shard in range(2):
        pq.write_table(pa.Table.from_pylist(rows[shard::2]), folder / f"part-{shard:05d}.parquet")
    return folder


def stage(base_url: str, **extra) -> dict:
    return {"stage": "rephrase", "server": {"base_url": base_url, "model": "planted", "temperature": 0.5, "top_p": 0.9},
            "tasks": {"wiki": {"where": [{"column": "quality_level", "op": "<=", "value": 1}]},
                      "diverse_qa": {"where": [{"column": "quality_level", "op": ">=", "value": 3}], "max_documents": 3},
                      "knowledge_list": {"where": [{"column": "quality_level", "op": ">=", "value": 3}], "max_documents": 1},
                      "extract_knowledge": {"where": [{"column": "quality_level", "op": "==", "value": 2}]},
                      "distill": {"where": [{"column": "quality_level", "op": "==", "value": 3}]}},
            **extra}


def run(config: dict, root: Path, folder: Path) -> dict:
    validated = registry.validate_stage(config)
    return run_plans(plan_stage(validated, str(root), StageInputs((Source("docs", "f" * 20, str(folder), 2),)), "rephrase"))


def table_of(steps: dict, step: str, folder: str = "data_folder") -> pa.Table:
    plan, _ = steps[step]
    return pa.concat_tables([pq.read_table(f) for f in sorted(Path(getattr(plan.location, folder)).glob("*.parquet"))])


# -- segmentation and post-processing (papers.md §c.7) ------------------------------------------------

def test_lines_join_greedily_up_to_the_input_limit():
    count = lambda text: len(text.split())  # noqa: E731 (a word per token, to count by hand)
    text = "one two three\n\nfour five\nsix seven eight nine ten eleven twelve\n" + " ".join(["w"] * 30) + "\na b\nc"
    joined = join_lines(text, count, max_tokens=10, min_tokens=4)
    # 3 + 1 + 2 = 6; the 7-word line does not fit beside them; the 30-word line is over the limit alone
    assert joined.inputs == ["one two three\nfour five", "six seven eight nine ten eleven twelve"]
    assert joined.long_lines == 1 and joined.short_inputs == 1  # "a b\nc": 3 words, under the minimum
    assert all(count(i) <= 10 for i in joined.inputs)


def test_a_qa_answer_is_parsed_shuffled_sampled_and_appended_to_its_segment():
    segment = page(1, 2)
    tokens = estimate_tokens(segment)
    text, why = postprocess.apply("diverse_qa", QA, "Here are the questions and answers based on the provided text:",
                                  segment, tokens, 10, random.Random(0))
    assert why is None and text is not None and text.startswith(segment + "\n\nQuestion: ")
    pairs = text[len(segment) + 2:].split("\n\n")
    assert all(p.startswith("Question: ") and "\nAnswer: " in p for p in pairs)
    assert 1 <= len(pairs) <= min(3, max(1, int(10 * tokens / 150)))
    sizes = {len(postprocess.apply("diverse_qa", QA.split("\n", 1)[1], None, segment, 15, 10, random.Random(seed))[0].split("\n\n"))
             for seed in range(20)}
    assert sizes == {2}  # 15 tokens: randint(1, max(1, 10 * 15 // 150)) = 1 pair, after the segment
    # a line before the first question (not the prefix): no pairs, as the recipe's parser does
    assert postprocess.apply("diverse_qa", "Sure!\n" + QA, "Here are the questions and answers based on the provided text:",
                             segment, tokens, 10, random.Random(0)) == (None, "no_pairs")


def test_a_missing_prefix_keeps_the_answer_and_a_present_one_is_removed():
    prefix = "Here is a paraphrased version:"
    assert postprocess.apply("wiki", "Here is a paraphrased version:\n" + WIKI, prefix, "", 0, 1, random.Random(0))[0] == WIKI
    assert postprocess.apply("wiki", "**Here is a paraphrased version:** " + WIKI, prefix, "", 0, 1, random.Random(0))[0] == WIKI
    assert postprocess.apply("wiki", WIKI, prefix, "", 0, 1, random.Random(0))[0] == WIKI
    assert postprocess.apply("wiki", f'"## {WIKI}"', prefix, "", 0, 1, random.Random(0))[0] == WIKI
    listed, _ = postprocess.apply("knowledge_list", LIST, None, "", 0, 1, random.Random(0))
    assert listed is not None and listed.split("\n")[:3] == ["The river flows through the valley.",
                                                            "Farmers grow wheat, barley and apples.", "The crops grow on the slopes."]
    knowledge, _ = postprocess.apply("extract_knowledge", "Passage 1: " + WIKI + "\nPassage:\nMore.", None, "", 0, 1, random.Random(0))
    assert knowledge == WIKI + "\nMore."


# -- the stage ---------------------------------------------------------------------------------------

def test_tasks_choose_by_level_and_write_synthetic_rows_beside_native_ones(planted, tmp_path):
    docs = documents(tmp_path / "docs")
    steps = run(stage(planted.base_url), tmp_path, docs)
    out = table_of(steps, "generate")
    native = out.filter(pa.compute.equal(out["kind"], "actual")).to_pylist()
    synthetic = {row["id"]: row for row in out.to_pylist() if row["kind"] == "synthetic"}
    assert len(native) == 10 and all(row["synthetic_task"] is None and row["source_id"] is None for row in native)
    levels = {f"doc{n}": n % 5 for n in range(10)}
    # wiki: levels 0-1 (doc0, doc1, doc5, doc6); doc1's answer has no prefix and is kept
    assert {i for i in synthetic if i.endswith("#wiki")} == {"doc0#wiki", "doc1#wiki", "doc5#wiki", "doc6#wiki"}
    assert synthetic["doc1#wiki"]["text"].startswith(WIKI[:40]) and "paraphrased version" not in synthetic["doc0#wiki"]["text"]
    # diverse_qa: at most 3 of levels 3-4 (doc3, doc4, doc8, doc9), doc3 asks for an over-long answer
    qa = {i for i in synthetic if i.endswith("#diverse_qa")}
    rejects = table_of(steps, "generate", "rejects_folder").to_pylist()
    rejected = {row["id"]: row for row in rejects}
    chosen_qa = qa | {i for i in rejected if i.endswith("#diverse_qa")}
    assert len(chosen_qa) == 3 and all(levels[i.split("#")[0]] >= 3 for i in chosen_qa)
    for row_id in qa:
        row = synthetic[row_id]
        source = next(r for r in native if r["id"] == row["source_id"])
        assert row["text"].startswith(source["text"].split("\n")[0]) and "\n\nQuestion: " in row["text"]
    # distill: level 3 (doc3, doc8); doc3's answers are cut at max_output_tokens: over-long, rejected
    assert rejected["doc3#distill"]["drop_reason"] == "rephrase:truncated" and "doc8#distill" in synthetic
    assert "max_output_tokens 1600" in rejected["doc3#distill"]["drop_detail"]
    assert not any(i.startswith("doc3#") for i in synthetic)
    # extract_knowledge: level 2 (doc2, doc7); "Passage:" removed
    assert synthetic["doc2#extract_knowledge"]["text"].startswith(WIKI[:40])
    for row in synthetic.values():
        assert row["source_id"] == row["id"].split("#")[0] and row["generator_model"] == "planted"
        assert row["quality_level"] == levels[row["source_id"]]  # inherited: the level it was chosen at
        assert row["n_tokens_gpt2"] is None  # measured on the source's text: left null
        assert row["url"] == f"https://example.org/{row['source_id'][3:]}"
        assert row["rephrase_kept"] >= 1 and row["rephrase_output_tokens"] > 0
    # requests carry the recipe's decoding, the task's output limit and (wiki) its system message
    wiki = [b for b in planted.bodies if "paraphrase in clear" in b["messages"][-1]["content"]]
    assert wiki and all(b["messages"][0]["role"] == "system" and b["max_tokens"] == 512 and b["temperature"] == 0.5
                        and b["top_p"] == 0.9 for b in wiki)
    assert {b["max_tokens"] for b in planted.bodies if "questions" in b["messages"][-1]["content"]} == {600}
    summary = merge_counts(result["stats"] for result in steps["generate"][1])
    assert summary["native"] == 10 and summary["synthetic"] == len(synthetic)
    assert sum(summary["drop_reasons"].values()) == len(rejects)

    asked = len(planted.bodies)
    again = run(stage(planted.base_url, qc={"min_language_score": 0.4}), tmp_path, docs)  # a changed check: from the cache
    assert len(planted.bodies) == asked
    totals = merge_counts(result["stats"] for result in again["generate"][1])
    assert totals["llm_requests"] == 0 and totals["llm_cache_hits"] == asked
    assert table_of(again, "generate").num_rows == out.num_rows


def test_sources_drop_writes_synthetic_rows_only_and_the_estimate_counts_what_is_cached(planted, tmp_path):
    docs = documents(tmp_path / "docs")
    config = registry.validate_stage(stage(planted.base_url, sources="drop"))
    plans = plan_stage(config, str(tmp_path), StageInputs((Source("docs", "f" * 20, str(docs), 2),)), "rephrase")
    before = {row["task"]: row for row in estimate(config, plans)}
    assert before["wiki"]["documents"] == 4 and before["wiki"]["cached"] == 0 and before["wiki"]["tokens_to_generate"] > 0
    assert before["wiki"]["throughput"].endswith("(assumed)") and before["wiki"]["server_hours"] > 0
    steps = run_plans(plans)
    out = table_of(steps, "generate")
    assert set(out["kind"].to_pylist()) == {"synthetic"}
    after = {row["task"]: row for row in estimate(config, plans)}
    assert after["wiki"]["cached"] == after["wiki"]["inputs"] > 0 and after["wiki"]["tokens_to_generate"] == 0
    assert after["wiki"]["throughput"].endswith("(measured)")


def test_configs_are_checked():
    base = {"stage": "rephrase", "server": {"base_url": "http://127.0.0.1:1/v1", "model": "m"}}
    with pytest.raises(ValidationError, match="not a built-in task"):
        registry.validate_stage({**base, "tasks": {"mine": {}}})
    with pytest.raises(ValidationError, match="letters, digits"):
        registry.validate_stage({**base, "tasks": {"wiki#2": {"task": "wiki"}}})
    with pytest.raises(ValidationError, match="min_segment_tokens"):
        registry.validate_stage({**base, "tasks": {"wiki": {"min_segment_tokens": 600}}})
    with pytest.raises(ValidationError):
        registry.validate_stage({**base, "tasks": {"wiki": {"max_documents": 0}}})
    resolved = registry.validate_stage({**base, "tasks": {"qa": {"task": "diverse_qa", "max_output_tokens": 300}}}).resolved()[0]
    assert (resolved.max_input_tokens, resolved.max_output_tokens, resolved.post) == (1000, 300, "diverse_qa")


def test_a_seed_task_sends_the_start_of_each_page_in_its_language_and_checks_the_answer_language(planted, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    french = "\n".join(f"Ligne {n} : le village se trouve au bord de la rivière, où les paysans cultivent le blé." for n in range(60))
    rows = [{"id": "fr1", "text": french, "language": "fr", "quality_level": 4}]
    for shard in range(2):
        pq.write_table(pa.Table.from_pylist(rows if shard == 0 else rows[:0], schema=pa.Table.from_pylist(rows).schema),
                       folder / f"part-{shard:05d}.parquet")
    config = {"stage": "rephrase", "server": {"base_url": planted.base_url, "model": "planted"},
              "tasks": {"textbook": {"max_input_tokens": 200}}}
    steps = run(config, tmp_path, folder)
    (body,) = planted.bodies
    prompt = body["messages"][-1]["content"]
    assert "Write in French" in prompt and "Ligne 0 :" in prompt and "Ligne 59" not in prompt  # the page's start only
    assert body["max_tokens"] == 1200
    (rejected,) = table_of(steps, "generate", "rejects_folder").to_pylist()
    # the stand-in answers in English: a French page's textbook section must be French
    assert rejected["id"] == "fr1#textbook" and rejected["drop_reason"] == "rephrase:language"
    assert rejected["text"].startswith("Passage:") and "not fr" in rejected["drop_detail"]


def test_the_output_and_rejects_folders_load_as_they_are(planted, tmp_path):
    """What the summary names (native and synthetic rows; rejects) loads with datasets (data_dir),
    polars and DuckDB, exactly its rows."""
    import duckdb
    from test_dag import _read_everywhere

    steps = run(stage(planted.base_url), tmp_path, documents(tmp_path / "docs"))
    location = steps["generate"][0].location
    for folder, step_folder in ((location.data_folder, "data_folder"), (location.rejects_folder, "rejects_folder")):
        rows = table_of(steps, "generate", step_folder).num_rows
        assert rows and _read_everywhere(folder, tmp_path / "hf") == {"datasets": rows, "polars": rows}
        assert duckdb.sql(f"select count(*) from read_parquet('{folder}/**/*.parquet')").fetchall()[0][0] == rows
