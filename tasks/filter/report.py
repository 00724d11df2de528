"""What the filter stage adds to the run summary and to its Prefect artifacts."""

from __future__ import annotations

from typing import Any

from fineflow import storage
from fineflow.manifest import ARTIFACTS_DIR, step_folder_of
from fineflow.registry import Table
from fineflow.tasks.filter import wordlists


def summary_fields(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    decide = steps["decide"]
    fields = {key: decide[key] for key in ("drop_reasons", "drops_by_language") if key in decide}
    built = steps.get(wordlists.LISTS_STEP)
    if built and "wordlist_words" in built:  # precision filtering's wordlists, built from the run's documents
        examples = built.get("wordlist_examples", {})
        fields["precision_wordlists"] = {
            language: {
                "words": words,
                "documents": built.get("wordlist_documents", {}).get(language, 0),
                "examples": sorted(examples.get(language, {}), key=lambda w: (-examples[language][w], w)),
            }
            for language, words in built["wordlist_words"].items()
        }
        fields["precision_wordlists_at"] = storage.join(step_folder_of(built["output"]), ARTIFACTS_DIR)
    return fields


def drop_tables(summary: dict[str, Any]) -> list[Table]:
    """Two tables: documents dropped per reason, and kept/dropped per language with its top reasons."""
    reasons = summary.get("drop_reasons", {})
    total = max(summary["docs_in"], 1)
    by_reason = Table(
        key="drop-reasons",
        rows=[
            {"reason": reason, "documents": count, "share of input": f"{100 * count / total:.1f}%"}
            for reason, count in sorted(reasons.items(), key=lambda item: -item[1])
        ]
        or [{"reason": "-", "documents": 0, "share of input": "0%"}],
        description=f"{summary['name']}: why documents were dropped; rejects at {summary.get('rejects')}",
    )
    by_language = summary.get("drops_by_language", {})
    kept = summary.get("languages", {})
    rows = []
    for lang in sorted(set(by_language) | set(kept), key=lambda code: -(kept.get(code, 0) + sum(by_language.get(code, {}).values()))):
        dropped = by_language.get(lang, {})
        n_dropped = sum(dropped.values())
        top = sorted(dropped.items(), key=lambda item: -item[1])[:3]
        rows.append(
            {
                "language": lang,
                "kept": kept.get(lang, 0),
                "dropped": n_dropped,
                "drop rate": f"{100 * n_dropped / max(kept.get(lang, 0) + n_dropped, 1):.0f}%",
                "top reasons": ", ".join(f"{r}={n}" for r, n in top) or "-",
            }
        )
    languages = Table(
        key="languages",
        rows=rows or [{"language": "-", "kept": 0, "dropped": 0, "drop rate": "-", "top reasons": "-"}],
        description=f"{summary['name']}: documents kept and dropped per language",
    )
    return [by_reason, languages, *precision_tables(summary)]


def _rule_drops(summary: dict[str, Any], rule: str) -> dict[str, int]:
    return {
        lang: sum(n for reason, n in reasons.items() if reason.startswith(f"{rule}:"))
        for lang, reasons in summary.get("drops_by_language", {}).items()
    }


def precision_tables(summary: dict[str, Any]) -> list[Table]:
    """Precision filtering per language: its wordlist (when built in the run) and what it dropped."""
    built = summary.get("precision_wordlists", {})
    dropped = {lang: n for lang, n in _rule_drops(summary, "precision").items() if n}
    if not built and not dropped:
        return []
    rows = [
        {
            "language": lang,
            "wordlist words": built[lang]["words"] if lang in built else "(file)",
            "documents (wordlist)": built[lang]["documents"] if lang in built else "-",
            "dropped": dropped.get(lang, 0),
            "kept": summary.get("languages", {}).get(lang, 0),
            "example words": ", ".join(built[lang]["examples"][:5]) if lang in built else "-",
        }
        for lang in sorted(set(built) | set(dropped))
    ]
    where = summary.get("precision_wordlists_at")
    return [
        Table(
            key="precision",
            rows=rows,
            description=f"{summary['name']}: precision filtering per language (no URL evidence and no high-affinity word: dropped)"
            + (f"; wordlists built from the run at {where}" if where else ""),
        )
    ]


def figures(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """Precision filtering's wordlist sizes."""
    import plotly.graph_objects as go

    from fineflow.report import LAYOUT

    charts = []  # (drops per language and reason: the report draws them for every stage, fineflow.report)
    built = summary.get("precision_wordlists", {})
    if built:
        languages = sorted(built)
        chart = go.Figure(go.Bar(
            x=languages, y=[built[lang]["words"] for lang in languages],
            text=[", ".join(built[lang]["examples"][:3]) for lang in languages], textposition="outside",  # visible examples
            hovertext=[", ".join(built[lang]["examples"]) for lang in languages],
        ))
        chart.update_layout(title=f"{summary['name']}: high-affinity words per language (precision wordlists built in the run)",
                            xaxis_title="language", yaxis_title="words", **LAYOUT)
        charts.append(("precision-wordlists", chart))
    return charts
