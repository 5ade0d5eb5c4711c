"""Attention kernels: grouped-query attention over a full sequence (`attention`), over a
shared prefix plus each row's own keys (`prefixed_attention`), and of a chunk of queries
over the KV cache (`cached_attention`). All keep scores and softmax in float32.

Imports: jax and numpy only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
NEG_INF = float(np.finfo(np.float32).min)


def _grouped(q: Array, num_kv: int) -> Array:
    B, T, H, Dh = q.shape
    return q.reshape(B, T, num_kv, H // num_kv, Dh)


def attention(q: Array, k: Array, v: Array, allowed: Array) -> Array:
    """Grouped-query attention without materialising repeated K/V heads.

    q: [B, T, H, Dh]; k, v: [B, S, KV, Dh]; allowed: bool [B, T, S].
    Scores and softmax in float32.
    """
    B, T, H, Dh = q.shape
    qg = _grouped(q, k.shape[2])
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = jnp.where(allowed[:, None, None], scores * (Dh**-0.5), NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(B, T, H * Dh)


def prefixed_attention(
    q: Array, kp: Array, vp: Array, k: Array, v: Array, allowed: Array
) -> Array:
    """Attention of rows that share a prefix: each row's queries see the one shared
    prefix (all of it) and their own keys (as `allowed` says), without copying the
    prefix's keys into every row.

    q: [B, S, H, Dh]; kp, vp: [P, KV, Dh] (the shared prefix); k, v: [B, S, KV, Dh];
    allowed: bool [B, S, S] over the row's own keys. Scores and softmax in float32.
    """
    B, S, H, Dh = q.shape
    P = kp.shape[0]
    qg = _grouped(q, k.shape[2])
    scale = Dh**-0.5
    sp = jnp.einsum("btkgd,skd->bkgts", qg, kp, preferred_element_type=jnp.float32) * scale
    ss = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    ss = jnp.where(allowed[:, None, None], ss * scale, NEG_INF)
    probs = jax.nn.softmax(jnp.concatenate([sp, ss], axis=-1), axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,skd->btkgd", probs[..., :P], vp) + jnp.einsum(
        "bkgts,bskd->btkgd", probs[..., P:], v
    )
    return out.reshape(B, S, H * Dh)


def cached_attention(q: Array, ck: Array, cv: Array, allowed: Array) -> Array:
    """Attention of a chunk of queries over the cache (which already holds the chunk).

    q: [B, t, H, Dh]; ck, cv: [B, KV, S, Dh]; allowed: bool [B, t, S].
    The chunk's keys are written into the cache *before* attending, so each layer
    reads its cache buffer only after its last write: XLA then updates the cache in
    place inside the decode loop instead of copying it every step.
    """
    B, T, H, Dh = q.shape
    KV = ck.shape[1]
    G = H // KV
    qh = q.reshape(B, T, KV, G, Dh).transpose(0, 2, 3, 1, 4)  # [B, KV, G, T, Dh]
    ck, cv = ck.astype(q.dtype), cv.astype(q.dtype)
    ok = allowed[:, None, None]  # [B, 1, 1, T, S]
    if T == 1:
        # One query per row: a fused multiply-reduce streams the cache once, which
        # beats XLA CPU's small batched matmuls for decode.
        s = jnp.sum(qh.astype(jnp.float32) * ck[:, :, None].astype(jnp.float32), -1)
        s = s[..., None, :]
        probs = jax.nn.softmax(jnp.where(ok, s * Dh**-0.5, NEG_INF), axis=-1)
        out = jnp.sum(probs[:, :, :, 0, :, None] * cv[:, :, None].astype(jnp.float32), -2)
        out = out[:, :, :, None].astype(q.dtype)  # [B, KV, G, 1, Dh]
    else:
        s = jnp.einsum("bkgtd,bksd->bkgts", qh, ck, preferred_element_type=jnp.float32)
        probs = jax.nn.softmax(jnp.where(ok, s * Dh**-0.5, NEG_INF), axis=-1)
        out = jnp.einsum("bkgts,bksd->bkgtd", probs.astype(cv.dtype), cv)
    return out.transpose(0, 3, 1, 2, 4).reshape(B, T, H * Dh)
