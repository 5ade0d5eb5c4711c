"""Policy / KL / value / entropy losses and aggregations against loop references,
with gradient checks (float64 finite differences of the reference, or analytic)."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentic_rl import rl

from . import reference as ref

B, T, K = 8, 28, 4
AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_sum_const")
LOSSES = ("ppo", "asym_clip", "dual_clip", "gspo", "cispo", "truncated_is", "pg")
CFG = rl.LossConfig(loss_norm_const=16.0)


def params(cfg: rl.LossConfig) -> dict:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def draw(seed, b=B, t=T, k=K, scale=0.3):
    """A ragged batch, current log-probs near the sampling ones, random advantages.
    Off the mask, log-probs and advantages are garbage that must not leak in."""
    rng = np.random.default_rng(seed)
    batch = ref.random_batch(rng, b, t, k)
    batch.loss_mask[0] = False  # always one fully masked row
    mask = batch.loss_mask
    old = batch.sample_logprobs
    lp = np.where(mask, old + rng.normal(0, scale, (b, t)), 3.0).astype(np.float32)
    adv = np.where(mask, rng.normal(size=(b, t)), 7.0).astype(np.float32)
    return batch, lp, old, adv


def aggregated(name, lp, old, adv, mask, cfg, turn_index=None):
    """A registered loss's per-token terms aggregated once, as the update step does:
    (sum, denominator, metrics with "loss"). The terms must be 0 off the mask."""
    reads = rl.POLICY_LOSSES.meta(name)["reads"]
    inputs = {"turn_index": turn_index} if "turn_index" in reads else {}
    per_tok, m = rl.POLICY_LOSSES.get(name)(lp, old, adv, mask, cfg, **inputs)
    s, d = rl.aggregate(per_tok, mask, cfg)
    return s, d, {"loss": rl.finalize(s, d), "off_mask_max": jnp.max(jnp.abs(
        jnp.where(mask, 0.0, per_tok))), **m}


@functools.cache
def jitted_loss(name):
    return jax.jit(functools.partial(aggregated, name))


def ref_loss(name, lp, old, adv, mask, cfg, turn_index=None):
    per_tok = ref.per_token_policy_loss(
        name, lp, old, adv, mask, params(cfg), turn_index, cfg.gspo_level
    )
    s, d = ref.aggregate(per_tok, mask, cfg.aggregation, cfg.loss_norm_const)
    return s, d


CASES = [(name, "sequence") for name in LOSSES] + [("gspo", "turn")]


@pytest.mark.parametrize("name,level", CASES)
def test_policy_losses_match_reference(name, level):
    cfg = CFG.replace(gspo_level=level)
    if name == "gspo":  # a sequence-level objective: the only aggregation it accepts
        cfg = cfg.replace(aggregation="seq_mean_token_mean")
    for seed in range(3):
        batch, lp, old, adv = draw(seed, scale=0.3 if name != "gspo" else 0.02)
        s, d, m = jitted_loss(name)(lp, old, adv, batch.loss_mask, cfg, turn_index=batch.turn_index)
        s_ref, d_ref = ref_loss(name, lp, old, adv, batch.loss_mask, cfg, batch.turn_index)
        np.testing.assert_allclose(s, s_ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(d, d_ref)
        np.testing.assert_allclose(m["loss"], s_ref / d_ref, rtol=1e-4, atol=1e-5)
        assert float(m["off_mask_max"]) == 0  # per-token terms are 0 off the mask
        assert all(np.isfinite(v) for v in m.values())


def test_ppo_metrics_match_reference():
    batch, lp, old, adv = draw(5, scale=0.4)
    mask = batch.loss_mask
    _, _, m = jitted_loss("ppo")(lp, old, adv, mask, CFG, turn_index=batch.turn_index)
    r = np.exp(lp.astype(np.float64) - old)[mask]
    a = adv[mask]
    clipped = np.where(a > 0, r > 1 + CFG.clip_eps, r < 1 - CFG.clip_eps)
    np.testing.assert_allclose(m["clip_frac"], clipped.mean(), rtol=1e-6)
    np.testing.assert_allclose(m["ratio_mean"], r.mean(), rtol=1e-5)
    np.testing.assert_allclose(m["ratio_max"], r.max(), rtol=1e-5)
    np.testing.assert_allclose(m["approx_kl"], np.mean(r - 1 - np.log(r)), rtol=1e-3, atol=1e-7)
    assert 0 < m["clip_frac"] < 1  # the draw exercises both branches


@jax.jit
def _aggregate_whole_and_split(x, mask, cfg):
    """The batch, and the same rows as two unequal micro-batches."""
    return (
        rl.aggregate(x, mask, cfg),
        rl.aggregate(x[:3], mask[:3], cfg),
        rl.aggregate(x[3:], mask[3:], cfg),
    )


@pytest.mark.parametrize("agg", AGGS)
def test_aggregations_match_reference_and_accumulate_exactly(agg):
    rng = np.random.default_rng(1)
    batch = ref.random_batch(rng, B, T, K)
    batch.loss_mask[2] = False
    x = rng.normal(size=(B, T)).astype(np.float32)
    cfg = CFG.replace(aggregation=agg)
    (s, d), (s1, d1), (s2, d2) = _aggregate_whole_and_split(x, batch.loss_mask, cfg)
    s_ref, d_ref = ref.aggregate(x, batch.loss_mask, agg, cfg.loss_norm_const)
    np.testing.assert_allclose(s, s_ref, rtol=1e-5)
    np.testing.assert_allclose(d, d_ref)
    # summing the micro-batches' sums and denominators gives exactly the batch loss
    np.testing.assert_allclose(rl.finalize(s1 + s2, d1 + d2), s_ref / d_ref, rtol=1e-5)


@pytest.mark.parametrize("agg", AGGS)
def test_aggregations_of_micro_batched_masks_equal_the_flat_batch(agg):
    """The update step computes the minibatch denominator from a [n_micro, micro, T] mask:
    every aggregation must count rows (and tokens) over all leading axes, as on the flat
    [B, T] batch (Dr.GRPO's constant denominator used to count micro-batches as rows)."""
    rng = np.random.default_rng(4)
    batch = ref.random_batch(rng, B, T, K)
    batch.loss_mask[5] = False
    x = rng.normal(size=(B, T)).astype(np.float32)
    cfg = CFG.replace(aggregation=agg)
    s_ref, d_ref = ref.aggregate(x, batch.loss_mask, agg, cfg.loss_norm_const)
    for n_micro in (1, 2, 4, 8):
        shape = (n_micro, B // n_micro, T)
        s, d = rl.aggregate(x.reshape(shape), batch.loss_mask.reshape(shape), cfg)
        np.testing.assert_allclose(s, s_ref, rtol=1e-5)
        np.testing.assert_allclose(d, d_ref)


def test_seq_sum_const_denominator_is_independent_of_lengths():
    mask = np.zeros((2, 8), bool)
    mask[0, :2] = True
    mask[1, :7] = True
    cfg = CFG.replace(aggregation="seq_sum_const", loss_norm_const=8.0)
    _, d = rl.aggregate(jnp.ones((2, 8)), mask, cfg)
    _, d_short = rl.aggregate(jnp.ones((2, 8)), mask & (np.arange(8) < 1), cfg)
    assert float(d) == float(d_short) == 16.0


# ----------------------------------------------------------------------------- gradients


def _fd_grad(f, x, mask, h=1e-6):
    g = np.zeros_like(x, dtype=np.float64)
    for idx in zip(*np.nonzero(mask)):
        xp, xm = x.astype(np.float64), x.astype(np.float64)
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


def _check_finite_on_degenerate_inputs(grad_fn, lp, mask):
    """Padding log-probs of -inf, a fully masked row, and a fully masked batch give a
    finite loss and finite gradients, zero off the mask."""
    mask = mask.copy()
    mask[1] = False
    lp = np.where(mask, lp, -np.inf).astype(np.float32)
    for m in (mask, np.zeros_like(mask)):
        val, g = grad_fn(lp, m)
        assert np.isfinite(val) and np.all(np.isfinite(g))
        assert np.all(np.asarray(g)[~m] == 0)


def _loss_value_and_grad(name, old, adv, cfg):
    """jit(value_and_grad) of the aggregated policy loss `name` in (logprobs, mask)."""

    def jax_loss(x, m):
        s, d, _ = aggregated(name, x, old, jnp.where(m, adv, 0), m, cfg)
        return rl.finalize(s, d)

    return jax.jit(jax.value_and_grad(jax_loss))


@pytest.mark.parametrize(
    "name,agg",
    [
        ("ppo", "token_mean"),
        ("ppo", "seq_mean_token_mean"),
        ("asym_clip", "seq_mean_token_sum"),
        ("dual_clip", "token_mean"),
        ("pg", "seq_sum_const"),
    ],
)
def test_policy_loss_gradients_match_finite_differences(name, agg):
    cfg = CFG.replace(aggregation=agg)
    batch, lp, old, adv = draw(3, b=4, t=14, k=3, scale=0.5)
    mask = batch.loss_mask

    grad_fn = _loss_value_and_grad(name, old, adv, cfg)
    g = np.asarray(grad_fn(lp, mask)[1])
    g_ref = _fd_grad(lambda x: np.divide(*ref_loss(name, x, old, adv, mask, cfg)), lp, mask)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-5)
    assert np.all(g[~mask] == 0)
    assert np.abs(g).max() > 0
    _check_finite_on_degenerate_inputs(grad_fn, lp, mask)


@pytest.mark.parametrize("level", ["sequence", "turn"])
def test_gspo_gradient_is_the_sequence_ratio_gradient(level):
    """With one advantage per sequence (per turn) and a per-sequence (per-turn) mean,
    the GSPO-token form has the gradient of the sequence-level GSPO objective
    -min(s A, clip(s) A), s = exp(mean log-ratio), which FD on the reference checks."""
    cfg = CFG.replace(aggregation="seq_mean_token_mean", gspo_level=level, gspo_eps_high=0.05)
    batch, lp, old, _ = draw(4, b=4, t=14, k=3, scale=0.05)
    mask, ti = batch.loss_mask, batch.turn_index
    rng = np.random.default_rng(0)
    seg_adv = rng.normal(size=(4, 3))
    adv = np.where(
        mask,
        seg_adv[:, [0]]
        if level == "sequence"
        else np.take_along_axis(seg_adv, np.clip(ti, 0, 2), 1),
        0,
    ).astype(np.float32)

    def objective(x):  # sequence-level: mean over rows of mean over the row's segments
        rows = []
        for b in range(4):
            segs = {}
            for t in ref.action_positions(mask[b]):
                segs.setdefault(0 if level == "sequence" else ti[b, t], []).append(t)
            if not segs:
                continue
            vals = []
            for ts in segs.values():
                s = math.exp(sum(x[b, t] - old[b, t] for t in ts) / len(ts))
                a = float(adv[b, ts[0]])
                lo, hi = 1 - cfg.gspo_eps_low, 1 + cfg.gspo_eps_high
                vals.append(-min(s * a, min(max(s, lo), hi) * a) * len(ts) / mask[b].sum())
            rows.append(sum(vals))
        return sum(rows) / len(rows)

    def jax_loss(x, m):
        s, d, _ = aggregated("gspo", x, old, adv, m, cfg, turn_index=ti)
        return rl.finalize(s, d)

    grad_fn = jax.jit(jax.value_and_grad(jax_loss))
    g = np.asarray(grad_fn(lp, mask)[1])
    np.testing.assert_allclose(g, _fd_grad(objective, lp, mask), rtol=1e-3, atol=1e-5)
    assert np.abs(g).max() > 0
    _check_finite_on_degenerate_inputs(grad_fn, lp, mask)


@pytest.mark.parametrize("name", ["cispo", "truncated_is"])
def test_stop_gradient_weight_losses_have_analytic_gradient(name):
    """CISPO / truncated IS: d loss / d logpi_t = -w_t A_t / denominator, w not differentiated,
    and clipped tokens keep their gradient (unlike PPO)."""
    cfg = CFG.replace(cispo_eps_high=0.2, cispo_eps_low=0.2, tis_cap=1.2)
    batch, lp, old, adv = draw(6, scale=0.5)
    mask = batch.loss_mask

    grad_fn = _loss_value_and_grad(name, old, adv, cfg)
    g = np.asarray(grad_fn(lp, mask)[1])
    r = np.exp(lp.astype(np.float64) - old)
    w = np.clip(r, 0.8, 1.2) if name == "cispo" else np.minimum(r, 1.2)
    expect = np.where(mask, -w * adv / mask.sum(), 0)
    np.testing.assert_allclose(g, expect, rtol=1e-4, atol=1e-7)
    assert np.all(g[mask & (r > 1.2)] != 0)
    _check_finite_on_degenerate_inputs(grad_fn, lp, mask)


# ----------------------------------------------------------------------------- jit / vmap


def test_vmap_over_traced_clip_eps():
    batch, lp, old, adv = draw(2, scale=0.4)
    eps = jnp.array([0.05, 0.1, 0.2, 0.3])

    def loss(e):
        s, d, _ = rl.compute_policy_loss(lp, old, adv, batch.loss_mask, CFG.replace(clip_eps=e))
        return rl.finalize(s, d)

    out = jax.jit(jax.vmap(loss))(eps)
    for i, e in enumerate(eps):
        s_ref, d_ref = ref_loss(
            "ppo", lp, old, adv, batch.loss_mask, CFG.replace(clip_eps=float(e))
        )
        np.testing.assert_allclose(out[i], s_ref / d_ref, rtol=1e-4)
    assert len(set(np.round(np.asarray(out), 6))) == 4


def test_vmap_over_whole_loss_config():
    """A config pytree with a leading axis on a float leaf vmaps as a whole."""
    batch, lp, old, adv = draw(2, scale=0.4)
    cfgs = CFG.replace(policy_loss="dual_clip", dual_clip_c=jnp.array([1.5, 3.0]))
    axes = jax.tree_util.tree_map(lambda _: None, cfgs).replace(dual_clip_c=0)
    fn = jax.vmap(
        lambda c: rl.finalize(*rl.compute_policy_loss(lp, old, adv, batch.loss_mask, c)[:2]),
        in_axes=(axes,),
    )
    out = jax.jit(fn)(cfgs)
    for i, c in enumerate([1.5, 3.0]):
        s_ref, d_ref = ref_loss(
            "dual_clip", lp, old, adv, batch.loss_mask, CFG.replace(dual_clip_c=c)
        )
        np.testing.assert_allclose(out[i], s_ref / d_ref, rtol=1e-4)


# ----------------------------------------------------------------------------- KL, value, entropy


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_kl_estimators_and_kl_loss(est):
    batch, lp, _, _ = draw(9)
    mask = batch.loss_mask
    ref_lp = np.where(mask, lp + np.random.default_rng(1).normal(0, 0.5, lp.shape), -5.0)
    ref_lp = ref_lp.astype(np.float32)
    cfg = CFG.replace(kl_estimator=est, aggregation="seq_mean_token_mean")

    @jax.jit
    def compute(x):
        penalty = lambda y: rl.kl_penalty_rewards(y, ref_lp, mask, 0.1, est)
        loss = lambda y: rl.finalize(*rl.aggregate(rl.kl_loss(y, ref_lp, mask, cfg)[0], mask, cfg))
        return (
            rl.kl_per_token(x, ref_lp, mask, est),
            (*rl.aggregate(rl.kl_loss(x, ref_lp, mask, cfg)[0], mask, cfg), None),
            penalty(x),
            jax.grad(lambda y: penalty(y).sum())(x),
            jax.grad(loss)(x),
        )

    kl, (s, d, _), pen, g_pen, g = compute(lp)
    per_tok = np.zeros((B, T))
    for b, t in zip(*np.nonzero(mask)):
        per_tok[b, t] = ref.kl(est, float(lp[b, t]), float(ref_lp[b, t]))
    np.testing.assert_allclose(kl, per_tok, rtol=1e-4, atol=1e-6)
    s_ref, d_ref = ref.aggregate(per_tok, mask, "seq_mean_token_mean")
    np.testing.assert_allclose(s, s_ref, rtol=1e-4)
    np.testing.assert_allclose(d, d_ref)
    np.testing.assert_allclose(pen, -0.1 * per_tok, rtol=1e-4, atol=1e-7)
    assert np.all(np.asarray(g_pen) == 0)  # a reward carries no gradient
    if est != "k1":
        assert np.all(per_tok >= 0)

    def ref_kl_loss(x):
        per = np.vectorize(lambda a, r: ref.kl(est, a, r))(x, ref_lp.astype(np.float64))
        return np.divide(*ref.aggregate(per, mask, "seq_mean_token_mean"))

    np.testing.assert_allclose(g, _fd_grad(ref_kl_loss, lp, mask), rtol=1e-3, atol=1e-5)


def test_value_loss_matches_reference_with_gradient():
    rng = np.random.default_rng(2)
    batch = ref.random_batch(rng, B, T, K)
    mask = batch.loss_mask
    old = rng.normal(size=(B, T)).astype(np.float32)
    values = (old + rng.normal(0, 0.4, (B, T))).astype(np.float32)
    returns = rng.normal(size=(B, T)).astype(np.float32)
    cfg = CFG.replace(value_clip_eps=0.2)

    def ref_value(v):
        per = np.zeros((B, T))
        for b, t in zip(*np.nonzero(mask)):
            per[b, t] = ref.value_loss_per_token(v[b, t], old[b, t], returns[b, t], 0.2)
        return ref.aggregate(per, mask, "token_mean")

    per_tok, m = jax.jit(rl.value_loss)(values, old, returns, mask, cfg)
    s, d = rl.aggregate(per_tok, mask, cfg)
    s_ref, d_ref = ref_value(values.astype(np.float64))
    np.testing.assert_allclose(s, s_ref, rtol=1e-5)
    np.testing.assert_allclose(d, d_ref)
    assert 0 < m["vf_clip_frac"] < 1
    g = jax.jit(jax.grad(lambda v: rl.finalize(*rl.aggregate(
        rl.value_loss(v, old, returns, mask, cfg)[0], mask, cfg))))(
        values
    )
    g_ref = _fd_grad(lambda v: np.divide(*ref_value(v)), values, mask)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-5)


def test_entropy_and_logprobs_from_logits():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    logits[0, 0, :3] = -np.inf  # banned tokens
    targets = rng.integers(3, 7, (2, 5))
    mask = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], bool)

    @jax.jit
    def compute(z):
        h = rl.entropy_from_logits(z)
        per_tok, m = rl.entropy_loss(h, mask, CFG)
        s, d = rl.aggregate(per_tok, mask, CFG)
        g = jax.grad(lambda y: rl.entropy_from_logits(y)[0, 0])(z)
        return h, rl.logprobs_from_logits(z, targets), s, m["entropy"], g

    h, lp, s, mean_h, g = compute(logits)
    p = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    logp = np.log(np.where(p > 0, p, 1))
    h_ref = -np.sum(p * logp, -1)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5)
    np.testing.assert_allclose(lp, np.take_along_axis(logp, targets[..., None], -1)[..., 0], 1e-5)
    np.testing.assert_allclose(s, -h_ref[0, :2].sum(), rtol=1e-5)
    np.testing.assert_allclose(mean_h, h_ref[0, :2].mean(), rtol=1e-5)
    # dH/dz_i = -p_i (log p_i + H), and 0 for banned tokens
    g_ref = -p[0, 0] * (logp[0, 0] + h_ref[0, 0])
    np.testing.assert_allclose(g[0, 0], g_ref, rtol=1e-4, atol=1e-7)
    assert np.all(np.asarray(g)[0, 0, :3] == 0) and np.all(np.isfinite(g))


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_sum", "seq_sum_const"])
def test_gspo_refuses_token_level_aggregations(agg):
    """GSPO's objective is a mean over sequences of the sequence-ratio surrogate; with any
    other aggregation the GSPO-token form is a different objective, so the loss refuses it
    instead of silently optimising something else."""
    batch, lp, old, adv = draw(0, scale=0.02)
    cfg = CFG.replace(aggregation=agg)
    with pytest.raises(ValueError, match="gspo.*seq_mean_token_mean"):
        rl.POLICY_LOSSES.get("gspo")(lp, old, adv, batch.loss_mask, cfg)
    assert rl.POLICY_LOSSES.meta("gspo")["aggregation"] == "seq_mean_token_mean"


def test_unknown_names_list_valid_ones():
    batch, lp, old, adv = draw(0)
    with pytest.raises(ValueError, match="unknown policy loss 'ppo3'.*asym_clip, cispo"):
        rl.compute_policy_loss(lp, old, adv, batch.loss_mask, CFG.replace(policy_loss="ppo3"))
    with pytest.raises(ValueError, match="unknown loss aggregation 'mean'.*seq_mean_token_mean"):
        rl.aggregate(lp, batch.loss_mask, CFG.replace(aggregation="mean"))
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'; valid names: k1, k2, k3"):
        rl.kl_loss(lp, old, batch.loss_mask, CFG.replace(kl_estimator="k4"))
    with pytest.raises(ValueError, match="gspo_level"):
        rl.POLICY_LOSSES.get("gspo")(lp, old, adv, batch.loss_mask, CFG.replace(gspo_level="x"))
