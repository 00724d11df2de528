"""Regenerate the decontaminate stage's built-in example benchmarks (tasks/decontaminate/benchmarks/).

Cloze items ("complete the passage": the first half of a paragraph as the question, the second
half as the answer) from pages of The Debian Administrator's Handbook (GPL-2+ / CC-BY-SA-3.0) in
English and French that are in web-small but not in the project's sample (examples/data), none
sharing a 13-gram with any page of the sample, so that the sample holds no copy of them.

    uv run --locked python bench/decontaminate_example.py /work/shared/corpus/web-small
"""

from __future__ import annotations

import glob
import json
import random
import sys
from pathlib import Path

from fastwarc.warc import ArchiveIterator, WarcRecordType
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "data" / "CC-MAIN-SAMPLE-00000.warc.gz"
OUT = ROOT / "tasks" / "decontaminate" / "benchmarks"
LANGUAGES = {
    "en": ("en-US", "Complete the passage from The Debian Administrator's Handbook:", 16),
    "fr": ("fr-FR", "Complétez ce passage du Cahier de l'administrateur Debian :", 10),
}


def pages(paths: list[str]) -> dict[str, str]:
    found = {}
    for path in paths:
        with open(path, "rb") as stream:
            for record in ArchiveIterator(stream, record_types=WarcRecordType.response):
                url = record.headers.get("WARC-Target-URI")
                body = record.reader.read()
                html = body.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in body else body
                if b"<html" in html[:2000].lower():
                    found[url] = extract_plain_text(bytes_to_str(html, "utf-8"), main_content=True)
    return found


def main(corpus: str) -> None:
    from fineflow.tasks.decontaminate.ngrams import ngram_hashes, splitter_name, word_hashes, words

    sample = pages([str(SAMPLE)])
    sections = {url.split("?")[0].rsplit("/", 1)[-1] for url in sample if "debian-handbook" in url}
    small = pages(sorted(glob.glob(f"{corpus}/*.warc.gz")))
    for language, (folder, prompt, count) in LANGUAGES.items():
        splitter = splitter_name(language, {})
        seen = {int(h) for text in sample.values() for h in ngram_hashes(word_hashes(words(text, splitter)), 13)}
        paragraphs = []
        for url, text in sorted(small.items()):
            if f"/browse/{folder}/stable/" not in url or "?" in url or url.rsplit("/", 1)[-1] in sections:
                continue
            for paragraph in text.split("\n"):
                tokens = paragraph.split()
                hashes = ngram_hashes(word_hashes(words(paragraph, splitter)), 13)
                if 40 <= len(tokens) <= 90 and not seen.intersection(int(h) for h in hashes):
                    paragraphs.append((url, paragraph.strip()))
        chosen = random.Random(29).sample(paragraphs, count)
        with open(OUT / f"handbook-cloze-{language}.jsonl", "w", encoding="utf-8") as out:
            for number, (url, paragraph) in enumerate(chosen):
                tokens = paragraph.split(" ")
                half = len(tokens) // 2
                item = {"id": f"{language}-{number:03d}", "source": url,
                        "question": f"{prompt} {' '.join(tokens[:half])}", "answer": " ".join(tokens[half:])}
                out.write(json.dumps(item, ensure_ascii=False) + "\n")
        print(f"{language}: {count} items of {len(paragraphs)} candidate paragraphs")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/corpus/web-small")
