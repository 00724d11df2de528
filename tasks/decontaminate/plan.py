"""Plan the decontaminate stage: index (one task: the benchmarks' n-grams) -> scan (map, the document
step) -> items (one task: the benchmark items found).

The index's fingerprint holds the benchmark files by content (size and hash, memoised under the
storage root), not by path: a changed file rebuilds it, the same files elsewhere reuse it. The
scan chains on the index's fingerprint and the upstream documents; its shards read the index by
URL, so any worker resolves it.
"""

from __future__ import annotations

from fineflow.fingerprint import file_content_hash
from fineflow.steps import PlanContext, StepPlan
from fineflow.tasks.decontaminate import index, items, scan
from fineflow.tasks.decontaminate.benchmarks import benchmark_files
from fineflow.tasks.decontaminate.config import DecontaminateStage
from fineflow.tasks.text.words import splitter_resources


def content_inputs(config: DecontaminateStage) -> list[str]:
    """The benchmark files whose content hashes the planner reads."""
    return [url for benchmark in config.benchmarks for url in benchmark_files(benchmark.name, benchmark.path, benchmark.format)]


def rewrites_text(config: DecontaminateStage) -> bool:
    return config.mode == "remove_paragraphs"


def preflight(config: DecontaminateStage) -> list[str]:
    """Each benchmark names files (a listing, nothing read)."""
    content_inputs(config)
    return []


def plan_decontaminate(config: DecontaminateStage, ctx: PlanContext) -> list[StepPlan]:
    assert ctx.inputs is not None  # a document-reading kind: the DAG gives it inputs
    benchmarks = [benchmark.model_dump(mode="json") for benchmark in config.benchmarks]
    contents = {
        benchmark.name: [
            {key: record[key] for key in ("size", "blake2b")}
            for record in (file_content_hash(url, ctx.root) for url in benchmark_files(benchmark.name, benchmark.path, benchmark.format))
        ]
        for benchmark in config.benchmarks
    }
    word_splitters = dict(sorted(config.word_splitters.items()))
    index_plan = ctx.step(
        index, "index_shard", step="index",
        params={"benchmarks": benchmarks, "n": config.n, "word_splitters": word_splitters},
        # what decides the n-grams: not where the files are
        fingerprint_params={"benchmarks": [{k: v for k, v in b.items() if k != "path"} for b in benchmarks],
                            "n": config.n, "word_splitters": word_splitters},
        chained={"benchmark_files": contents}, shards=[{"shard": 0}], resources=splitter_resources(),
    )
    scan_params = {"mode": config.mode, "n": config.n, "min_ngrams": config.min_ngrams, "min_overlap": config.min_overlap,
                   "word_splitters": word_splitters}
    scan_plan = ctx.step(
        scan, "scan_shard", step="scan",
        params={**scan_params, "index": index_plan.location.artifact_url(index.INDEX)},
        fingerprint_params=scan_params,
        chained={"upstream": ctx.inputs.fingerprint, "index": index_plan.fingerprint.value},
        shards=ctx.inputs.shards(), resources=splitter_resources(),
    )
    items_plan = ctx.step(
        items, "items_shard", step="items",
        params={"items": index_plan.location.artifact_url(index.ITEMS),
                "found": [scan_plan.location.artifact_url(scan.found_name(shard["shard"])) for shard in scan_plan.shards]},
        fingerprint_params={}, chained={"scan": scan_plan.fingerprint.value}, shards=[{"shard": 0}],
    )
    return [index_plan, scan_plan, items_plan]
