"""Adapters: ΔR as a trainable bypass on a model (`bypass`), self-contained ΔR files (`delta`), their similarity."""
