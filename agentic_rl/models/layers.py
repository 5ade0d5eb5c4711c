"""Parameter layout of the decoder and the pure per-layer computation.

What lives here: the parameter helper `_param` (every weight carries logical axis names,
`out_sharding` metadata not applied eagerly, so a `jax.sharding.Mesh` can map them to
devices later: `vocab`, `embed`, `q_heads`, `kv_heads`, `mlp`, `head_dim`, `layers`,
`lora_rank`), the projection names and shapes (`PROJ_AXES`), `DecoderLayers` (all layers'
weights stacked along a leading `layers` axis), `unstack_layers`, `rms_norm`, `apply_rope`,
the projection with optional LoRA (`_linear`) and one decoder layer (`decoder_layer`).

Why stacked layers: a 30-layer model unrolled into one XLA program compiles
slowly and its compile time grows with depth; scanning one layer body over a
leading `layers` axis compiles once per program whatever the depth. The stacked
layout is also what checkpoint loaders produce naturally (one array per weight
name) and what FSDP shards along.

Weight names follow HF (`q_proj`, `gate_proj`, ...); kernels are stored [in, out].

Imports: jax, flax.nnx and agentic_rl.models.config only (attention is passed in to
`decoder_layer` as a callable, so this module does not import models.attention).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from agentic_rl.models.config import ModelConfig

Array = jax.Array


def _param(value, axes, cls=nnx.Param):
    return cls(value, out_sharding=tuple(axes), eager_sharding=False)


# Projections in a layer: name -> (input axis name, output axis name).
PROJ_AXES = {
    "q_proj": ("embed", "q_heads"),
    "k_proj": ("embed", "kv_heads"),
    "v_proj": ("embed", "kv_heads"),
    "o_proj": ("q_heads", "embed"),
    "gate_proj": ("embed", "mlp"),
    "up_proj": ("embed", "mlp"),
    "down_proj": ("mlp", "embed"),
}


def _proj_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    d, h = cfg.hidden_size, cfg.head_dim
    return {
        "q_proj": (d, cfg.num_heads * h),
        "k_proj": (d, cfg.num_kv_heads * h),
        "v_proj": (d, cfg.num_kv_heads * h),
        "o_proj": (cfg.num_heads * h, d),
        "gate_proj": (d, cfg.intermediate_size),
        "up_proj": (d, cfg.intermediate_size),
        "down_proj": (cfg.intermediate_size, d),
    }


class DecoderLayers(nnx.Module):
    """All decoder layers, each weight stacked along a leading `layers` axis."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        L, pd = cfg.num_layers, cfg.weight_dtype
        init = nnx.initializers.normal(0.02)
        for name, (fan_in, fan_out) in _proj_shapes(cfg).items():
            ax_in, ax_out = PROJ_AXES[name]
            w = init(rngs.params(), (L, fan_in, fan_out), jnp.float32).astype(pd)
            setattr(self, name, _param(w, ("layers", ax_in, ax_out)))
        if cfg.attention_bias:
            for name in ("q_proj", "k_proj", "v_proj"):
                n_out = _proj_shapes(cfg)[name][1]
                setattr(
                    self,
                    f"{name}_bias",
                    _param(jnp.zeros((L, n_out), pd), ("layers", PROJ_AXES[name][1])),
                )
        self.input_layernorm = _param(jnp.ones((L, cfg.hidden_size), pd), ("layers", "embed"))
        self.post_attention_layernorm = _param(
            jnp.ones((L, cfg.hidden_size), pd), ("layers", "embed")
        )
        if cfg.qk_norm:
            self.q_norm = _param(jnp.ones((L, cfg.head_dim), pd), ("layers", "head_dim"))
            self.k_norm = _param(jnp.ones((L, cfg.head_dim), pd), ("layers", "head_dim"))
        # (name, alpha / rank) pairs: a hashable static attribute, so the graphdef
        # can be a static argument of jax.jit.
        self.lora_scale: tuple[tuple[str, float], ...] = ()
        # Adapters per projection (`add_lora(num_adapters=n)`): each LoRA factor holds n
        # rank-r adapters side by side along its rank axis; a forward pass is told which
        # adapter each token uses (`adapter_ids`).
        self.lora_adapters: int = 1

    def layer_params(self) -> dict[str, Array]:
        """The stacked arrays, by name, ready to be scanned over."""
        return {
            k: v.value
            for k, v in vars(self).items()
            if isinstance(v, nnx.Variable) and not k.startswith("_")
        }


def unstack_layers(stacked: dict[str, Array]) -> tuple[dict[str, Array], ...]:
    """Per-layer weight dicts, each array its own buffer.

    Why: XLA's CPU backend copies a weight slice out of a stacked array on every
    use (in `scan` and in static slices alike), which triples the memory traffic
    of a decode step. The sampler unstacks once per policy version and runs an
    unrolled layer loop over separate buffers instead.
    """
    n = next(iter(stacked.values())).shape[0]
    return tuple({k: jnp.array(v[i]) for k, v in stacked.items()} for i in range(n))


def rms_norm(x: Array, weight: Array, eps: float) -> Array:
    """RMSNorm with float32 statistics, cast back to the input dtype before scaling (as HF)."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * y.astype(x.dtype)


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
    """Rotate-half RoPE (HF layout). x: [B, T, N, Dh]; positions: int [B, T]."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, Dh/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    xf = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos + rotated * sin).astype(x.dtype)


def _linear(p: dict[str, Array], name: str, x: Array, scales: dict[str, float],
            select: Array | None = None) -> Array:
    """x @ W (+ bias) (+ LoRA). `select` [B, T, n] (one-hot, or 0 for no adapter) picks
    each token's adapter among the n stacked along the rank axis: its rank-r slice of
    x @ A is kept, the others are zeroed before @ B. So a token's output, and the
    gradient into each adapter, come from its own adapter only; the cost is n adapters'
    worth of (cheap) low-rank matmuls, in one call."""
    y = x @ p[name].astype(x.dtype)
    if f"{name}_bias" in p:
        y = y + p[f"{name}_bias"].astype(x.dtype)
    if f"{name}_lora_a" in p:
        a = p[f"{name}_lora_a"].astype(x.dtype)
        b = p[f"{name}_lora_b"].astype(x.dtype)
        h = x @ a
        if select is not None:
            n = select.shape[-1]
            h = (h.reshape(*h.shape[:-1], n, h.shape[-1] // n)
                 * select[..., None].astype(h.dtype)).reshape(h.shape)
        y = y + h @ b * scales[name]
    return y


def decoder_layer(
    p: dict[str, Array],
    x: Array,
    positions: Array,
    inv_freq: Array,
    attend,
    layer_in,
    cfg: ModelConfig,
    scales: dict[str, float],
    select: Array | None = None,
):
    """One pre-norm decoder layer. `attend(q, k, v, layer_in) -> (out, layer_out)`
    decides which keys each query sees (plain causal, or cache + chunk) and what the
    layer hands back to the caller (nothing, or its new keys/values). `select`: each
    token's LoRA adapter (`adapter_select`), None for a single adapter."""
    B, T, _ = x.shape
    H, KV, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    lin = functools.partial(_linear, scales=scales, select=select)
    h = rms_norm(x, p["input_layernorm"], cfg.rms_norm_eps)
    q = lin(p, "q_proj", h).reshape(B, T, H, Dh)
    k = lin(p, "k_proj", h).reshape(B, T, KV, Dh)
    v = lin(p, "v_proj", h).reshape(B, T, KV, Dh)
    if cfg.qk_norm:
        q = rms_norm(q, p["q_norm"], cfg.rms_norm_eps)
        k = rms_norm(k, p["k_norm"], cfg.rms_norm_eps)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    attn, layer_out = attend(q, k, v, layer_in)
    x = x + lin(p, "o_proj", attn)
    h = rms_norm(x, p["post_attention_layernorm"], cfg.rms_norm_eps)
    gate = jax.nn.silu(lin(p, "gate_proj", h))
    x = x + lin(p, "down_proj", gate * lin(p, "up_proj", h))
    return x, layer_out
