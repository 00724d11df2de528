"""The translate QC evaluation (bench/translate_qc_eval.py and its modules): the Gale–Church
aligner, the corruptions' stated properties, the Wilson interval, the fixed halves, the
handbook's paragraphs, and a small end-to-end run through the stage's real steps and a real
HTTP server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import translate_align as align  # noqa: E402
import translate_corrupt as corrupt  # noqa: E402
import translate_pairs  # noqa: E402
import translate_qc_eval  # noqa: E402
from translate_align import Document, Paragraph  # noqa: E402


def test_the_aligner_recovers_a_known_partition():
    segments = ["The first sentence is short.", "The second one is a good deal longer than the first one was.",
                "The third sentence is also here, at the end."]
    # Five target sentences; by length the groups are [1], [2, 3], [4, 5].
    target = ("La première phrase est courte. La deuxième est bien plus longue. Que la première, de loin. "
              "La troisième phrase est ici. Tout à la fin.")
    assert align.align(segments, target, "fr") == [
        "La première phrase est courte.", "La deuxième est bien plus longue. Que la première, de loin.",
        "La troisième phrase est ici. Tout à la fin."]
    # Fewer sentences than segments: the translator joined two, the aligner splits at the clause.
    joined = ("La première phrase est courte, la deuxième est bien plus longue que la première. "
              "La troisième phrase est ici, tout à la fin.")
    groups = align.align(segments, joined, "fr")
    assert groups == ["La première phrase est courte,", "la deuxième est bien plus longue que la première.",
                      "La troisième phrase est ici, tout à la fin."]
    assert all(g.strip() for g in groups)


def test_the_aligner_fails_cleanly_when_no_partition_fits():
    with pytest.raises(align.AlignmentError, match="target units"):
        align.align(["One sentence here.", "Another one here.", "And a third."], "ab", "fr")
    # Two units whose lengths cannot match the segments' at any level: |delta| over the bound.
    with pytest.raises(align.AlignmentError, match="delta"):
        align.align(["Short.", "x " * 150 + "end."], "X" * 300 + ". Y.", "fr")
    assert align.align([], "anything", "fr") == []


def _document() -> Document:
    paragraphs = []
    sources = [["The package system is simple.", "It has two kinds of packages in it."],
               ["Binary packages hold programs that run.", "Source packages hold their code.", "Both are signed."],
               ["A heading"]]
    targets = ["Le système de paquets est simple. Il contient deux sortes de paquets.",
               "Les paquets binaires contiennent des programmes. Les paquets sources contiennent leur code. Les deux sont signés.",
               "Un titre"]
    for line, (segments, target) in enumerate(zip(sources, targets)):
        paragraphs.append(Paragraph(" ".join(segments), target, segments, align.align(segments, target, "fr"), line))
    return Document("doc", paragraphs)


def _nonempty(result: corrupt.Corrupted, document: Document) -> None:
    for paragraph, found in zip(document.paragraphs, result.translations):
        assert len(found) == len(paragraph.segments) and all(t.strip() for t in found)


def test_corruptions_keep_every_segment_non_empty_at_their_stated_size():
    document = _document()
    human = sum(len(t) for p in document.paragraphs for t in p.translations)
    cut = corrupt.cut_third(document, "fr")
    _nonempty(cut, document)
    assert -0.45 < cut.change < -0.25  # about a third of the characters gone
    first = " ".join(cut.translations[0])
    assert document.paragraphs[0].target.startswith(first) and len(first) < len(document.paragraphs[0].target)

    dropped = corrupt.drop_sentence(document, "fr")
    _nonempty(dropped, document)
    # sentences 1, 2 | 3, 4, 5 | 6: the 3rd (paragraph 2's first) goes; the 6th is its paragraph's last
    assert "binaires" not in " ".join(dropped.translations[1]) and "sources" in " ".join(dropped.translations[1])
    assert dropped.translations[0] == document.paragraphs[0].translations
    assert dropped.translations[2] == ["Un titre"]

    copied = corrupt.copy_source(document, "fr")
    assert copied.translations == [p.segments for p in document.paragraphs]

    looped = corrupt.loop(document, "fr")
    _nonempty(looped, document)
    longest = looped.translations[1][0]  # "Binary packages hold programs that run." is the longest segment
    assert len(longest) >= 3 * len(document.paragraphs[1].translations[0])
    assert longest.startswith("Les paquets binaires") and longest.count("Les paquets binaires") >= 3
    assert looped.chars > human

    truncated = corrupt.truncate(document, "fr")
    _nonempty(truncated, document)
    cut_segment = truncated.translations[1][0]
    assert document.paragraphs[1].translations[0].startswith(cut_segment)
    assert len(cut_segment) <= len(document.paragraphs[1].translations[0]) * 0.6 and cut_segment[-1].isalpha()


def test_other_language_aligns_the_other_translation_or_skips():
    document = _document()
    other = ["Das Paketsystem ist einfach. Es enthält zwei Arten von Paketen.",
             "Binärpakete enthalten Programme. Quellpakete enthalten ihren Code. Beide sind signiert.", "Eine Überschrift"]
    result = corrupt.other_language_text(document, "fr", [("de", text) for text in other])
    _nonempty(result, document)
    assert result.translations[0] == ["Das Paketsystem ist einfach.", "Es enthält zwei Arten von Paketen."]
    with pytest.raises(corrupt.Skip):
        corrupt.other_language_text(document, "fr", [("de", other[0]), None, ("de", other[2])])
    assert corrupt.other_languages("fr")[0] == "de" and corrupt.other_languages("ja")[0] == "fr"


def test_truncate_and_drop_sentence_skip_documents_they_cannot_damage():
    # headings only: no segment ends a sentence, no paragraph has two sentences
    segments = [["6.2."], ["Installing Packages"]]
    targets = ["6.2.", "Installer des paquets"]
    document = Document("toc", [Paragraph(s[0], t, s, [t], line) for line, (s, t) in enumerate(zip(segments, targets))])
    with pytest.raises(corrupt.Skip, match="ends a sentence"):
        corrupt.truncate(document, "fr")
    with pytest.raises(corrupt.Skip, match="no sentence to drop"):
        corrupt.drop_sentence(document, "fr")
    # the longest segment is a heading: the cut goes to the longest one that ends a sentence
    mixed = _document()
    mixed.paragraphs[2] = Paragraph("A very long heading without any stop at its end", "Un très long titre sans point final",
                                    ["A very long heading without any stop at its end"], ["Un très long titre sans point final"], 2)
    cut = corrupt.truncate(mixed, "fr")
    assert cut.translations[2] == ["Un très long titre sans point final"] and cut.translations[1][0] != mixed.paragraphs[1].translations[0]


def test_a_cut_inside_a_sentence_is_an_alignment_failure():
    # the translator joined two sentences that the stage (sentences mode) sends apart: the aligner
    # can only cut the translation mid-sentence, which measures the aligner, not the translation
    with pytest.raises(align.SplitInsideSentence):
        align.build_document("d", [(0, "The first sentence is here. The second one follows it.",
                                    "La première phrase est ici et la seconde la suit.")], "fr", "sentences")


def test_a_segment_left_as_it_is_is_not_a_human_translation():
    # the handbook's cs/pl/nl captions: the label translated, the title left in English
    assert align.untranslated("Rebuilding a package", "Rebuilding a package")
    assert not align.untranslated("Rebuilding a package", "Reconstruire un paquet")
    assert not align.untranslated("apt-get 1.2.3", "apt-get 1.2.3")  # short, code: the stage keeps these too


def test_spaceless_corruptions_cut_at_characters():
    segments = ["The first sentence is here.", "The second sentence is here too."]
    target = "最初の文はここにあります。二番目の文もここにあります。"
    document = Document("ja", [Paragraph(" ".join(segments), target, segments, align.align(segments, target, "ja"), 0)])
    cut = corrupt.cut_third(document, "ja")
    _nonempty(cut, document)
    assert "".join(cut.translations[0]) == target[: round(len(target) * 2 / 3)]
    assert corrupt.repartition("abc", [5, 5, 5], "en") == ["a", "b", "c"]
    with pytest.raises(corrupt.Skip):
        corrupt.repartition("ab", [5, 5, 5], "en")


def test_wilson_interval():
    low, high = translate_qc_eval.wilson(0, 59)
    assert low == 0.0 and high == pytest.approx(1.959964**2 / (59 + 1.959964**2), rel=1e-6)
    low, high = translate_qc_eval.wilson(5, 10)
    assert low == pytest.approx(1 - high) and low == pytest.approx(0.2366, abs=1e-4)
    assert translate_qc_eval.wilson(0, 0) == (0.0, 1.0)


def test_the_halves_are_fixed_by_the_name():
    assert [align.half_of(n) for n in ("packaging-system", "sect.apt-get", "index")] == ["evaluation", "evaluation", "calibration"]
    names = [f"page-{i}" for i in range(400)]
    assert 150 < sum(align.half_of(n) == "calibration" for n in names) < 250


def test_handbook_paragraphs_and_language_codes():
    html = (b'<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>Chapter 5</title>'
            b'</head><body><div id="banner"><a>Get the book</a></div><h1>Packaging</h1><p>Text with <code>dpkg</code> in it.</p>'
            b'<ul><li><p>Item one.</p></li><li>Item <em>two</em></li></ul><pre>apt install x</pre>'
            b'<table><tr><td>cell</td><td>other</td></tr></table><ul class="docnav"><li>Prev</li></ul></body></html>')
    assert translate_pairs.paragraphs(html) == ["Chapter 5", "Packaging", "Text with dpkg in it.", "Item one.", "Item two",
                                                "cell", "other"]
    assert [translate_pairs.fineflow_code(t) for t in ("zh-CN", "zh-TW", "nb-NO", "pt-BR", "fr-FR")] == [
        "zh", "zh-Hant", "no", "pt", "fr"]


ENGLISH = [
    ["The Debian project builds a free operating system.", "Volunteers maintain thousands of packages."],
    ["Every stable release receives security updates for several years.", "Users upgrade from one release to the next."],
    ["The package manager installs software and resolves its dependencies automatically."],
    ["Administrators read the documentation before they change the configuration of a server."],
]
FRENCH = [
    "Le projet Debian construit un système d'exploitation libre. Des bénévoles maintiennent des milliers de paquets.",
    "Chaque version stable reçoit des mises à jour de sécurité pendant plusieurs années. Les utilisateurs passent d'une version à la suivante.",
    "Le gestionnaire de paquets installe les logiciels et résout automatiquement leurs dépendances.",
    "Les administrateurs lisent la documentation avant de modifier la configuration d'un serveur.",
]
GERMAN = [
    "Das Debian-Projekt entwickelt ein freies Betriebssystem. Freiwillige pflegen Tausende von Paketen.",
    "Jede stabile Version erhält mehrere Jahre lang Sicherheitsaktualisierungen. Die Benutzer aktualisieren von einer Version zur nächsten.",
    "Der Paketmanager installiert Software und löst ihre Abhängigkeiten automatisch auf.",
    "Administratoren lesen die Dokumentation, bevor sie die Konfiguration eines Servers ändern.",
]


def test_a_small_run_through_the_stage_ends_with_the_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FINEFLOW_HOME", str(tmp_path / "home"))
    for target, texts in (("fr", FRENCH), ("de", GERMAN)):
        folder = tmp_path / "pairs" / f"en-{target}"
        folder.mkdir(parents=True)
        for doc in range(3):  # three documents of two paragraphs (the same text: the names differ)
            lines = [doc % 4, (doc + 1) % 4]
            (folder / f"doc{doc}.src.txt").write_text("\n".join(" ".join(ENGLISH[i]) for i in lines) + "\n", encoding="utf-8")
            (folder / f"doc{doc}.tgt.txt").write_text("\n".join(texts[i] for i in lines) + "\n", encoding="utf-8")
        # an untranslated paragraph is dropped by the filter
        (folder / "doc0.src.txt").write_text((folder / "doc0.src.txt").read_text() + "Left in English.\n", encoding="utf-8")
        (folder / "doc0.tgt.txt").write_text((folder / "doc0.tgt.txt").read_text() + "Left in English.\n", encoding="utf-8")
    assert translate_qc_eval.main([str(tmp_path / "pairs"), "--half", "all", "--min-docs", "1", "--jobs", "1",
                                   "--modes", "sentences,windows", "--corruptions", "copy_source,other_language"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    figures = json.loads(last)
    assert set(figures) == {"en-fr", "en-de"}
    for pair in figures.values():
        assert set(pair) == {"sentences", "windows"}
        for mode in pair.values():
            assert mode["documents"] == 3 and 0 <= mode["false_reject_rate"] <= 1
            assert set(mode["detection_rate"]) == {"copy_source", "other_language"}
            # the stage's copy and language checks see a copy and a German "French" (and vice versa)
            assert mode["detection_rate"] == {"copy_source": 1.0, "other_language": 1.0}
    # too few documents: no figures, the pair is still counted
    assert translate_qc_eval.main([str(tmp_path / "pairs"), "--half", "all", "--min-docs", "4", "--jobs", "1",
                                   "--modes", "sentences", "--pairs", "en-fr"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {}
    # pages cut into documents of one kept paragraph: six documents
    assert translate_qc_eval.main([str(tmp_path / "pairs"), "--half", "all", "--min-docs", "4", "--jobs", "1", "--modes",
                                   "sentences", "--pairs", "en-fr", "--corruptions", "copy_source", "--max-paragraphs", "1"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["en-fr"]["sentences"]["documents"] == 6


def test_a_script_subtagged_target_passes_the_language_check():
    # lid.176 labels Traditional Chinese "zh": the stage's language check must accept it for zh-Hant
    from translate_qc_stage import Judge

    pairs = [("Debian is a free operating system.", "Debian 是一個自由的作業系統。"),
             ("Its packages are built by volunteers around the world.", "它的套件由世界各地的志願者建置。")]
    judge = Judge()
    try:
        found = judge.judge("zh-Hant", "sentences", "zh-hant-check", [("d", " ".join(s for s, _ in pairs), pairs)])
    finally:
        judge.close()
    verdict = found["verdicts"]["d"]
    assert verdict["translate_detected"] == "zh" and verdict["language_score"] > 0.5 and verdict["reason"] is None
