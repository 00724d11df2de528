"""trafilatura as crawl runs it, stock against tuned (tasks/crawl/trafilatura_tuning.py), in one process.

The HTML documents are those crawl hands its extractor on the corpus: the FineWeb preset's crawl
settings (its URL filter, status and content-type checks, charset decoding), every page that
reaches extraction. Both variants extract every document; they alternate in chunks of
``--chunk`` documents (the order flipping each chunk, trafilatura's caches reset before each), so
a machine whose speed drifts affects both alike. Reported: CPU seconds of each, documents per
CPU-second, the ratio, and how many documents' texts differ (must be 0).

Usage:
    .venv/bin/python bench/trafilatura_tuning.py [--corpus DIR] [--every 1] [--chunk 25]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, machine_info, save_record, table_head  # bench/ is on sys.path

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "web-small"


def extraction_inputs(corpus: Path) -> list[str]:
    """The decoded HTML of every record crawl would extract (the preset's crawl step, run with an
    extractor that records its inputs)."""
    from fineflow.config import load_config
    from fineflow.planning import all_steps
    from fineflow.steps import run_shard
    from fineflow.tasks.crawl import stage

    inputs: list[str] = []

    class Recorder:
        restarts = 0

        def reset(self) -> None:
            pass

        def extract(self, html: str) -> str:
            inputs.append(html)
            return ""

        def peak_rss_mb(self) -> float:
            return 0.0

    config = yaml.safe_load((ROOT / "examples" / "fineweb.yaml").read_text())
    config["stages"] = [dict(config["stages"][0], inputs=[f"{corpus}/*.warc.gz"])]
    with tempfile.TemporaryDirectory() as work:
        pipeline = Path(work) / "crawl.yaml"
        pipeline.write_text(yaml.safe_dump(config))
        plan = all_steps(load_config(pipeline, storage_override=f"{work}/storage"))[0]
        original, stage.thread_extractor = stage.thread_extractor, lambda *args: Recorder()
        try:
            for shard in plan.shards:
                run_shard(plan.function, shard, plan.params, plan.location)
        finally:
            stage.thread_extractor = original
    return inputs


def variants():
    """Switches between stock and tuned trafilatura in this process (same rules as tune_trafilatura)."""
    from lxml import html
    from trafilatura import utils

    from fineflow.tasks.crawl.trafilatura_tuning import c_level_class_lookup, rule_lists, tuned_rules

    rules = rule_lists()
    stock = {name: list(value) for name, value in rules.items()}
    tuned = {name: tuned_rules(value) for name, value in stock.items()}
    lookups = {"stock": html.HtmlElementClassLookup(), "tuned": c_level_class_lookup()}

    def use(variant: str) -> None:
        for name, value in rules.items():
            value[:] = (stock if variant == "stock" else tuned)[name]
        for parser in (utils.HTML_PARSER, html.html_parser):
            parser.set_element_class_lookup(lookups[variant])

    return use


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--every", type=int, default=1, help="take every n-th document (1: all)")
    parser.add_argument("--chunk", type=int, default=25)
    args = parser.parse_args()

    from trafilatura.meta import reset_caches

    from fineflow.tasks.crawl.extractors import get_extractor

    documents = extraction_inputs(args.corpus)[:: args.every]
    print(f"{len(documents)} documents reach extraction", flush=True)
    extract = get_extractor("trafilatura", tuned=False)
    use = variants()
    cpu = {"stock": 0.0, "tuned": 0.0}
    texts: dict[str, list[str]] = {"stock": [], "tuned": []}
    for number, start in enumerate(range(0, len(documents), args.chunk)):
        for variant in ("stock", "tuned") if number % 2 == 0 else ("tuned", "stock"):
            use(variant)
            reset_caches()
            began = time.process_time()
            texts[variant] += [extract(document) for document in documents[start : start + args.chunk]]
            cpu[variant] += time.process_time() - began
    differing = sum(a != b for a, b in zip(texts["stock"], texts["tuned"]))
    rows = {variant: {"cpu_s": round(seconds, 2), "docs_per_cpu_s": round(len(documents) / seconds, 1)} for variant, seconds in cpu.items()}
    lines = table_head("trafilatura", "documents", "CPU s", "docs per CPU-s", "× stock", "texts differing")
    for variant, row in rows.items():
        lines.append(
            f"| {variant} | {len(documents):,} | {row['cpu_s']:.1f} | {row['docs_per_cpu_s']:.1f} | "
            f"{cpu['stock'] / cpu[variant]:.2f}× | {differing if variant == 'tuned' else '–'} |"
        )
    import trafilatura

    record = {
        "corpus": str(args.corpus),
        "documents": len(documents),
        "chunk": args.chunk,
        "machine": machine_info(("fineflow", "trafilatura", "lxml")),
        "variants": rows,
        "speedup": round(cpu["stock"] / cpu["tuned"], 3),
        "texts_differing": differing,
        "trafilatura": trafilatura.__version__,
        "table": "\n".join(lines),
    }
    save_record(record, "trafilatura-tuning")


if __name__ == "__main__":
    main()
