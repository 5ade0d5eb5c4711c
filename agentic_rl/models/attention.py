"""Attention kernels: grouped-query attention over a full sequence (`attention` with any
mask; `triangular_attention`, causal, skipping the masked upper triangle; and
`causal_attention`, which takes its queries in a `lax.map` of blocks for long
sequences), over a shared prefix plus each row's own keys (`prefixed_attention`), and of
a chunk of queries over the KV cache (`cached_attention`). All keep scores and softmax
in float32.

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


# The causal kernel without query blocking scores its queries in static blocks of
# TRIANGLE_BLOCK, each against the keys up to its own end only: the masked upper
# triangle is never computed. Measured on the 2-core CPU (fwd+bwd of one layer's
# attention, `python scripts/bench_attention.py`, 16 rows of T=1024): the tiny model's
# shapes ran 1.33 s plain vs 0.34 s, SmolLM2's 4.19 s vs 1.11 s, with 55-60% of the
# plain kernel's temporary memory; 64 beat 128 and 256 at T = 256-2048. At most
# MAX_TRIANGLE_BLOCKS blocks, so the unrolled loop (and its compile time) stays bounded.
TRIANGLE_BLOCK = 64
MAX_TRIANGLE_BLOCKS = 32


def triangle_blocks(T: int) -> list[tuple[int, int]]:
    """The static query blocks [(start, end)] of `triangular_attention` for length T."""
    size = max(TRIANGLE_BLOCK, -(-T // MAX_TRIANGLE_BLOCKS))
    return [(s, min(s + size, T)) for s in range(0, T, size)]


def _causal_block(s: int, e: int) -> np.ndarray:
    """bool [e - s, e]: query s + i may see keys 0 .. s + i."""
    return np.arange(e)[None, :] <= np.arange(s, e)[:, None]


def triangular_attention(q: Array, k: Array, v: Array, key_mask: Array) -> Array:
    """Causal attention of a full sequence, each static block of queries scoring only the
    keys before its end (`triangle_blocks`): about half the multiply-adds of
    `attention(q, k, v, tril & key_mask)` and smaller score slabs, same result up to
    float rounding at every query that sees at least one real key. (A query that sees
    none, e.g. left padding, gets an arbitrary output, as with the plain kernel.)

    q: [B, T, H, Dh]; k, v: [B, T, KV, Dh]; key_mask: bool [B, T]. Memory is quadratic
    (the blocks' scores may all be alive in the backward pass, about half the plain
    kernel's [T, T]); `causal_attention` with a block < T is the linear-memory kernel.
    """
    outs = [attention(q[:, s:e], k[:, :e], v[:, :e],
                      jnp.asarray(_causal_block(s, e))[None] & key_mask[:, None, :e])
            for s, e in triangle_blocks(q.shape[1])]
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


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
    `attention(q, k, v, tril & key_mask)` up to float rounding. `block` <= 0 or >= T:
    `triangular_attention` (quadratic memory, but faster and smaller than the plain
    kernel).

    (Inside the `lax.map` every block has one shape, so it cannot skip its masked keys;
    an unrolled loop can, but XLA's CPU scheduler then keeps every block's scores alive
    at once: measured quadratic, 3.3x the memory per doubling of T, even with
    optimisation barriers. Hence the two regimes.)
    """
    B, T, H, Dh = q.shape
    if block <= 0 or block >= T:
        return triangular_attention(q, k, v, key_mask)
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
    q: Array, kp: Array, vp: Array, k: Array, v: Array, key_mask: Array
) -> Array:
    """Causal attention of rows that share a prefix: each row's queries see the one
    shared prefix (all of it) and their own real keys up to themselves, without copying
    the prefix's keys into every row. The row's queries go in `triangle_blocks`, each
    scoring only its own keys before the block's end.

    q: [B, S, H, Dh]; kp, vp: [P, KV, Dh] (the shared prefix); k, v: [B, S, KV, Dh];
    key_mask: bool [B, S] (the row's real tokens). Scores and softmax in float32.
    """
    B, S, H, Dh = q.shape
    P = kp.shape[0]
    scale = Dh**-0.5
    outs = []
    for s, e in triangle_blocks(S):
        qg = _grouped(q[:, s:e], k.shape[2])
        allowed = jnp.asarray(_causal_block(s, e))[None] & key_mask[:, None, :e]
        sp = jnp.einsum("btkgd,skd->bkgts", qg, kp, preferred_element_type=jnp.float32)
        ss = jnp.einsum("btkgd,bskd->bkgts", qg, k[:, :e], preferred_element_type=jnp.float32)
        ss = jnp.where(allowed[:, None, None], ss * scale, NEG_INF)
        probs = jax.nn.softmax(jnp.concatenate([sp * scale, ss], axis=-1), axis=-1)
        probs = probs.astype(v.dtype)
        out = jnp.einsum("bkgts,skd->btkgd", probs[..., :P], vp) + jnp.einsum(
            "bkgts,bskd->btkgd", probs[..., P:], v[:, :e])
        outs.append(out.reshape(B, e - s, H * Dh))
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


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
