"""The pure update step on a tiny random model: exact micro-batching, non-finite guard."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from agentic_rl import rl
from agentic_rl.models import ModelConfig, PolicyModel, add_lora
from agentic_rl.rl import LossConfig
from agentic_rl.train.builders import task_indices
from agentic_rl.train.config import default_config
from agentic_rl.train.state import init_train_state, make_optimizer, zero_lora
from agentic_rl.train.step import StepConfig, TrainBatch, make_train_fn, score, value_at_cut
from tests.rl import reference

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


AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_sum_const")
KL_COEF, VF_COEF, LR = 0.1, 0.5, 1e-2


def reference_loss(batch: TrainBatch, lp, values, cfg: LossConfig) -> float:
    """The first update's loss from the loop references on the unsplit [B, T] batch (PPO
    surrogate + KL_COEF x k3 KL + VF_COEF x clipped value loss, one shared denominator)."""
    mask = np.asarray(batch.loss_mask)
    lp, values = np.asarray(lp, np.float64), np.asarray(values, np.float64)
    old, adv = np.asarray(batch.old_logprobs, np.float64), np.asarray(batch.advantages)
    ref_lp, ret = np.asarray(batch.ref_logprobs, np.float64), np.asarray(batch.returns)
    old_v = np.asarray(batch.old_values, np.float64)
    p = {"clip_eps": cfg.clip_eps}
    pg = reference.per_token_policy_loss("ppo", lp, old, adv, mask, p)
    kl, vf = np.zeros(mask.shape), np.zeros(mask.shape)
    for b, t in zip(*np.nonzero(mask)):
        kl[b, t] = reference.kl("k3", lp[b, t], ref_lp[b, t])
        vf[b, t] = reference.value_loss_per_token(values[b, t], old_v[b, t], ret[b, t],
                                                  cfg.value_clip_eps)
    agg = lambda x: reference.aggregate(x, mask, cfg.aggregation, cfg.loss_norm_const)
    (s_pg, den), (s_kl, _), (s_vf, _) = agg(pg), agg(kl), agg(vf)
    return (s_pg + KL_COEF * s_kl + VF_COEF * s_vf) / den


def reference_grad(state, batch: TrainBatch, cfg: LossConfig):
    """d loss / d params on the unsplit batch, straight from the rl functions (no
    micro-batching, no shared minibatch denominator)."""
    mask = batch.loss_mask

    def loss(params):
        lp, _, v = state.model(params).logprobs_and_values(batch.tokens, batch.attention_mask)
        pg, den, _ = rl.compute_policy_loss(lp, batch.old_logprobs, batch.advantages, mask, cfg)
        kl = rl.aggregate(rl.kl_loss(lp, batch.ref_logprobs, mask, cfg)[0], mask, cfg)[0]
        vf = rl.aggregate(rl.value_loss(v, batch.old_values, batch.returns, mask, cfg)[0],
                          mask, cfg)[0]
        return (pg + KL_COEF * kl + VF_COEF * vf) / den

    return jax.grad(loss)(state.params)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_micro_batching_gives_the_same_update(aggregation):
    """Accumulating 4 micro-batches of 2 rows equals one pass over the 8-row minibatch, and
    both equal the loss and gradient of the unsplit batch (NumPy reference loss; gradient of
    the rl functions on [B, T]): the denominator is the aggregation's over the whole
    minibatch, whatever `micro_batch_size` is (Dr.GRPO's constant one counted the
    micro-batches as rows: 4 with micro_batch_size 0, 16 with 2, instead of 32).
    (SGD, so params differ by lr x the gradient difference; Adam's first step is
    ~lr x sign(g), which amplifies float noise in near-zero gradients.)"""
    cfg = LossConfig(aggregation=aggregation, loss_norm_const=4.0)
    outs = []
    for micro in (0, 2):
        state = make_state(lora=False, critic=True, sgd=True, lr=LR)
        batch = make_batch(state, critic=True)
        noise = np.random.default_rng(5).normal(0, 0.3, batch.ref_logprobs.shape)
        batch = batch.replace(ref_logprobs=batch.ref_logprobs + jnp.asarray(noise, jnp.float32))
        before = leaves(state.params)
        g_ref = leaves(reference_grad(state, batch, cfg))
        want = reference_loss(batch, batch.old_logprobs, batch.old_values, cfg)
        hp = StepConfig(loss=cfg, kl_coef=KL_COEF, vf_coef=VF_COEF, micro_batch_size=micro,
                        kl_in_loss=True, use_critic=True)
        state, metrics = make_train_fn()(state, batch, hp)
        assert float(metrics["loss"]) == pytest.approx(want, rel=1e-5, abs=1e-6)
        for p0, p1, g in zip(before, leaves(state.params), g_ref):
            # (p0 - p1) / lr is the step's gradient, known to the float32 spacing of p / lr
            tol = 4 * np.spacing(np.abs(p0).astype(np.float32)) / LR + 1e-7
            assert np.all(np.abs((p0 - p1) / LR - g) <= 2e-3 * np.abs(g) + tol)
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


# ------------------------------------------------------------------ sampling temperature


def tempered_logprobs(state, tokens, attn, temperature):
    """log softmax(logits / temperature) of each token given its prefix (NumPy, float64)."""
    lm = state.model().lm
    logits = np.asarray(lm.logits(lm.hidden_states(tokens, attn)), np.float64) / temperature
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    lp = np.take_along_axis(logp[:, :-1], np.asarray(tokens)[:, 1:, None], -1)[..., 0]
    return np.pad(lp, ((0, 0), (1, 0)))


@pytest.mark.parametrize("prefix_len", [0, 4])
def test_scoring_uses_the_sampling_temperature(prefix_len):
    """The sampler draws from softmax(logits / T) and stores those log-probs: the scoring
    pass must score the same distribution (as verl and OpenRLHF do), values unchanged."""
    state = make_state(lora=False, critic=True)
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, V, (4, T)), jnp.int32)
    tokens = tokens.at[:, :prefix_len].set(tokens[0, :prefix_len])
    attn = jnp.ones((4, T), bool)
    lp, v, _ = score(state, tokens, attn, chunk=2, with_values=True, with_ref=False,
                     prefix_len=prefix_len, temperature=0.5)
    _, v1, _ = score(state, tokens, attn, chunk=2, with_values=True, with_ref=False)
    np.testing.assert_allclose(lp, tempered_logprobs(state, tokens, attn, 0.5), atol=2e-5)
    np.testing.assert_array_equal(v, v1)
    assert not np.allclose(lp, tempered_logprobs(state, tokens, attn, 1.0), atol=1e-2)


def test_training_forward_uses_the_sampling_temperature():
    """Old log-probs scored at T = 0.5, update at T = 0.5: the first update's ratio is 1
    (pi_T / pi_T). The untempered update this replaces had ratios of e^(+-several)."""
    state = make_state(lora=True, critic=False)
    batch = make_batch(state)
    lp, _, _ = score(state, batch.tokens, batch.attention_mask, chunk=4, with_values=False,
                     with_ref=False, temperature=0.5)
    batch = batch.replace(old_logprobs=lp)
    hp = StepConfig(loss=LossConfig(), temperature=0.5)
    _, metrics = make_train_fn()(state, batch, hp)
    assert float(metrics["ratio_max"]) == pytest.approx(1.0, abs=1e-4)
    assert float(metrics["ratio_min"]) == pytest.approx(1.0, abs=1e-4)
    assert float(metrics["approx_kl"]) < 1e-8


# ------------------------------------------------------------------ truncated episodes


def test_score_returns_the_value_at_each_rows_cut():
    """with_cut_values: the critic's value of the state after a row's last real token (what
    a truncated episode bootstraps from), also for a row that fills all T positions."""
    state = make_state(lora=False, critic=True)
    # a value head that is not ~0, so the check means something
    state = state.replace(params=jax.tree.map(lambda x: x + 0.05, state.params))
    rng = np.random.default_rng(4)
    tokens = jnp.asarray(rng.integers(0, V, (4, T)), jnp.int32)
    lengths = np.array([T, T // 2, 5, T - 1])
    attn = jnp.asarray(np.arange(T)[None] < lengths[:, None])
    lp, v, ref, cut = score(state, tokens, attn, chunk=2, with_values=True, with_ref=True,
                            with_cut_values=True)
    lp0, v0, ref0 = score(state, tokens, attn, chunk=2, with_values=True, with_ref=True)
    model = state.model()
    for b, n in enumerate(lengths):
        h = model.lm.hidden_states(tokens[b:b + 1, :n], attn[b:b + 1, :n])
        want = float(model.value_head(h)[0, -1])
        assert float(cut[b]) == pytest.approx(want, rel=1e-4, abs=1e-5)
    for a, b in ((lp, lp0), (v, v0), (ref, ref0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # rows shorter than T: the plain pass's values already hold it
    short = lengths < T
    np.testing.assert_allclose(np.asarray(value_at_cut(v0, attn))[short],
                               np.asarray(cut)[short], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ off-policy corrections


@pytest.mark.parametrize("correction", ["tis", "mis", "decoupled"])
def test_on_policy_batches_make_every_correction_the_plain_update(correction):
    """behaviour == proximal (synchronous sampling): every weight is 1 and the update is the
    plain one."""
    outs = []
    for off_policy in ("none", correction):
        state = make_state(lora=True, critic=False, sgd=True)
        batch = make_batch(state)
        batch = batch.replace(behaviour_logprobs=batch.old_logprobs)
        hp = StepConfig(loss=LossConfig(off_policy=off_policy), num_minibatches=2)
        state, metrics = make_train_fn()(state, batch, hp)
        outs.append((leaves(state.params), metrics))
    (p0, m0), (p1, m1) = outs
    for a, b in zip(p0, p1):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    assert float(m0["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-6)
    assert float(m1["behav_ratio_max"]) == 1.0 and float(m1["behav_weight_mean"]) == 1.0


def test_decoupled_update_weights_by_proximal_over_behaviour():
    """A stale sampler: behaviour = proximal - noise. At the first update pi = pi_prox, so
    the decoupled loss is -sum(w A) / N with w = pi_prox / pi_behaviour, and the metrics
    report that ratio."""
    state = make_state(lora=True, critic=False)
    batch = make_batch(state)
    mask = np.asarray(batch.loss_mask)
    noise = np.random.default_rng(6).normal(0, 0.2, mask.shape)
    behaviour = np.asarray(batch.old_logprobs) - np.where(mask, noise, 0)
    batch = batch.replace(behaviour_logprobs=jnp.asarray(behaviour, jnp.float32))
    hp = StepConfig(loss=LossConfig(off_policy="decoupled"))
    _, metrics = make_train_fn()(state, batch, hp)
    rho = np.exp(np.asarray(batch.old_logprobs, np.float64) - behaviour)[mask]
    adv = np.asarray(batch.advantages)[mask]
    assert float(metrics["loss"]) == pytest.approx(-(rho * adv).sum() / mask.sum(), rel=1e-4)
    assert float(metrics["behav_ratio_mean"]) == pytest.approx(rho.mean(), rel=1e-5)
    assert float(metrics["behav_ratio_max"]) == pytest.approx(rho.max(), rel=1e-5)
    assert float(metrics["behav_kl"]) == pytest.approx(np.mean(rho - 1 - np.log(rho)), rel=1e-3)
