"""Readers of token files written from the formats' specifications (next-stages.md §1.1,
fineweb-datatrove.md §6), independent of fineflow's writers, for the tests to check them against."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_MEGATRON_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}


def read_megatron(prefix: str) -> list[list[int]]:
    """Every document of ``prefix.bin``/``prefix.idx`` as a list of ids."""
    index = Path(f"{prefix}.idx").read_bytes()
    assert index[:9] == b"MMIDIDX\x00\x00", "bad magic"
    (version,) = struct.unpack_from("<Q", index, 9)
    assert version == 1
    (code,) = struct.unpack_from("<B", index, 17)
    sequences, documents = struct.unpack_from("<QQ", index, 18)
    offset = 34
    lengths = np.frombuffer(index, "<i4", sequences, offset)
    offset += 4 * sequences
    pointers = np.frombuffer(index, "<i8", sequences, offset)
    offset += 8 * sequences
    boundaries = np.frombuffer(index, "<i8", documents, offset)
    offset += 8 * documents
    assert offset == len(index), "trailing bytes in the index"
    dtype = np.dtype(_MEGATRON_DTYPES[code]).newbyteorder("<")
    data = Path(f"{prefix}.bin").read_bytes()
    assert len(data) == int(lengths.sum()) * dtype.itemsize
    sequences_ids = [
        np.frombuffer(data, dtype, int(length), int(pointer)).tolist() for length, pointer in zip(lengths, pointers)
    ]
    # Documents are runs of sequences between consecutive boundaries.
    return [sum(sequences_ids[a:b], []) for a, b in zip(boundaries[:-1], boundaries[1:])]


def megatron_dtype(prefix: str) -> np.dtype:
    (code,) = struct.unpack_from("<B", Path(f"{prefix}.idx").read_bytes(), 17)
    return np.dtype(_MEGATRON_DTYPES[code])


def read_nanotron(prefix: str) -> list[list[int]]:
    """Every document of datatrove's ``prefix.ds`` (+ ``.ds.index``, ``.ds.metadata``)."""
    metadata = Path(f"{prefix}.ds.metadata").read_text().splitlines()
    token_size = int(metadata[0].rsplit("|", 1)[1])
    dtype = {2: np.dtype("<u2"), 4: np.dtype("<u4")}[token_size]
    tokens = np.frombuffer(Path(f"{prefix}.ds").read_bytes(), dtype)
    assert int(metadata[1]) == len(tokens)
    ends = np.frombuffer(Path(f"{prefix}.ds.index").read_bytes(), "<u8")
    starts = np.concatenate([[0], ends[:-1]])
    return [tokens[int(a) : int(b)].tolist() for a, b in zip(starts, ends)]
