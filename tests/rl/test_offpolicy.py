"""Off-policy corrections (three log-probs per token: behaviour, proximal/old, current)
against loop references, with gradients, and their exact reduction to the on-policy
losses when the sampler's policy is the proximal one."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentic_rl import rl

from . import reference as ref

B, T, K = 8, 28, 4
CORRECTIONS = ("tis", "mis", "decoupled")
AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_sum_const")
LOSSES = ("ppo", "asym_clip", "dual_clip", "gspo", "cispo", "truncated_is", "pg")
# A tight TIS cap and MIS band, so the random draws exercise both sides of each.
CFG = rl.LossConfig(loss_norm_const=16.0, off_policy_tis_cap=1.3, off_policy_mis_low=0.6,
                    off_policy_mis_high=1.6)


def params(cfg: rl.LossConfig) -> dict:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def draw(seed, scale=0.3, stale=0.3, b=B, t=T, k=K):
    """A ragged batch with three log-probs per token: behaviour (the sampler's), old (the
    proximal policy, recomputed by the trainer: behaviour + staleness noise) and current
    (old + update noise). Off the mask everything is garbage that must not leak in."""
    rng = np.random.default_rng(seed)
    batch = ref.random_batch(rng, b, t, k)
    batch.loss_mask[0] = False  # always one fully masked row
    mask = batch.loss_mask
    behaviour = np.where(mask, batch.sample_logprobs, -9.0).astype(np.float32)
    old = np.where(mask, behaviour + rng.normal(0, stale, (b, t)), 4.0).astype(np.float32)
    lp = np.where(mask, old + rng.normal(0, scale, (b, t)), 3.0).astype(np.float32)
    adv = np.where(mask, rng.normal(size=(b, t)), 7.0).astype(np.float32)
    return batch, lp, old, behaviour, adv


def loss_cfg(name, correction, agg="token_mean"):
    agg = "seq_mean_token_mean" if name == "gspo" else agg
    return CFG.replace(policy_loss=name, off_policy=correction, aggregation=agg)


@jax.jit
def _policy_loss(lp, old, adv, mask, cfg, turn_index, behaviour):
    return rl.compute_policy_loss(lp, old, adv, mask, cfg, turn_index=turn_index,
                                  behaviour_logprobs=behaviour)


@jax.jit
def _weights(old, behaviour, mask, cfg):
    return rl.off_policy_weights(old, behaviour, mask, cfg)


def test_registry_and_defaults():
    assert set(rl.OFF_POLICY.names()) == {"none", "tis", "mis", "decoupled"}
    for name in rl.OFF_POLICY:
        assert rl.OFF_POLICY.get(name).__doc__
    cfg = rl.LossConfig()
    assert cfg.off_policy == "none"  # today's behaviour by default
    assert cfg.off_policy_tis_cap >= 1 and cfg.off_policy_mis_low <= 1 <= cfg.off_policy_mis_high


@pytest.mark.parametrize("correction", ("none", *CORRECTIONS))
def test_weights_and_metrics_match_reference(correction):
    cfg = CFG.replace(off_policy=correction)
    fractions = []
    for seed in range(3):
        batch, _, old, behaviour, _ = draw(seed, stale=0.2 if correction == "mis" else 0.3)
        mask = batch.loss_mask
        w, m = _weights(old, behaviour, mask, cfg)
        w_ref, m_ref = ref.offpolicy_weights(correction, old, behaviour, mask, params(cfg))
        np.testing.assert_allclose(np.asarray(w)[mask], w_ref[mask], rtol=1e-5)
        assert set(m) == set(m_ref)
        for key, value in m_ref.items():
            np.testing.assert_allclose(m[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
        fractions.append(float(m.get("behav_clip_frac", m.get("behav_mask_frac", 0.5))))
    # the draws exercise both branches (truncated / kept, dropped / kept)
    assert 0 < max(fractions) and min(fractions) < 1


@pytest.mark.parametrize("correction", CORRECTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_corrected_losses_match_reference(name, correction):
    """loss = aggregate(w_t * per-token loss of the policy loss against the *proximal*
    policy), w the correction's stop-gradient weight from behaviour to proximal."""
    for seed in range(3):
        cfg = loss_cfg(name, correction, AGGS[seed % len(AGGS)])
        batch, lp, old, behaviour, adv = draw(
            seed, scale=0.3 if name != "gspo" else 0.02, stale=0.1 if correction == "mis" else 0.3
        )
        mask, ti = batch.loss_mask, batch.turn_index
        s, d, m = _policy_loss(lp, old, adv, mask, cfg, ti, behaviour)
        per_tok = ref.per_token_policy_loss(name, lp, old, adv, mask, params(cfg), ti,
                                            cfg.gspo_level)
        w, m_ref = ref.offpolicy_weights(correction, old, behaviour, mask, params(cfg))
        s_ref, d_ref = ref.aggregate(w * per_tok, mask, cfg.aggregation, cfg.loss_norm_const)
        np.testing.assert_allclose(s, s_ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(d, d_ref)
        np.testing.assert_allclose(m["loss"], s_ref / d_ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(m["behav_weight_mean"], m_ref["behav_weight_mean"], rtol=1e-4)
        assert all(np.isfinite(v) for v in m.values())


def _fd_grad(f, x, mask, h=1e-6):
    g = np.zeros_like(x, dtype=np.float64)
    for idx in zip(*np.nonzero(mask)):
        xp, xm = x.astype(np.float64), x.astype(np.float64)
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


@pytest.mark.parametrize("correction", CORRECTIONS)
@pytest.mark.parametrize("name,agg", [("ppo", "token_mean"), ("dual_clip", "seq_sum_const"),
                                      ("asym_clip", "seq_mean_token_mean")])
def test_corrected_gradients_match_finite_differences(name, agg, correction):
    """The weight scales each token's gradient and is itself not differentiated: the
    gradient w.r.t. the current log-probs is that of the reference objective, and the
    proximal and behaviour log-probs get none."""
    cfg = loss_cfg(name, correction, agg)
    batch, lp, old, behaviour, adv = draw(3, b=4, t=14, k=3, scale=0.5,
                                          stale=0.1 if correction == "mis" else 0.4)
    mask = batch.loss_mask
    adv = np.where(mask, adv, 0).astype(np.float32)

    def jax_loss(x, o, bh):
        s, d, _ = rl.compute_policy_loss(x, o, adv, mask, cfg, behaviour_logprobs=bh)
        return rl.finalize(s, d)

    g, g_old, g_behaviour = jax.jit(jax.grad(jax_loss, argnums=(0, 1, 2)))(lp, old, behaviour)
    w, _ = ref.offpolicy_weights(correction, old, behaviour, mask, params(cfg))

    def ref_loss(x):
        per = ref.per_token_policy_loss(name, x, old, adv, mask, params(cfg))
        return np.divide(*ref.aggregate(w * per, mask, agg, cfg.loss_norm_const))

    np.testing.assert_allclose(g, _fd_grad(ref_loss, lp, mask), rtol=1e-3, atol=1e-5)
    assert np.abs(np.asarray(g)).max() > 0
    assert np.all(np.asarray(g_behaviour) == 0)
    # old enters through the (differentiable) ratio pi / pi_old, never through w: its
    # gradient is the plain loss's gradient scaled by w
    g_plain = jax.grad(lambda o: rl.finalize(*rl.compute_policy_loss(
        lp, o, adv, mask, cfg.replace(off_policy="none"))[:2]))(old)
    np.testing.assert_allclose(g_old, np.asarray(g_plain) * np.where(mask, w, 0),
                               rtol=1e-4, atol=1e-6)


def test_mis_drops_sequences_outside_the_band():
    """Rows whose sequence ratio pi_old(y) / pi_behaviour(y) leaves [low, high] get weight
    0 (no loss, no gradient); the others are weighted by their sequence ratio."""
    mask = np.zeros((3, 6), bool)
    mask[:, 1:5] = True
    behaviour = np.full((3, 6), -1.0, np.float32)
    old = behaviour.copy()
    old[0, 1:5] += 0.05  # ratio e^0.2: kept
    old[1, 1:5] += 0.2  # e^0.8 > 1.6: dropped
    old[2, 1:5] -= 0.2  # e^-0.8 < 0.6: dropped
    lp = old + 0.01
    adv = np.where(mask, 1.0, 0.0).astype(np.float32)
    cfg = loss_cfg("ppo", "mis")

    def loss(x):
        s, d, m = rl.compute_policy_loss(x, old, adv, mask, cfg, behaviour_logprobs=behaviour)
        return rl.finalize(s, d), m

    (_, m), g = jax.value_and_grad(loss, has_aux=True)(lp)
    g = np.asarray(g)
    assert np.all(g[0, 1:5] != 0) and np.all(g[1:] == 0)
    np.testing.assert_allclose(m["behav_mask_frac"], 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(g[0, 1:5], -np.exp(0.2) * np.exp(0.01) / 12, rtol=1e-4)


@pytest.mark.parametrize("correction", ("none", *CORRECTIONS))
@pytest.mark.parametrize("name", LOSSES)
def test_on_policy_sampling_reduces_exactly_to_the_plain_loss(name, correction):
    """Synchronous on-policy sampling: behaviour == proximal, so every weight is exactly 1.0
    (bit for bit) and the corrected per-token loss is the plain one; the loss, gradient and
    metrics then equal the plain loss's up to float32 summation order (the two programs
    may reduce in another order). Each pair runs under one aggregation; over the pairs,
    all four."""
    batch, lp, old, _, adv = draw(11, scale=0.3 if name != "gspo" else 0.02)
    mask, ti = batch.loss_mask, batch.turn_index
    pair = LOSSES.index(name) * 4 + ("none", *CORRECTIONS).index(correction)
    cfg = loss_cfg(name, correction, AGGS[pair % len(AGGS)])
    w, m_w = _weights(old, old, mask, cfg)
    assert np.all(np.asarray(w)[mask] == 1.0)
    assert float(m_w["behav_kl"]) == 0.0 and float(m_w["behav_ratio_max"]) == 1.0

    def f(x, c, behaviour):
        s, d, m = rl.compute_policy_loss(x, old, adv, mask, c, turn_index=ti,
                                         behaviour_logprobs=behaviour)
        return rl.finalize(s, d), (s, d, m)

    grad = jax.jit(jax.value_and_grad(f, has_aux=True))
    (_, (s, d, m)), g = grad(lp, cfg, old)
    (_, (s0, d0, m0)), g0 = grad(lp, cfg.replace(off_policy="none"), None)
    tol = dict(rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s, s0, **tol)
    np.testing.assert_array_equal(d, d0)
    np.testing.assert_allclose(g, g0, **tol)
    for key, value in m0.items():
        np.testing.assert_allclose(m[key], value, **tol, err_msg=key)
    assert float(m["behav_weight_mean"]) == 1.0 and float(m["behav_ratio_max"]) == 1.0
    assert float(m["behav_kl"]) == 0.0


def test_corrections_need_the_behaviour_logprobs():
    batch, lp, old, _, adv = draw(0)
    with pytest.raises(ValueError, match="off_policy='tis' needs behaviour_logprobs"):
        rl.compute_policy_loss(lp, old, adv, batch.loss_mask, CFG.replace(off_policy="tis"))
    with pytest.raises(ValueError, match="unknown off-policy correction 'is'"):
        rl.compute_policy_loss(lp, old, adv, batch.loss_mask, CFG.replace(off_policy="is"),
                               behaviour_logprobs=old)


def test_a_new_loss_is_corrected_like_the_built_ins(monkeypatch):
    """The correction weights a loss's per-token terms from outside, so a notebook loss
    written to the base signature (it knows nothing of off-policy data) gets every
    correction: its corrected loss is the weighted sum of its own per-token terms."""

    def bare(logprobs, old_logprobs, advantages, mask, cfg):
        return jnp.where(mask, -advantages * logprobs, 0.0), {}

    monkeypatch.setitem(rl.POLICY_LOSSES._fns, "_bare_test_loss", bare)  # removed afterwards
    monkeypatch.setitem(rl.POLICY_LOSSES._meta, "_bare_test_loss",
                        dict(rl.POLICY_LOSSES.defaults))
    batch, lp, old, behaviour, adv = draw(0)
    mask = batch.loss_mask
    cfg = CFG.replace(policy_loss="_bare_test_loss")
    s0, d0, _ = rl.compute_policy_loss(lp, old, adv, mask, cfg, behaviour_logprobs=old)
    np.testing.assert_allclose(s0, np.sum(np.where(mask, -adv * lp, 0)), rtol=1e-5)
    for name in ("tis", "mis", "decoupled"):
        c = cfg.replace(off_policy=name)
        s, d, m = rl.compute_policy_loss(lp, old, adv, mask, c, behaviour_logprobs=behaviour)
        w, _ = rl.off_policy_weights(old, behaviour, mask, c)
        np.testing.assert_allclose(s, np.sum(np.where(mask, -adv * lp * w, 0)), rtol=1e-5,
                                   atol=1e-6)
        assert float(d) == float(d0) and "behav_ratio_mean" in m


def test_weights_are_finite_on_degenerate_inputs():
    """-inf padding log-probs, a fully masked row and an empty batch give finite weights
    and metrics (the ratio is clipped like every other log-ratio)."""
    batch, _, old, behaviour, _ = draw(2)
    mask = batch.loss_mask.copy()
    behaviour = np.where(mask, behaviour, -np.inf).astype(np.float32)
    old = old.copy()
    old[mask] += 50.0  # an absurdly stale sampler: exp() would overflow unclipped
    for correction in ("none", *CORRECTIONS):
        for m in (mask, np.zeros_like(mask)):
            cfg = CFG.replace(off_policy=correction)
            w, metrics = _weights(jnp.asarray(old), behaviour, m, cfg)
            assert np.all(np.isfinite(np.asarray(w)))
            assert all(np.isfinite(v) for v in metrics.values())
