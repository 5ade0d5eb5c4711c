"""Several LoRA adapters over one frozen base (one per agent): each token uses its own
adapter, gradients reach only the adapter of the tokens they come from, the cached
(sampling) forward agrees with the full one, and one adapter can be merged for export."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentic_rl.models import LoRAWeight, ModelConfig, PolicyModel, add_lora, merge_lora
from agentic_rl.models.kv_cache import init_cache

CFG = ModelConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=2,
                  num_heads=4, num_kv_heads=2, max_position_embeddings=64)
RANK, N = 2, 3


def randomise_b(model, seed=1):
    """B = 0 at init makes every adapter the base model; give each its own B."""
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 64))
    for path, v in nnx.iter_graph(model):
        if isinstance(v, LoRAWeight) and str(path[-1]).endswith("_lora_b"):
            v.value = 0.3 * jax.random.normal(next(keys), v.value.shape)


def multi(seed=0):
    model = PolicyModel(CFG, rngs=nnx.Rngs(seed))
    add_lora(model, rank=RANK, alpha=4.0, rngs=nnx.Rngs(seed), num_adapters=N)
    randomise_b(model)
    return model


def single(model, k):
    """A single-adapter model equal to `model`'s adapter k (slices of A and B)."""
    out = PolicyModel(CFG, rngs=nnx.Rngs(0))
    add_lora(out, rank=RANK, alpha=4.0, rngs=nnx.Rngs(0))
    src = model.lm.layers
    dst = out.lm.layers
    for name, v in vars(src).items():
        if not isinstance(v, nnx.Variable):
            continue
        x = v.value
        if name.endswith("_lora_a"):
            x = x[..., k * RANK:(k + 1) * RANK]
        elif name.endswith("_lora_b"):
            x = x[:, k * RANK:(k + 1) * RANK]
        getattr(dst, name).value = x
    out.lm.embed_tokens.value = model.lm.embed_tokens.value
    out.lm.norm.value = model.lm.norm.value
    if hasattr(model.lm, "lm_head"):
        out.lm.lm_head.value = model.lm.lm_head.value
    return out


def data(B=4, T=10, seed=0):
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(1, CFG.vocab_size, (B, T)))
    mask = jnp.asarray(np.arange(T)[None] < np.array([T, T - 2, T - 4, T - 1])[:B, None])
    return tokens, mask


def test_each_row_uses_its_own_adapter():
    model = multi()
    tokens, mask = data()
    ids = jnp.asarray([0, 2, 1, -1])
    lp, _, _ = model.logprobs_and_values(tokens, mask, adapter_ids=ids[:, None] + 0 * tokens)
    m = np.asarray(mask)
    base = PolicyModel(CFG, rngs=nnx.Rngs(0))
    for b, k in enumerate(np.asarray(ids)):
        ref = base if k < 0 else single(model, int(k))
        want = ref.logprobs_and_values(tokens[b:b + 1], mask[b:b + 1])[0]
        np.testing.assert_allclose(np.asarray(lp[b])[m[b]], np.asarray(want[0])[m[b]],
                                   rtol=2e-5, atol=2e-5)
    # the adapters differ: not every row is the same model
    a0 = single(model, 0).logprobs_and_values(tokens, mask)[0]
    a2 = single(model, 2).logprobs_and_values(tokens, mask)[0]
    assert not np.allclose(np.asarray(a0), np.asarray(a2), atol=1e-3)


def test_per_token_selection_mixes_adapters_within_a_row():
    """A row whose first half is agent 0's and second half agent 1's equals neither."""
    model = multi()
    tokens, mask = data(B=1)
    ids = jnp.asarray([[0] * 5 + [1] * 5])
    mixed = model.lm.hidden_states(tokens, mask, ids)
    h0 = model.lm.hidden_states(tokens, mask, jnp.zeros_like(ids))
    h1 = model.lm.hidden_states(tokens, mask, jnp.ones_like(ids))
    np.testing.assert_allclose(mixed[:, :5], h0[:, :5], rtol=1e-5, atol=1e-5)  # causal
    assert not np.allclose(mixed[:, 5:], h1[:, 5:], atol=1e-4)  # its context was agent 0's
    assert not np.allclose(mixed[:, 5:], h0[:, 5:], atol=1e-4)


def test_gradients_reach_only_the_adapters_of_the_tokens():
    model = multi()
    tokens, mask = data()
    ids = jnp.asarray([0, 0, 2, 2])  # adapter 1 is used by no row
    graphdef, lora, rest = nnx.split(model, LoRAWeight, ...)

    def loss(lora, rows):
        m = nnx.merge(graphdef, lora, rest)
        lp = m.logprobs_and_values(tokens, mask, adapter_ids=ids[:, None] + 0 * tokens)[0]
        return jnp.sum(lp * mask * rows[:, None])

    for rows, moved in (([1.0, 1, 0, 0], {0}), ([0.0, 0, 1, 1], {2}), ([1.0, 1, 1, 1], {0, 2})):
        grads = jax.grad(loss)(lora, jnp.asarray(rows))
        for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
            key = jax.tree_util.keystr(path)
            g = np.asarray(g)
            per = (np.split(g, N, axis=-1) if "_lora_a" in key else np.split(g, N, axis=1))
            for k in range(N):
                norm = float(np.abs(per[k]).sum())
                if k in moved:
                    assert norm > 0, (key, k)
                else:
                    assert norm == 0.0, (key, k, norm)


def test_cached_forward_with_row_adapters_matches_the_full_forward():
    model = multi()
    tokens, mask = data()
    ids = jnp.asarray([1, 0, 2, -1])
    B, T = tokens.shape
    cache = init_cache(CFG, B, 32)
    h_pre, cache = model.lm.forward_cached(tokens[:, :6], cache, mask[:, :6], adapter_ids=ids)
    h_rest, _ = model.lm.forward_cached(tokens[:, 6:], cache, mask[:, 6:], adapter_ids=ids)
    h_full = model.lm.hidden_states(tokens, mask, ids)
    got = np.concatenate([np.asarray(h_pre), np.asarray(h_rest)], axis=1)
    m = np.asarray(mask)
    np.testing.assert_allclose(got[m], np.asarray(h_full)[m], rtol=1e-4, atol=1e-4)


def test_ids_are_required_and_prefix_sharing_is_refused():
    model = multi()
    tokens, mask = data()
    with pytest.raises(ValueError, match="pass adapter_ids"):
        model.lm.hidden_states(tokens, mask)
    with pytest.raises(ValueError, match="prefix_len=0"):
        model.logprobs_and_values(tokens, mask, prefix_len=4, adapter_ids=jnp.zeros(4, int))


def test_merging_one_adapter_gives_that_agents_model():
    model = multi()
    tokens, mask = data()
    want = single(model, 2).lm.hidden_states(tokens, mask)
    with pytest.raises(ValueError, match="name the one"):
        merge_lora(model)
    merge_lora(model, adapter=2)
    assert model.lm.num_adapters == 1
    got = model.lm.hidden_states(tokens, mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_one_adapter_is_unchanged():
    """num_adapters=1 draws the same A as before and needs no ids."""
    a = PolicyModel(CFG, rngs=nnx.Rngs(0))
    add_lora(a, rank=RANK, alpha=4.0, rngs=nnx.Rngs(3))
    b = PolicyModel(CFG, rngs=nnx.Rngs(0))
    add_lora(b, rank=RANK, alpha=4.0, rngs=nnx.Rngs(3), num_adapters=1)
    for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    tokens, mask = data()
    a.lm.hidden_states(tokens, mask)
