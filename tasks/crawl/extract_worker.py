"""Extraction subprocess: reads HTML documents on stdin, writes extracted text on stdout.

Run as ``python -m fineflow.tasks.crawl.extract_worker EXTRACTOR``. It lives as long as the
Dask worker thread that owns it, so its imports are paid once; the parent kills and restarts it
when a document exceeds its time limit (SIGALRM cannot interrupt work in a worker thread).

Frames: request = 1-byte opcode + 4-byte big-endian length + UTF-8 payload;
response = 1-byte status + 4-byte length + UTF-8 payload.
"""

from __future__ import annotations

import os
import struct
import sys

OP_EXTRACT = b"E"
OP_RESET = b"R"
STATUS_OK = b"0"
STATUS_ERROR = b"1"


def _read_exact(stream, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main() -> None:
    from fineflow.tasks.crawl.extractors import get_extractor, reset_state

    name = sys.argv[1]
    extract = get_extractor(name)
    # The protocol owns the original stdout; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    out.write(STATUS_OK + struct.pack(">I", 0))  # ready: imports are done
    while True:
        header = _read_exact(stdin, 5)
        if header is None:
            return  # parent closed the pipe: exit quietly
        opcode, length = header[:1], struct.unpack(">I", header[1:])[0]
        payload = _read_exact(stdin, length) if length else b""
        if payload is None:
            return
        if opcode == OP_RESET:
            reset_state(name)
            out.write(STATUS_OK + struct.pack(">I", 0))
            continue
        try:
            text = extract(payload.decode("utf-8", errors="replace"))
            body, status = text.encode("utf-8", errors="replace"), STATUS_OK
        except Exception as exc:  # one bad document must not end the worker
            body, status = f"{type(exc).__name__}: {exc}".encode(), STATUS_ERROR
        out.write(status + struct.pack(">I", len(body)) + body)


if __name__ == "__main__":
    main()
