"""Attention kernels: grouped-query attention over a full sequence (`attention`, and
`causal_attention`, which takes its queries in blocks for long sequences), over a shared
prefix plus each row's own keys (`prefixed_attention`), and of a chunk of queries over
the KV cache (`cached_attention`). All keep scores and softmax in float32.

Imports: jax and numpy only.
"""

from __future__ import annotations

import functools

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


def causal_attention(q: Array, k: Array, v: Array, key_mask: Array, block: int) -> Array:
    """Causal `attention` of a full sequence, `block` queries at a time.

    q: [B, T, H, Dh]; k, v: [B, T, KV, Dh]; key_mask: bool [B, T] (real tokens). The query
    blocks run one after another in a `lax.map`, so only a [B, H, block, T] slab of scores
    exists at a time and no [T, T] mask is built; each block is rematerialised in the
    backward pass (`jax.checkpoint`: its residuals are q's block and the shared k, v), so
    the backward keeps O(T) per layer, not the [H, T, T] probabilities. With it the
    memory of a training step grows linearly with T. The multiply-adds are the plain
    kernel's (every block scores all T keys, the later ones masked) plus one more
    forward of attention in the backward pass. Same result as
    `attention(q, k, v, tril & key_mask)` up to float rounding. `block` <= 0 or >= T: the
    plain kernel.

    (An unrolled loop of blocks that score only keys [0, e) would halve the multiply-adds,
    but XLA's CPU scheduler then keeps every block's scores alive at once: measured
    quadratic, 3.3x the memory per doubling of T, even with optimisation barriers.)
    """
    B, T, H, Dh = q.shape
    if block <= 0 or block >= T:
        allowed = jnp.tril(jnp.ones((T, T), bool))[None] & key_mask[:, None, :]
        return attention(q, k, v, allowed)
    n = -(-T // block)
    qs = jnp.pad(q, ((0, 0), (0, n * block - T), (0, 0), (0, 0)))
    qs = qs.reshape(B, n, block, H, Dh).swapaxes(0, 1)  # [n, B, block, H, Dh]
    key_idx = jnp.arange(T, dtype=jnp.int32)

    # Inside the layer scan: CSE cannot merge the recomputation away.
    @functools.partial(jax.checkpoint, prevent_cse=False)
    def one(qb, start):
        causal = key_idx[None, :] <= (start + jnp.arange(block, dtype=jnp.int32))[:, None]
        return attention(qb, k, v, causal[None] & key_mask[:, None, :])

    out = jax.lax.map(lambda xs: one(*xs), (qs, jnp.arange(n, dtype=jnp.int32) * block))
    return out.swapaxes(0, 1).reshape(B, n * block, H * Dh)[:, :T]


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
