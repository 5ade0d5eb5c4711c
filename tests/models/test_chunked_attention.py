"""Query-blocked causal attention (`ModelConfig.attention_chunk`) and per-layer remat give
the plain kernel's outputs and gradients, padding included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentic_rl.models import ModelConfig, PolicyModel
from agentic_rl.models.attention import attention, causal_attention

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
