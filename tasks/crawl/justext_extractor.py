"""jusText extraction with NeMo Curator's ``JusTextExtractor`` defaults (Nemotron-CC's extractor).

jusText keeps paragraphs that are long, link-poor and dense in stop words, so it needs the page's
language before it classifies: like NeMo Curator (which runs CLD2 on the raw HTML), the language
is identified first, here with the packaged lid.176 on the text of all the page's paragraphs, and
picks jusText's stop list for it. Languages without a stop list, see docs/crawl.md:

* th, zh, ja, ko (no spaces between words): every paragraph is kept, as NeMo Curator does
  (its ``is_boilerplate`` default is off for them), since stop-word density means little there.
* any other language without a list (and Latin, which NeMo Curator leaves out because it yields
  many low-quality documents): jusText's language-independent mode (an empty stop list and both
  stop-word thresholds 0), so length and link density still decide.
"""

from __future__ import annotations

from functools import lru_cache

# NeMo Curator's JusTextExtractor defaults (nemo_curator/download/commoncrawl.py, NVIDIA/NeMo-Curator
# at ecd5c579, 2025-07-02); they equal jusText's own defaults.
LENGTH_LOW = 70
LENGTH_HIGH = 200
STOPWORDS_LOW = 0.30
STOPWORDS_HIGH = 0.32
MAX_LINK_DENSITY = 0.2
MAX_HEADING_DISTANCE = 200
NO_HEADINGS = False
PARAGRAPH_SEPARATOR = "\n\n"  # as NeMo Curator joins the kept paragraphs

NON_SPACED_LANGUAGES = frozenset({"th", "zh", "ja", "ko"})

# fineflow's canonical language code (tasks/text/langid.py) -> jusText stop list name.
# Left out: Latin (as NeMo Curator), Simple_English and Belarusian_Taraskievica (variants of
# English and Belarusian, which have their own lists).
STOPLISTS = {
    "af": "Afrikaans", "sq": "Albanian", "ar": "Arabic", "an": "Aragonese", "hy": "Armenian",
    "rup": "Aromanian", "ast": "Asturian", "az": "Azerbaijani", "eu": "Basque", "be": "Belarusian",
    "bn": "Bengali", "bpy": "Bishnupriya_Manipuri", "bs": "Bosnian", "br": "Breton", "bg": "Bulgarian",
    "ca": "Catalan", "ceb": "Cebuano", "cv": "Chuvash", "hr": "Croatian", "cs": "Czech", "da": "Danish",
    "nl": "Dutch", "en": "English", "eo": "Esperanto", "et": "Estonian", "fi": "Finnish", "fr": "French",
    "gl": "Galician", "ka": "Georgian", "de": "German", "el": "Greek", "gu": "Gujarati", "ht": "Haitian",
    "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "is": "Icelandic", "io": "Ido", "ig": "Igbo",
    "id": "Indonesian", "ga": "Irish", "it": "Italian", "jv": "Javanese", "kn": "Kannada", "kk": "Kazakh",
    "ko": "Korean", "ku": "Kurdish", "ky": "Kyrgyz", "lv": "Latvian", "lt": "Lithuanian", "lmo": "Lombard",
    "nds": "Low_Saxon", "lb": "Luxembourgish", "mk": "Macedonian", "ms": "Malay", "ml": "Malayalam",
    "mt": "Maltese", "mr": "Marathi", "nap": "Neapolitan", "ne": "Nepali", "new": "Newar",
    "no": "Norwegian_Bokmal", "nn": "Norwegian_Nynorsk", "oc": "Occitan", "fa": "Persian",
    "pms": "Piedmontese", "pl": "Polish", "pt": "Portuguese", "qu": "Quechua", "ro": "Romanian",
    "ru": "Russian", "sgs": "Samogitian", "sr": "Serbian", "sr-Latn": "Serbo_Croatian", "scn": "Sicilian",
    "sk": "Slovak", "sl": "Slovenian", "es": "Spanish", "su": "Sundanese", "sw": "Swahili", "sv": "Swedish",
    "fil": "Tagalog", "ta": "Tamil", "te": "Telugu", "tr": "Turkish", "tk": "Turkmen", "uk": "Ukrainian",
    "ur": "Urdu", "uz": "Uzbek", "vi": "Vietnamese", "vo": "Volapuk", "wa": "Walloon", "war": "Waray_Waray",
    "cy": "Welsh", "fy": "West_Frisian", "lah": "Western_Panjabi", "yo": "Yoruba",
}  # fmt: skip


@lru_cache(maxsize=None)
def stoplist(language: str) -> frozenset[str] | None:
    """jusText's stop list for a canonical language code, or None where it has none."""
    import justext

    name = STOPLISTS.get(language)
    return justext.get_stoplist(name) if name else None


def extract(html: str) -> str:
    import justext.core as jt
    from lxml.etree import LxmlError

    from fineflow.tasks.text import langid

    try:
        paragraphs = jt.ParagraphMaker.make_paragraphs(jt.preprocessor(jt.html_to_dom(html)))
    except (LxmlError, ValueError):
        return ""  # nothing to segment (empty or unparsable page): an empty extraction
    if not paragraphs:
        return ""
    language, _ = langid.identify(" ".join(p.text for p in paragraphs))
    if language in NON_SPACED_LANGUAGES:
        return PARAGRAPH_SEPARATOR.join(p.text for p in paragraphs)
    stop_words = stoplist(language)
    low, high = (STOPWORDS_LOW, STOPWORDS_HIGH) if stop_words is not None else (0.0, 0.0)
    jt.classify_paragraphs(
        paragraphs, stop_words or frozenset(), LENGTH_LOW, LENGTH_HIGH, low, high, MAX_LINK_DENSITY, NO_HEADINGS
    )
    jt.revise_paragraph_classification(paragraphs, MAX_HEADING_DISTANCE)
    return PARAGRAPH_SEPARATOR.join(p.text for p in paragraphs if not p.is_boilerplate)
