"""Benchmark decontamination: documents (or paragraphs) sharing word n-grams with benchmark texts."""
