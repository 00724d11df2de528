"""Text utilities shared by stages: word splitting per language, language identification."""
