"""The release's ``README.md``: a Hugging Face dataset card.

Its YAML front matter is what the Hub and ``datasets`` read: one config per folder of
``data/`` with its ``data_files``, the languages, a size category and the licence. Its body
says how the documents were made, from the run's ``summary.json``: the pipeline and each step's
fingerprint, fineflow's version, documents after each stage (per config where the stages counted
languages), drop reasons, and tokens per config.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import langcodes
import yaml

import fineflow
from fineflow import storage
from fineflow.export.columns import Column
from fineflow.export.shards import ConfigPlan, WrittenFile
from fineflow.export.source import Source
from fineflow.languages import UNKNOWN

# The Hub's size categories (number of examples), upper bounds exclusive.
_SIZES = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"), (10**7, "1M<n<10M"),
          (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"), (10**11, "10B<n<100B"), (10**12, "100B<n<1T")]
TOO_MANY_CONFIGS = 40  # wider tables are listed per config instead


def size_category(rows: int) -> str:
    return next((label for bound, label in _SIZES if rows < bound), "n>1T")


def card_languages(languages: list[str]) -> list[str]:
    """The Hub's ``language`` list: ISO 639 codes of the documents' BCP-47 tags (script subtags dropped)."""
    found = []
    for tag in languages:
        if tag in ("", UNKNOWN):
            continue
        try:
            code = langcodes.Language.get(tag.replace("_", "-")).language
        except (ValueError, langcodes.tag_parser.LanguageTagError):
            continue
        if code and code not in found:
            found.append(code)
    return sorted(found)


def front_matter(plans: list[ConfigPlan], languages: list[str], license: str, pretty_name: str) -> dict[str, Any]:
    return {
        "pretty_name": pretty_name,
        "license": license,
        "language": card_languages(languages) or None,
        "multilinguality": "multilingual" if len(card_languages(languages)) > 1 else "monolingual",
        "size_categories": [size_category(sum(plan.rows for plan in plans))],
        "task_categories": ["text-generation"],
        "tags": ["fineflow", "pretraining", "web"],
        "configs": [
            {"config_name": plan.name, "data_files": [{"split": "train", "path": f"data/{plan.name}/train-*"}]}
            for plan in plans
        ],
    }


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        text = f"{value:,}" if isinstance(value, int) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows), ""]


def _configs(plans: list[ConfigPlan], files: list[WrittenFile], tokens: dict[str, int], token_label: str | None,
             by_language: dict[str, dict[str, int]]) -> list[str]:
    sizes: Counter[str] = Counter()
    for file in files:
        if file.path.startswith("data/"):
            sizes[file.path.split("/")[1]] += file.bytes
    tokenizers = list(by_language)
    head = ["config", "documents", "shards", "bytes"] + ([f"tokens ({token_label})"] if token_label else [])
    head += [f"{name} tokens (run)" for name in tokenizers]
    rows = []
    for plan in plans:
        row: list[Any] = [plan.name, plan.rows, plan.shards, sizes[plan.name]]
        row += [tokens.get(plan.name, 0)] if token_label else []
        row += [by_language[name].get(plan.name, "-") for name in tokenizers]
        rows.append(row)
    total: list[Any] = ["**total**", sum(p.rows for p in plans), sum(p.shards for p in plans), sum(sizes.values())]
    total += [sum(tokens.values())] if token_label else []
    total += [sum(by_language[name].values()) for name in tokenizers]
    return _table(head, rows + [total])


def _pipeline(summary: dict) -> list[str]:
    rows = []
    for stage in summary["stages"]:
        reads = ", ".join(s["stage"] + (".rejects" if s.get("rejects") else "") for s in stage.get("input") or []) or "its inputs"
        steps = ", ".join(f"{step['step']} `{step['fingerprint']}`" for step in stage.get("steps") or [])
        rows.append([stage["name"], stage.get("kind", ""), reads, stage["docs_in"], stage["docs_out"], steps])
    return _table(["stage", "kind", "reads", "documents in", "documents out", "steps (fingerprint)"], rows)


def _funnel(summary: dict, plans: list[ConfigPlan], by_language: bool) -> list[str]:
    stages = summary["stages"]
    lines = _table(["stage", "documents kept"], [[f"{stages[0]['name']} input", stages[0]["docs_in"]]]
                   + [[s["name"], s["docs_out"]] for s in stages])
    if by_language and len(plans) <= TOO_MANY_CONFIGS:
        lines += ["Documents of each config after each stage:", ""]
        lines += _table(["config", *(s["name"] for s in stages)],
                        [[plan.name, *(s.get("languages", {}).get(plan.name, 0) for s in stages)] for plan in plans])
    elif by_language:
        lines += ["Documents of each config after each stage:", ""]
        lines += [f"- {plan.name}: " + " → ".join(f"{s['name']} {s.get('languages', {}).get(plan.name, 0):,}" for s in stages)
                  for plan in plans] + [""]
    return lines


def _drops(summary: dict, plans: list[ConfigPlan], by_language: bool) -> list[str]:
    lines: list[str] = []
    names = {plan.name for plan in plans}
    for stage in summary["stages"]:
        counts = {**{f"skipped: {k}": v for k, v in (stage.get("skips") or {}).items()}, **(stage.get("drop_reasons") or {})}
        counts = {reason: n for reason, n in counts.items() if n}
        if not counts:
            continue
        lines += [f"**{stage['name']}** ({sum(counts.values()):,} documents)", ""]
        lines += _table(["reason", "documents"], sorted(([r, n] for r, n in counts.items()), key=lambda row: -row[1]))
        per_language = stage.get("drops_by_language") or {}
        if by_language and per_language:
            lines += [f"- {language}: " + ", ".join(f"{r} {n:,}" for r, n in sorted(reasons.items(), key=lambda i: -i[1]))
                      for language, reasons in sorted(per_language.items()) if language in names] + [""]
    return lines or ["No stage dropped documents.", ""]


def _columns(columns: list[Column]) -> list[str]:
    return _table(["column", "type", "description"], [[c.name, str(c.type), c.description] for c in columns])


def render(
    source: Source, plans: list[ConfigPlan], files: list[WrittenFile], columns: list[Column], *,
    languages: list[str], license: str, pretty_name: str, config_by: str | None,
    tokens: dict[str, int], token_label: str | None, url: str,
) -> str:
    """The whole card: YAML front matter, then the Markdown body."""
    summary = source.summary
    by_language = config_by == "language"
    stage = source.stage_summary or {}
    run_tokens = stage.get("tokens_by_language") or {} if by_language else {}
    meta = {key: value for key, value in front_matter(plans, languages, license, pretty_name).items() if value is not None}
    first = max(plans, key=lambda plan: plan.rows).name  # the example: the largest config
    body = [
        f"# {pretty_name}",
        "",
        f"Web documents made with fineflow {fineflow.__version__}: the output of stage "
        f"`{source.stage}`" + (f" of run `{summary['run_id']}` of pipeline `{summary.get('pipeline', '')}`" if summary else "")
        + f" (step fingerprint `{source.fingerprint}`), {'one config per value of `' + config_by + '`' if config_by else 'one config, `default`'}.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        *([f'documents = load_dataset("{url}", "{first}", split="train")  # this folder (the configs of this card)']
          if storage.is_local(url) else [
            "# where it was exported: the config's files (storage_options: the s3fs options, e.g. key, secret, client_kwargs)",
            f'documents = load_dataset("parquet", data_files="{url.rstrip("/")}/data/{first}/train-*.parquet", split="train")']),
        f'documents = load_dataset("<user>/<name>", "{first}", split="train")  # once uploaded to the Hub',
        "```",
        "",
        "## Configs",
        "",
        *_configs(plans, files, tokens, token_label, run_tokens),
        "## Columns",
        "",
        *_columns(columns),
    ]
    if summary:
        body += [
            "## How it was made",
            "",
            f"fineflow {fineflow.__version__}, run `{summary['run_id']}` ({summary.get('seconds', 0)} s). The pipeline as it ran "
            "is in `pipeline.yaml` and its charts in `report.html` beside this card; a step's fingerprint covers its code, "
            "parameters and inputs, so the same pipeline on the same inputs gives the same fingerprints.",
            "",
            *_pipeline(summary),
            "### Funnel",
            "",
            *_funnel(summary, plans, by_language),
            "### Why documents were dropped",
            "",
            *_drops(summary, plans, by_language),
        ]
        if summary.get("warnings"):
            body += ["### Warnings of the run", "", *(f"- {w}" for w in summary["warnings"]), ""]
    body += ["## Licence", "", f"`{license}`: the licence given when this folder was exported. The texts are web pages, "
             "each under its own terms; check them before you publish or train on them.", ""]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body)
