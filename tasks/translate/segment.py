"""Segmentation lives in ``fineflow.tasks.text.segment`` (shared with other text-rewriting
stages); this name stays for the translate stage's modules."""

from fineflow.tasks.text.segment import Piece, keep_as_is, reassemble, segment_document, segments

__all__ = ["Piece", "keep_as_is", "reassemble", "segment_document", "segments"]
