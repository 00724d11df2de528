"""HTML main-text extractors, called inside the extraction subprocess (see sandbox.py).

trafilatura with FineWeb's settings (``favor_precision``, no comments, ``deduplicate``) or
resiliparse's main-content extraction, which is much faster, or jusText with NeMo Curator's
defaults (Nemotron-CC's extractor; justext_extractor.py).
"""

from __future__ import annotations

from collections.abc import Callable

EXTRACTORS = ("trafilatura", "resiliparse", "justext")


def _trafilatura(html: str) -> str:
    import trafilatura

    text = trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=True)
    return text or ""


def _resiliparse(html: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html, preserve_formatting=True, main_content=True, list_bullets=True, alt_texts=False)


def get_extractor(name: str, tuned: bool = True) -> Callable[[str], str]:
    """The extractor called ``name``; trafilatura comes with the output-preserving speed-ups of
    trafilatura_tuning unless ``tuned`` is False (for comparing with the stock library)."""
    if name == "trafilatura":
        if tuned:
            from fineflow.tasks.crawl.trafilatura_tuning import tune_trafilatura

            tune_trafilatura()
        return _trafilatura
    if name == "resiliparse":
        return _resiliparse
    if name == "justext":
        from fineflow.tasks.crawl.justext_extractor import extract

        return extract
    raise ValueError(f"unknown extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


def reset_state(name: str) -> None:
    """Forget cross-document state so a shard's output depends only on the shard.

    trafilatura's ``deduplicate`` keeps an LRU of text segments already seen in the process; left
    alone, a document's text would depend on which shards the same worker processed before.
    """
    if name == "trafilatura":
        from trafilatura.meta import reset_caches

        reset_caches()
