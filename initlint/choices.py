"""The fixed vocabularies that the CLI, the config file and the reports share (no torch here,
so the CLI can build its options without importing the engine)."""

SEVERITIES = ("info", "warning", "error")
DEVICES = ("cpu", "cuda", "mps", "auto")
OUTPUT_FORMATS = ("text", "concise", "json", "sarif", "github")
HUMAN_FORMATS = ("text", "concise")
"""Formats people read; the others are for machines and get no progress bar."""
FIX_METHODS = ("dks", "dks-scale", "renorm")
"""How ``fix`` treats activations: kernel shaping, kernel shaping by input scales alone, output
constants alone (``initlint.renorm``)."""
