"""Translation backends, all batched: an OpenAI-compatible server (fineflow.llm), a GGUF LLM
in-process (llama-cpp-python), a seq2seq model converted for CTranslate2 (NLLB, Marian/OPUS-MT),
an HTTP NMT contract, and the identity (tests, dry runs).

``translate_all`` is what the step calls: segments found in the segment cache are never sent
again; the rest are sent in batches and added to the cache as they come back. A text a backend
refuses for what it holds (``Refused``) is that text's failure, not the step's: a refused batch is
halved until the refused texts are alone, and they come back as failures with the backend's
message. The step still fails when nothing at all is accepted (a wrong parameter, a broken model).

A translation cut at its token budget (openai and llama: ``finish_reason`` "length"; ctranslate2:
a hypothesis without the end token) is retried once with twice the budget, within the context
(``budget.py``); one still cut is a failure, ``truncated``. Budgets the config does not fix are
derived per segment; an attempt at a budget of its own is cached under the segment key plus the
budget (``fineflow.llm.entry_key``), with its finish reason, so a re-run knows a cut answer for
what it is and reads the retry's answer instead of sending it again.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import httpx

from fineflow.llm import DOCUMENT_REFUSALS, REFUSALS_BEFORE_FAILING, LLMClient, ResponseCache, entry_key, text_key
from fineflow.tasks.translate import budget, codes

_BREAKS = re.compile(r"\s*[\r\n\u2028\u2029\x0b\x0c\x1c-\x1e\x85]+\s*")
MODEL_FILES = ("model.bin", "config.json", "shared_vocabulary.json", "shared_vocabulary.txt", "source_vocabulary.json",
               "target_vocabulary.json", "source_vocabulary.txt", "target_vocabulary.txt", "tokenizer.json")


def segment_key(text: str) -> str:
    """A segment's cache key: its text, NFC-normalized (whitespace is already trimmed)."""
    return text_key(unicodedata.normalize("NFC", text))


def clean(answer: str | None) -> str:
    """A translation on one line (segments live inside a line of their document): line breaks
    become spaces, the ends are trimmed, the rest is left as the backend wrote it."""
    return _BREAKS.sub(" ", (answer or "").strip())


@dataclass
class Stats:
    segments: int = 0
    cache_hits: int = 0
    sent: int = 0
    batches: int = 0
    seconds: float = 0.0
    sent_chars: int = 0  # characters of the segments sent: with seconds, a measured throughput
    failed: int = 0  # segments without a translation (refused, unreadable answers, truncated)
    refused: int = 0  # of which the backend refused (the step fails when it refuses every text)
    retried: int = 0  # segments cut at their budget and tried again with more room
    truncated: int = 0  # segments still cut after the retry (failures)
    extra: dict[str, Any] = field(default_factory=dict)


class Refused(Exception):
    """The backend refused these texts for what they hold (too long, a body it cannot take)."""


@dataclass(frozen=True)
class Failure:
    """Why a segment has no translation: ``reason`` from a bounded set, ``detail`` the backend's words."""

    reason: str  # refused | unreadable | truncated
    detail: str


# What a backend gives for one text: the translation, or (translation, cut at its budget); a
# plain text is a backend without a signal (http, identity).
Output = str | tuple[str, bool]
BUDGETED = ("openai", "llama", "ctranslate2")  # backends with a token budget per segment


def _prompt(template: str, text: str, source: str, target: str) -> str:
    return template.format(text=text, source=source, target=target, source_name=codes.name(source), target_name=codes.name(target))


class Identity:
    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        return list(texts)


class Llama:
    """A GGUF model in-process through llama-cpp-python (`pip install fineflow[llm]`)."""

    def __init__(self, spec: dict) -> None:
        try:
            from llama_cpp import Llama as Model
        except ImportError:
            raise RuntimeError("backend llama needs llama-cpp-python: pip install fineflow[llm]") from None
        self.spec = spec
        self.model = Model(model_path=spec["model"], n_ctx=spec["n_ctx"], n_threads=spec["threads"], seed=0, verbose=False)

    def translate(self, texts: list[str], source: str, target: str, limits: list[int]) -> list[Output]:
        out: list[Output] = []
        for text, limit in zip(texts, limits):
            try:
                answer = self.model.create_chat_completion(
                    messages=[{"role": "user", "content": _prompt(self.spec["prompt"], text, source, target)}],
                    max_tokens=limit, temperature=0.0, seed=0,
                )
            except ValueError as error:  # llama-cpp-python: the prompt exceeds the context window
                raise Refused(f"{type(error).__name__}: {error}") from None
            choice = answer["choices"][0]
            out.append((choice["message"]["content"] or "", choice.get("finish_reason") == "length"))
        return out


class CTranslate2:
    """A seq2seq model converted for CTranslate2 (``ct2-transformers-converter``), with its
    Hugging Face ``tokenizer.json``; NLLB's language codes as the source's first token and the
    target's prefix (``codes: nllb``), or none (a Marian/OPUS-MT model for one pair)."""

    def __init__(self, spec: dict) -> None:
        try:
            import ctranslate2
        except ImportError:
            raise RuntimeError("backend ctranslate2 needs ctranslate2: pip install fineflow[translate]") from None
        from tokenizers import Tokenizer

        self.spec = spec
        device = spec["device"]
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        compute = spec["compute_type"]
        if compute == "auto":
            compute = "float16" if device == "cuda" else "int8"
        self.translator = ctranslate2.Translator(spec["model"], device=device, compute_type=compute,
                                                 inter_threads=1, intra_threads=spec["threads"])
        self.tokenizer = Tokenizer.from_file(spec["tokenizer"])
        self.end = "</s>"

    def translate(self, texts: list[str], source: str, target: str, limits: list[int]) -> list[Output]:
        """One decoding of the batch up to its largest budget (a budget is a bound on a runaway, so
        a text is not cut below the batch's); a hypothesis that ends without the end token was cut."""
        nllb = self.spec["codes"] == "nllb" or bool(self.spec["language_codes"])
        src = codes.model_code(source, self.spec["codes"], self.spec["language_codes"])
        tgt = codes.model_code(target, self.spec["codes"], self.spec["language_codes"])
        batch = []
        for text in texts:
            pieces = self.tokenizer.encode(text, add_special_tokens=False).tokens
            batch.append(([src] if nllb else []) + pieces + [self.end])
        try:
            results = self.translator.translate_batch(
                batch, target_prefix=[[tgt]] * len(batch) if nllb else None, beam_size=self.spec["beam_size"],
                max_decoding_length=max(limits) + (1 if nllb else 0),  # the target code prefix counts in it
                max_batch_size=self.spec["batch_size"], return_end_token=True,
                # the hard window already holds every segment: never truncate one silently
                max_input_length=self.spec["max_input_tokens"] + 2,
            )
        except (RuntimeError, ValueError) as error:  # one input the model cannot take (or memory for this batch)
            raise Refused(f"{type(error).__name__}: {error}") from None
        out: list[Output] = []
        for result in results:
            tokens = result.hypotheses[0]
            cut = not tokens or tokens[-1] != self.end
            if nllb and tokens and tokens[0] == tgt:
                tokens = tokens[1:]
            ids = [i for i in (self.tokenizer.token_to_id(t) for t in tokens if t != self.end) if i is not None]
            out.append((self.tokenizer.decode(ids, skip_special_tokens=True), cut))
        return out


class HTTP:
    """``POST {url}/translate`` with ``{"texts": [...], "src_lang": ..., "tgt_lang": ...}``, answered
    by ``{"translations": [...]}`` of the same length."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.http = httpx.Client(base_url=spec["url"].rstrip("/"), timeout=spec["timeout_s"])

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        body = {"texts": texts, "src_lang": codes.model_code(source, self.spec["codes"], self.spec["language_codes"]),
                "tgt_lang": codes.model_code(target, self.spec["codes"], self.spec["language_codes"])}
        for attempt in range(4):
            try:
                response = self.http.post("/translate", json=body)
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    found = response.json().get("translations")
                    if not isinstance(found, list) or len(found) != len(texts):
                        raise RuntimeError(f"{self.spec['url']}/translate answered {len(found or [])} translations for {len(texts)} texts")
                    return [str(t) for t in found]
                problem = f"HTTP {response.status_code}: {response.text[:200]!r}"
                if response.status_code in DOCUMENT_REFUSALS:
                    raise Refused(problem)
                if response.status_code < 500 and response.status_code != 429:
                    break
            time.sleep(min(8.0, 0.5 * 2**attempt))
        raise RuntimeError(f"{self.spec['url']}/translate failed: {problem}")


def build(spec: dict) -> Any:
    kind = spec["kind"]
    if kind == "identity":
        return Identity()
    if kind == "llama":
        return Llama(spec)
    if kind == "ctranslate2":
        return CTranslate2(spec)
    if kind == "http":
        return HTTP(spec)
    raise ValueError(f"backend {kind} is not built here (openai goes through fineflow.llm)")


TRUNCATION_RETRIES = 1  # a cut segment is sent again once, with twice the budget


@dataclass(frozen=True)
class Attempt:
    """One segment at one budget: ``limit`` None for a backend without one; ``own`` when the
    budget is this attempt's (derived, or a retry's), so the cache keys it with the text."""

    key: str
    text: str
    limit: int | None
    own: bool

    @property
    def entry(self) -> str:
        return entry_key(self.key, self.limit if self.own else None)


def ceiling(spec: dict, text: str, source: str, target: str) -> int:
    """The most tokens a segment's translation may be given (``budget.cap``)."""
    prompt = _prompt(spec["prompt"], text, source, target) if spec["kind"] in ("openai", "llama") else text
    return budget.cap(spec["kind"], spec["n_ctx"], prompt)


def first_attempt(spec: dict, text: str, source: str, target: str) -> Attempt:
    """A segment's first attempt: at the configured max_tokens (the namespace's: a bare key), else
    at its derived budget (in the entry's key)."""
    key = segment_key(text)
    if spec["kind"] not in BUDGETED:
        return Attempt(key, text, None, False)
    configured = spec.get("max_tokens")
    if configured is not None:
        return Attempt(key, text, configured, False)
    return Attempt(key, text, budget.first(None, text, ceiling(spec, text, source, target)), True)


def _send(backend: Any, batch: list[Attempt], source: str, target: str, refused: Any,
          budgeted: bool) -> list[tuple[Attempt, Output]]:
    """(attempt, output) for a batch; a refused batch halved until each refused text is alone
    and handed to ``refused(key, message)``."""
    texts = [attempt.text for attempt in batch]
    try:
        if budgeted:
            out = backend.translate(texts, source, target, [attempt.limit for attempt in batch])
        else:
            out = backend.translate(texts, source, target)
    except Refused as error:
        if len(batch) == 1:
            refused(batch[0].key, str(error))
            return []
        half = len(batch) // 2
        return (_send(backend, batch[:half], source, target, refused, budgeted)
                + _send(backend, batch[half:], source, target, refused, budgeted))
    return list(zip(batch, out))


def _round(spec: dict, backend: Any, cache: ResponseCache, attempts: list[Attempt], source: str, target: str,
           stats: Stats, failures: dict[str, Failure], first: bool) -> dict[str, tuple[Attempt, str, bool]]:
    """(attempt, translation, cut) by segment key for ``attempts``: read from the cache, else sent
    (and cached, cut ones too, with their finish reason); refused and unreadable ones go to
    ``failures``."""
    results: dict[str, tuple[Attempt, str, bool]] = {}
    missing = []
    for attempt in attempts:
        hit = cache.get(attempt.entry)
        if hit is not None:
            results[attempt.key] = (attempt, hit.answer, hit.finish_reason == "length")
            stats.cache_hits += first  # a retry's hit is counted in `retried`: hits stay <= segments
        else:
            missing.append(attempt)
    stats.sent_chars += sum(len(attempt.text) for attempt in missing)

    def refused(key: str, message: str) -> None:
        failures[key] = Failure("refused", message)
        stats.failed += 1
        stats.refused += 1
        accepted = stats.sent - stats.refused
        if stats.refused >= REFUSALS_BEFORE_FAILING and accepted <= 0:
            raise RuntimeError(f"backend {spec['kind']}: the first {stats.refused} texts were all refused, none accepted; "
                               f"last: {message}")

    if spec["kind"] == "openai":
        client: LLMClient = backend
        before = client.stats.requests
        by_key = {attempt.key: attempt for attempt in missing}
        items = [(a.key, _prompt(spec["prompt"], a.text, source, target)) + ((a.limit,) if a.own else ()) for a in missing]
        answers = client.ask_all(items, cache)
        for key, answer in answers.items():
            if answer.error is not None:  # the client already fails the step when nothing is accepted
                failures[key] = Failure("refused" if answer.refused else "unreadable", answer.error)
                stats.failed += 1
            else:
                results[key] = (by_key[key], answer.text or "", answer.truncated)
        stats.sent += client.stats.requests - before
        stats.extra = client.stats.as_dict()
        return results
    budgeted = spec["kind"] in BUDGETED
    for start in range(0, len(missing), spec["batch_size"]):
        batch = missing[start : start + spec["batch_size"]]
        stats.sent += len(batch)
        stats.batches += 1
        for attempt, output in _send(backend, batch, source, target, refused, budgeted):
            translation, cut = output if isinstance(output, tuple) else (output, False)
            results[attempt.key] = (attempt, translation, cut)
            # A backend without a budget has no finish reason to keep.
            cache.add(attempt.entry, translation, 0, 0, ("length" if cut else "stop") if budgeted else None)
    return results


def translate_all(spec: dict, backend: Any, cache: ResponseCache, texts: list[str], source: str, target: str,
                  stats: Stats) -> tuple[dict[str, str], dict[str, Failure]]:
    """Translations by segment key for ``texts`` (cached ones read, the others sent in batches),
    and the segments left without one, with why. A translation cut at its budget is tried once
    more with twice the budget (within the context); one still cut is a ``truncated`` failure."""
    started = time.monotonic()
    stats.segments += len(texts)
    found: dict[str, str] = {}
    failures: dict[str, Failure] = {}
    attempts = list({a.key: a for a in (first_attempt(spec, text, source, target) for text in texts)}.values())
    first_limits = {a.key: a.limit for a in attempts}
    try:
        for round_ in range(1 + TRUNCATION_RETRIES):
            results = _round(spec, backend, cache, attempts, source, target, stats, failures, first=round_ == 0)
            attempts = []
            for key, (attempt, translation, cut) in results.items():
                if not cut:
                    found[key] = translation
                    continue
                assert attempt.limit is not None  # only budgeted backends say an answer was cut
                more = budget.retry(attempt.limit, ceiling(spec, attempt.text, source, target)) \
                    if round_ < TRUNCATION_RETRIES else None
                if more is not None:
                    attempts.append(Attempt(key, attempt.text, more, True))
                    stats.retried += 1
                    continue
                tried = f"max_tokens {first_limits[key]}" + (f", then {attempt.limit}" if attempt.limit != first_limits[key] else
                                                             " (no more room in the context)")
                failures[key] = Failure("truncated", f"cut at its token budget ({tried}); ends {translation[-60:]!r}")
                stats.truncated += 1
                stats.failed += 1
            if not attempts:
                break
    finally:
        cache.flush()
        stats.seconds += time.monotonic() - started
    return found, failures
