"""Is a file a whole fastText model? Its layout read without fastText, then a load in a capped child process.

fastText's loader believes the file: a model cut short in its dictionary makes it read words past the end
forever (memory grows until the machine dies), and one cut short in its matrices loads without complaint with
part of its weights missing. ``structure_problem`` walks the layout of fastText's ``.bin``/``.ftz`` (0.9:
header, arguments, dictionary, input matrix, output matrix) and compares what the header promises with the
file's size; ``check`` adds a load in a child process (``fineflow.model_check``) and returns labels and dimension.
"""

from __future__ import annotations

import os
import struct

from fineflow import model_check

FORMAT = "fastText"
FILE_MAGIC = 793712314  # FASTTEXT_FILEFORMAT_MAGIC_INT32
MAX_VERSION = 12  # FASTTEXT_VERSION: newer files are refused by fastText itself
ARGS_BYTES = 12 * 4 + 8  # twelve int32 arguments, then the sampling threshold (a double)
DICT_HEADER = struct.Struct("<iiiqq")  # words+labels, words, labels, tokens, pruned-index size
ENTRY_TAIL = 8 + 1  # after a word's NUL: its count (int64) and type (int8)
MATRIX_HEADER = struct.Struct("<qq")  # rows, columns of a dense float32 matrix
_CHUNK = 1 << 20


class _Reader:
    """Sequential reads of a file in bounded chunks (a multi-GB model is never held in memory)."""

    def __init__(self, handle) -> None:  # noqa: ANN001
        self.handle = handle
        self.buffer = b""
        self.start = 0  # file offset of buffer[0]
        self.pos = 0  # offset in buffer

    @property
    def offset(self) -> int:
        return self.start + self.pos

    def _fill(self) -> bool:
        more = self.handle.read(_CHUNK)
        if not more:
            return False
        self.start += self.pos
        self.buffer = self.buffer[self.pos:] + more
        self.pos = 0
        return True

    def take(self, n: int) -> bytes | None:
        while len(self.buffer) - self.pos < n:
            if not self._fill():
                return None
        data = self.buffer[self.pos:self.pos + n]
        self.pos += n
        return data

    def skip_word(self) -> bool:
        """Past the next NUL-terminated word; False at the end of the file."""
        while True:
            end = self.buffer.find(b"\0", self.pos)
            if end >= 0:
                self.pos = end + 1
                return True
            self.pos = len(self.buffer)
            if not self._fill():
                return False


def structure_problem(path: str) -> str | None:
    """Why ``path`` is not a whole fastText model, or None. Reads it once, in chunks."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        reader = _Reader(handle)
        header = reader.take(8)
        if header is None or struct.unpack("<i", header[:4])[0] != FILE_MAGIC:
            return "no fastText header"
        version = struct.unpack("<i", header[4:])[0]
        if not 0 < version <= MAX_VERSION:
            return f"model file version {version}, fastText reads 1 to {MAX_VERSION}"
        args = reader.take(ARGS_BYTES)
        counts = reader.take(DICT_HEADER.size)
        if args is None or counts is None:
            return f"truncated: the file ends in its header, at {size:,} bytes"
        dim = struct.unpack("<i", args[:4])[0]
        entries, words, labels, _, pruned = DICT_HEADER.unpack(counts)
        if min(entries, words, labels, pruned + 1) < 0 or words + labels != entries or not 0 < dim < 1 << 20:
            return "its header is damaged (negative or inconsistent sizes)"
        # Each entry is at least a NUL, a count and a type; each pruned pair two int32.
        least = reader.offset + entries * (1 + ENTRY_TAIL) + max(pruned, 0) * 8
        if least > size:
            return f"truncated: header promises at least {least:,} bytes, file has {size:,}"
        for index in range(entries):
            if not reader.skip_word() or reader.take(ENTRY_TAIL) is None:
                return f"truncated: the file ends in its dictionary, at word {index + 1:,} of {entries:,}"
        if reader.take(max(pruned, 0) * 8) is None:  # -1: not pruned
            return f"truncated: the file ends in its dictionary, at {size:,} bytes"
        for which in ("input", "output"):
            quantized = reader.take(1)
            if quantized is None:
                return f"truncated: the file ends before its {which} matrix, at {size:,} bytes"
            if quantized != b"\0":  # a quantized (.ftz) matrix is not walked: the child's load checks it
                return None
            problem = _dense_matrix_problem(reader, which, size)
            if problem:
                return problem
    return None


def _dense_matrix_problem(reader: _Reader, which: str, size: int) -> str | None:
    shape = reader.take(MATRIX_HEADER.size)
    if shape is None:
        return f"truncated: the file ends before its {which} matrix, at {size:,} bytes"
    rows, columns = MATRIX_HEADER.unpack(shape)
    if rows < 0 or columns < 0:
        return f"its {which} matrix has a negative size ({rows} x {columns})"
    end = reader.offset + rows * columns * 4
    if end > size:
        return f"truncated: header promises {end:,} bytes, file has {size:,}"
    reader.handle.seek(end)
    reader.buffer, reader.start, reader.pos = b"", end, 0
    return None


def describe(path: str) -> dict:
    """Run in the child: load the model, say what it is."""
    import fasttext

    model = fasttext.load_model(path)
    return {"labels": list(model.get_labels()), "dimension": int(model.get_dimension())}


def check(path: str) -> dict:
    """``{"labels", "dimension"}`` of the fastText model at local ``path``, or ``model_check.ModelCheckError``."""
    return model_check.check(path, FORMAT, f"{__name__}:describe", structure_problem)
