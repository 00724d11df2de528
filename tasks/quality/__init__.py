"""quality stage: LLM annotation, classifier training and evaluation, scoring, calibration, decisions."""
