"""Convert a llama.cpp GGUF file (the embedded SmolLM2) into an ordinary HF directory.

Why convert instead of loading GGUF directly: one loading path. After conversion
the model is a plain HF directory (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with the chat template) that our loader, transformers and
every other tool read the same way.

Three details matter:
- Quantised tensors are dequantised to float32 with the `gguf` package.
- llama.cpp permutes the rows of attn_q / attn_k so its RoPE can rotate adjacent
  pairs; HF-style rotate-half RoPE needs the original order, so we undo it.
- The tokenizer is rebuilt from the GGUF metadata (byte-level BPE vocab, merges,
  control tokens, chat template) with the `tokenizers` library: no torch needed.

Imports: numpy and agentic_rl.models.io.hf only; gguf, safetensors, tokenizers and
transformers lazily.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from agentic_rl.models.io.hf import CheckpointError

# GGUF tensor name (per layer, after "blk.{i}.") -> HF name template
_LAYER_MAP = {
    "attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    "ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
    "attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
}
_GLOBAL_MAP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_CONTROL = 3  # llama.cpp token type: control token (special)
_USER_DEFINED = 4


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (convert_hf_to_gguf.py `permute`).

    llama.cpp stores, per head, rows ordered as interleaved (even, odd) pairs;
    HF's rotate-half layout keeps the two halves of each head contiguous.
    """
    out_dim = w.shape[0]
    head_dim = out_dim // n_heads
    return (
        w.reshape(n_heads, head_dim // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def gguf_config(reader) -> dict:
    """HF config.json dict from GGUF metadata (llama / qwen2 / qwen3 architectures)."""
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "qwen2", "qwen3"):
        raise CheckpointError(
            f"GGUF architecture {arch!r} is not supported; supported: llama, qwen2, qwen3"
        )

    def g(name, default=None):
        return _field(reader, f"{arch}.{name}", default)

    n_heads = g("attention.head_count")
    hidden = g("embedding_length")
    vocab = g("vocab_size") or len(_field(reader, "tokenizer.ggml.tokens"))
    tensor_names = {t.name for t in reader.tensors}
    head_dim = g("attention.key_length") or hidden // n_heads
    cfg = {
        "architectures": [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                           "qwen3": "Qwen3ForCausalLM"}[arch]],
        "model_type": arch,
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "intermediate_size": int(g("feed_forward_length")),
        "num_hidden_layers": int(g("block_count")),
        "num_attention_heads": int(n_heads),
        "num_key_value_heads": int(g("attention.head_count_kv", n_heads)),
        "head_dim": int(head_dim),
        "hidden_act": "silu",
        "max_position_embeddings": int(g("context_length", 2048)),
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(g("rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "attention_bias": "blk.0.attn_q.bias" in tensor_names,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float32",
    }
    if arch == "llama":
        cfg["mlp_bias"] = False
    return cfg


def gguf_hf_tensors(reader, cfg: dict) -> dict[str, np.ndarray]:
    """Dequantised float32 tensors under HF names, Q/K rows un-permuted (llama only:
    llama.cpp permutes only for the llama architecture)."""
    from gguf.quants import dequantize

    out = {}
    for t in reader.tensors:
        name = t.name
        if name in _GLOBAL_MAP:
            hf = _GLOBAL_MAP[name]
        elif name.startswith("blk."):
            _, i, rest = name.split(".", 2)
            if rest not in _LAYER_MAP:
                raise CheckpointError(f"unexpected GGUF tensor {name!r}")
            hf = _LAYER_MAP[rest].format(i=int(i))
        elif name == "rope_freqs.weight":
            continue  # Llama-3 scaling factors; recomputed from config instead
        else:
            raise CheckpointError(f"unexpected GGUF tensor {name!r}")
        arr = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = tuple(int(s) for s in reversed(t.shape))  # GGUF lists dims innermost-first
        arr = arr.reshape(shape)
        if cfg["model_type"] == "llama":
            if hf.endswith("q_proj.weight"):
                arr = unpermute_qk(arr, cfg["num_attention_heads"])
            elif hf.endswith("k_proj.weight"):
                arr = unpermute_qk(arr, cfg["num_key_value_heads"])
        out[hf] = np.ascontiguousarray(arr)
    return out


def gguf_tokenizer(reader):
    """A `PreTrainedTokenizerFast` built from GGUF metadata (byte-level BPE only)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise CheckpointError(
            f"GGUF tokenizer model {kind!r} is not supported (only byte-level BPE, 'gpt2')"
        )
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", [])]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder", "refact"):
        # llama.cpp splits every digit on its own before the GPT-2 regex for these.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    elif pre in ("default", "gpt2", "gpt-2"):
        tok.pre_tokenizer = byte_level
    else:
        raise CheckpointError(
            f"GGUF pre-tokenizer {pre!r} is not supported (smollm, starcoder, refact, gpt2)"
        )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False)
         for t, ty in zip(tokens, types) if ty == _CONTROL]
    )
    user = [AddedToken(t, special=False, normalized=False)
            for t, ty in zip(tokens, types) if ty == _USER_DEFINED]
    if user:
        tok.add_tokens(user)

    def special(key):
        i = _field(reader, f"tokenizer.ggml.{key}")
        return tokens[i] if i is not None else None

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=special("bos_token_id"),
        eos_token=special("eos_token_id"),
        unk_token=special("unknown_token_id"),
        pad_token=special("padding_token_id"),
        chat_template=_field(reader, "tokenizer.chat_template"),
        add_bos_token=bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        clean_up_tokenization_spaces=False,
        model_max_length=int(gguf_config(reader)["max_position_embeddings"]),
    )


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a HF directory for `gguf_path` at `out_dir`, atomically (a temporary
    sibling directory renamed into place), so an interrupted conversion never
    leaves a half-written cache behind."""
    import gguf
    from safetensors.numpy import save_file

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.exists():
        raise CheckpointError(f"GGUF file not found: {gguf_path}")
    reader = gguf.GGUFReader(str(gguf_path))
    cfg = gguf_config(reader)
    tensors = gguf_hf_tensors(reader, cfg)
    tokenizer = gguf_tokenizer(reader)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        gen = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"]}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(tmp))
        (tmp / "SOURCE").write_text(f"converted from {gguf_path}\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
