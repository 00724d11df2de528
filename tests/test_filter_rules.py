"""Known-answer tests: every filter rule on small hand-made texts, one just inside and one just
outside its threshold (FineWeb's thresholds, strict comparisons unless a profile says otherwise)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fineflow.tasks.filter import c4, fineweb_quality, gopher_quality, gopher_repetition, language, url_filter, zh_hant
from fineflow.tasks.text.words import load_splitter

split_en = load_splitter("spacy:en")


def words(text: str) -> list[str]:
    return split_en(text)


def distinct_words(n: int, prefix: str = "w") -> list[str]:
    """n different lower-case alphabetic words of 5 letters."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [prefix + "".join(letters[(i // 26**k) % 26] for k in range(4)) for i in range(n)]


# ---------------------------------------------------------------- Gopher repetition


def repetition(text: str, **thresholds) -> str | None:
    values = gopher_repetition.signals(text, words(text), "newlines", [2, 3, 4], [5, 6, 7, 8, 9, 10])
    return gopher_repetition.decide(values, thresholds)


def lines_with_duplicates(total: int, duplicates: int) -> str:
    unique = [f"line number {w} is here" for w in distinct_words(total - duplicates)]
    return "\n".join(unique + [unique[0]] * duplicates)


def test_duplicate_line_fraction():
    assert repetition(lines_with_duplicates(10, 3), dup_line_frac=0.3) is None  # 3/10 is not > 0.3
    assert repetition(lines_with_duplicates(10, 4), dup_line_frac=0.3) == "dup_line_frac"


def test_duplicate_paragraph_fraction_and_characters():
    paragraphs = [f"paragraph {w} text" for w in distinct_words(7)]
    inside = "\n\n".join(paragraphs + [paragraphs[0]] * 3)  # 3 of 10
    outside = "\n\n".join(paragraphs[:6] + [paragraphs[0]] * 4)  # 4 of 10
    assert repetition(inside, dup_para_frac=0.3) is None
    assert repetition(outside, dup_para_frac=0.3) == "dup_para_frac"
    # characters: one duplicate paragraph of 20 chars in a 100-char text is 0.2 (kept), 21 chars is not
    base = "x" * 20
    inside_chars = base + "\n\n" + base + "\n\n" + "y" * 56  # len = 20+2+20+2+56 = 100
    assert len(inside_chars) == 100
    assert repetition(inside_chars, dup_para_char_frac=0.2) is None
    outside_chars = "x" * 21 + "\n\n" + "x" * 21 + "\n\n" + "y" * 54
    assert len(outside_chars) == 100
    assert repetition(outside_chars, dup_para_char_frac=0.2) == "dup_para_char_frac"


def test_duplicate_line_characters():
    inside = "\n".join(["a" * 20, "a" * 20, "b" * 57])  # 20 / 99 chars
    outside = "\n".join(["a" * 21, "a" * 21, "b" * 55])  # 21 / 99
    assert repetition(inside, dup_line_char_frac=0.2021) is None
    assert repetition(outside, dup_line_char_frac=0.2021) == "dup_line_char_frac"


def test_top_2_gram_fraction():
    # "ab cd" (5 chars) repeated 4 times = 20 chars of a 100-char text: exactly 0.2, kept; one more is not
    filler = " ".join(distinct_words(13))  # 13 * 5 + 12 = 77 chars
    inside = "ab cd ab cd ab cd ab cd " + filler[: 100 - 24]
    assert len(inside) == 100
    values = gopher_repetition.signals(inside, words(inside), "newlines", [2], [])
    assert values["gopher_rep_top_2_gram_frac"] == pytest.approx(0.2)
    assert gopher_repetition.decide(values, {"top_n_grams": {2: 0.2}}) is None
    outside = "ab cd ab cd ab cd ab cd ab cd " + filler[: 100 - 30]
    assert repetition(outside, top_n_grams={2: 0.2}) == "top_2_gram"


def test_duplicated_5_gram_characters_skip_after_a_repeat():
    five = distinct_words(5)
    unique = distinct_words(40, prefix="u")
    text = " ".join(five + unique + five)
    values = gopher_repetition.signals(text, words(text), "newlines", [], [5])
    # the second occurrence of the 5-gram is repeated: 5 words of 5 chars, no spaces counted
    assert values["gopher_rep_dup_5_gram_frac"] == pytest.approx(25 / len(text))
    limit = 25 / len(text)
    assert gopher_repetition.decide(values, {"dup_n_grams": {5: limit}}) is None
    assert gopher_repetition.decide(values, {"dup_n_grams": {5: limit * 0.99}}) == "duplicated_5_n_grams"


def test_zero_threshold_switches_a_rule_off():
    assert repetition(lines_with_duplicates(10, 9), dup_line_frac=0) is None


# ---------------------------------------------------------------- Gopher quality


def quality(text: str, mode: str = "distinct", **thresholds) -> str | None:
    values = gopher_quality.signals(text, words(text), frozenset(gopher_quality.ENGLISH_STOP_WORDS))
    return gopher_quality.decide(values, thresholds, mode)


def prose(n_words: int) -> str:
    return " ".join(distinct_words(n_words))


def test_word_count_bounds():
    assert quality(prose(50), min_doc_words=50) is None
    assert quality(prose(49), min_doc_words=50) == "short_doc"
    assert quality(prose(50), max_doc_words=50) is None
    assert quality(prose(51), max_doc_words=50) == "long_doc"
    # symbol-only words do not count
    assert quality(prose(49) + " ## -- !!", min_doc_words=50) == "short_doc"


def test_mean_word_length():
    assert quality(" ".join(["abc"] * 60), min_avg_word_length=3) is None
    assert quality(" ".join(["ab"] * 60), min_avg_word_length=3) == "below_avg_word_length"
    assert quality(" ".join(["a" * 10] * 60), max_avg_word_length=10) is None
    assert quality(" ".join(["a" * 11] * 60), max_avg_word_length=10) == "above_avg_word_length"


def test_hash_and_ellipsis_ratios():
    base = distinct_words(90)
    assert quality(" ".join(base) + " #" * 10, max_symbol_word_ratio=0.1) is None  # 10 / 100 words
    assert quality(" ".join(base) + " #" * 11, max_symbol_word_ratio=0.1) == "too_many_hashes"
    text = " ".join(base) + " …" * 11
    assert quality(text, max_symbol_word_ratio=0.1) == "too_many_ellipsis"


def test_bullet_and_ellipsis_lines():
    bullets_inside = "\n".join([f"- {w}" for w in distinct_words(9)] + ["plain line"])
    bullets_outside = "\n".join([f"• {w}" for w in distinct_words(10)])
    assert quality(bullets_inside, max_bullet_lines_ratio=0.9) is None  # 9 of 10
    assert quality(bullets_outside, max_bullet_lines_ratio=0.9) == "too_many_bullets"
    ellipsis_inside = "\n".join([f"{w}..." for w in distinct_words(3)] + distinct_words(7, "p"))
    ellipsis_outside = "\n".join([f"{w}…" for w in distinct_words(4)] + distinct_words(6, "p"))
    assert quality(ellipsis_inside, max_ellipsis_lines_ratio=0.3) is None
    assert quality(ellipsis_outside, max_ellipsis_lines_ratio=0.3) == "too_many_end_ellipsis"


def test_alphabetic_words_ratio():
    inside = " ".join(distinct_words(80) + ["1234"] * 20)  # 80 of 100 words have a letter
    outside = " ".join(distinct_words(79) + ["1234"] * 21)
    assert quality(inside, max_non_alpha_words_ratio=0.8) is None
    assert quality(outside, max_non_alpha_words_ratio=0.8) == "below_alpha_words_ratio"


def test_stop_words_distinct_now_occurrences_in_fineweb_2024():
    one_stop_word_twice = prose(60) + " the cat and the dog"  # 'the' twice, 'and' once: 2 distinct
    assert quality(one_stop_word_twice, min_stop_words=2) is None
    only_the = prose(60) + " the cat the dog"  # 1 distinct, 2 occurrences
    assert quality(only_the, min_stop_words=2) == "stop_words"
    assert quality(only_the, "occurrences", min_stop_words=2) is None
    assert quality(prose(60) + " the cat", "occurrences", min_stop_words=2) == "stop_words"


# ---------------------------------------------------------------- C4

C4_LINE_RULES = {
    "remove_citations": True,
    "filter_no_terminal_punct": False,
    "min_words_per_line": 3,
    "max_word_length": 1000,
    "filter_javascript": True,
    "filter_policy": True,
}
C4_DOC_RULES = {"filter_lorem_ipsum": True, "filter_curly_bracket": True, "min_num_sentences": 5}


def run_c4(text: str, **line_rules) -> tuple[str, str | None]:
    rewritten, values = c4.rewrite(text, split_en, {**C4_LINE_RULES, **line_rules})
    return rewritten, c4.decide(values, C4_DOC_RULES)


def test_c4_line_rules_rewrite_the_text():
    text = "\n".join(
        [
            "This first line is kept as it is.",
            "Please enable JavaScript to view this page.",
            "Read our privacy policy before you go on.",
            "Too short.",
            "A citation[12] is cut out of this kept line.",
            "A line with a " + "x" * 1001 + " word is dropped.",
            "The last line is kept. It has two sentences. And a third one.",
        ]
    )
    rewritten, decision = run_c4(text)
    assert rewritten.split("\n") == [
        "This first line is kept as it is.",
        "A citation is cut out of this kept line.",
        "The last line is kept. It has two sentences. And a third one.",
    ]
    assert decision is None  # 1 + 1 + 3 = 5 sentences


def test_c4_sentence_minimum():
    four = "One sentence is here. Two sentences are here.\nThree sentences now. Four is the last one."
    five = four + "\nFive is one more line."
    assert run_c4(four)[1] == "too_few_sentences"
    assert run_c4(five)[1] is None


def test_c4_document_rules():
    body = "\n".join(f"Sentence number {w} is a fine one." for w in distinct_words(6))
    assert run_c4(body + "\nLorem ipsum dolor sit amet.")[1] == "lorem_ipsum"
    assert run_c4(body + "\nThe code is { not allowed } here.")[1] == "curly_bracket"
    # a curly bracket on a line already dropped (javascript) does not drop the document
    assert run_c4(body + "\nOur javascript uses { brackets } too.")[1] is None


def test_c4_terminal_punctuation_rule_is_optional():
    text = "\n".join(f"Sentence number {w} ends well." for w in distinct_words(5)) + "\nno ending here at all"
    assert "no ending here at all" in run_c4(text)[0]
    assert "no ending here at all" not in run_c4(text, filter_no_terminal_punct=True)[0]


# ---------------------------------------------------------------- FineWeb quality

FW_THRESHOLDS = {
    "line_punct_thr": 0.12,
    "line_punct_exclude_zero": False,
    "short_line_thr": 0.67,
    "char_duplicates_ratio": 0.01,
    "new_line_ratio": 0.3,
}


def fineweb(text: str, legacy: bool = False, strict: bool = True, **thresholds) -> str | None:
    values = fineweb_quality.signals(text, len(words(text)), 30, legacy)
    return fineweb_quality.decide(values, {**FW_THRESHOLDS, **thresholds}, strict)


def long_lines(n: int, end: str = "") -> list[str]:
    return [f"this is a rather long line about {w} and more{end}" for w in distinct_words(n)]


def test_line_punctuation_ratio():
    # 3 of 25 lines end with a stop character: 0.12 is not < 0.12
    assert fineweb("\n".join(long_lines(3, ".") + long_lines(22)), char_duplicates_ratio=1, new_line_ratio=1) is None
    assert fineweb("\n".join(long_lines(2, ".") + long_lines(23)), char_duplicates_ratio=1, new_line_ratio=1) == "line_punct_ratio"
    # the Unicode terminal set counts the ideographic full stop; FineWeb-2024's set did not
    cjk = "\n".join(["这是一个很长很长很长很长很长很长的中文句子而且它还在继续写下去。"] * 1 + long_lines(4))
    assert fineweb(cjk, char_duplicates_ratio=1, new_line_ratio=1, line_punct_thr=0.2) is None
    assert fineweb(cjk, legacy=True, strict=False, char_duplicates_ratio=1, new_line_ratio=1, line_punct_thr=0.2) == "line_punct_ratio"


def test_short_line_ratio():
    short = [f"short {w}." for w in distinct_words(67)]
    assert fineweb("\n".join(short + long_lines(33, ".")), new_line_ratio=1, char_duplicates_ratio=1) is None
    assert fineweb("\n".join(short + [f"short {w}." for w in distinct_words(1, "z")] + long_lines(32, ".")), new_line_ratio=1, char_duplicates_ratio=1) == "short_line_ratio"


def test_duplicated_line_characters_and_list_ratio():
    lines = long_lines(30, ".")
    repeated = "\n".join(lines + [lines[0]])
    assert fineweb(repeated, new_line_ratio=1) == "char_dup_ratio"
    assert fineweb(repeated, new_line_ratio=1, char_duplicates_ratio=0.1) is None
    listy = "\n".join(f"{w} item." for w in distinct_words(20))  # 19 newlines / 60 words ("." is a word)
    assert fineweb(listy, short_line_thr=1, new_line_ratio=19 / 60) is None
    assert fineweb(listy, short_line_thr=1, new_line_ratio=19 / 60 - 0.001) == "list_ratio"


def test_empty_text_is_its_own_reason():
    assert fineweb("\n\n  \n") == "empty"


# ---------------------------------------------------------------- URL, language, zh-Hant


@pytest.fixture
def blocklist(tmp_path):
    files = {
        "domains_file": "bad-site.com\nsub.tricky.co.uk\n",
        "urls_file": "https://fine.example/one-bad-page.html\n",
        "banned_words_file": "porn\n",
        "soft_banned_words_file": "hot\ngirls\n",
        "banned_subwords_file": "xvideos\n",
    }
    options = {}
    for key, content in files.items():
        (tmp_path / key).write_text("# comment\n" + content)
        options[key] = str(tmp_path / key)
    return url_filter.load_blocklist(options)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://www.bad-site.com/page", "domain"),
        ("https://sub.tricky.co.uk/page", "subdomain"),
        ("https://other.tricky.co.uk/page", None),
        ("https://fine.example/one-bad-page.html", "url"),
        ("https://fine.example/free-porn-here", "hard_blacklisted"),
        ("https://fine.example/pornography-history", None),  # a word, not a sub-word
        ("https://fine.example/hot-girls", "soft_blacklisted"),
        ("https://fine.example/hot-weather", None),  # one soft word is below the threshold of 2
        ("https://x-videos.example.org/watch", "blacklisted_subword"),
        ("https://fine.example/", None),
    ],
)
def test_url_filter_reasons(blocklist, url, reason):
    assert blocklist.reason(url, soft_word_threshold=2) == reason


def test_url_filter_default_lists_work_as_crawl_hook():
    check = url_filter.crawl_hook()
    assert check("https://freeporn.example/") == "subdomain"
    assert check("https://docs.python.org/3/") is None


def test_language_threshold_strict_or_inclusive():
    assert language.decide("en", 0.66, ["en"], 0.65, inclusive=False) is None
    assert language.decide("en", 0.65, ["en"], 0.65, inclusive=False) == "low_score"
    assert language.decide("en", 0.65, ["en"], 0.65, inclusive=True) is None
    assert language.decide("de", 0.99, ["en"], 0.65, inclusive=False) == "not_listed"
    assert language.decide("de", 0.99, None, 0.65, inclusive=False) is None


def test_traditional_chinese_rule():
    assert zh_hant.decide(zh_hant.signals("這是繁體中文的文章，說明資料處理。")) is None
    assert zh_hant.decide(zh_hant.signals("这是简体中文的文章，说明数据处理。")) == "simplified_chars"
    assert zh_hant.decide(zh_hant.signals("中文")) == "no_traditional_chars"


def reference_repeated_chars(words: list[str], n: int) -> int:
    """Gopher's definition, step by step: scan left to right; a window seen before counts its
    characters and the scan jumps past it."""
    seen: set[tuple] = set()
    repeated = index = 0
    while index < len(words) - n + 1:
        window = tuple(words[index : index + n])
        if window in seen:
            repeated += sum(len(w) for w in window)
            index += n
        else:
            seen.add(window)
            index += 1
    return repeated


def reference_top_chars(words: list[str], n: int) -> int:
    """Characters of the most frequent n-gram, space-joined, times its count (ties: first seen)."""
    windows = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not windows:
        return 0
    counts = Counter(windows)
    best = max(counts.values())
    window = next(w for w in windows if counts[w] == best)
    return (sum(len(w) for w in window) + n - 1) * best


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "bb", "ccc", "dd", "e"]), max_size=80),
    st.lists(st.integers(2, 9), min_size=1, max_size=5),
    st.lists(st.integers(1, 5), max_size=3),
)
def test_fast_ngram_measures_equal_the_definitions(words, sizes, top_sizes):
    """Each size alone and several together (a larger size looks only where a smaller one,
    measured for the top n-gram or for repeats, repeated; none repeating ends the larger ones)."""
    text = " ".join(words) or "x"
    top_sizes = sorted(set(top_sizes))
    together = gopher_repetition.signals(text, words, "newlines", top_sizes, sorted(set(sizes)))
    for n in set(sizes):
        alone = gopher_repetition.signals(text, words, "newlines", [], [n])
        expected = reference_repeated_chars(words, n)
        assert alone[f"gopher_rep_dup_{n}_gram_frac"] * len(text) == pytest.approx(expected)
        assert together[f"gopher_rep_dup_{n}_gram_frac"] == alone[f"gopher_rep_dup_{n}_gram_frac"]
    for n in top_sizes:
        assert together[f"gopher_rep_top_{n}_gram_frac"] * len(text) == pytest.approx(reference_top_chars(words, n))


def test_url_filter_case_rules(blocklist):
    # host names are case-insensitive; an exact URL is an exact string; URL words are lower-cased
    assert blocklist.reason("https://WWW.BAD-SITE.COM/x", soft_word_threshold=2) == "domain"
    assert blocklist.reason("https://FINE.example/one-bad-page.html", soft_word_threshold=2) is None
    assert blocklist.reason("https://fine.example/Hot-Girls", soft_word_threshold=2) == "soft_blacklisted"


def test_hosts_without_a_public_suffix_match_their_parents():
    check = url_filter.crawl_hook()
    assert check("https://freeporn.example/x") == "subdomain"  # listed host itself
    assert check("https://sub.freeporn.example/x") == "domain"
    assert check("https://freeporn.example.org/x") is None


@pytest.mark.parametrize("language", ["en", "fr", "de", "ar", "ru", "ca", "pt"])
def test_word_splitting_shortcuts_give_spacys_own_split(language):
    """Letters-only chunks and chunks with one bracket or punctuation mark around letters skip
    spaCy (tasks/text/words.py); their split must be spaCy's, special cases included."""
    import spacy

    from fineflow.tasks.text.words import _spacy_splitter

    text = (
        "Plain words, (bracketed) words; a question? yes! [note] end: gonna cannot don't, xD "
        "(= ): :) e.g. U.S. 3km état, (über) «quoted» слово, (слово) كلمة، (كلمة) l'homme, co-op) "
        "a.b, x) (y z] [w Mr. etc., 10:30 1,5 word.\nnext\tline"
    )
    nlp = spacy.blank(language)
    expected = []
    for chunk in text.split():
        nlp.max_length = len(chunk) + 1
        expected.extend(token.text for token in nlp.tokenizer(chunk))
    split = _spacy_splitter(language)
    assert split(text) == expected
    assert split(text) == expected  # from the cache
