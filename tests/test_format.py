"""The format stage: each formatter's exact output on hand-made texts (datatrove's behaviour,
checked against datatrove itself on every web-small document by bench/format_bench.py), the
step's columns, rejects and counts, and the stale text-derived columns a rewrite drops."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from fineflow import registry
from fineflow.documents import DOCUMENT_SCHEMA
from fineflow.input_schemas import InputSchemaError, check_columns
from fineflow.steps import Source, StageInputs, run_shard
from fineflow.tasks.format import formatters
from fineflow.tasks.format.config import FormatStage
from fineflow.tasks.format.plan import build_params
from fineflow.tasks.format.step import Chain, changed_span


def run(text: str, *entries) -> tuple[str, dict, str | None, list[str]]:
    config = FormatStage.model_validate({"stage": "format", "formatters": list(entries)})
    new, changed, counts, reason = Chain(build_params(config)["formatters"]).run(text)
    return new, counts, reason, [name for name, *_ in changed]


def test_pii_replaces_emails_in_turn_and_public_ips_only():
    text = ("Mail ann@corp.example.net, bob.smith+x@mail.example.com or [carol@x.io]. "
            "Servers 8.8.8.8 and 1.1.1.1 are public; 10.0.0.1, 127.0.0.1, 192.168.1.20 and 169.254.1.1 are not. 300.1.2.3")
    new, counts, reason, by = run(text, "pii")
    assert new == (
        "Mail email@example.com, firstname.lastname@example.org or [email@example.com]. "
        "Servers 22.214.171.124 and 126.96.36.199 are public; 10.0.0.1, 127.0.0.1, 192.168.1.20 and 169.254.1.1 are not. "
        "300.1.2.3"  # "00.1.2.3" matches the pattern but is no address (leading zeros): it stays
    )
    assert counts == {"pii_emails": 3, "pii_ips": 2, "pii_phones": 0} and reason is None and by == ["pii"]
    # the turn restarts at each document: a second document's first address is the first replacement again
    assert run("x@y.com", "pii")[0] == "email@example.com"
    assert run("203.0.113.9 then 9.9.9.9", "pii")[0] == "203.0.113.9 then 22.214.171.124"  # documentation range stays


def test_pii_matches_datatrove_patterns_on_edges():
    # IPv4 has no word boundary in datatrove's pattern: "1234.5.6.7" holds the address 234.5.6.7
    assert run("v1234.5.6.7", "pii")[0] == "v122.214.171.124"
    # a byte above 255 is read as its first two digits, as datatrove's alternation does
    assert run("8.8.8.256", "pii")[0] == "22.214.171.1246"
    assert run("no pii here: a@b, @x.com, 1.2.3", "pii") == ("no pii here: a@b, @x.com, 1.2.3", {"pii_emails": 0, "pii_ips": 0, "pii_phones": 0}, None, [])


def test_pii_options_masks_ipv6_phones_and_max_matches():
    text = "ann@corp.example.net 8.8.8.8 2606:4700:4700::1111 fe80::1 at 10:30:00, call (415) 555-2671 or 415.555.2672"
    new, counts, reason, _ = run(text, {"name": "pii", "mode": "mask", "ipv6": True, "phones": True})
    assert new == ("|||EMAIL_ADDRESS||| |||IP_ADDRESS||| |||IP_ADDRESS||| fe80::1 at 10:30:00, "
                   "call |||PHONE_NUMBER||| or |||PHONE_NUMBER|||")
    assert counts == {"pii_emails": 1, "pii_ips": 2, "pii_phones": 2} and reason is None
    assert run("2606:4700:4700::1111", {"name": "pii", "ipv6": True})[0] == "2001:db8::1"
    assert run("a@b.com c@d.com", {"name": "pii", "max_matches": 1})[2] == "format:pii_matches"
    assert run("a@b.com c@d.com", {"name": "pii", "max_matches": 2})[2] is None
    assert run("a@b.com c@d.com", {"name": "pii", "email_replacements": ["x@example.com"]})[0] == "x@example.com x@example.com"
    with pytest.raises(ValidationError, match="max_matches"):
        FormatStage.model_validate({"stage": "format", "formatters": [{"name": "pii", "max_matches": -1}]})
    with pytest.raises(ValidationError, match="at least one"):
        FormatStage.model_validate({"stage": "format", "formatters": [{"name": "pii", "emails": False, "ips": False}]})


def test_ftfy_fixes_encoding_and_controls_and_leaves_style_alone():
    assert run("The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.", "ftfy")[0] == "The Mona Lisa doesn’t have eyebrows."
    assert run("cafÃ© x\x80y", "ftfy")[0] == "café x€y"  # mojibake, a C1 control
    assert run("a\x00b\x07c\x1b[31mred\x1b[0m", "ftfy")[0] == "abcred"  # control characters, terminal escapes
    kept = "ﬁle ，“quoted” Ｆｕｌｌ\r\nline"  # ligature, full-width, curly quotes, CRLF: FineWeb2 leaves them
    assert run(kept, "ftfy") == (kept, {}, None, [])
    assert run("l&eacute;ger", "ftfy")[0] == "léger" and run("<b>l&eacute;ger</b>", "ftfy")[0] == "<b>l&eacute;ger</b>"


def test_symbol_lines_replaces_runs_of_table_debris():
    text = "Name | Age\n|\n| |\nAnn | 3\n  \n|||\nend\n"
    new, counts, _, by = run(text, "symbol_lines")
    assert new == "Name | Age\n\n\nAnn | 3\n  \n\n\nend"  # each run becomes one "\n"; a blank line is no symbol line
    assert counts == {"symbol_lines": 3} and by == ["symbol_lines"]
    # like datatrove, every text is rejoined with "\n" (a CRLF or a final line break changes) unless told not to
    assert run("a\r\nb\n", "symbol_lines")[0] == "a\nb"
    assert run("a\r\nb\n", {"name": "symbol_lines", "normalize_line_breaks": False})[0] == "a\r\nb\n"
    assert run("a\n-\n", {"name": "symbol_lines", "symbols": ["-"], "replace_with": ""})[0] == "a"
    with pytest.raises(ValidationError, match="one character"):
        FormatStage.model_validate({"stage": "format", "formatters": [{"name": "symbol_lines", "symbols": ["||"]}]})


def test_the_chain_applies_in_order_and_config_is_checked():
    # "|\x07|" becomes a symbol line only once ftfy has removed its control character
    new, counts, _, by = run("Mail ann@x.com, Ã©tÃ©\n|\x07|\nbye", "ftfy", "pii", "symbol_lines")
    assert new == "Mail email@example.com, été\n\n\nbye" and by == ["ftfy", "pii", "symbol_lines"]
    assert run("|\x07|", "symbol_lines", "ftfy")[0] == "||"
    assert counts == {"pii_emails": 1, "pii_ips": 0, "pii_phones": 0, "symbol_lines": 1}
    with pytest.raises(ValidationError, match="listed twice"):
        FormatStage.model_validate({"stage": "format", "formatters": ["pii", "pii"]})
    with pytest.raises(ValidationError, match="unknown formatter 'nope'"):
        FormatStage.model_validate({"stage": "format", "formatters": ["nope"]})
    with pytest.raises(ValidationError, match="extra"):
        FormatStage.model_validate({"stage": "format", "formatters": [{"name": "ftfy", "fix_everything": True}]})
    assert set(formatters.registered()) >= {"ftfy", "pii", "symbol_lines"}
    assert changed_span("abcdef", "abXYef") == 2 and changed_span("abc", "abc") == 0 and changed_span("ab", "aXb") == 1


def _shard(path, rows: list[dict], extra: dict[str, pa.Array]) -> None:
    base = {"url": "https://x.example/", "language": "en", "language_score": 0.9, "source": "x@0", "warc_record_id": None,
            "content_type": "text/html", "charset": "utf-8", "crawl_date": None}
    table = pa.Table.from_pylist([{**base, **row} for row in rows], schema=DOCUMENT_SCHEMA)
    for name, values in extra.items():
        table = table.append_column(name, values)
    pq.write_table(table, path)


def test_the_stage_drops_stale_text_derived_columns_and_counts_changes(tmp_path):
    folder = tmp_path / "upstream"
    folder.mkdir()
    rows = [
        {"id": "a", "text": "write to ann@x.com or bob@y.org", "language": "en"},
        {"id": "b", "text": "nothing to change", "language": "de"},
        {"id": "c", "text": "a@b.com c@d.com e@f.com", "language": "en"},
        {"id": "d", "text": None},
    ]
    n = len(rows)
    _shard(folder / "part-00000.parquet", rows, {
        "n_tokens_gpt2": pa.array([9] * n, pa.int64()), "quality_edu": pa.array([0.5] * n, pa.float64()),
        "dup_cluster_size": pa.array([2] * n, pa.int32()), "pii_emails": pa.array([7] * n, pa.int32()),
    })
    kind = registry.get("format")
    assert kind.rewrites_text and {"n_tokens_*", "quality_*"} <= set(registry.stale_text_columns())
    config = FormatStage.model_validate({"stage": "format", "formatters": ["ftfy", {"name": "pii", "max_matches": 2}, "symbol_lines"]})
    inputs = StageInputs((Source("upstream", "up", str(folder), 1),))
    (plan,) = kind.plan(config, str(tmp_path / "root"), "format", inputs)
    assert plan.fingerprint.components["inputs"]["stale_columns"] == list(registry.stale_text_columns())
    result = run_shard(plan.function, plan.shards[0], plan.params, plan.location)

    kept = pq.read_table(plan.location.shard_url(0))
    assert "n_tokens_gpt2" not in kept.column_names and "quality_edu" not in kept.column_names
    assert kept.column_names[:3] == ["id", "url", "text"] and "dup_cluster_size" in kept.column_names
    assert kept.schema.metadata is None or b"fineflow.stale_columns_dropped" not in kept.schema.metadata
    docs = {row["id"]: row for row in kept.to_pylist()}
    assert docs["a"]["text"] == "write to email@example.com or firstname.lastname@example.org"
    assert docs["a"]["formatted_by"] == ["pii"] and docs["a"]["pii_emails"] == 2  # replaces the input's stale count
    assert docs["b"]["formatted_by"] == [] and docs["b"]["pii_emails"] == 0 and docs["d"]["text"] is None
    rejects = pq.read_table(plan.location.rejects_url(0)).to_pylist()
    assert [(r["id"], r["drop_reason"]) for r in rejects] == [("c", "format:pii_matches")]
    assert rejects[0]["text"] == "email@example.com firstname.lastname@example.org email@example.com"  # never the raw PII
    assert "n_tokens_gpt2" not in rejects[0]
    import duckdb
    from test_dag import _read_everywhere

    for folder, count in ((plan.location.data_folder, 3), (plan.location.rejects_folder, 1)):  # as a summary names them
        assert _read_everywhere(folder, tmp_path / "hf") == {"datasets": count, "polars": count}
        assert duckdb.sql(f"select count(*) from read_parquet('{folder}/**/*.parquet')").fetchall()[0][0] == count

    stats = result["stats"]
    assert stats["stale_columns_dropped"] == {"n_tokens_gpt2": n, "quality_edu": n}
    # kept documents only (the rejected one counts under its reason)
    assert stats["formatted"] == {"pii": {"en": {"documents": 1, "chars": len("ann@x.com") + len("bob@y.org")}}}
    assert stats["drop_reasons"] == {"format:pii_matches": 1}

    from fineflow.summary import stage_summary
    from fineflow.tasks.format import report

    step = {"step": "format", "shards": 1, "cached_shards": 0, "output": plan.location.data_folder, **stats,
            "docs_out": stats["docs_out"], "rejected": stats["rejects"]}
    summary = stage_summary(kind, "format", [step], 1.0)
    assert summary["stale_columns_dropped"] == {"n_tokens_gpt2": n, "quality_edu": n}
    by_formatter, by_language = report.format_tables(summary)
    assert by_formatter.rows[0]["formatter"] == "pii" and by_formatter.rows[0]["documents changed"] == 1
    assert by_formatter.rows[1]["formatter"] == "dropped: format:pii_matches"
    assert "n_tokens_gpt2" in by_formatter.description
    assert by_language.rows == [{"formatter": "pii", "language": "en", "documents changed": 1, "of kept in language": 2,
                                 "characters changed": stats["formatted"]["pii"]["en"]["chars"]}]
    assert [chart for chart, _ in report.figures(summary)] == ["formatters"]
    # The report's examples of changes: before/after around the change, the addresses masked on both sides.
    (example,) = summary["change_examples"]["pii"]
    assert (example["id"], example["language"]) == ("a", "en")
    assert example["before"] == "write to [email] or [email]" == example["after"]
    from fineflow.report import build_report

    page = build_report({"run_id": "r", "stages": [{**summary, "kind": "format", "name": "format"}], "warnings": []})
    assert 'id="changes-format"' in page and "ann@x.com" not in page and "example.org" not in page


def test_a_text_that_is_not_utf8_is_a_reject_with_its_detail(tmp_path):
    folder = tmp_path / "upstream"
    folder.mkdir()
    _shard(folder / "part-00000.parquet", [{"id": "ok", "text": "a@b.com"}, {"id": "bad", "text": "x"}], {})
    table = pq.read_table(folder / "part-00000.parquet")
    broken = pa.array([b"a@b.com", b"caf\xc3 \xff"], pa.binary()).cast(pa.string(), safe=False)
    pq.write_table(table.set_column(table.schema.get_field_index("text"), "text", broken), folder / "part-00000.parquet")
    config = FormatStage.model_validate({"stage": "format", "formatters": ["pii"]})
    (plan,) = registry.get("format").plan(config, str(tmp_path / "root"), "format", StageInputs((Source("up", "up", str(folder), 1),)))
    result = run_shard(plan.function, plan.shards[0], plan.params, plan.location)
    assert result["stats"]["drop_reasons"] == {"format:undecodable": 1}
    (reject,) = pq.read_table(plan.location.rejects_url(0)).to_pylist()
    assert reject["id"] == "bad" and "not valid UTF-8" in reject["drop_detail"] and "\ufffd" in reject["text"]
    assert pq.read_table(plan.location.shard_url(0)).column("text").to_pylist() == ["email@example.com"]


def test_a_stage_that_does_not_rewrite_keeps_every_column_and_a_missing_one_names_the_rewrite():
    assert not registry.get("tokenize").rewrites_text
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pytest.raises(InputSchemaError, match="n_tokens_gpt2 is derived from the text"):
        check_columns("rebalance", [("n_tokens_gpt2", "tokens_column")], [("format", schema)])
    with pytest.raises(InputSchemaError) as error:
        check_columns("rebalance", [("url_x", "column")], [("format", schema)])
    assert "derived from the text" not in str(error.value)


UPPER_SOURCE = '''
"""Upper-cases a word: a formatter fineflow does not ship."""
from typing import Literal

from fineflow.tasks.format.formatter import Applied, Formatter, FormatterOptions


class UpperOptions(FormatterOptions):
    name: Literal["upper"] = "upper"
    word: str = "fineflow"


def apply(word, text):
    return Applied(text=text.replace(word, word.upper()), counts={"upper_words": text.count(word)})


FORMATTER = Formatter(name="upper", options=UpperOptions, load=lambda options: options["word"], apply=apply,
                      counts=("upper_words",), libraries=("pyarrow",))
'''


def test_a_formatter_of_another_module_is_configured_by_its_own_options(tmp_path, monkeypatch):
    (tmp_path / "fineflow_upper_formatter.py").write_text(UPPER_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = {"name": "upper", "module": "fineflow_upper_formatter", "word": "data"}
    new, counts, _, by = run("big data, more data a@b.com", entry, "pii")
    assert new == "big DATA, more DATA email@example.com" and by == ["upper", "pii"]
    assert counts["upper_words"] == 2 and counts["pii_emails"] == 1
    config = FormatStage.model_validate({"stage": "format", "formatters": [entry]})
    assert config.model_dump(mode="json")["formatters"] == [entry]
    with pytest.raises(ValidationError, match="extra"):
        FormatStage.model_validate({"stage": "format", "formatters": [{**entry, "words": 3}]})
    with pytest.raises(ValidationError, match="defines formatter 'upper', not 'lower'"):
        FormatStage.model_validate({"stage": "format", "formatters": [{**entry, "name": "lower"}]})


def test_a_kind_that_rewrites_in_some_modes_names_a_function_of_its_config(tmp_path, monkeypatch):
    """``rewrites_text="module:function"``: a kind whose text is rewritten only in some modes
    (decontamination's remove_paragraphs) drops the stale columns only in those."""
    import dataclasses

    (tmp_path / "fineflow_mode_probe.py").write_text("def rewrites(config):\n    return len(config.formatters) > 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    kind = dataclasses.replace(registry.get("format"), rewrites_text="fineflow_mode_probe:rewrites")
    inputs = StageInputs((Source("upstream", "up", str(tmp_path / "in"), 1),))

    def shard_of(*names: str) -> dict:
        config = FormatStage.model_validate({"stage": "format", "formatters": list(names)})
        return kind.plan(config, str(tmp_path / "root"), "format", inputs)[0].shards[0]

    assert "drop_columns" not in shard_of("pii")
    assert shard_of("pii", "ftfy")["drop_columns"] == list(registry.stale_text_columns())


def test_email_search_equals_the_pattern_and_stays_linear_on_hostile_runs():
    """``email_matches`` is ``EMAIL.finditer`` without its quadratic rescans (checked on random
    strings built from the pattern's hard cases); a 300 kB run that the plain pattern takes
    minutes over is found in well under a second."""
    import random
    import time

    from fineflow.tasks.format import pii

    rnd = random.Random(7)
    pieces = list("ab1.-@ _[]:é9x!+ß\n") + ["..", "com", "255.", "[1.2.3.4]", "[a-b:]", "a@b.c", "@x.org"]
    for _ in range(5000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randrange(60)))
        assert [m.span() for m in pii.email_matches(text)] == [m.span() for m in pii.EMAIL.finditer(text)], text
    started = time.perf_counter()
    assert run("ab-" * 100_000, "pii")[0] == "ab-" * 100_000
    assert run("ab-" * 100_000 + "@x.com", "pii")[0] == "email@example.com"
    assert time.perf_counter() - started < 10
