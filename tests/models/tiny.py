"""Tiny random HF models (torch) for parity tests, one per supported family."""

from __future__ import annotations

import tempfile

import torch
import transformers

COMMON = dict(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
)


def tiny_hf_model(kind: str, seed: int = 0):
    """A random tiny model exercising the family's distinctive features."""
    if kind == "llama":  # Llama 3: RoPE scaling, untied head, GQA
        cfg = transformers.LlamaConfig(
            **COMMON, rope_theta=500000.0, tie_word_embeddings=False,
            rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                              high_freq_factor=4.0, original_max_position_embeddings=16),
        )
        model = transformers.LlamaForCausalLM(cfg)
    elif kind == "qwen2":  # q/k/v bias, tied embeddings
        cfg = transformers.Qwen2Config(**COMMON, tie_word_embeddings=True)
        model = transformers.Qwen2ForCausalLM(cfg)
    elif kind == "qwen3":  # q/k RMSNorm, head_dim != hidden/heads
        cfg = transformers.Qwen3Config(**COMMON, head_dim=24, tie_word_embeddings=False)
        model = transformers.Qwen3ForCausalLM(cfg)
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # default init leaves norms at 1, biases at 0
            p.normal_(0.0, 0.2)
    return model.eval()


def save_tiny(kind: str, seed: int = 0) -> tuple[str, object]:
    model = tiny_hf_model(kind, seed)
    d = tempfile.mkdtemp(prefix=f"tiny-{kind}-")
    model.save_pretrained(d)
    return d, model


KINDS = ("llama", "qwen2", "qwen3")
