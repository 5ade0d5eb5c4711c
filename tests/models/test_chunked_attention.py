"""Query-blocked causal attention (`ModelConfig.attention_chunk`), the triangle-skipping
kernel under it, and per-layer remat give the plain kernel's outputs and gradients,
padding included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentic_rl.models import ModelConfig, PolicyModel
from agentic_rl.models.attention import (
    attention,
    causal_attention,
    prefixed_attention,
    triangle_blocks,
    triangular_attention,
)

V, T = 50, 40


def _mask(lengths, t=T):
    return jnp.asarray(np.arange(t)[None] < np.asarray(lengths)[:, None])


@pytest.mark.parametrize("block", [1, 7, 16, 39])
def test_blocked_kernel_equals_plain(block):
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, T, 4, 8)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(2, T, 2, 8)), jnp.float32) for _ in range(2))
    mask = _mask([T, 23])
    allowed = jnp.tril(jnp.ones((T, T), bool))[None] & mask[:, None, :]
    want = attention(q, k, v, allowed)
    got = jax.jit(causal_attention, static_argnums=4)(q, k, v, mask, block)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.mark.parametrize("t", [1, 63, 64, 65, 200, 3000])
def test_triangle_blocks_cover_the_sequence_in_order(t):
    blocks = triangle_blocks(t)
    assert blocks[0][0] == 0 and blocks[-1][1] == t and len(blocks) <= 32
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))


def _qkv(rng, b, t, h=4, kv=2, dh=8):
    q = jnp.asarray(rng.normal(size=(b, t, h, dh)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(b, t, kv, dh)), jnp.float32) for _ in range(2))
    return q, k, v


@pytest.mark.parametrize("t", [50, 64, 130, 257])
def test_triangular_kernel_and_its_gradients_equal_plain(t):
    """Left and right padding: outputs at every query that sees a real key, and the
    gradients of a loss over those queries, equal the plain kernel's."""
    rng = np.random.default_rng(t)
    q, k, v = _qkv(rng, 3, t)
    pos = np.arange(t)[None]
    real = np.stack([pos[0] < t, pos[0] < t - 17, pos[0] >= 9])  # full, right-, left-pad
    mask = jnp.asarray(real)
    seen = jnp.asarray(np.cumsum(real, axis=1) > 0)  # the query sees >= 1 real key
    w = jnp.asarray(rng.normal(size=(3, t, 32)), jnp.float32) * seen[..., None]
    allowed = jnp.tril(jnp.ones((t, t), bool))[None] & mask[:, None, :]

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * w)

    want = attention(q, k, v, allowed)
    got = jax.jit(triangular_attention)(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(got * seen[..., None]),
                               np.asarray(want * seen[..., None]), atol=1e-5)
    gw = jax.grad(loss(lambda q, k, v: attention(q, k, v, allowed)), argnums=(0, 1, 2))(q, k, v)
    gg = jax.jit(jax.grad(loss(lambda q, k, v: triangular_attention(q, k, v, mask)),
                          argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(gg, gw):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


@pytest.mark.parametrize("s", [20, 150])
def test_prefixed_kernel_equals_attention_over_prefix_plus_row(s):
    """prefixed_attention == plain attention of each row over [prefix; row] keys."""
    rng = np.random.default_rng(s)
    p, b = 11, 3
    q, k, v = _qkv(rng, b, s)
    kp, vp = (jnp.asarray(rng.normal(size=(p, 2, 8)), jnp.float32) for _ in range(2))
    mask = jnp.asarray(np.arange(s)[None] < np.array([s, s - 5, 7])[:, None])
    kk = jnp.concatenate([jnp.broadcast_to(kp, (b, p, 2, 8)), k], axis=1)
    vv = jnp.concatenate([jnp.broadcast_to(vp, (b, p, 2, 8)), v], axis=1)
    own = jnp.tril(jnp.ones((s, s), bool))[None] & mask[:, None, :]
    allowed = jnp.concatenate([jnp.ones((b, s, p), bool), own], axis=2)
    want = attention(q, kk, vv, allowed)
    got = jax.jit(prefixed_attention)(q, kp, vp, k, v, mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def _policy(chunk: int, remat: bool) -> PolicyModel:
    cfg = ModelConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=4, num_kv_heads=2, attention_chunk=chunk, remat=remat)
    return PolicyModel(cfg, rngs=nnx.Rngs(0), value_head=True)  # same seed: same weights


@pytest.mark.parametrize(("chunk", "remat"), [(8, False), (8, True), (0, True), (13, True)])
def test_chunked_and_remat_give_same_loss_and_grads(chunk, remat):
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, V, (2, T)), jnp.int32)
    mask = _mask([T, 29])
    adv = jnp.asarray(rng.normal(size=(2, T)), jnp.float32)

    @jax.jit
    def loss_and_grads(params, graphdef):
        def loss(p):
            model = nnx.merge(graphdef, p)
            lp, ent, values = model.logprobs_and_values(tokens, mask, with_entropy=True)
            m = mask.astype(jnp.float32)
            return jnp.sum((lp * adv + 0.1 * ent + values ** 2) * m)

        return jax.value_and_grad(loss)(params)

    def run(model):
        graphdef, params = nnx.split(model)
        return loss_and_grads(params, graphdef)

    want_loss, want_g = run(_policy(0, False))
    got_loss, got_g = run(_policy(chunk, remat))
    np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
