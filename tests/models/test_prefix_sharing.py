"""Shared-prefix forward: the same log-probs, entropies, values and gradients as the plain
per-row forward, for rows that share their first P tokens and have ragged suffixes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentic_rl.models import PolicyModel, add_lora
from agentic_rl.models.config import ModelConfig

CFG = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
           num_kv_heads=2, max_position_embeddings=128)


def _model(seed=0, **overrides):
    model = PolicyModel(ModelConfig(**{**CFG, **overrides}), rngs=nnx.Rngs(seed), value_head=True)
    add_lora(model.lm, rank=2, alpha=4.0, rngs=nnx.Rngs(seed + 1))
    # Random (not zero) adapters and value head, so their gradients are not trivially 0.
    _, state = nnx.split(model)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed + 2), len(leaves))
    leaves = [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(tree, leaves))
    return model


def _batch(P=9, T=20, B=3, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CFG["vocab_size"], (B, T))
    tokens[:, :P] = tokens[0, :P]
    mask = np.ones((B, T), bool)
    for b, n in enumerate(rng.integers(P + 1, T + 1, B)):  # ragged right padding
        mask[b, n:] = False
        tokens[b, n:] = 0
    return jnp.asarray(tokens), jnp.asarray(mask)


@pytest.mark.parametrize("overrides", [{}, {"qk_norm": True, "tie_word_embeddings": True}])
def test_prefixed_forward_equals_plain(overrides):
    model = _model(**overrides)
    tokens, mask = _batch()
    lp, ent, v = model.logprobs_and_values(tokens, mask, with_entropy=True, chunk_size=8)
    lp2, ent2, v2 = model.logprobs_and_values(tokens, mask, with_entropy=True, chunk_size=8,
                                              prefix_len=9)
    m = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(lp2)[m], np.asarray(lp)[m], atol=1e-5)
    np.testing.assert_allclose(np.asarray(ent2)[m], np.asarray(ent)[m], atol=1e-5)
    np.testing.assert_allclose(np.asarray(v2)[m], np.asarray(v)[m], atol=1e-5)


def test_prefixed_gradients_equal_plain():
    model = _model()
    tokens, mask = _batch(P=6, T=17, B=4, seed=1)
    weights = jax.random.normal(jax.random.key(3), tokens.shape) * mask
    graphdef, params = nnx.split(model)

    def loss(params, prefix_len):
        m = nnx.merge(graphdef, params)
        lp, _, v = m.logprobs_and_values(tokens, mask, prefix_len=prefix_len, chunk_size=8)
        return jnp.sum(weights * (lp + 0.5 * v**2))

    g_plain = jax.grad(loss)(params, 0)
    g_pref = jax.grad(loss)(params, 6)
    flat_plain, flat_pref = jax.tree.leaves(g_plain), jax.tree.leaves(g_pref)
    assert any(float(jnp.abs(g).max()) > 1e-4 for g in flat_plain)
    for a, b in zip(flat_plain, flat_pref):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-5, rtol=1e-4)


def test_bad_prefix_len_is_rejected():
    model = _model()
    tokens, mask = _batch()
    with pytest.raises(ValueError, match="prefix_len"):
        model.logprobs_and_values(tokens, mask, prefix_len=1)
    with pytest.raises(ValueError, match="prefix_len"):
        model.logprobs_and_values(tokens, mask, prefix_len=tokens.shape[1])
