"""Token file formats, written as a stream of documents (next-stages.md §1.1, fineweb-datatrove.md §6).

- Megatron-LM's indexed dataset: ``prefix.bin`` holds the ids of all documents back to back;
  ``prefix.idx`` is the 9-byte magic ``MMIDIDX\\0\\0``, u64 version 1, u8 dtype code, u64 sequence
  count, u64 document-index count, then int32 length and int64 byte offset per sequence and the
  int64 document boundaries (count + 1). One document is one sequence here.
- nanotron (datatrove's ``DocumentTokenizer`` format): ``prefix.ds`` the ids (uint16 or uint32),
  ``prefix.ds.index`` the uint64 cumulative document ends in tokens, ``prefix.ds.metadata`` the
  lines ``<tokenizer>|<bytes per token>``, the token total and its humanized form.

All integers are little-endian. A writer writes into a local folder; the caller commits the files.
"""

from __future__ import annotations

import os
import struct

import numpy as np

MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_VERSION = 1
MEGATRON_DTYPE_CODES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "float64": 6, "float32": 7, "uint16": 8}


class TokenFileWriter:
    """Documents appended one at a time; ``close`` writes the index; ``files`` lists what to commit."""

    def __init__(self, folder: str, prefix: str, dtype: str, tokenizer: str) -> None:
        self.folder, self.prefix, self.dtype, self.tokenizer = folder, prefix, np.dtype(dtype).newbyteorder("<"), tokenizer
        self.lengths: list[int] = []
        self.tokens = 0
        self._data = open(os.path.join(folder, self.data_name), "wb")  # noqa: SIM115 (closed in close())

    data_name = property(lambda self: f"{self.prefix}.bin")

    def add(self, ids: np.ndarray) -> None:
        self._data.write(np.ascontiguousarray(ids, dtype=self.dtype).tobytes())
        self.lengths.append(len(ids))
        self.tokens += len(ids)

    def close(self) -> list[str]:
        self._data.close()
        self._write_index()
        return self.files()

    def files(self) -> list[str]:
        raise NotImplementedError

    def _write_index(self) -> None:
        raise NotImplementedError


class MegatronWriter(TokenFileWriter):
    def files(self) -> list[str]:
        return [f"{self.prefix}.bin", f"{self.prefix}.idx"]

    def _write_index(self) -> None:
        lengths = np.array(self.lengths, dtype="<i4")
        pointers = np.zeros(len(lengths), dtype="<i8")
        if len(lengths):
            pointers[1:] = np.cumsum(lengths[:-1].astype(np.int64)) * self.dtype.itemsize
        documents = np.arange(len(lengths) + 1, dtype="<i8")  # one sequence per document
        with open(os.path.join(self.folder, f"{self.prefix}.idx"), "wb") as handle:
            handle.write(MEGATRON_MAGIC)
            handle.write(struct.pack("<Q", MEGATRON_VERSION))
            handle.write(struct.pack("<B", MEGATRON_DTYPE_CODES[self.dtype.name]))
            handle.write(struct.pack("<Q", len(lengths)))
            handle.write(struct.pack("<Q", len(documents)))
            handle.write(lengths.tobytes())
            handle.write(pointers.tobytes())
            handle.write(documents.tobytes())


class NanotronWriter(TokenFileWriter):
    data_name = property(lambda self: f"{self.prefix}.ds")

    def files(self) -> list[str]:
        return [f"{self.prefix}.ds", f"{self.prefix}.ds.index", f"{self.prefix}.ds.metadata"]

    def _write_index(self) -> None:
        ends = np.cumsum(np.array(self.lengths, dtype=np.uint64), dtype=np.uint64).astype("<u8")
        with open(os.path.join(self.folder, f"{self.prefix}.ds.index"), "wb") as handle:
            handle.write(ends.tobytes())
        with open(os.path.join(self.folder, f"{self.prefix}.ds.metadata"), "w") as handle:
            handle.write(f"{self.tokenizer}|{self.dtype.itemsize}\n{self.tokens}\n{_humanized(self.tokens)}")


def _humanized(number: int) -> str:
    for unit in ("", "K", "M", "B", "T"):
        if abs(number) < 1000:
            return f"{number:.2f}{unit}" if unit else str(number)
        number /= 1000
    return f"{number:.2f}P"


WRITERS = {"megatron": MegatronWriter, "nanotron": NanotronWriter}
