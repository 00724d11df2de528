"""The format stage: text formatters (PII, ftfy, symbol lines) that rewrite ``text`` in order."""
