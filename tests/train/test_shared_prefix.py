"""Shared-prefix updates: the loop finds the prefix the rows share, and an update computed
with it equals the plain per-row update (scoring pass, losses, gradients, new params)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from agentic_rl.rl import LossConfig
from agentic_rl.rollout import EpisodeBatch, HostMetadata, share_prefix
from agentic_rl.train.step import StepConfig, TrainBatch, make_train_fn, score
from tests.train.test_step import B, T, V, leaves, make_state


def test_share_prefix_fills_empty_rows_only():
    tokens = np.array([[5, 6, 7, 8], [5, 6, 9, 0], [0, 0, 0, 0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]], bool)
    turn_index = np.where(mask, 0, -1)
    batch = EpisodeBatch(tokens=tokens, attention_mask=mask, loss_mask=mask,
                         sample_logprobs=np.zeros((3, 4), np.float32), turn_index=turn_index,
                         turn_end=np.array([[3], [2], [-1]]), turn_rewards=np.zeros((3, 1)),
                         group_id=np.arange(3), agent_id=np.where(mask, 0, -1),
                         truncated=np.zeros(3, bool), metadata=HostMetadata([{}] * 3))
    out = share_prefix(batch, 2)
    np.testing.assert_array_equal(out.tokens[2], [5, 6, 0, 0])
    np.testing.assert_array_equal(out.attention_mask[2], [1, 1, 0, 0])
    np.testing.assert_array_equal(out.tokens[:2], tokens[:2])
    assert tokens[2, 0] == 0  # the caller's arrays are not modified
    assert not out.loss_mask[2].any()  # the padding row still has no loss
    out.validate()  # still a valid EpisodeBatch
    assert share_prefix(batch, 0) is batch


def _prefixed_batch(state, P, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (B, T))
    tokens[:, :P] = tokens[0, :P]
    lengths = rng.integers(T // 2, T + 1, B)
    attn = np.arange(T)[None] < lengths[:, None]
    loss = attn & (np.arange(T)[None] >= P + 2)
    tokens, attn, loss = jnp.asarray(tokens, jnp.int32), jnp.asarray(attn), jnp.asarray(loss)
    adv = jnp.where(loss, jnp.asarray(rng.normal(size=(B, T)), jnp.float32), 0.0)
    lp, values, ref = score(state, tokens, attn, chunk=4, with_values=True, with_ref=True)
    lp_p, values_p, ref_p = score(state, tokens, attn, chunk=4, with_values=True,
                                  with_ref=True, prefix_len=P)
    m = np.asarray(attn)
    for a, b in ((lp, lp_p), (values, values_p), (ref, ref_p)):
        np.testing.assert_allclose(np.asarray(b)[m], np.asarray(a)[m], atol=1e-5)
    return TrainBatch(tokens=tokens, attention_mask=attn, loss_mask=loss,
                      turn_index=jnp.where(loss, 0, -1), advantages=adv,
                      returns=jnp.where(loss, adv, 0.0), old_logprobs=lp, ref_logprobs=ref,
                      old_values=values)


@pytest.mark.parametrize("lora", [True, False])
def test_shared_prefix_update_equals_plain_update(lora):
    outs = []
    for prefix_len in (0, 12):
        state = make_state(lora=lora, critic=True, sgd=True)
        batch = _prefixed_batch(state, 12)
        hp = StepConfig(loss=LossConfig(), kl_coef=0.1, kl_in_loss=True, use_critic=True,
                        micro_batch_size=4, prefix_len=prefix_len)
        state, metrics = make_train_fn()(state, batch, hp)
        outs.append((leaves(state.params), float(metrics["loss"])))
    (p0, l0), (p1, l1) = outs
    assert l1 == pytest.approx(l0, rel=1e-5, abs=1e-6)
    for a, b in zip(p0, p1):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
