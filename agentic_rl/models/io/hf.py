"""Hugging Face checkpoint I/O: a local HF directory <-> our stacked NNX parameters.

HF stores one tensor per layer and weight, `[out, in]`; we store one stacked
array per weight name, `[layers, in, out]`. This module is the only place that
knows both layouts, so every loader (safetensors dirs, converted GGUF files) and
the exporter go through the same two functions.

Imports: jax.numpy, numpy, flax.nnx and agentic_rl.models.{config, layers, lora,
transformer}; safetensors and ml_dtypes lazily.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentic_rl.models.config import ModelConfig
from agentic_rl.models.layers import PROJ_AXES
from agentic_rl.models.lora import lora_state, merge_lora
from agentic_rl.models.transformer import Transformer

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


class CheckpointError(ValueError):
    """A checkpoint directory is missing files or has tensors that do not fit the config."""


def _hf_name(proj: str, i: int, kind: str = "weight") -> str:
    group = "self_attn" if proj in _ATTN else "mlp"
    return f"model.layers.{i}.{group}.{proj}.{kind}"


def hf_tensor_names(cfg: ModelConfig) -> list[str]:
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not cfg.tie_word_embeddings:
        names.append("lm_head.weight")
    for i in range(cfg.num_layers):
        names += [_hf_name(p, i) for p in PROJ_AXES]
        names += [f"model.layers.{i}.input_layernorm.weight",
                  f"model.layers.{i}.post_attention_layernorm.weight"]
        if cfg.attention_bias:
            names += [_hf_name(p, i, "bias") for p in ("q_proj", "k_proj", "v_proj")]
        if cfg.qk_norm:
            names += [f"model.layers.{i}.self_attn.q_norm.weight",
                      f"model.layers.{i}.self_attn.k_norm.weight"]
    return names


def load_into_model(model: Transformer, get: Callable[[str], np.ndarray]) -> None:
    """Fill `model` from HF-named tensors. `get(name)` returns an array (any float dtype)."""
    cfg = model.cfg
    pd = cfg.weight_dtype

    def fetch(name, shape):
        try:
            arr = get(name)
        except KeyError:
            raise CheckpointError(f"checkpoint has no tensor {name!r}") from None
        if tuple(arr.shape) != tuple(shape):
            raise CheckpointError(
                f"tensor {name!r} has shape {tuple(arr.shape)}, config expects {tuple(shape)}"
            )
        return jnp.asarray(arr, dtype=jnp.float32)

    d, v = cfg.hidden_size, cfg.vocab_size
    model.embed_tokens.value = fetch("model.embed_tokens.weight", (v, d)).astype(pd)
    model.norm.value = fetch("model.norm.weight", (d,)).astype(pd)
    if not cfg.tie_word_embeddings:
        model.lm_head.value = fetch("lm_head.weight", (v, d)).astype(pd)
    layers = model.layers
    for proj in PROJ_AXES:
        cur = getattr(layers, proj)
        _, fan_in, fan_out = cur.value.shape
        stacked = [fetch(_hf_name(proj, i), (fan_out, fan_in)).T for i in range(cfg.num_layers)]
        cur.value = jnp.stack(stacked).astype(pd)
    if cfg.attention_bias:
        for proj in ("q_proj", "k_proj", "v_proj"):
            cur = getattr(layers, f"{proj}_bias")
            n = cur.value.shape[1]
            cur.value = jnp.stack(
                [fetch(_hf_name(proj, i, "bias"), (n,)) for i in range(cfg.num_layers)]
            ).astype(pd)
    norms = {
        "input_layernorm": ("model.layers.{i}.input_layernorm.weight", d),
        "post_attention_layernorm": ("model.layers.{i}.post_attention_layernorm.weight", d),
    }
    if cfg.qk_norm:
        norms["q_norm"] = ("model.layers.{i}.self_attn.q_norm.weight", cfg.head_dim)
        norms["k_norm"] = ("model.layers.{i}.self_attn.k_norm.weight", cfg.head_dim)
    for attr, (tmpl, n) in norms.items():
        getattr(layers, attr).value = jnp.stack(
            [fetch(tmpl.format(i=i), (n,)) for i in range(cfg.num_layers)]
        ).astype(pd)


def model_to_hf_tensors(model: Transformer, dtype=np.float32) -> dict[str, np.ndarray]:
    """HF-named numpy tensors of a (LoRA-free) model."""
    cfg = model.cfg
    if lora_state(model)["layers"] and any(s for s, _ in lora_state(model)["layers"]):
        raise ValueError("merge LoRA adapters (merge_lora) before exporting HF tensors")

    def np_(x):
        return np.asarray(jnp.asarray(x, jnp.float32)).astype(dtype)

    out = {
        "model.embed_tokens.weight": np_(model.embed_tokens.value),
        "model.norm.weight": np_(model.norm.value),
    }
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = np_(model.lm_head.value)
    layers = model.layers
    for i in range(cfg.num_layers):
        for proj in PROJ_AXES:
            out[_hf_name(proj, i)] = np.ascontiguousarray(np_(getattr(layers, proj).value[i]).T)
        if cfg.attention_bias:
            for proj in ("q_proj", "k_proj", "v_proj"):
                out[_hf_name(proj, i, "bias")] = np_(getattr(layers, f"{proj}_bias").value[i])
        out[f"model.layers.{i}.input_layernorm.weight"] = np_(layers.input_layernorm.value[i])
        out[f"model.layers.{i}.post_attention_layernorm.weight"] = np_(
            layers.post_attention_layernorm.value[i]
        )
        if cfg.qk_norm:
            out[f"model.layers.{i}.self_attn.q_norm.weight"] = np_(layers.q_norm.value[i])
            out[f"model.layers.{i}.self_attn.k_norm.weight"] = np_(layers.k_norm.value[i])
    return out


# ------------------------------------------------------------------ safetensors dirs
def safetensor_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return sorted({model_dir / f for f in weight_map.values()})
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"{model_dir} has no *.safetensors weights (PyTorch .bin checkpoints are not "
            "supported: convert them with transformers' save_pretrained(safe_serialization=True))"
        )
    return files


class _SafetensorsReader:
    """Lazy name -> numpy reader over one or several (sharded) safetensors files."""

    def __init__(self, files: Iterable[Path]):
        from safetensors import safe_open

        self._handles = {}
        for f in files:
            h = safe_open(str(f), framework="flax")
            for k in h.keys():
                self._handles[k] = h

    def __call__(self, name: str):
        if name not in self._handles:
            raise KeyError(name)
        return self._handles[name].get_tensor(name)


def read_hf_config(model_dir: str | os.PathLike) -> dict:
    model_dir = Path(model_dir)
    cfg_file = model_dir / "config.json"
    if not cfg_file.exists():
        raise CheckpointError(
            f"{model_dir} is not a Hugging Face model directory: config.json is missing"
        )
    return json.loads(cfg_file.read_text())


def load_hf_model(
    model_dir: str | os.PathLike,
    *,
    dtype: str | None = None,
    param_dtype: str | None = None,
    remat: bool | None = None,
    attention_chunk: int | None = None,
) -> Transformer:
    """Load a Transformer from a local HF directory (config.json + *.safetensors).
    dtype, param_dtype, remat, attention_chunk: `ModelConfig` fields (None: the default)."""
    model_dir = Path(model_dir)
    overrides = {k: v for k, v in
                 dict(dtype=dtype, param_dtype=param_dtype, remat=remat,
                      attention_chunk=attention_chunk).items() if v is not None}
    cfg = ModelConfig.from_hf_dict(read_hf_config(model_dir), **overrides)
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    _materialise_zeros(model)
    reader = _SafetensorsReader(safetensor_files(model_dir))
    load_into_model(model, reader)
    return model


def _materialise_zeros(model: nnx.Module) -> None:
    """Replace ShapeDtypeStruct placeholders (from eval_shape) with real zeros, so
    loading a big checkpoint never spends time on a random initialisation."""
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Variable) and hasattr(var.value, "shape") and not isinstance(
            var.value, jnp.ndarray
        ):
            var.value = jnp.zeros(var.value.shape, var.value.dtype)


def save_hf_model(
    model: Transformer,
    out_dir: str | os.PathLike,
    *,
    tokenizer=None,
    dtype: str = "float32",
    max_shard_bytes: int = 4 * 1024**3,
) -> Path:
    """Export to a HF directory that transformers (and vLLM, llama.cpp's converter, ...)
    load: config.json, model.safetensors (sharded with an index past max_shard_bytes),
    the tokenizer files and generation_config.json. LoRA adapters are merged into a
    copy first; the given model is left untouched."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(s for s, _ in lora_state(model)["layers"]):
        model = nnx.clone(model)
        merge_lora(model)
    np_dtype = {"float32": np.float32, "float16": np.float16}.get(dtype)
    if np_dtype is None:
        import ml_dtypes

        np_dtype = {"bfloat16": ml_dtypes.bfloat16}[dtype]
    tensors = model_to_hf_tensors(model, np_dtype)
    cfg = model.cfg
    (out / "config.json").write_text(json.dumps(cfg.to_hf_dict(dtype), indent=2))
    gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    shards, cur, size = [], {}, 0
    for name, arr in tensors.items():
        if cur and size + arr.nbytes > max_shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = arr
        size += arr.nbytes
    shards.append(cur)
    for old in out.glob("model*.safetensors*"):
        old.unlink()
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in shard})
        total = sum(a.nbytes for a in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out
