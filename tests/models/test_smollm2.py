"""The real embedded SmolLM2-135M-Instruct: conversion, parity, and a real answer."""

from __future__ import annotations

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from tests.conftest import REPO, smollm2_gguf_path

pytestmark = pytest.mark.slow


def test_converted_config(smollm2_dir):
    cfg = json.loads((smollm2_dir / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 30
    assert (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (
        576, 9, 3)
    assert cfg["vocab_size"] == 49152 and cfg["tie_word_embeddings"] is True
    assert cfg["rope_theta"] == 100000.0


def test_logits_match_transformers_gguf_loader(smollm2_policy, hf_gguf_tokenizer):
    """transformers dequantises and un-permutes the GGUF on its own; our converted
    weights must give the same logits (this checks the Q/K un-permutation)."""
    from transformers import AutoModelForCausalLM

    p = smollm2_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name,
                                              dtype=torch.float32).eval()
    ids = hf_gguf_tokenizer.encode("The quick brown fox jumps over the lazy dog. 12 + 30 =")
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits.numpy()
    out = np.asarray(nnx.jit(lambda m, t: m(t))(smollm2_policy.model.lm, jnp.asarray([ids])))
    assert np.abs(out - ref).max() <= 1e-3  # 30 layers of fp32, different matmul order


def test_chat_cli_answers_paris():
    proc = subprocess.run(
        [sys.executable, "-m", "agentic_rl.chat", "--model", "smollm2-135m-instruct",
         "--greedy", "What is the capital of France?"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Paris" in proc.stdout
