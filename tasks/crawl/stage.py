"""crawl's one step, ``extract``: a pure function from one input shard to one document shard.

Per record: keep HTTP 200 responses that are HTML (or ``text/plain`` when configured, or WET
conversion records), decode the charset, optionally drop blocked URLs before extraction, extract
the main text, identify the language. Every record that could have been a document is
accounted for: ``docs_in == docs_out + rejects + sum(skips)``, checked before the shard is
written.
"""

from __future__ import annotations

import hashlib
import resource
import time
from collections import Counter
from datetime import timezone

import pyarrow as pa
from fastwarc.warc import WarcRecord, WarcRecordType

from fineflow.documents import DOCUMENT_SCHEMA, commit_shard, rejects_schema
from fineflow.tasks.crawl import charset, content_type
from fineflow.tasks.crawl.sandbox import ExtractionFailed, ExtractionTimeout, thread_extractor
from fineflow.tasks.crawl.url_hooks import load_hook
from fineflow.tasks.crawl.warc import CORRUPT, TRUNCATED, iter_records
from fineflow.tasks.text import langid

STEP_VERSION = "3"  # 3: records split by their trailers (whole-file gzip, zstd, lying lengths); bump when this step's output for the same input and parameters changes
LIBRARIES = ("fastwarc", "trafilatura", "resiliparse", "justext", "charset-normalizer", "fasttext-predict", "langcodes", "pyarrow")

DOCUMENT_TYPES = (WarcRecordType.response, WarcRecordType.conversion, WarcRecordType.resource)


class AccountingError(RuntimeError):
    pass


def document_id(record_id: str | None, url: str, payload: bytes) -> str:
    """Stable id: from the WARC-Record-ID, or from URL and content for records without one."""
    basis = record_id.encode() if record_id else url.encode() + b"\0" + payload
    return hashlib.blake2b(basis, digest_size=16).hexdigest()


class _ShardWriter:
    def __init__(self) -> None:
        self.rows: dict[str, list] = {field.name: [] for field in DOCUMENT_SCHEMA}
        self.rejects: dict[str, list] = {field.name: [] for field in rejects_schema(DOCUMENT_SCHEMA)}

    @staticmethod
    def _append(columns: dict[str, list], values: dict) -> None:
        for name, column in columns.items():
            column.append(values.get(name))

    def document(self, values: dict) -> None:
        self._append(self.rows, values)

    def reject(self, values: dict, reason: str) -> None:
        self._append(self.rejects, {**values, "drop_reason": reason})

    def tables(self) -> tuple[pa.Table, pa.Table]:
        docs = pa.Table.from_pydict(self.rows, schema=DOCUMENT_SCHEMA)
        rejects = pa.Table.from_pydict(self.rejects, schema=rejects_schema(DOCUMENT_SCHEMA))
        return docs, rejects


def extract_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    """Process one shard; write its documents (and rejects, if any) atomically; return stats."""
    started = time.perf_counter()
    extractor = thread_extractor(params["extractor"], params["extraction_timeout_s"])
    extractor.reset()
    restarts_before = extractor.restarts
    url_check = load_hook(params["url_filter"], params.get("url_filter_options") or {}) if params.get("url_filter") else None
    writer = _ShardWriter()
    skips: Counter[str] = Counter()
    docs_in = docs_out = rejected = other_records = 0
    extract_seconds = 0.0

    for member in iter_records(shard, params["max_record_bytes"]):
        if member.problem:
            docs_in += 1
            skips[member.problem] += 1
            continue
        try:
            record = WarcRecord.from_bytes(member.data)
        except (OSError, ValueError):
            docs_in += 1
            skips[CORRUPT] += 1
            continue
        if record.record_type not in DOCUMENT_TYPES:
            other_records += 1  # warcinfo, request, metadata: never documents
            continue
        docs_in += 1
        headers = record.headers
        url = headers.get("WARC-Target-URI") or ""
        record_id = record.record_id
        crawl_date = record.record_date
        if crawl_date is not None and crawl_date.tzinfo is None:
            crawl_date = crawl_date.replace(tzinfo=timezone.utc)
        if headers.get("WARC-Truncated") and not params["keep_truncated"]:
            skips[TRUNCATED] += 1
            continue

        http_charset = utf16 = raw = None
        if record.record_type == WarcRecordType.conversion:
            payload = record.reader.read()
            kind = content_type.TEXT
        else:
            try:
                record.parse_http()
            except (OSError, ValueError):
                skips[CORRUPT] += 1
                continue
            if record.is_http:
                status = record.http_headers.status_code if record.http_headers else None
                if status != 200:
                    skips["status_not_200"] += 1
                    continue
                http_charset = record.http_charset
                http_type = record.http_content_type
            else:
                http_type = headers.get("Content-Type")
            payload = record.reader.read()
            utf16 = charset.utf16_without_bom(payload, http_charset)
            if utf16:  # read it now: the checks below look at bytes, and UTF-16 is full of NULs
                try:
                    raw, payload = payload, payload.decode(utf16).encode("utf-8")
                except UnicodeDecodeError:
                    skips["undecodable"] += 1
                    continue
                http_charset = None
            if charset.looks_binary(payload):
                skips["not_html"] += 1
                continue
            kind = content_type.classify(headers.get("WARC-Identified-Payload-Type"), http_type, payload)
            if kind == content_type.OTHER or (kind == content_type.TEXT and not params["include_text_plain"]):
                skips["not_html"] += 1
                continue

        values = {
            "id": document_id(record_id, url, raw or payload),
            "url": url,
            "source": f"{shard['path']}@{member.locator}",
            "crawl_date": crawl_date,
            "warc_record_id": record_id,
            "content_type": "text/html" if kind == content_type.HTML else "text/plain",
        }
        if url_check is not None:
            reason = url_check(url)
            if reason:
                writer.reject(values, f"url_filter:{reason}")
                rejected += 1
                continue

        decoded = charset.decode(payload, http_charset)
        if decoded is None:
            skips["undecodable"] += 1
            continue
        body, encoding = decoded
        values["charset"] = utf16 or encoding

        if kind == content_type.HTML:
            t0 = time.perf_counter()
            try:
                text = extractor.extract(body)
            except ExtractionTimeout:
                skips["timeout"] += 1
                continue
            except ExtractionFailed:
                skips["extraction_error"] += 1
                continue
            finally:
                extract_seconds += time.perf_counter() - t0
        else:
            text = body
        text = text.strip()
        if not text:
            skips["empty_extraction"] += 1
            continue

        language, score = langid.identify(text, params["langid_model"])
        values.update(text=text, language=language, language_score=score)
        writer.document(values)
        docs_out += 1

    if docs_in != docs_out + rejected + sum(skips.values()):
        raise AccountingError(
            f"shard {shard['shard']}: {docs_in} records in, but {docs_out} documents + {rejected} rejects + "
            f"{sum(skips.values())} skips"
        )
    docs, rejects = writer.tables()
    return commit_shard(  # it counts the kept documents' characters and languages
        shard["shard"],
        output_url,
        docs,
        rejects_url,
        rejects,
        docs_in=docs_in,
        skips=dict(sorted(skips.items())),
        other_records=other_records,
        # per input file, so that a file without any document is reported (file_warnings)
        docs_in_by_file={shard["path"]: docs_in},
        other_records_by_file={shard["path"]: other_records},
        bytes_in=shard["end"] - shard["start"],
        seconds=round(time.perf_counter() - started, 3),
        extract_seconds=round(extract_seconds, 3),
        extractor_restarts=extractor.restarts - restarts_before,
        # Highest so far in this worker process (it runs many shards), and in its extractor.
        worker_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        extractor_peak_rss_mb=extractor.peak_rss_mb() or 0.0,
    )


def file_warnings(totals: dict) -> list[str]:
    """Input files that gave no document record at all (only warcinfo, requests, metadata)."""
    documents = totals.get("docs_in_by_file", {})
    others = totals.get("other_records_by_file", {})
    return [
        f"inputs: {path} holds no document record ({others.get(path, 0)} records, none a response, resource or conversion)"
        for path, count in sorted(documents.items())
        if count == 0
    ]
