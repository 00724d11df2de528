"""The tokenize stage (tokenize-count): exact token counts per document with any number of
tokenizers (packaged, by path, inside a GGUF model, or trained in the run), aggregates by
language, registered domain and key columns, and training-ready token files (Megatron-LM's
``.bin``/``.idx`` or nanotron's ``.ds``), globally shuffled, with a provenance sidecar."""
