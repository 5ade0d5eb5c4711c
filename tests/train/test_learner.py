"""`learner_step`: the one pure function that scores, computes advantages and updates.

On a tiny random model and synthetic episodes (collated like a rollout's): the fused step
equals its parts run one by one, a loss declares the inputs it reads and gets them, and
the config asks the registries (no trainer code) what to compute."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentic_rl import rl
from agentic_rl.rollout import EpisodeRecord, collate
from agentic_rl.train.config import default_config, uses_critic, uses_reference
from agentic_rl.train.config_files import apply_overrides
from agentic_rl.train.learner import (
    LearnerBatch,
    LearnerConfig,
    learner_step,
    needs_cut_column,
    score_and_advantages,
)
from agentic_rl.train.step import StepConfig, score, train_on_batch, value_at_cut
from tests.train.test_step import V, leaves, make_state


def episodes(seed=0, groups=2, group_size=4, length=32):
    """Groups of episodes sharing a prompt: prompt, a sampled turn, an observation, a
    second sampled turn; 0/1 rewards that differ within each group."""
    rng = np.random.default_rng(seed)
    records = []
    for g in range(groups):
        prompt = rng.integers(0, V, 6).tolist()
        for i in range(group_size):
            r = EpisodeRecord(group_id=g, metadata={"episode": f"{g}-{i}"})
            r.append(prompt, sampled=False, turn=-1, agent=-1)
            for k in range(2):
                n = int(rng.integers(2, 6))
                r.append(rng.integers(0, V, n).tolist(), sampled=True, turn=k, agent=0,
                         logprobs=(-rng.exponential(1.0, n)).tolist())
                r.turn_ends.append(len(r) - 1)
                r.turn_rewards.append(float(k == 1 and i % 2 == 0))
                if k == 0:
                    r.append(rng.integers(0, V, 3).tolist(), sampled=False, turn=k, agent=-1)
            records.append(r)
    return collate(records, length=length, num_turns=2)


def config(critic=False, **loss):
    step = StepConfig(loss=rl.LossConfig(**loss), kl_coef=0.1, kl_in_loss=True,
                      use_critic=critic, micro_batch_size=4, num_minibatches=2)
    adv = rl.AdvantageConfig(estimator="gae" if critic else "grpo")
    return LearnerConfig(step=step, advantage=adv, need_ref=True, score_chunk=4)


@pytest.mark.parametrize("critic", [False, True])
def test_learner_step_equals_its_parts(critic):
    """The fused step = the scoring pass, the advantages and train_on_batch run one by
    one (same params, same metrics), and the advantages match the estimator's."""
    batch = LearnerBatch.from_episodes(episodes())
    hp = config(critic)
    hp = hp.replace(with_cut_values=needs_cut_column(batch, hp))
    state = make_state(lora=False, critic=critic)
    fused_state, metrics = jax.jit(learner_step)(state, batch, hp)

    state = make_state(lora=False, critic=critic)
    lp, values, ref_lp = score(state, jnp.asarray(batch.tokens), jnp.asarray(batch.attention_mask),
                               chunk=4, with_values=critic, with_ref=True)
    train_batch = jax.jit(score_and_advantages)(state, batch, hp)
    np.testing.assert_allclose(train_batch.old_logprobs, lp, atol=1e-6)
    np.testing.assert_allclose(train_batch.ref_logprobs, ref_lp, atol=1e-6)
    assert not hp.with_cut_values  # every row is shorter than T
    cut = value_at_cut(values, jnp.asarray(batch.attention_mask)) if critic else None
    adv, _ = rl.compute_advantages(batch, hp.advantage, values=values if critic else None,
                                   cut_values=cut)
    np.testing.assert_allclose(train_batch.advantages, adv, atol=1e-5)
    np.testing.assert_allclose(metrics["advantages"], adv, atol=1e-5)
    parts_state, parts_metrics = jax.jit(train_on_batch)(state, train_batch, hp.step)
    for a, b in zip(leaves(fused_state.params), leaves(parts_state.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for k, v in parts_metrics.items():
        np.testing.assert_allclose(metrics[k], v, rtol=1e-5, atol=1e-6)
    mask = batch.loss_mask
    a = np.asarray(adv)[mask]
    np.testing.assert_allclose(metrics["advantage_mean"], a.mean(), atol=1e-6)
    np.testing.assert_allclose(metrics["advantage_std"], a.std(), rtol=1e-5)
    assert int(fused_state.step) == 1 and float(metrics["skipped"]) == 0


def test_behaviour_logprobs_are_the_samplers_on_sampled_tokens_only():
    """With observations in the loss, the behaviour log-probs of observation tokens are the
    old ones (ratio 1): the sampler never produced them."""
    eps = episodes(1)
    batch = LearnerBatch.from_episodes(eps, train_on_observations=True)
    assert batch.loss_mask.sum() > batch.sampled_mask.sum()
    state = make_state(lora=False, critic=False)
    tb = jax.jit(score_and_advantages)(state, batch, config())
    sampled, loss = batch.sampled_mask, batch.loss_mask
    np.testing.assert_array_equal(np.asarray(tb.behaviour_logprobs)[sampled],
                                  batch.sample_logprobs[sampled])
    obs = loss & ~sampled
    np.testing.assert_array_equal(np.asarray(tb.behaviour_logprobs)[obs],
                                  np.asarray(tb.old_logprobs)[obs])


@pytest.fixture
def probe_losses(monkeypatch):
    """Two losses registered for one test: one reads the reference log-probs, one the
    entropies, each reporting the mean of what it got."""
    def reads_ref(logprobs, old_logprobs, advantages, mask, cfg, *, ref_logprobs):
        per_token = -advantages * logprobs + 0.0 * ref_logprobs
        return jnp.where(mask, per_token, 0.0), {"got_ref": rl.masked_mean(ref_logprobs, mask)}

    def reads_entropy(logprobs, old_logprobs, advantages, mask, cfg, *, entropy):
        per_token = -advantages * logprobs - 0.01 * entropy
        return jnp.where(mask, per_token, 0.0), {"got_entropy": rl.masked_mean(entropy, mask)}

    for name, fn, reads in (("_reads_ref", reads_ref, ("ref_logprobs",)),
                            ("_reads_entropy", reads_entropy, ("entropy",))):
        monkeypatch.setitem(rl.POLICY_LOSSES._fns, name, fn)
        monkeypatch.setitem(rl.POLICY_LOSSES._meta, name,
                            {**rl.POLICY_LOSSES.defaults, "reads": reads})


def test_a_loss_gets_the_inputs_it_declares(probe_losses):
    batch = LearnerBatch.from_episodes(episodes(2))
    mask = batch.loss_mask
    state = make_state(lora=False, critic=False)
    # the reference log-probs (here the frozen copy, perturbed so they differ from pi)
    state = state.replace(ref=jax.tree.map(lambda x: x * 1.05, state.ref))
    hp = config(policy_loss="_reads_ref")
    tb = jax.jit(score_and_advantages)(state, batch, hp)
    _, metrics = jax.jit(learner_step)(state, batch, hp.replace(step=hp.step.replace(
        num_minibatches=1, micro_batch_size=0)))
    want = np.asarray(tb.ref_logprobs)[mask].mean()
    np.testing.assert_allclose(metrics["got_ref"], want, rtol=1e-5)
    assert abs(want - np.asarray(tb.old_logprobs)[mask].mean()) > 1e-3
    # entropies are computed for a loss that reads them, with no entropy bonus configured
    hp = config(policy_loss="_reads_entropy")
    assert not hp.step.use_entropy
    _, metrics = jax.jit(learner_step)(state, batch, hp)
    assert float(metrics["got_entropy"]) > 0.5  # a random 40-token model: near log(40)


def test_the_config_asks_the_registries(probe_losses):
    """Whether a run trains a critic or scores a reference follows from registry
    metadata: the estimator's needs_values, the loss's reads."""
    def cfg(**overrides):
        return apply_overrides(default_config(), overrides)

    assert not uses_critic(cfg()) and not uses_reference(cfg())
    assert uses_critic(cfg(**{"rl.algo": "ppo"}))
    assert uses_reference(cfg(**{"rl.kl_coef": "0.1"}))
    assert uses_reference(cfg(**{"rl.loss.policy_loss": "_reads_ref"}))
    assert not uses_critic(cfg(**{"rl.loss.policy_loss": "_reads_ref"}))


def test_a_loss_missing_a_declared_input_is_a_clear_error(probe_losses):
    lp = jnp.zeros((2, 4))
    mask = jnp.ones((2, 4), bool)
    cfg = rl.LossConfig(policy_loss="_reads_ref")
    with pytest.raises(ValueError, match="reads 'ref_logprobs', which was not given"):
        rl.compute_policy_loss(lp, lp, lp, mask, cfg)
    with pytest.raises(ValueError, match="unknown loss inputs"):
        rl.compute_policy_loss(lp, lp, lp, mask, cfg, ref_logprobs=lp, refs=lp)


def split_episodes(seed=0, groups=2, group_size=4, length=32):
    """`episodes` twice: as one row per episode, and with each episode's second turn in a
    row of its own (a rewritten context: a new 4-token prefix, then turn 1 with
    turn_offset 1). Returns (one-row batch, split batch, {(row, pos): (split row, pos)})."""
    whole = episodes(seed, groups, group_size, length)
    rng = np.random.default_rng(100 + seed)
    records, where = [], {}
    for b in range(whole.batch_size):
        toks, te = np.asarray(whole.tokens[b]), np.asarray(whole.turn_end[b])
        loss, lp = np.asarray(whole.loss_mask[b]), np.asarray(whole.sample_logprobs[b])
        ti, n = np.asarray(whole.turn_index[b]), int(whole.attention_mask[b].sum())
        start1 = int(np.flatnonzero(loss & (ti == 1))[0])
        first = EpisodeRecord(group_id=int(whole.group_id[b]), episode=b)
        second = EpisodeRecord(group_id=int(whole.group_id[b]), episode=b, turn_offset=1)
        for rec, lo, hi, k, prefix in ((first, 0, start1, 0, []),
                                       (second, start1, n, 1, rng.integers(0, V, 4).tolist())):
            rec.append(prefix, sampled=False, turn=-1, agent=-1)
            for t in range(lo, hi):
                if loss[t]:
                    where[b, t] = (len(records), len(rec))
                    rec.append([int(toks[t])], sampled=True, turn=int(ti[t]) - k, agent=0,
                               logprobs=[float(lp[t])])
                else:
                    rec.append([int(toks[t])], sampled=False,
                               turn=int(ti[t]) - k if ti[t] >= 0 else -1, agent=-1)
            rec.turn_ends.append(where[b, int(te[k])][1])
            rec.turn_rewards.append(float(whole.turn_rewards[b, k]))
            records.append(rec)
    return whole, collate(records, length=length, num_turns=2), where


@pytest.mark.parametrize("estimator,level", [("grpo", "turn"), ("rloo", "outcome"),
                                             ("reinforce_pp_baseline", "outcome"), ("gae", "")])
def test_learner_trains_a_split_episode_as_the_episode(estimator, level):
    """`score_and_advantages` on a LearnerBatch whose episodes are each split into two rows
    (a context rewrite before turn 1) gives every sampled token the advantage of the
    unsplit batch (critic-free estimators: they read no model output). With a critic the
    values differ by context, so there: the learner's advantages are the estimator's on
    the split batch with its episodes, not the row-wise ones."""
    whole, split, where = split_episodes()
    split.validate()
    one = LearnerBatch.from_episodes(whole)
    two = LearnerBatch.from_episodes(split)
    assert one.episode_index is None and one.turn_offset is None  # one-row code, unchanged
    np.testing.assert_array_equal(two.episode_index, np.arange(16) // 2)
    np.testing.assert_array_equal(two.turn_offset, np.arange(16) % 2)
    critic = estimator == "gae"
    hp = config(critic).replace(
        advantage=rl.AdvantageConfig(estimator=estimator, level=level or "outcome"))
    state = make_state(lora=False, critic=critic)
    fn = jax.jit(score_and_advantages)
    adv_two = np.asarray(fn(state, two, hp).advantages)
    if not critic:
        adv_one = np.asarray(fn(state, one, hp).advantages)
        for (b, t), (r, tn) in where.items():
            np.testing.assert_allclose(adv_two[r, tn], adv_one[b, t], rtol=1e-5, atol=1e-5)
        return
    tb = fn(state, two, hp)
    cut = value_at_cut(tb.old_values, jnp.asarray(two.attention_mask))
    expect, _ = rl.compute_advantages(two, hp.advantage, values=tb.old_values, cut_values=cut)
    rowwise, _ = rl.compute_advantages(two.replace(episode_index=None, turn_offset=None),
                                       hp.advantage, values=tb.old_values, cut_values=cut)
    np.testing.assert_allclose(adv_two, expect, atol=1e-5)
    assert not np.allclose(adv_two, rowwise, atol=1e-3)
