"""compact's recipes and presets, shipped as package data (compact_nlp.recipes): glue/ has one recipe per GLUE task,
presets/ the technique presets, default.yaml the baseline protocol for your own data."""
