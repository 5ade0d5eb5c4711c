"""KV-cache maintenance for `BatchSampler`: roll rows back, compact, grow, and write
a prefix computed once into several fresh rows.

The cache has one shared cursor (the next slot all rows write to) and a per-row mask
of real slots; rows of different lengths leave holes, which `compact` reclaims.

Imports: jax, flax and agentic_rl.models.transformer only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from agentic_rl.models.kv_cache import KVCache, cached_forward, init_cache


@functools.partial(jax.jit, donate_argnums=(0,))
def truncate(cache: KVCache, new_length: jax.Array) -> KVCache:
    """Keep the first new_length[b] real tokens of each row (later slots become holes)."""
    keep = jnp.cumsum(cache.mask, axis=1) <= new_length[:, None]
    return cache.replace(mask=cache.mask & keep, length=new_length)


@functools.partial(jax.jit, donate_argnums=(0,))
def compact(cache: KVCache) -> KVCache:
    """Move each row's real tokens to the front of the cache, in order, and reset the
    shared cursor to the longest row: reclaims the holes left by padding, finished
    rows and reset rows."""
    order = jnp.argsort(~cache.mask, axis=1, stable=True)  # [B, S] real slots first
    idx = order[:, None, :, None]
    k = tuple(jnp.take_along_axis(a, idx, axis=2) for a in cache.k)
    v = tuple(jnp.take_along_axis(a, idx, axis=2) for a in cache.v)
    mask = jnp.take_along_axis(cache.mask, order, axis=1)
    return KVCache(k=k, v=v, mask=mask, length=cache.length,
                   cursor=jnp.max(cache.mask.sum(axis=1)).astype(jnp.int32))


def grow(cache: KVCache, capacity: int) -> KVCache:
    """Pad the cache with empty slots to `capacity` (a new shape: recompiles)."""
    extra = capacity - cache.capacity
    pad = ((0, 0), (0, 0), (0, extra), (0, 0))
    return cache.replace(k=tuple(jnp.pad(a, pad) for a in cache.k),
                         v=tuple(jnp.pad(a, pad) for a in cache.v),
                         mask=jnp.pad(cache.mask, ((0, 0), (0, extra))))


@functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(4,))
def prefill_shared(graphdef, state, layers, prefix: jax.Array, cache: KVCache,
                    rows: jax.Array, adapter: jax.Array | None = None) -> KVCache:
    """Prefill `prefix` [P] once and write its keys/values into every row where `rows`
    [B] is true (fresh rows: length 0), at the shared cursor. The other rows get holes.
    `adapter` [1]: the LoRA adapter those rows share (models with several)."""
    model = nnx.merge(graphdef, state)
    P = prefix.shape[0]
    one = init_cache(model.cfg, 1, P, cache.k[0].dtype)
    _, one = cached_forward(model, layers, prefix[None], one, jnp.ones((1, P), bool), adapter)
    at = cache.cursor
    sel = rows[:, None, None, None]

    def put(buf, new):
        old = jax.lax.dynamic_slice_in_dim(buf, at, P, axis=2)
        return jax.lax.dynamic_update_slice_in_dim(buf, jnp.where(sel, new, old), at, axis=2)

    old_mask = jax.lax.dynamic_slice_in_dim(cache.mask, at, P, axis=1)
    mask = jax.lax.dynamic_update_slice_in_dim(cache.mask, old_mask | rows[:, None], at, axis=1)
    return KVCache(k=tuple(put(b, n) for b, n in zip(cache.k, one.k)),
                   v=tuple(put(b, n) for b, n in zip(cache.v, one.v)),
                   mask=mask, length=cache.length + rows.astype(jnp.int32) * P,
                   cursor=at + P)
