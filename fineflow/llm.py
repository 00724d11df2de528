"""An OpenAI-compatible LLM client with a response cache in object storage; shared by stages.

Speaks ``/v1/chat/completions`` and ``/v1/completions`` as served by vLLM, SGLang, llama.cpp's
server, TGI and Ollama. Requests run with bounded concurrency; each has a per-attempt timeout
and a deadline over all its attempts; 429, 5xx and connection failures are retried with
exponential backoff and jitter; 401/403/404 fail at once (a wrong key, model name or URL will
not get better); 400/413/422 refuse one request for what it holds (too long for the context):
that document's problem, returned as a refused answer for the caller to reject.

The cache keys an answer by everything it depends on: one *namespace* folder per (server
identity, what the server reports about the model, model name, prompt template, decoding
parameters, answer constraint) holds Parquet batch files of (text hash, answer, token counts,
finish reason) and a ``namespace.json`` that says what it is (``fineflow cache list``). The
namespace scheme is versioned (``CACHE_SCHEME``): later keys add fields to it instead of
re-keying; a request with its own ``max_tokens`` is keyed by its text and that limit. Answers are
flushed in batches as they arrive, so a crash loses at most one unflushed batch, and a later run
(another sample, another stage) that asks the same question of the same server reads the answer
instead of asking. Answers that could not be read are never cached; an answer cut at its
``max_tokens`` is cached with its finish reason (``length``), so a re-run knows it was cut.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from fineflow import secrets, storage
from fineflow.fingerprint import canonical_json, digest
from fineflow.stage_config import Strict

CACHE_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("answer", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    # why the server stopped ("stop", "length": cut at max_tokens); null where it did not say, and
    # in batch files written before the column existed (read as unknown)
    ("finish_reason", pa.string()),
])


# Version of how namespaces are keyed: 2 added the server's identity, what it reports about the
# model and the answer constraint. New keys join the namespace record with a default that leaves
# existing namespaces' digests unchanged. Scheme 2 was extended in place (#28), without re-keying
# a namespace: a request that sets its own max_tokens (``ask_all`` items of three) is keyed in
# its namespace by ``entry_key`` (the text key plus the limit), while requests at the server's
# ``max_tokens`` (part of the namespace) keep the bare text key; batch files gained the nullable
# ``finish_reason`` column.
CACHE_SCHEME = 2
NAMESPACE_RECORD = "namespace.json"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
# Fields of a /v1/models entry that change between two calls to one server (vLLM's "created").
_VOLATILE_MODEL_FIELDS = {"created"}


class LLMError(RuntimeError):
    """The server refused a request, or could not be reached before the deadline."""


# Answers that refuse one request for what it holds (too long, a body the server cannot take);
# 401/403/404 (key, model name, URL) would fail every request and fail the step instead.
DOCUMENT_REFUSALS = frozenset({400, 413, 422})
DEFAULT_MAX_TOKENS = 16
# Refusals before any accepted request that mean the request itself is wrong (an unknown
# parameter), not one document: the step fails instead of rejecting every document.
REFUSALS_BEFORE_FAILING = 8


class LLMServer(Strict):
    """Where and how to ask: an OpenAI-compatible server and the decoding parameters."""

    base_url: str = Field(description="the API root, e.g. http://127.0.0.1:8080/v1")
    model: str = Field(description="the model name the server knows (part of the cache key)")
    identity: str | None = Field(
        default=None, min_length=1, max_length=500,
        description="what answers come from, for fingerprints and the response cache (e.g. 'vllm meta-llama/"
        "Llama-3.1-70B-Instruct'): the same identity on another host keeps the cache. Default: the server's URL "
        "(on loopback without its port, so restarts on another port keep it)",
    )
    answer_format: Literal["free", "grammar", "json_schema"] = Field(
        default="free",
        description="how this server constrains an answer's form, for steps that know it (annotate: 'Score: N', "
        "N in 0-5): grammar: a GBNF grammar in the request (llama.cpp, llama-cpp-python); json_schema: an "
        "OpenAI-style response_format (OpenAI, vLLM, SGLang, llama.cpp); free: none",
    )
    endpoint: Literal["chat", "completions"] = Field(
        default="chat", description="chat: /chat/completions with one user message; completions: the raw prompt"
    )
    api_key_env: str | None = Field(default="OPENAI_API_KEY", description="environment variable holding the API key")
    api_key_block: str | None = Field(default=None, description="a Prefect Secret block with the API key (overrides api_key_env)")
    concurrency: int = Field(default=4, ge=1, le=1024, description="requests in flight at once")
    timeout_s: float = Field(default=120.0, gt=0, le=86_400, allow_inf_nan=False, description="one attempt's limit")
    deadline_s: float = Field(default=600.0, gt=0, le=7 * 86_400, allow_inf_nan=False, description="one request's limit over all its attempts")
    retries: int = Field(default=5, ge=0, le=100, description="attempts after the first, for 429, 5xx and connection errors")
    max_tokens: int | None = Field(
        default=None, ge=1, le=1_000_000,
        description=f"the most tokens an answer may have (default {DEFAULT_MAX_TOKENS}; a request may set its own). Unset "
        "stays None through a config's dump and reload, so a step can tell it from a value given (and derive its own per request)",
    )
    temperature: float = Field(default=0.0, ge=0, le=10, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(default=0, ge=-(2**63), lt=2**63)
    flush_every: int = Field(default=32, ge=1, le=1_000_000, description="answers per cache batch file")

    def decoding(self) -> dict[str, Any]:
        """What changes an answer besides the prompt and what the server reports: enters step
        fingerprints and the cache key. Known without asking the server (plans are made offline)."""
        found = {"endpoint": self.endpoint, "max_tokens": self.answer_tokens, "temperature": self.temperature,
                 "top_p": self.top_p, "seed": self.seed, "server": self.server_identity()}
        if self.answer_format != "free":
            found["answer_format"] = self.answer_format
        return found

    @property
    def answer_tokens(self) -> int:
        """The max_tokens of a request that sets none (unset: the default, as namespaces have always recorded it)."""
        return DEFAULT_MAX_TOKENS if self.max_tokens is None else self.max_tokens

    def server_identity(self) -> str:
        """``identity``, else the URL without credentials, query or (on loopback) port."""
        if self.identity:
            return self.identity
        parts = urlsplit(self.base_url)
        host = (parts.hostname or "").lower()
        where = "loopback" if host in _LOOPBACK else host + (f":{parts.port}" if parts.port else "")
        return f"{parts.scheme}://{where}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class AnswerForm:
    """The form a step needs its answers in, as each constraint mechanism takes it; an answer
    under ``json_schema`` is turned back into text by ``from_json`` (so parsing stays one path)."""

    grammar: str  # GBNF
    json_schema: dict[str, Any]
    from_json: Callable[[Any], str]

    def key(self) -> dict[str, Any]:
        return {"grammar": self.grammar, "json_schema": self.json_schema}


@dataclass
class Answer:
    text: str | None  # None: no answer (the error says why)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None
    refused: bool = False  # the server refused this request (400/413/422): this document's problem, not the step's
    finish_reason: str | None = None  # the server's: "stop", "length" (cut at max_tokens), ...; None: not said

    @property
    def truncated(self) -> bool:
        """The answer stopped at its max_tokens, not where the model ended it."""
        return self.finish_reason == "length"


class Cached(NamedTuple):
    """One cache entry."""

    answer: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None


@dataclass
class CallStats:
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    refused: int = 0
    truncated: int = 0  # answers cut at their max_tokens (cached ones included)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, Any]:
        rate = self.requests / self.seconds if self.seconds else 0.0
        tokens = (self.prompt_tokens + self.completion_tokens) / self.seconds if self.seconds else 0.0
        return {
            "llm_requests": self.requests, "llm_retries": self.retries, "llm_cache_hits": self.cache_hits,
            "llm_refused": self.refused, "llm_truncated": self.truncated,
            "llm_prompt_tokens": self.prompt_tokens, "llm_completion_tokens": self.completion_tokens,
            "llm_seconds": round(self.seconds, 3), "llm_requests_per_s": round(rate, 3),
            "llm_tokens_per_s": round(tokens, 1),
        }


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def entry_key(key: str, max_tokens: int | None = None) -> str:
    """A cache entry's key: a request at the server's max_tokens (which its namespace holds) by its
    text key alone, one that sets its own limit by the text key plus the limit."""
    return key if max_tokens is None else f"{key}:max_tokens={max_tokens}"


def namespace_record(server: LLMServer, template: str, reported: dict | None = None,
                     form: AnswerForm | None = None) -> dict[str, Any]:
    """What a namespace's answers depend on (its digest is the folder name; the record is kept in it)."""
    record = {"scheme": CACHE_SCHEME, "model": server.model, "template": hashlib.sha256(template.encode()).hexdigest(),
              "decoding": server.decoding(), "reported": reported}
    if form is not None and server.answer_format != "free":
        record["constraint"] = form.key()
    return record


def namespace(server: LLMServer, template: str, reported: dict | None = None, form: AnswerForm | None = None) -> str:
    """The cache folder name of answers to ``template`` by this server and model with these
    parameters (``reported``: what the server says about the model, ``LLMClient.reported_model``)."""
    return digest(namespace_record(server, template, reported, form), chars=24)


class ResponseCache:
    """Answers by text hash in one namespace folder; new answers flushed in batch files."""

    def __init__(self, folder: str, flush_every: int = 32, record: dict | None = None) -> None:
        self.folder = folder
        self.flush_every = flush_every
        self.record = record  # written as namespace.json with the first batch: what the namespace is
        self._known: dict[str, Cached] = {}
        self._pending: list[tuple[str, str, int, int, str | None]] = []
        self._lock = threading.Lock()
        self.batches_read = 0
        for name in sorted(storage.list_names(folder)):
            if name.startswith("batch-") and name.endswith(".parquet"):
                table = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(folder, name))))
                # Batch files written before a column existed read it as null (finish_reason: unknown).
                columns = [table.column(n).to_pylist() if n in table.column_names else [None] * table.num_rows
                           for n in CACHE_SCHEMA.names]
                for key, answer, p, c, reason in zip(*columns):
                    self._known[key] = Cached(answer, p or 0, c or 0, reason)
                self.batches_read += 1

    def __len__(self) -> int:
        return len(self._known)

    def get(self, key: str) -> Cached | None:
        return self._known.get(key)

    def add(self, key: str, answer: str, prompt_tokens: int, completion_tokens: int, finish_reason: str | None = None) -> None:
        with self._lock:
            self._known[key] = Cached(answer, prompt_tokens, completion_tokens, finish_reason)
            self._pending.append((key, answer, prompt_tokens, completion_tokens, finish_reason))
            full = len(self._pending) >= self.flush_every
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            rows, self._pending = self._pending, []
        if not rows:
            return
        table = pa.table([list(col) for col in zip(*rows)], schema=CACHE_SCHEMA)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        if self.record is not None and not storage.exists(storage.join(self.folder, NAMESPACE_RECORD)):
            described = {**self.record, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            storage.write_bytes(storage.join(self.folder, NAMESPACE_RECORD), json.dumps(described, indent=1).encode())
        # A unique name per batch: concurrent writers (two tasks, two runs) never overwrite each other.
        name = f"batch-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet"
        storage.write_bytes(storage.join(self.folder, name), sink.getvalue())


class LLMClient:
    """Bounded-concurrency requests to one server; the API key is resolved once and never shown."""

    def __init__(self, server: LLMServer, api_key: str | None = None, *, sleep: Callable[[float], None] = time.sleep,
                 form: AnswerForm | None = None, system: str | None = None) -> None:
        self.server = server
        self.form = form if server.answer_format != "free" else None
        # A system message before each prompt (chat), or a paragraph before it (completions); a
        # caller keys its cache namespace by it (the template it passes to ``cache``)
        self.system = system
        self._api_key = api_key if api_key is not None else secrets.resolve(server.api_key_env, server.api_key_block)
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(max_connections=server.concurrency, max_keepalive_connections=server.concurrency)
        self._http = httpx.Client(base_url=server.base_url.rstrip("/"), headers=headers, limits=limits)
        self.stats = CallStats()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _body(self, prompt: str, max_tokens: int | None = None) -> tuple[str, dict[str, Any]]:
        s = self.server
        common = {"model": s.model, "max_tokens": s.answer_tokens if max_tokens is None else max_tokens, "temperature": s.temperature, "top_p": s.top_p}
        if s.seed is not None:
            common["seed"] = s.seed
        if self.form is not None and s.answer_format == "grammar":
            common["grammar"] = self.form.grammar
        elif self.form is not None and s.answer_format == "json_schema":
            common["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "answer", "schema": self.form.json_schema, "strict": True}}
        if s.endpoint == "chat":
            system = [{"role": "system", "content": self.system}] if self.system else []
            return "/chat/completions", {**common, "messages": [*system, {"role": "user", "content": prompt}]}
        return "/completions", {**common, "prompt": f"{self.system}\n\n{prompt}" if self.system else prompt}

    def ask(self, prompt: str, max_tokens: int | None = None) -> Answer:
        """One request with retries inside its deadline, at ``max_tokens`` (default: the server's).
        Raises LLMError when the server refuses it for a reason every request shares (401, 403,
        404) or stays unreachable; a request it refuses for its content (400, 413, 422) and an
        answer it cannot read come back with ``error`` set (``refused`` for the first), for the
        caller to reject that one document. ``finish_reason`` says whether the answer was cut."""
        if max_tokens is not None and not 1 <= max_tokens <= 1_000_000:
            raise ValueError(f"max_tokens {max_tokens} is not within 1..1000000")
        path, body = self._body(prompt, max_tokens)
        started = time.monotonic()
        deadline = started + self.server.deadline_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LLMError(f"{self.server.base_url}: no answer within the deadline ({self.server.deadline_s:g} s)")
            problem: str
            try:
                response = self._http.post(path, json=body, timeout=min(self.server.timeout_s, remaining))
            except httpx.HTTPError as error:  # refused, reset, timed out
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    answer = _read_answer(response, self.server.endpoint)
                    with self.stats._lock:
                        self.stats.requests += 1
                        self.stats.truncated += answer.truncated
                    return _from_json(answer, self.form) if self.server.answer_format == "json_schema" else answer
                problem = f"HTTP {response.status_code}: {response.text[:200]!r}"
                if response.status_code in DOCUMENT_REFUSALS:
                    # Context length, a body the server cannot take: this request's problem. ask_all
                    # fails the step when no request at all is accepted (a wrong parameter).
                    with self.stats._lock:
                        self.stats.refused += 1
                    return Answer(None, error=f"refused ({problem})", refused=True)
                if response.status_code != 429 and response.status_code < 500:
                    raise LLMError(f"{self.server.base_url}{path} refused the request ({problem})")
            attempt += 1
            if attempt > self.server.retries:
                raise LLMError(f"{self.server.base_url}{path}: gave up after {attempt} attempts; last: {problem}")
            with self.stats._lock:
                self.stats.retries += 1
            pause = min(30.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random())
            self._sleep(max(0.0, min(pause, deadline - time.monotonic())))

    def reported_model(self) -> dict | None:
        """What the server says about the model (its ``/models`` entry, minus fields that change
        per call), or None where it does not say: a different model served under the same name
        gets another cache namespace. Asked once per client."""
        if not hasattr(self, "_reported"):
            self._reported = None
            try:
                response = self._http.get("/models", timeout=min(self.server.timeout_s, 30.0))
                entries = response.json().get("data") if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError, AttributeError):
                entries = None
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and entry.get("id") == self.server.model:
                    self._reported = {k: v for k, v in sorted(entry.items()) if k not in _VOLATILE_MODEL_FIELDS}
        return self._reported

    def cache(self, folder: str, template: str) -> ResponseCache:
        """The response cache of this server's answers to ``template`` under ``folder``."""
        record = namespace_record(self.server, template, self.reported_model(), self.form)
        return ResponseCache(storage.join(folder, digest(record, chars=24)), self.server.flush_every, record)

    def ask_all(
        self,
        items: Iterable[tuple[str, str] | tuple[str, str, int | None]],
        cache: ResponseCache | None = None,
        on_answer: Callable[[str, Answer], None] | None = None,
    ) -> dict[str, Answer]:
        """Answers to ``(key, prompt)`` pairs, or ``(key, prompt, max_tokens)`` for a request with
        its own limit (cached under ``entry_key``): from the cache where it has them, else asked
        with at most ``concurrency`` requests in flight, each added to the cache as it arrives.
        Answers come back by ``key``. The first LLMError stops new requests and is raised after
        the cache is flushed."""
        started = time.monotonic()
        answers: dict[str, Answer] = {}
        to_ask: list[tuple[str, str, int | None]] = []
        for item in items:
            key, prompt = item[0], item[1]
            limit = item[2] if len(item) > 2 else None
            hit = cache.get(entry_key(key, limit)) if cache is not None else None
            if hit is not None:
                answers[key] = Answer(hit.answer, hit.prompt_tokens, hit.completion_tokens, cached=True,
                                      finish_reason=hit.finish_reason)
                self.stats.cache_hits += 1
                self.stats.truncated += answers[key].truncated
                if on_answer:
                    on_answer(key, answers[key])
            elif key not in answers:
                to_ask.append((key, prompt, limit))

        def one(key: str, prompt: str, limit: int | None) -> None:
            answer = self.ask(prompt, limit)
            answers[key] = answer
            with self.stats._lock:
                accepted = self.stats.requests
            if answer.refused and accepted == 0 and self.stats.refused >= REFUSALS_BEFORE_FAILING:
                raise LLMError(f"{self.server.base_url}: the first {self.stats.refused} requests were all refused, "
                               f"none accepted; last: {answer.error}")
            with self.stats._lock:
                self.stats.prompt_tokens += answer.prompt_tokens
                self.stats.completion_tokens += answer.completion_tokens
            if cache is not None and answer.error is None:
                cache.add(entry_key(key, limit), answer.text or "", answer.prompt_tokens, answer.completion_tokens,
                          answer.finish_reason)
            if on_answer:
                on_answer(key, answer)

        try:
            with ThreadPoolExecutor(max_workers=self.server.concurrency) as pool:
                # Submitted in windows, so a failure stops the rest instead of queueing them all.
                queue = list(reversed(to_ask))
                running = set()
                while queue or running:
                    while queue and len(running) < 2 * self.server.concurrency:
                        running.add(pool.submit(one, *queue.pop()))
                    finished, running = wait(running, return_when=FIRST_EXCEPTION)
                    for future in finished:
                        error = future.exception()
                        if error is not None:
                            for other in running:
                                other.cancel()
                            wait(running)
                            raise error
        finally:
            if cache is not None:
                cache.flush()
            self.stats.seconds += time.monotonic() - started
        return answers


def _read_answer(response: httpx.Response, endpoint: str) -> Answer:
    """The text and token counts of a 200 answer; a body that is not an OpenAI-style completion
    comes back as an Answer with ``error`` (recorded, never cached)."""
    try:
        data = response.json()
        choice = data["choices"][0]
        text = choice["message"]["content"] if endpoint == "chat" else choice["text"]
        if not isinstance(text, str):
            raise TypeError(f"the answer's text is {type(text).__name__}")
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return Answer(None, error=f"unreadable response ({type(error).__name__}: {str(error)[:80]}): {response.text[:120]!r}")
    usage = data.get("usage") or {}
    reason = choice.get("finish_reason")
    return Answer(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                  finish_reason=reason[:40] if isinstance(reason, str) else None)


def _from_json(answer: Answer, form: AnswerForm | None) -> Answer:
    """An answer given under a JSON schema, as the text the step reads."""
    if answer.error is not None or form is None:
        return answer
    try:
        answer.text = form.from_json(json.loads(answer.text or ""))
    except (ValueError, KeyError, TypeError) as error:
        answer.error, answer.text = f"unreadable response (not the JSON asked for: {type(error).__name__}): {answer.text!r:.120}", None
    return answer


def describe(server: LLMServer) -> str:
    """For logs and artifacts: where and what, never the key."""
    return canonical_json({"base_url": server.base_url, "model": server.model, **server.decoding()})
