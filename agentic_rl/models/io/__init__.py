"""Checkpoint formats: Hugging Face directories (`io.hf`, our stacked layout <-> HF's) and
llama.cpp GGUF files converted to HF directories (`io.gguf`).

Imports: nothing at package import (submodules are imported by name, gguf lazily).
"""
