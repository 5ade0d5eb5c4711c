"""The value head is read where the log-probs are: values[t] is the value of the state in
which token t was chosen (hidden state t - 1), so it is a baseline that has not seen the
action it scores."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from agentic_rl.models import ModelConfig, PolicyModel

CFG = ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=4, num_kv_heads=2)


def model_with_random_value_head() -> PolicyModel:
    model = PolicyModel(CFG, rngs=nnx.Rngs(0), value_head=True)
    key = jax.random.key(1)
    model.value_head.kernel.value = jax.random.normal(key, model.value_head.kernel.value.shape)
    model.value_head.bias.value = model.value_head.bias.value + 0.5
    return model


@nnx.jit(static_argnames="prefix_len")
def values_of(model, tokens, mask=None, prefix_len=0):
    return model.logprobs_and_values(tokens, mask, prefix_len=prefix_len)[2]


def test_values_are_shifted_like_the_logprobs():
    model = model_with_random_value_head()
    tokens = np.random.default_rng(0).integers(0, 40, (3, 16)).astype(np.int32)
    values = values_of(model, tokens)
    h = nnx.jit(lambda m, t: m.lm.hidden_states(t))(model, tokens)
    want = np.asarray(model.value_head(h))[:, :-1]
    np.testing.assert_allclose(np.asarray(values)[:, 1:], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(values)[:, 0], 0.0)
    # the value of position t does not depend on token t
    changed = tokens.copy()
    changed[:, 9] = (changed[:, 9] + 1) % 40
    v2 = values_of(model, changed)
    np.testing.assert_allclose(np.asarray(v2)[:, :10], np.asarray(values)[:, :10], atol=1e-6)


def test_shared_prefix_path_gives_the_same_values():
    model = model_with_random_value_head()
    rng = np.random.default_rng(1)
    prefix = rng.integers(0, 40, (1, 8))
    tokens = np.concatenate([np.repeat(prefix, 3, 0), rng.integers(0, 40, (3, 8))], 1)
    tokens = tokens.astype(np.int32)
    mask = np.ones(tokens.shape, bool)
    mask[1, 13:] = False
    plain = values_of(model, tokens, mask)
    shared = values_of(model, tokens, mask, prefix_len=8)
    np.testing.assert_allclose(np.asarray(shared), np.asarray(plain), rtol=1e-5, atol=1e-5)
