"""Advantage estimators against the loop references, plus properties and edge cases."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentic_rl import rl

from . import reference as ref

SEEDS = range(5)
B, T, K = 8, 28, 4
TOL = dict(rtol=2e-5, atol=2e-5)


@functools.cache
def jitted(name):
    return jax.jit(rl.ADVANTAGES.get(name))


def call(name, fields, cfg, values=None, token_rewards=None):
    """Always passes arrays (zeros for "none"), so one compilation serves every call
    of an estimator with the same shapes and static config."""
    zeros = np.zeros(np.shape(fields["loss_mask"]), np.float32)
    adv, ret = jitted(name)(
        **fields,
        cfg=cfg,
        values=zeros if values is None else values,
        token_rewards=zeros if token_rewards is None else token_rewards,
    )
    return np.asarray(adv), np.asarray(ret)


def run(name, batch, cfg, values=None, token_rewards=None):
    return call(name, ref.fields(batch), cfg, values, token_rewards)


GROUP = ("grpo", "dr_grpo", "rloo")


def draw(seed, with_token_rewards=None):
    rng = np.random.default_rng(seed)
    batch = ref.random_batch(rng, B, T, K)
    values = rng.normal(size=(B, T)).astype(np.float32)
    if with_token_rewards is None:
        with_token_rewards = seed % 2 == 1
    token_rewards = (
        (0.1 * rng.normal(size=(B, T))).astype(np.float32) if with_token_rewards else None
    )
    cfg = rl.AdvantageConfig(
        gamma=float(rng.uniform(0.8, 1.0)),
        lam=float(rng.uniform(0.5, 1.0)),
        turn_gamma=float(rng.uniform(0.5, 1.0)),
        turn_lam=float(rng.uniform(0.5, 1.0)),
    )
    return batch, values, token_rewards, cfg


def assert_zero_off_mask(x, mask):
    assert np.all(np.asarray(x)[~np.asarray(mask)] == 0)


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("seed", SEEDS)
def test_gae_matches_reference(seed):
    batch, values, tr, cfg = draw(seed)
    adv, ret = run("gae", batch, cfg, values=values, token_rewards=tr)
    adv_ref, ret_ref = ref.gae(batch, values.astype(np.float64), cfg.gamma, cfg.lam, tr)
    np.testing.assert_allclose(adv, adv_ref, **TOL)
    np.testing.assert_allclose(ret, ret_ref, **TOL)
    assert_zero_off_mask(adv, batch.loss_mask)


@pytest.mark.parametrize("seed", SEEDS)
def test_turn_gae_matches_reference(seed):
    batch, values, tr, cfg = draw(seed)
    adv, ret = run("turn_gae", batch, cfg, values=values, token_rewards=tr)
    adv_ref, ret_ref = ref.turn_gae(batch, values, cfg.turn_gamma, cfg.turn_lam, tr)
    np.testing.assert_allclose(adv, adv_ref, **TOL)
    np.testing.assert_allclose(ret, ret_ref, **TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_bilevel_gae_matches_reference(seed):
    batch, values, tr, cfg = draw(seed)
    adv, ret = run("bilevel_gae", batch, cfg, values=values, token_rewards=tr)
    adv_ref, ret_ref = ref.bilevel_gae(
        batch, values, cfg.gamma, cfg.lam, cfg.turn_gamma, cfg.turn_lam, tr
    )
    np.testing.assert_allclose(adv, adv_ref, **TOL)
    np.testing.assert_allclose(ret, ret_ref, **TOL)
    assert_zero_off_mask(adv, batch.loss_mask)


CRITIC = ("gae", "turn_gae", "bilevel_gae")


def truncation(seed, batch):
    """Which rows were cut (max_turns / max_tokens) and the critic's value at each cut."""
    rng = np.random.default_rng(100 + seed)
    truncated = rng.random(batch.loss_mask.shape[0]) < 0.5
    truncated[:2] = (True, False)
    cut_values = rng.normal(size=batch.loss_mask.shape[0]).astype(np.float32)
    return truncated, cut_values


def reference_critic(name, batch, values, cfg, tr, bootstrap):
    if name == "gae":
        return ref.gae(batch, values, cfg.gamma, cfg.lam, tr, bootstrap)
    if name == "turn_gae":
        return ref.turn_gae(batch, values, cfg.turn_gamma, cfg.turn_lam, tr, bootstrap)
    return ref.bilevel_gae(
        batch, values, cfg.gamma, cfg.lam, cfg.turn_gamma, cfg.turn_lam, tr, bootstrap
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", CRITIC)
def test_critic_estimators_bootstrap_truncated_episodes(name, seed):
    """A truncated episode did not end: the step after its last action bootstraps from
    the critic's value at the cut instead of V = 0 (terminated rows keep 0)."""
    batch, values, tr, cfg = draw(seed)
    truncated, cut = truncation(seed, batch)
    bootstrap = np.where(truncated, cut, 0).astype(np.float32)
    zeros = np.zeros_like(values)
    adv, ret = jitted(name)(
        **ref.fields(batch), cfg=cfg, values=values,
        token_rewards=zeros if tr is None else tr, bootstrap=bootstrap,
    )
    adv_ref, ret_ref = reference_critic(name, batch, values, cfg, tr, bootstrap)
    np.testing.assert_allclose(adv, adv_ref, **TOL)
    np.testing.assert_allclose(ret, ret_ref, **TOL)
    assert_zero_off_mask(adv, batch.loss_mask)
    # the bootstrap reaches every truncated row that has a turn, and only those
    adv0, _ = reference_critic(name, batch, values, cfg, tr, None)
    changed = np.any(np.abs(np.asarray(adv) - adv0) > 1e-6, axis=1)
    has_turn = (batch.turn_end >= 0).any(axis=1)
    np.testing.assert_array_equal(changed, truncated & has_turn)


def test_gae_bootstrap_at_lambda_one_is_the_n_step_return():
    """gamma = lam = 1: A_t = (rewards from t on) + V(cut) - V_t for a truncated row."""
    row = dict(loss_mask=[0, 1, 1, 0, 1, 0], turn_index=[-1, 0, 0, 0, 1, 1], turn_end=[2, 4],
               turn_rewards=[0.5, 2.0])
    fields, values = pad_rows([row], values=[[0, 0.3, -0.2, 0, 0.7, 0]])
    bootstrap = np.zeros(B, np.float32)
    bootstrap[0] = 1.5
    cfg = rl.AdvantageConfig(gamma=1.0, lam=1.0)
    adv, ret = jitted("gae")(**fields, cfg=cfg, values=values, token_rewards=np.zeros_like(values),
                             bootstrap=bootstrap)
    np.testing.assert_allclose(np.asarray(adv)[0, [1, 2, 4]],
                               [2.5 + 1.5 - 0.3, 2.5 + 1.5 + 0.2, 2.0 + 1.5 - 0.7], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret)[0, [1, 2, 4]], [4.0, 4.0, 3.5], rtol=1e-6)


@pytest.mark.parametrize("name", [*CRITIC, "grpo"])
def test_compute_advantages_reads_the_truncated_flag(name):
    """compute_advantages bootstraps rows with batch.truncated from `cut_values`; without
    cut values nothing changes, and critic-free estimators ignore both."""
    batch, values, _, cfg = draw(2, with_token_rewards=False)
    cfg = cfg.replace(estimator=name)
    truncated, cut = truncation(2, batch)
    fields = {**ref.fields(batch), "truncated": truncated}
    fn = jax.jit(rl.compute_advantages)
    adv, ret = fn(fields, cfg, values=values, cut_values=cut)
    adv_plain, _ = fn(ref.fields(batch), cfg, values=values)
    if name == "grpo":
        np.testing.assert_array_equal(adv, adv_plain)
        return
    bootstrap = np.where(truncated, cut, 0)
    adv_ref, ret_ref = reference_critic(name, batch, values, cfg, None, bootstrap)
    np.testing.assert_allclose(adv, adv_ref, **TOL)
    np.testing.assert_allclose(ret, ret_ref, **TOL)
    adv_ref0, _ = reference_critic(name, batch, values, cfg, None, None)
    np.testing.assert_allclose(adv_plain, adv_ref0, **TOL)
    with pytest.raises(ValueError, match="truncated"):
        rl.compute_advantages(ref.fields(batch), cfg, values=values, cut_values=cut)


@pytest.mark.parametrize("seed", SEEDS)
def test_mc_returns_match_reference(seed):
    batch, _, tr, cfg = draw(seed)
    adv, ret = run("mc_returns", batch, cfg, token_rewards=tr)
    np.testing.assert_allclose(adv, ref.mc_returns(batch, cfg.turn_gamma, tr), **TOL)
    np.testing.assert_allclose(ret, adv)


@pytest.mark.parametrize("level", ["outcome", "turn"])
@pytest.mark.parametrize("kind", GROUP)
def test_group_estimators_match_reference(kind, level):
    for seed in SEEDS:
        batch, _, tr, cfg = draw(seed)
        cfg = cfg.replace(level=level)
        adv, raw = run(kind, batch, cfg, token_rewards=tr)
        adv_ref, raw_ref = ref.group_advantages(batch, kind, level, cfg.turn_gamma, cfg.eps, tr)
        np.testing.assert_allclose(adv, adv_ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(raw, raw_ref, **TOL)
        assert_zero_off_mask(adv, batch.loss_mask)


@pytest.mark.parametrize(
    "name,weighting", [("reinforce_pp", "token"), ("reinforce_pp_baseline", "rollout")]
)
def test_reinforce_pp_matches_reference(name, weighting):
    for seed in SEEDS:
        batch, _, tr, cfg = draw(seed)
        cfg = cfg.replace(whiten_weighting=weighting)
        adv, ret = run(name, batch, cfg, token_rewards=tr)
        adv_ref, ret_ref = ref.reinforce_pp(
            batch, cfg.gamma, cfg.eps, weighting, name.endswith("baseline"), tr
        )
        np.testing.assert_allclose(adv, adv_ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ret, ret_ref, **TOL)


@pytest.mark.parametrize("weighting", ["token", "rollout"])
def test_whiten_matches_reference(weighting):
    rng = np.random.default_rng(5)
    batch = ref.random_batch(rng, B, T, K)
    x = rng.normal(size=(B, T)).astype(np.float32)
    out = jax.jit(rl.whiten, static_argnames="weighting")(
        x, batch.loss_mask, weighting=weighting, eps=1e-6
    )
    np.testing.assert_allclose(out, ref.whiten(x, batch.loss_mask, weighting, 1e-6), **TOL)


def test_compute_advantages_accepts_a_dict_selects_by_name_and_whitens():
    """Rollout-weighted whitening of RLOO advantages: every episode's mean advantage
    counts equally in the batch mean, however many tokens it has."""
    batch, _, _, cfg = draw(1)
    cfg = cfg.replace(estimator="rloo", whiten=True, whiten_weighting="rollout")
    adv, ret = jax.jit(rl.compute_advantages)(ref.fields(batch), cfg)
    raw, raw_ret = ref.group_advantages(batch, "rloo", "outcome", cfg.turn_gamma, cfg.eps)
    expect = ref.whiten(raw, batch.loss_mask, "rollout", cfg.eps)
    np.testing.assert_allclose(adv, expect, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ret, raw_ret, **TOL)
    m = batch.loss_mask
    assert abs(np.mean([np.asarray(adv)[b][m[b]].mean() for b in range(B) if m[b].any()])) < 1e-5


# ----------------------------------------------------------------------------- properties


def pad_rows(rows: list[dict], values=None):
    """Stacks small hand-written episodes into the suite's [B, T] / [B, K] shapes (empty
    padding rows), so they reuse the estimators compiled for the random batches."""
    out = dict(
        loss_mask=np.zeros((B, T), bool),
        turn_index=np.full((B, T), -1, np.int32),
        turn_end=np.full((B, K), -1, np.int32),
        turn_rewards=np.zeros((B, K), np.float32),
        group_id=np.arange(B, dtype=np.int32),
    )
    padded_values = np.zeros((B, T), np.float32)
    for b, row in enumerate(rows):
        for name, x in row.items():
            out[name][b, : len(x)] = x
        if values is not None:
            padded_values[b, : len(values[b])] = values[b]
    return out, padded_values


def test_gae_skips_observation_tokens():
    """Observation tokens between turns change nothing: GAE runs from action to action."""
    rng = np.random.default_rng(7)
    gapped = dict(
        loss_mask=[0, 1, 1, 0, 0, 0, 1, 1, 1, 0],
        turn_index=[-1, 0, 0, 0, 0, 0, 1, 1, 1, -1],
        turn_end=[2, 8],
        turn_rewards=[0.5, 2.0],
    )
    packed = dict(
        loss_mask=[0, 1, 1, 1, 1, 1, 0, 0, 0, 0],
        turn_index=[-1, 0, 0, 1, 1, 1, -1, -1, -1, -1],
        turn_end=[2, 5],
        turn_rewards=[0.5, 2.0],
    )
    v = rng.normal(size=10).astype(np.float32)
    v_packed = np.zeros(10, np.float32)
    v_packed[np.asarray(packed["loss_mask"], bool)] = v[np.asarray(gapped["loss_mask"], bool)]
    fields, values = pad_rows([gapped, packed], [v, v_packed])
    adv, _ = call("gae", fields, rl.AdvantageConfig(gamma=0.9, lam=0.8), values=values)
    m = fields["loss_mask"]
    np.testing.assert_allclose(adv[0][m[0]], adv[1][m[1]], rtol=1e-6)
    assert np.all(adv[0][m[0]] != 0)


def test_gae_lambda_one_is_return_minus_value():
    batch, values, _, cfg = draw(2, with_token_rewards=False)
    cfg = cfg.replace(lam=1.0)
    adv, _ = run("gae", batch, cfg, values=values)
    g = np.zeros((B, T))
    for b in range(B):
        r = ref.token_reward_row(b, batch)
        run_g = 0.0
        for t in reversed(ref.action_positions(batch.loss_mask[b])):
            run_g = r[t] + cfg.gamma * run_g
            g[b, t] = run_g
    np.testing.assert_allclose(adv, np.where(batch.loss_mask, g - values, 0), **TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_turn_starts_are_the_first_sampled_token_of_each_turn(seed):
    batch = ref.random_batch(np.random.default_rng(seed), B, T, K)
    got = np.asarray(rl.turn_starts(jnp.asarray(batch.turn_index),
                                    jnp.asarray(batch.loss_mask, bool), K))
    for b in range(B):
        for k in range(K):
            toks = ref.turn_tokens(batch.loss_mask[b], batch.turn_index[b], k)
            assert got[b, k] == (toks[0] if toks else -1), (b, k)


@pytest.mark.parametrize("seed", SEEDS)
def test_turn_values_do_not_see_the_turn(seed):
    """The turn-level baseline V_k must not depend on the values read inside turn k after
    its first token: those states have seen part of the action being judged."""
    batch, values, tr, cfg = draw(seed)
    a1, _ = run("turn_gae", batch, cfg, values=values, token_rewards=tr)
    changed = values.copy()
    for b in range(B):
        for k in ref.present(batch.turn_end[b]):
            toks = ref.turn_tokens(batch.loss_mask[b], batch.turn_index[b], k)
            changed[b, toks[1:]] += 10.0
    a2, _ = run("turn_gae", batch, cfg, values=changed, token_rewards=tr)
    np.testing.assert_allclose(a1, a2, **TOL)


def test_bilevel_first_token_gets_the_turn_advantage_when_undiscounted():
    """gamma = lam = 1 inside a turn: the within-turn TD errors telescope, so the first
    token's advantage is R_k - V_k = the turn-level advantage."""
    batch, values, tr, cfg = draw(0)
    cfg = cfg.replace(gamma=1.0, lam=1.0)
    a_bi, _ = run("bilevel_gae", batch, cfg, values=values, token_rewards=tr)
    a_turn, _ = run("turn_gae", batch, cfg, values=values, token_rewards=tr)
    starts = np.asarray(rl.turn_starts(jnp.asarray(batch.turn_index),
                                       jnp.asarray(batch.loss_mask, bool), K))
    for b in range(B):
        for k in ref.present(batch.turn_end[b]):
            t = starts[b, k]
            np.testing.assert_allclose(a_bi[b, t], a_turn[b, t], **TOL)


def test_bilevel_equals_token_gae_on_single_turn_episodes():
    rng = np.random.default_rng(3)
    batch = ref.random_batch(rng, B, T, K)
    batch.loss_mask, batch.turn_index, batch.turn_end = _regular_batch([1] * B)
    values = rng.normal(size=(B, T)).astype(np.float32)
    cfg = rl.AdvantageConfig(gamma=0.95, lam=0.9, turn_gamma=0.5, turn_lam=0.3)
    a_bi, r_bi = run("bilevel_gae", batch, cfg, values=values)
    a_tok, r_tok = run("gae", batch, cfg, values=values)
    np.testing.assert_allclose(a_bi, a_tok, **TOL)
    np.testing.assert_allclose(r_bi, r_tok, **TOL)


def test_per_turn_grpo_equals_outcome_grpo_with_terminal_rewards_and_equal_turns():
    """With gamma=1, rewards only at the end and every episode having all K turns,
    every turn's return-to-go is the outcome, so both levels agree."""
    rng = np.random.default_rng(4)
    seg = 3
    mask = np.zeros((B, T), bool)
    ti = np.full((B, T), -1, np.int32)
    te = np.zeros((B, K), np.int32)
    for k in range(K):
        start = 1 + k * (seg + 2)
        mask[:, start : start + seg] = True
        ti[:, start : start + seg] = k
        te[:, k] = start + seg - 1
    rewards = np.zeros((B, K), np.float32)
    rewards[:, -1] = rng.integers(0, 3, B)
    kw = dict(
        turn_rewards=rewards, turn_end=te, turn_index=ti, loss_mask=mask, group_id=np.arange(B) // 4
    )
    for name in ["grpo", "dr_grpo", "rloo"]:
        a_out, _ = call(name, kw, rl.AdvantageConfig(level="outcome"))
        a_turn, _ = call(name, kw, rl.AdvantageConfig(level="turn"))
        np.testing.assert_allclose(a_out, a_turn, rtol=1e-6, atol=1e-6)


def test_dense_group_ranks_and_group_stats():
    gid = jnp.array([40, 7, 40, -3, 7, 7])
    np.testing.assert_array_equal(jax.jit(rl.dense_group_ranks)(gid), [2, 1, 2, 0, 1, 1])
    x = jnp.array([[1.0], [2.0], [3.0], [5.0], [4.0], [9.0]])
    valid = jnp.array([[True], [True], [True], [True], [True], [False]])
    st = jax.jit(rl.group_stats)(x, valid, gid)
    np.testing.assert_allclose(st.mean[:, 0], [2, 3, 2, 5, 3, 3])
    np.testing.assert_allclose(st.count[:, 0], [2, 2, 2, 1, 2, 2])
    np.testing.assert_allclose(
        st.std[:, 0], [np.sqrt(2), np.sqrt(2), np.sqrt(2), 0, np.sqrt(2), np.sqrt(2)], rtol=1e-6
    )
    np.testing.assert_array_equal(st.spread[:, 0], [True, True, True, False, True, False])


def test_episode_returns_discount_present_turns_only():
    r = jnp.array([[1.0, 5.0, 2.0, 4.0]])
    te = jnp.array([[3, -1, 9, 12]])
    np.testing.assert_allclose(rl.episode_returns(r, te, 0.5), [1 + 0.5 * 2 + 0.25 * 4])


# ----------------------------------------------------------------------------- jit / vmap


def test_vmap_over_traced_gamma_lambda():
    batch, values, _, cfg = draw(0)
    gammas = jnp.array([0.5, 0.9, 1.0])
    lams = jnp.array([0.0, 0.7, 1.0])
    fn = jax.jit(
        jax.vmap(
            lambda g, lm: rl.ADVANTAGES.get("bilevel_gae")(
                **ref.fields(batch), values=values, cfg=cfg.replace(gamma=g, lam=lm)
            )[0]
        )
    )
    out = np.asarray(fn(gammas, lams))
    for i in range(3):
        expect, _ = ref.bilevel_gae(
            batch, values, float(gammas[i]), float(lams[i]), cfg.turn_gamma, cfg.turn_lam
        )
        np.testing.assert_allclose(out[i], expect, **TOL)


def test_vmap_over_stacked_batches():
    draws = [draw(s, with_token_rewards=False) for s in range(3)]
    cfg = draws[0][3]
    stacked = {k: np.stack([ref.fields(d[0])[k] for d in draws]) for k in ref.fields(draws[0][0])}
    values = np.stack([d[1] for d in draws])
    names = ("grpo",)  # sorts and segment ops (vmapping a scan: test_vmap_over_traced_...)

    def both(f, v):
        return [rl.ADVANTAGES.get(n)(**f, values=v, cfg=cfg)[0] for n in names]

    out = jax.jit(jax.vmap(both))(stacked, values)
    for j, name in enumerate(names):
        for i, d in enumerate(draws):
            single, _ = run(name, d[0], cfg, values=d[1])
            np.testing.assert_allclose(out[j][i], single, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- edge cases


def _all_estimators(batch, cfg, values):
    out = {}
    for name in rl.ADVANTAGES.names():
        for level in ["outcome", "turn"] if name in GROUP else ["outcome"]:
            out[name, level] = run(name, batch, cfg.replace(level=level), values=values)
    return out


def test_fully_masked_batch_gives_zeros():
    batch, values, _, cfg = draw(0)
    batch.loss_mask[:] = False
    batch.turn_end[:] = -1
    for key, (adv, ret) in _all_estimators(batch, cfg, values).items():
        assert np.all(adv == 0) and np.all(ret == 0), key


def _regular_batch(num_turns_of_row, seq_len=T, num_turns=K):
    """Rows of 2-token turns separated by 1 observation token, after a 1-token prompt."""
    rows = len(num_turns_of_row)
    mask = np.zeros((rows, seq_len), bool)
    ti = np.full((rows, seq_len), -1, np.int32)
    te = np.full((rows, num_turns), -1, np.int32)
    for b, n in enumerate(num_turns_of_row):
        for k in range(n):
            start = 1 + 3 * k
            mask[b, start : start + 2] = True
            ti[b, start : start + 3] = k
            te[b, k] = start + 1
    return mask, ti, te


@pytest.mark.parametrize("mixed", [False, True])
def test_identical_rewards_in_a_group_give_exact_zero(mixed):
    """Every episode of a group earns the same inexact-in-binary reward on its last turn.
    In fp32 the mean of six 0.3s is off by an ulp, which (x - mean) / (std + eps) would
    turn into advantages of ~0.03, and batch whitening (REINFORCE++) would blow up into
    +-1 next to a group whose mean is exact. Estimators must return exact zeros."""
    if not mixed:
        batch, _, _, cfg = draw(1)
        for b in range(B):
            batch.turn_rewards[b] = 0.0
            ks = ref.present(batch.turn_end[b])
            if ks:
                batch.turn_rewards[b, ks[-1]] = 0.1
    else:
        batch, _, _, cfg = draw(1)
        n_turns = [1, 2, 3, 4, 1, 2, 3, 1]
        batch.loss_mask, batch.turn_index, batch.turn_end = _regular_batch(n_turns)
        batch.group_id[:] = [5] * 6 + [9] * 2
        batch.turn_rewards[:] = 0.0
        for b, n in enumerate(n_turns):
            batch.turn_rewards[b, n - 1] = 0.3 if b < 6 else 0.1
    cfg = cfg.replace(turn_gamma=1.0, gamma=1.0)
    for name in [*GROUP, "reinforce_pp_baseline"]:
        for level in ["outcome", "turn"] if name in GROUP else ["outcome"]:
            adv, _ = run(name, batch, cfg.replace(level=level))
            assert np.all(adv == 0), (name, level)


def test_edge_cases_are_finite_single_turn_empty_turns_singletons():
    rng = np.random.default_rng(11)
    batch = ref.random_batch(rng, B, T, K)
    batch.group_id[:] = np.arange(B)  # every group a singleton
    values = rng.normal(size=(B, T)).astype(np.float32)
    cfg = rl.AdvantageConfig()
    for key, (adv, ret) in _all_estimators(batch, cfg, values).items():
        assert np.all(np.isfinite(adv)) and np.all(np.isfinite(ret)), key
        if key[0] in GROUP:
            assert np.all(adv == 0), key  # no group to compare with
    # an empty turn in the middle: its reward is ignored, later turns still count
    row = dict(
        loss_mask=[0, 1, 1, 0, 1, 0],
        turn_index=[-1, 0, 0, 1, 2, -1],
        turn_end=[2, -1, 4],
        turn_rewards=[1.0, 100.0, 2.0],
    )
    adv, _ = call("mc_returns", pad_rows([row])[0], rl.AdvantageConfig(turn_gamma=0.5))
    np.testing.assert_allclose(adv[0, :6], [0, 2.0, 2.0, 0, 2.0, 0])


def test_bad_inputs_raise_clear_errors():
    batch, values, _, cfg = draw(0)
    for name in ["gae", "turn_gae", "bilevel_gae"]:
        with pytest.raises(ValueError, match="needs critic values"):
            rl.ADVANTAGES.get(name)(**ref.fields(batch), cfg=cfg)
    with pytest.raises(ValueError, match="valid names: outcome, turn"):
        run("grpo", batch, cfg.replace(level="episode"))
    with pytest.raises(ValueError, match="valid names: .*bilevel_gae.*grpo"):
        rl.compute_advantages(batch, cfg.replace(estimator="ppo"))
    f = ref.fields(batch)
    f["turn_end"] = f["turn_end"][:, :2]
    with pytest.raises(ValueError, match="turn_end"):
        rl.ADVANTAGES.get("grpo")(**f, cfg=cfg)
    with pytest.raises(ValueError, match="whiten weighting"):
        rl.whiten(jnp.zeros((2, 3)), jnp.ones((2, 3), bool), weighting="episode")
