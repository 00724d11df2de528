"""Translation backends, all batched: an OpenAI-compatible server (fineflow.llm), a GGUF LLM
in-process (llama-cpp-python), a seq2seq model converted for CTranslate2 (NLLB, Marian/OPUS-MT),
an HTTP NMT contract, and the identity (tests, dry runs).

``translate_all`` is what the step calls: segments found in the segment cache are never sent
again; the rest are sent in batches and added to the cache as they come back. A text a backend
refuses for what it holds (``Refused``) is that text's failure, not the step's: a refused batch is
halved until the refused texts are alone, and they come back as failures with the backend's
message. The step still fails when nothing at all is accepted (a wrong parameter, a broken model).
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import httpx

from fineflow.llm import DOCUMENT_REFUSALS, REFUSALS_BEFORE_FAILING, LLMClient, ResponseCache, text_key
from fineflow.tasks.translate import codes

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
    failed: int = 0  # segments without a translation (refused, unreadable answers)
    extra: dict[str, Any] = field(default_factory=dict)


class Refused(Exception):
    """The backend refused these texts for what they hold (too long, a body it cannot take)."""


@dataclass(frozen=True)
class Failure:
    """Why a segment has no translation: ``reason`` from a bounded set, ``detail`` the backend's words."""

    reason: str  # refused | unreadable
    detail: str


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

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        out = []
        for text in texts:
            try:
                answer = self.model.create_chat_completion(
                    messages=[{"role": "user", "content": _prompt(self.spec["prompt"], text, source, target)}],
                    max_tokens=self.spec["max_tokens"], temperature=0.0, seed=0,
                )
            except ValueError as error:  # llama-cpp-python: the prompt exceeds the context window
                raise Refused(f"{type(error).__name__}: {error}") from None
            out.append(answer["choices"][0]["message"]["content"] or "")
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

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
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
                max_decoding_length=self.spec["max_tokens"], max_batch_size=self.spec["batch_size"],
                # the hard window already holds every segment: never truncate one silently
                max_input_length=self.spec["max_input_tokens"] + 2,
            )
        except (RuntimeError, ValueError) as error:  # one input the model cannot take (or memory for this batch)
            raise Refused(f"{type(error).__name__}: {error}") from None
        out = []
        for result in results:
            tokens = result.hypotheses[0]
            if nllb and tokens and tokens[0] == tgt:
                tokens = tokens[1:]
            ids = [i for i in (self.tokenizer.token_to_id(t) for t in tokens if t != self.end) if i is not None]
            out.append(self.tokenizer.decode(ids, skip_special_tokens=True))
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


def _send(backend: Any, batch: list[tuple[str, str]], source: str, target: str,
          refused: Any) -> list[tuple[str, str]]:
    """(key, translation) for a batch; a refused batch halved until each refused text is alone
    and handed to ``refused(key, message)``."""
    try:
        out = backend.translate([text for _, text in batch], source, target)
    except Refused as error:
        if len(batch) == 1:
            refused(batch[0][0], str(error))
            return []
        half = len(batch) // 2
        return _send(backend, batch[:half], source, target, refused) + _send(backend, batch[half:], source, target, refused)
    return [(key, translation) for (key, _), translation in zip(batch, out)]


def translate_all(spec: dict, backend: Any, cache: ResponseCache, texts: list[str], source: str, target: str,
                  stats: Stats) -> tuple[dict[str, str], dict[str, Failure]]:
    """Translations by segment key for ``texts`` (cached ones read, the others sent in batches),
    and the segments left without one, with why."""
    started = time.monotonic()
    keys = {segment_key(text): text for text in texts}
    stats.segments += len(texts)
    found: dict[str, str] = {}
    failures: dict[str, Failure] = {}
    missing = []
    for key, text in keys.items():
        hit = cache.get(key)
        if hit is not None:
            found[key] = hit[0]
            stats.cache_hits += 1
        else:
            missing.append((key, text))
    stats.sent_chars += sum(len(text) for _, text in missing)

    def refused(key: str, message: str) -> None:
        failures[key] = Failure("refused", message)
        stats.failed += 1
        accepted = stats.sent - stats.failed
        if stats.failed >= REFUSALS_BEFORE_FAILING and accepted <= 0:
            raise RuntimeError(f"backend {spec['kind']}: the first {stats.failed} texts were all refused, none accepted; "
                               f"last: {message}")

    try:
        if spec["kind"] == "openai":
            client: LLMClient = backend
            before = client.stats.requests
            answers = client.ask_all([(key, _prompt(spec["prompt"], text, source, target)) for key, text in missing], cache)
            for key, answer in answers.items():
                if answer.error is not None:  # the client already fails the step when nothing is accepted
                    failures[key] = Failure("refused" if answer.refused else "unreadable", answer.error)
                    stats.failed += 1
                else:
                    found[key] = answer.text or ""
            stats.sent += client.stats.requests - before
            stats.extra = client.stats.as_dict()
        else:
            for start in range(0, len(missing), spec["batch_size"]):
                batch = missing[start : start + spec["batch_size"]]
                stats.sent += len(batch)
                stats.batches += 1
                for key, translation in _send(backend, batch, source, target, refused):
                    found[key] = translation
                    cache.add(key, translation, 0, 0)
    finally:
        cache.flush()
        stats.seconds += time.monotonic() - started
    return found, failures
