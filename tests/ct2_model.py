"""A tiny CTranslate2 translation model built from random weights (its ``specs`` API needs no
download), with a word-level ``tokenizer.json`` trained on a few texts and NLLB's language codes
in its vocabulary: it exercises the CTranslate2 backend's batching, tokenization and language
codes. Its output is meaningless."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
CODES = ["eng_Latn", "fra_Latn", "deu_Latn", "spa_Latn", "arb_Arab"]


def build(folder: Path, texts: list[str], d_model: int = 32, layers: int = 1, seed: int = 0) -> Path:
    import ctranslate2
    from ctranslate2.specs import attention_spec, common_spec, model_spec, transformer_spec
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=400, special_tokens=SPECIALS + CODES))
    vocabulary = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))

    spec = transformer_spec.TransformerSpec.from_config(layers, 2)
    rng = np.random.default_rng(seed)
    vocab, ffn = len(vocabulary), 2 * d_model

    def fill(layer) -> None:  # noqa: ANN001
        for name, value in list(vars(layer).items()):
            if name.startswith("_"):
                continue
            if isinstance(value, model_spec.LayerSpec):
                fill(value)
            elif isinstance(value, list) and value and isinstance(value[0], model_spec.LayerSpec):
                for item in value:
                    fill(item)
            elif value is None:  # what the attention and feed-forward weights below leave: norms, embeddings
                setattr(layer, name, _array(layer, name))

    def _array(layer, name: str) -> np.ndarray:  # noqa: ANN001
        if isinstance(layer, common_spec.LayerNormSpec):
            return np.ones(d_model, np.float32) if name == "gamma" else np.zeros(d_model, np.float32)
        if isinstance(layer, common_spec.EmbeddingsSpec):
            return (rng.standard_normal((vocab, d_model)) * 0.1).astype(np.float32)
        raise KeyError(name)

    def linear(out_dim: int, in_dim: int) -> np.ndarray:
        return (rng.standard_normal((out_dim, in_dim)) * 0.1).astype(np.float32)

    for side in (spec.encoder, spec.decoder):
        for layer in side.layer:
            attentions = [layer.self_attention] + ([layer.attention] if hasattr(layer, "attention") else [])
            for attention in attentions:
                assert isinstance(attention, attention_spec.MultiHeadAttentionSpec)
                if attention is layer.self_attention:
                    attention.linear[0].weight = linear(3 * d_model, d_model)
                else:
                    attention.linear[0].weight = linear(d_model, d_model)
                    attention.linear[1].weight = linear(2 * d_model, d_model)
                attention.linear[-1].weight = linear(d_model, d_model)
            layer.ffn.linear_0.weight = linear(ffn, d_model)
            layer.ffn.linear_1.weight = linear(d_model, ffn)
    spec.decoder.projection.weight = linear(vocab, d_model)
    fill(spec.encoder)
    fill(spec.decoder)
    spec.register_source_vocabulary(vocabulary)
    spec.register_target_vocabulary(vocabulary)
    spec.validate()
    spec.optimize(quantization="float32")
    spec.save(str(folder))
    assert ctranslate2.contains_model(str(folder))
    return folder
