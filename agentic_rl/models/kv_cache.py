"""The KV cache of incremental decoding and the cached forward pass that appends to it.

What lives here: `KVCache`, `init_cache` and `cached_forward(lm, layer_params, tokens,
cache, ...)`, the pure function behind `Transformer.forward_cached`. The per-layer weights
are an explicit argument so that the sampler can pass buffers unstacked once per policy
version (`unstack_layers`, faster on XLA's CPU backend) without that trick reaching the
model's forward API.

Imports: jax, flax.struct and agentic_rl.models.{config, layers, attention, lora}; the
Transformer only for type checking (models.transformer imports this module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.struct
import jax
import jax.numpy as jnp

from agentic_rl.models.attention import cached_attention
from agentic_rl.models.config import ModelConfig, rope_inv_freq
from agentic_rl.models.layers import decoder_layer, rms_norm
from agentic_rl.models.lora import adapter_select, per_token

if TYPE_CHECKING:
    from agentic_rl.models.transformer import Transformer

Array = jax.Array


@flax.struct.dataclass
class KVCache:
    """Keys/values of every layer, which slots hold real tokens, and positions.

    k, v: L-tuples of [B, KV, S, Dh] (one buffer per layer, head-major, so a layer
    reads its cache without slicing a stacked array and attention is a plain
    batched contraction);
    mask: bool [B, S] (slot holds a real token of that row);
    length: int32 [B] (real tokens of each row = RoPE position of its next token);
    cursor: int32 scalar, the first free slot, shared by all rows.

    All rows write a chunk at the same slots [cursor, cursor + t): one in-place
    `dynamic_update_slice` instead of a per-row scatter (which XLA's CPU backend
    runs ~1000x slower). Rows with fewer real tokens than t leave holes (mask 0);
    attention ignores holes and RoPE uses each row's own `length`, so holes cost
    capacity, never correctness. Truncating a row (a stop string found after the
    fact) just clears its mask and lowers its length.
    """

    k: Array
    v: Array
    mask: Array
    length: Array
    cursor: Array

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]


def init_cache(cfg: ModelConfig, batch: int, capacity: int, dtype=None) -> KVCache:
    dtype = dtype or cfg.compute_dtype
    shape = (batch, cfg.num_kv_heads, capacity, cfg.head_dim)
    return KVCache(
        k=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
        v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
        mask=jnp.zeros((batch, capacity), bool),
        length=jnp.zeros((batch,), jnp.int32),
        cursor=jnp.zeros((), jnp.int32),
    )


def cached_forward(
    lm: Transformer,
    layer_params: tuple[dict[str, Array], ...],
    tokens: Array,
    cache: KVCache,
    input_mask: Array | None = None,
    adapter_ids: Array | None = None,
) -> tuple[Array, KVCache]:
    """Append `tokens` [B, t] to each row's cached sequence and return
    (hidden [B, t, D], updated cache). `input_mask` [B, t] marks real new tokens;
    they must be a prefix of each row's chunk (right padding). Padded positions
    become holes in the cache (never attended to).

    The caller guarantees `cache.cursor + t <= cache.capacity`.
    `layer_params`: per-layer weights of `lm` (e.g. from `unstack_layers`, faster on
    CPU). The layer loop is unrolled.
    `adapter_ids` int [B]: each row's LoRA adapter when the model has several.
    """
    B, t = tokens.shape
    if input_mask is None:
        input_mask = jnp.ones((B, t), bool)
    input_mask = input_mask.astype(bool)
    positions = cache.length[:, None] + jnp.arange(t, dtype=jnp.int32)[None]
    at = (0, 0, cache.cursor, 0)
    mask = jax.lax.dynamic_update_slice(cache.mask, input_mask, (0, cache.cursor))
    slot = jnp.arange(cache.capacity, dtype=jnp.int32)
    # query i (at slot cursor + i) sees every real slot up to and including its own
    own_slot = cache.cursor + jnp.arange(t, dtype=jnp.int32)
    allowed = mask[:, None, :] & (slot[None, None, :] <= own_slot[:, None])

    def attend(q, k, v, layer_cache):
        ck, cv = layer_cache
        ck = jax.lax.dynamic_update_slice(ck, k.swapaxes(1, 2).astype(ck.dtype), at)
        cv = jax.lax.dynamic_update_slice(cv, v.swapaxes(1, 2).astype(cv.dtype), at)
        return cached_attention(q, ck, cv, allowed), (ck, cv)

    cfg = lm.cfg
    inv_freq = jnp.asarray(rope_inv_freq(cfg))
    scales = dict(lm.layers.lora_scale)
    select = adapter_select(per_token(adapter_ids, t), lm.num_adapters)
    x = lm.embed(tokens)
    k_all, v_all = [], []
    for p, ck, cv in zip(layer_params, cache.k, cache.v):
        x, (ck, cv) = decoder_layer(p, x, positions, inv_freq, attend, (ck, cv), cfg, scales,
                                    select)
        k_all.append(ck)
        v_all.append(cv)
    h = rms_norm(x, lm.norm.value, cfg.rms_norm_eps)
    length = cache.length + input_mask.sum(axis=1).astype(jnp.int32)
    return h, KVCache(k=tuple(k_all), v=tuple(v_all), mask=mask, length=length,
                      cursor=cache.cursor + t)
