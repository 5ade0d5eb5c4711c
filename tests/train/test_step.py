"""The pure update step on a tiny random model: exact micro-batching, non-finite guard."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from agentic_rl.models import ModelConfig, PolicyModel, add_lora
from agentic_rl.rl import LossConfig
from agentic_rl.train.builders import task_indices
from agentic_rl.train.config import default_config
from agentic_rl.train.state import init_train_state, make_optimizer, zero_lora
from agentic_rl.train.step import StepConfig, TrainBatch, make_train_fn, score

B, T, V = 8, 32, 40


def make_state(*, lora: bool, critic: bool, lr: float = 1e-2, sgd: bool = False):
    cfg = ModelConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=4, num_kv_heads=2)
    model = PolicyModel(cfg, rngs=nnx.Rngs(0), value_head=critic)
    if lora:
        add_lora(model, rank=2, alpha=4.0, rngs=nnx.Rngs(1))
    ocfg = default_config().optim
    with ocfg.unlocked():
        ocfg.learning_rate = lr
    tx = optax.sgd(lr) if sgd else make_optimizer(ocfg, 10)
    return init_train_state(model, tx, seed=0, need_ref_copy=not lora)


def make_batch(state, seed=0, *, critic=False) -> TrainBatch:
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
    lengths = rng.integers(T // 2, T + 1, B)
    attn = jnp.asarray(np.arange(T)[None] < lengths[:, None])
    loss = attn & jnp.asarray(np.arange(T)[None] >= 8)
    lp, values, ref = score(state, tokens, attn, chunk=4, with_values=critic, with_ref=True)
    adv = jnp.where(loss, jnp.asarray(rng.normal(size=(B, T)), jnp.float32), 0.0)
    return TrainBatch(tokens=tokens, attention_mask=attn, loss_mask=loss,
                      turn_index=jnp.where(loss, 0, -1), advantages=adv,
                      returns=jnp.where(loss, adv, 0.0), old_logprobs=lp, ref_logprobs=ref,
                      old_values=values)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean"])
def test_micro_batching_gives_the_same_update(aggregation):
    """Accumulating 4 micro-batches of 2 rows equals one pass over the 8-row minibatch.
    (SGD, so params differ by lr x the gradient difference; Adam's first step is
    ~lr x sign(g), which amplifies float noise in near-zero gradients.)"""
    outs = []
    for micro in (0, 2):
        state = make_state(lora=False, critic=True, sgd=True)
        batch = make_batch(state, critic=True)
        hp = StepConfig(loss=LossConfig(aggregation=aggregation), kl_coef=0.1,
                        micro_batch_size=micro, kl_in_loss=True, use_critic=True)
        state, metrics = make_train_fn()(state, batch, hp)
        outs.append((leaves(state.params), float(metrics["loss"])))
    (p0, l0), (p1, l1) = outs
    assert l0 == pytest.approx(l1, rel=1e-5, abs=1e-6)
    for a, b in zip(p0, p1):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_update_changes_params_and_reports_finite_metrics():
    state = make_state(lora=True, critic=False)
    before = leaves(state.params)
    batch = make_batch(state)
    hp = StepConfig(loss=LossConfig(), num_epochs=2, num_minibatches=2)
    state, metrics = make_train_fn()(state, batch, hp)
    assert int(state.step) == 1
    assert float(metrics["skipped"]) == 0
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert any(not np.array_equal(a, b) for a, b in zip(before, leaves(state.params)))


def test_poisoned_batch_skips_the_update_and_keeps_params():
    state = make_state(lora=True, critic=False)
    before_params, before_opt = leaves(state.params), leaves(state.opt_state)
    batch = make_batch(state)
    poisoned = batch.replace(advantages=batch.advantages.at[0, 10].set(jnp.nan))
    hp = StepConfig(loss=LossConfig(), num_minibatches=1)
    state, metrics = make_train_fn()(state, poisoned, hp)
    assert float(metrics["skipped"]) == 1
    assert not np.isfinite(float(metrics["loss"]))
    for a, b in zip(before_params, leaves(state.params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(before_opt, leaves(state.opt_state)):
        np.testing.assert_array_equal(a, b)
    # a clean batch afterwards updates normally
    state, metrics = make_train_fn()(state, make_batch(state, seed=1), hp)
    assert float(metrics["skipped"]) == 0


@pytest.mark.parametrize("critic", [False, True])
def test_zero_advantage_batch_does_not_move_the_weights(critic):
    """All advantages 0 (every GRPO group had equal rewards): no gradient, so no update,
    even though Adam's momentum from an earlier update would otherwise carry on. With a
    critic the value loss still has a gradient, so that update happens."""
    state = make_state(lora=True, critic=critic)
    hp = StepConfig(loss=LossConfig(), num_minibatches=1, use_critic=critic)
    state, metrics = make_train_fn()(state, make_batch(state, critic=critic), hp)
    assert float(metrics["zero_grad"]) == 0
    before_params, before_opt = leaves(state.params), leaves(state.opt_state)
    batch = make_batch(state, seed=1, critic=critic)
    flat = batch.replace(advantages=jnp.zeros_like(batch.advantages))
    state, metrics = make_train_fn()(state, flat, hp)
    assert float(metrics["skipped"]) == 0
    moved = any(not np.array_equal(a, b) for a, b in zip(before_params, leaves(state.params)))
    if critic:
        assert float(metrics["zero_grad"]) == 0 and moved
    else:
        assert float(metrics["zero_grad"]) == 1 and float(metrics["grad_norm"]) == 0
        assert not moved
        for a, b in zip(before_opt, leaves(state.opt_state)):
            np.testing.assert_array_equal(a, b)


def test_lora_reference_is_the_base_model():
    """Zeroed adapters give the base model's log-probs; trained adapters do not."""
    state = make_state(lora=True, critic=False)
    b = jax.tree.map(lambda v: v + 0.1, state.params)
    state = state.replace(params=b)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (2, T)), jnp.int32)
    attn = jnp.ones((2, T), bool)
    lp, _, ref = score(state, tokens, attn, chunk=2, with_values=False, with_ref=True)
    base = state.model(zero_lora(state.params))
    want = base.logprobs_and_values(tokens, attn)[0]
    np.testing.assert_allclose(np.asarray(ref), np.asarray(want), atol=1e-6)
    assert not np.allclose(np.asarray(lp), np.asarray(ref))


def test_task_order_is_a_function_of_the_position():
    full = task_indices(10, 0, 25, seed=3)
    assert sorted(full[:10]) == list(range(10)) and sorted(full[10:20]) == list(range(10))
    assert task_indices(10, 7, 11, seed=3) == full[7:18]
    assert task_indices(10, 0, 10, seed=4) != full[:10]
