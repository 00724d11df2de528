"""What the tokenize stage adds to the run summary, its Prefect artifacts and the HTML report."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from fineflow.registry import Table
from fineflow.report import LAYOUT


def _artifact(step: dict[str, Any] | None, suffix: str) -> str | None:
    return next((url for url in (step or {}).get("artifacts", []) if url.endswith(suffix)), None)


def summary_fields(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    count, stats = steps["count"], steps["stats"]
    by_language: dict[str, dict[str, int]] = count.get("tokens", {})
    text_bytes, words = count.get("text_bytes", {}), count.get("words", {})
    fertility = {
        tokenizer: {
            language: {
                "tokens_per_word": round(tokens / words[language], 4) if words.get(language) else None,
                "bytes_per_token": round(text_bytes.get(language, 0) / tokens, 4) if tokens else None,
            }
            for language, tokens in languages.items()
        }
        for tokenizer, languages in by_language.items()
    }
    fields: dict[str, Any] = {
        "tokens": count.get("token_totals", {}),  # per tokenizer: what the run's funnel shows
        "tokens_by_language": by_language,
        "text_bytes_by_language": text_bytes,
        "words_by_language": words,
        "fertility": fertility,
        "drop_reasons": count.get("drop_reasons", {}),
        "reused_counts": count.get("reused_counts", {}),
        "top_domains": stats.get("top_domains", {}),
        "token_counts": _artifact(stats, "/token_counts.parquet"),
    }
    if "train" in steps:
        trained = steps["train"].get("trained", {})
        fields["trained_tokenizers"] = {
            name: {**info, "file": _artifact(steps["train"], f"/{name}.tokenizer.json")} for name, info in trained.items()
        }
    if "merge" in steps:
        merge = steps["merge"]
        fields["token_files"] = {
            "files": merge.get("token_files", 0),
            "tokens": sum(merge.get("written_tokens", {}).values()),
            "documents": sum(merge.get("written_documents", {}).values()),
            "tokens_by_cell": merge.get("written_tokens", {}),
            "data_args": _artifact(merge, "/data_args.txt"),
            "folder": merge["output"].rsplit("/", 1)[0] + "/artifacts",
        }
    return fields


def token_tables(summary: dict[str, Any]) -> list[Table]:
    """Tokens, bytes per token and tokens per word per language and tokenizer; the top domains."""
    rows = []
    for tokenizer, languages in summary.get("tokens_by_language", {}).items():
        for language, tokens in sorted(languages.items(), key=lambda item: -item[1]):
            ratios = summary.get("fertility", {}).get(tokenizer, {}).get(language, {})
            rows.append({"tokenizer": tokenizer, "language": language, "tokens": tokens,
                         "bytes per token": ratios.get("bytes_per_token"), "tokens per word": ratios.get("tokens_per_word")})
    tables = [Table(key="tokens", rows=rows or [{"tokenizer": "-", "language": "-", "tokens": 0}],
                    description=f"{summary['name']}: tokens per language and tokenizer (end-of-document tokens included)")]
    domains = [
        {"language": language, "domain": domain, **values}
        for language, entries in summary.get("top_domains", {}).items()
        for domain, values in entries.items()
    ]
    if domains:
        tables.append(Table(key="domains", rows=domains,
                            description=f"{summary['name']}: top domains per language by tokens; all groups in {summary.get('token_counts')}"))
    return tables


def figures(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    by_language = summary.get("tokens_by_language", {})
    if not by_language:
        return []
    languages = sorted({lang for values in by_language.values() for lang in values},
                       key=lambda lang: -max(values.get(lang, 0) for values in by_language.values()))
    tokens = go.Figure([go.Bar(name=name, x=languages, y=[values.get(lang, 0) for lang in languages])
                        for name, values in by_language.items()])
    tokens.update_layout(title=f"{summary['name']}: tokens per language, per tokenizer", barmode="group", **LAYOUT)
    fertility = summary.get("fertility", {})
    ratio = go.Figure([go.Bar(name=name, x=languages, y=[fertility.get(name, {}).get(lang, {}).get("bytes_per_token") for lang in languages])
                       for name in by_language])
    ratio.update_layout(title=f"{summary['name']}: UTF-8 bytes per token (higher: the tokenizer compresses the language better)",
                        barmode="group", **LAYOUT)
    return [("tokens-by-language", tokens), ("bytes-per-token", ratio)]
