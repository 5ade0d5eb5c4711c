"""DPO loss and preference-pair building against loop references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from agentic_rl import rl

from . import reference as ref


def _draw(seed, n=12):
    rng = np.random.default_rng(seed)
    return [rng.normal(-20, 5, n).astype(np.float32) for _ in range(4)], rng


def test_dpo_loss_matches_reference_with_pair_mask():
    (c, r, rc, rr), rng = _draw(0)
    valid = rng.random(12) < 0.7
    cfg = rl.DPOConfig(beta=0.2, label_smoothing=0.1)
    s, d, m = jax.jit(rl.dpo_loss)(c, r, rc, rr, cfg, pair_mask=valid)
    per = [ref.dpo(*map(float, x), 0.2, 0.1) for x in zip(c, r, rc, rr)]
    np.testing.assert_allclose(s, sum(p for p, v in zip(per, valid) if v), rtol=1e-5)
    assert float(d) == valid.sum()
    h = (c - rc) - (r - rr)
    np.testing.assert_allclose(m["reward_accuracy"], (h[valid] > 0).mean())
    np.testing.assert_allclose(m["reward_margin"], 0.2 * h[valid].mean(), rtol=1e-5)


def test_dpo_gradient_matches_finite_differences():
    (c, r, rc, rr), _ = _draw(1, 5)
    cfg = rl.DPOConfig(beta=0.3, label_smoothing=0.05)
    loss = lambda a, b: rl.finalize(*rl.dpo_loss(a, b, rc, rr, cfg)[:2])
    g_c, g_r = jax.jit(jax.grad(loss, (0, 1)))(c, r)

    def f(cc, i, delta):
        cc = cc.astype(np.float64).copy()
        cc[i] += delta
        return cc

    h = 1e-6
    for i in range(5):
        plus = ref.dpo(f(c, i, h)[i], float(r[i]), float(rc[i]), float(rr[i]), 0.3, 0.05)
        minus = ref.dpo(f(c, i, -h)[i], float(r[i]), float(rc[i]), float(rr[i]), 0.3, 0.05)
        np.testing.assert_allclose(g_c[i], (plus - minus) / (2 * h) / 5, rtol=1e-3)
    np.testing.assert_allclose(g_r, -g_c, rtol=1e-5)  # the loss depends on c - r only


def test_dpo_with_traced_beta_vmaps():
    (c, r, rc, rr), _ = _draw(2)
    betas = jnp.array([0.01, 0.1, 1.0])
    loss = lambda b: rl.finalize(*rl.dpo_loss(c, r, rc, rr, rl.DPOConfig(beta=b))[:2])
    out = jax.jit(jax.vmap(loss))(betas)
    for i, b in enumerate([0.01, 0.1, 1.0]):
        expect = np.mean([ref.dpo(*map(float, x), b, 0.0) for x in zip(c, r, rc, rr)])
        np.testing.assert_allclose(out[i], expect, rtol=1e-5)


def test_preference_pairs_match_reference():
    build = jax.jit(rl.build_preference_pairs)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        n = 16
        rewards = rng.integers(0, 3, n).astype(np.float32)  # many ties
        group_id = (rng.integers(0, 6, n) * 11 - 5).astype(np.int32)
        pairs = build(rewards, group_id)
        expect = ref.preference_pairs(rewards, group_id)
        got = {}
        ids = sorted(set(group_id.tolist()))
        for slot in np.nonzero(np.asarray(pairs.valid))[0]:
            got[ids[slot]] = (int(pairs.chosen[slot]), int(pairs.rejected[slot]))
        assert got == expect
        assert pairs.valid.shape == (n,)


def test_pairs_from_identical_or_singleton_groups_are_invalid_and_loss_is_finite():
    rewards = jnp.array([1.0, 1.0, 1.0, 0.5, 2.0])
    group_id = jnp.array([0, 0, 0, 1, 2])
    seq = jnp.array([-3.0, -4.0, -5.0, -6.0, -7.0])

    @jax.jit
    def run(rewards, group_id):
        pairs = rl.build_preference_pairs(rewards, group_id)
        return pairs, rl.dpo_loss_from_pairs(seq, seq + 1, pairs, rl.DPOConfig())

    pairs, (s, d, m) = run(rewards, group_id)
    assert not np.any(pairs.valid)
    assert float(s) == 0 and float(d) == 0 and float(rl.finalize(s, d)) == 0
    assert all(np.isfinite(v) for v in m.values())


def test_dpo_from_episodes_end_to_end():
    """Episode log-probs from token log-probs, rewards from turn rewards, best vs worst."""
    rng = np.random.default_rng(3)
    batch = ref.random_batch(rng, 8, 28, 4)
    token_lp = np.where(batch.loss_mask, rng.normal(-1, 0.3, (8, 28)), 0).astype(np.float32)
    ref_lp = (token_lp + np.where(batch.loss_mask, rng.normal(0, 0.1, (8, 28)), 0)).astype(
        np.float32
    )

    @jax.jit
    def run(token_lp, ref_lp):
        rewards = rl.episode_returns(batch.turn_rewards, batch.turn_end)
        pairs = rl.build_preference_pairs(rewards, batch.group_id)
        seq = rl.sequence_logprobs(token_lp, batch.loss_mask)
        seq_ref = rl.sequence_logprobs(ref_lp, batch.loss_mask)
        return rewards, rl.dpo_loss_from_pairs(seq, seq_ref, pairs, rl.DPOConfig(beta=0.5))

    rewards, (s, d, _) = run(token_lp, ref_lp)
    expect = []
    for best, worst in ref.preference_pairs(np.asarray(rewards), batch.group_id).values():
        lp_sum = [float(token_lp[i][batch.loss_mask[i]].sum()) for i in (best, worst)]
        ref_sum = [float(ref_lp[i][batch.loss_mask[i]].sum()) for i in (best, worst)]
        expect.append(ref.dpo(lp_sum[0], lp_sum[1], ref_sum[0], ref_sum[1], 0.5, 0.0))
    assert len(expect) > 0
    np.testing.assert_allclose(s, sum(expect), rtol=1e-4)
    assert float(d) == len(expect)
