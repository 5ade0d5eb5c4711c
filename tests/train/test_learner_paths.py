"""Trainer paths of the learner maths, end to end on the tiny model: the KL as a reward
penalty, reusing the sampler's log-probs, sampling temperature, truncated episodes under
PPO, and the off-policy corrections on synchronous rollouts.

Each test builds a Trainer on `experiments/tiny_learning.py` shrunk to 2 tasks x 2
episodes (T = 96), runs real rollouts and updates, and checks the numbers the update
sees against NumPy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentic_rl.train import Trainer
from agentic_rl.train import learner as train_learner
from agentic_rl.train.config_files import apply_overrides, load_config_file
from agentic_rl.train.learner import score_and_advantages
from tests.rl import reference as ref
from tests.train.conftest import REPO

LEARNING = REPO / "experiments" / "tiny_learning.py"
SMALL = {"rollout.tasks_per_step": "2", "rollout.group_size": "2",
         "train.num_minibatches": "1", "train.num_epochs": "1", "train.max_steps": "3",
         "eval.every": "0", "eval.at_start": "false"}


def make_trainer(tmp_path, variant="grpo", **overrides):
    cfg = apply_overrides(load_config_file(f"{LEARNING}:{variant}"),
                          {**SMALL, **{k: str(v) for k, v in overrides.items()}})
    return Trainer(cfg, tmp_path)


def fresh_batch(trainer):
    """One rollout with the current policy, as the learner batch's arrays and the
    TrainBatch the update sees (the learner step's scoring and advantages)."""
    result, _ = trainer.rollout()
    batch, hp = trainer.learner_batch(result.batch)
    arrays = {k: np.asarray(v) for k, v in vars(batch).items()}
    return result, arrays, jax.jit(score_and_advantages)(trainer.state, batch, hp)


def as_ref_batch(arrays) -> ref.Batch:
    return ref.Batch(**{k: np.asarray(arrays[k]) for k in (
        "tokens", "loss_mask", "sample_logprobs", "turn_index", "turn_end", "turn_rewards",
        "group_id")})


def test_kl_as_a_reward_penalty_end_to_end(compile_cache, tmp_path):
    """rl.kl_mode='reward': the KL to the reference is a per-token reward, -coef x k3 on
    each sampled token, folded into its turn's reward before the group baseline; there
    is no KL loss term."""
    coef = 0.5
    trainer = make_trainer(tmp_path, **{"rl.kl_coef": coef, "rl.kl_mode": "reward"})
    try:
        assert trainer.need_ref and not trainer.learner_config.step.kl_in_loss
        # Move the policy away from its frozen reference copy (at step 0 they are equal, and
        # the tiny batch's all-equal rewards give no gradient to do it).
        trainer.state = trainer.state.replace(
            params=jax.tree.map(lambda x: x * 1.1, trainer.state.params))
        _, arrays, batch = fresh_batch(trainer)
        mask = arrays["loss_mask"]
        old, ref_lp = np.asarray(batch.old_logprobs), np.asarray(batch.ref_logprobs)
        assert np.abs(old - ref_lp)[mask].max() > 1e-4  # the penalty is not trivially 0
        k3 = np.zeros(mask.shape)
        for b, t in zip(*np.nonzero(mask)):
            k3[b, t] = ref.kl("k3", float(old[b, t]), float(ref_lp[b, t]))
        adv_ref, _ = ref.group_advantages(as_ref_batch(arrays), "grpo", "outcome",
                                          trainer.learner_config.advantage.turn_gamma,
                                          trainer.learner_config.advantage.eps,
                                          token_rewards=-coef * k3)
        # The learner sums the float32 k3 terms and divides by the std of a 2-row group,
        # which amplifies float32 rounding against this float64 reference: CI saw a
        # relative error of 1.2e-4 on 2 of 384 tokens. A wrong sign, coefficient or
        # token placement is off by orders of magnitude more than rtol=1e-3.
        np.testing.assert_allclose(np.asarray(batch.advantages), adv_ref, rtol=1e-3, atol=1e-5)
        metrics = trainer.train_step()
        assert np.isfinite(metrics["train/loss"]) and metrics["train/skipped"] == 0
        assert "train/kl_loss" not in metrics
        assert metrics["train/zero_grad"] == 0  # the KL reward alone gives a gradient
    finally:
        trainer.close()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_reusing_the_sampler_logprobs_end_to_end(compile_cache, tmp_path, monkeypatch,
                                                 temperature):
    """train.reuse_sample_logprobs: no scoring pass, the sampler's log-probs are the old
    policy, and they agree with the trainer's own log-probs of the same tokens (same
    alignment, same temperature): the first update's ratio is 1 to float precision."""
    trainer = make_trainer(tmp_path, **{"train.reuse_sample_logprobs": "true",
                                        "rollout.temperature": temperature})

    def no_scoring(*args, **kwargs):
        raise AssertionError("reuse_sample_logprobs must skip the scoring pass")

    try:
        monkeypatch.setattr(train_learner, "score", no_scoring)
        metrics = trainer.train_step()
        assert metrics["train/skipped"] == 0 and np.isfinite(metrics["train/loss"])
        assert abs(metrics["train/ratio_max"] - 1) < 1e-3
        assert abs(metrics["train/ratio_min"] - 1) < 1e-3
        assert metrics["train/approx_kl"] < 1e-6
    finally:
        trainer.close()


def test_scoring_pass_uses_the_sampling_temperature(compile_cache, tmp_path):
    """rollout.temperature = 0.7 with the default recompute path: the old log-probs are those
    of the distribution the tokens were drawn from (the sampler's stored log-probs), and
    the synchronous behaviour/proximal ratio the off-policy metrics report is ~1."""
    trainer = make_trainer(tmp_path, **{"rollout.temperature": 0.7})
    try:
        _, arrays, batch = fresh_batch(trainer)
        mask = arrays["loss_mask"]
        np.testing.assert_allclose(np.asarray(batch.old_logprobs)[mask],
                                   arrays["sample_logprobs"][mask], atol=1e-4)
        metrics = trainer.train_step()
        assert abs(metrics["train/behav_ratio_max"] - 1) < 1e-3
        assert metrics["train/behav_kl"] < 1e-6
    finally:
        trainer.close()


def test_ppo_bootstraps_truncated_episodes(compile_cache, tmp_path):
    """max_turns = 1 in a 2-guess game: a wrong first guess is cut by the limit (truncated),
    a right one ends the game. The advantages are token-level GAE whose last step
    bootstraps from the critic's value at the cut for the truncated rows only."""
    trainer = make_trainer(tmp_path, "ppo", **{"rollout.max_turns": 1,
                                               "rollout.tasks_per_step": 4})
    try:
        trainer.train_step()  # a value head that is no longer ~0
        result, arrays, batch = fresh_batch(trainer)
        terminations = [m["termination"] for m in result.batch.metadata]
        n = result.batch.batch_size
        np.testing.assert_array_equal(arrays["truncated"][:n],
                                      [t != "done" for t in terminations])
        assert arrays["truncated"].any()
        model = trainer.state.model()
        cut = np.zeros(trainer.rows)
        for b in range(n):
            L = int(arrays["attention_mask"][b].sum())
            tokens = jnp.asarray(arrays["tokens"][b:b + 1, :L])
            h = model.lm.hidden_states(tokens, jnp.ones((1, L), bool))
            cut[b] = float(model.value_head(h)[0, -1])
        bootstrap = np.where(arrays["truncated"], cut, 0.0)
        values = np.asarray(batch.old_values, np.float64)
        cfg = trainer.learner_config.advantage
        adv_ref, ret_ref = ref.gae(as_ref_batch(arrays), values, cfg.gamma, cfg.lam,
                                   bootstrap=bootstrap)
        np.testing.assert_allclose(np.asarray(batch.advantages), adv_ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(batch.returns), ret_ref, rtol=1e-4, atol=1e-4)
        adv_terminal, _ = ref.gae(as_ref_batch(arrays), values, cfg.gamma, cfg.lam)
        assert not np.allclose(adv_ref, adv_terminal, atol=1e-4)  # the bootstrap mattered
    finally:
        trainer.close()


@pytest.mark.parametrize("correction", ["tis", "mis", "decoupled"])
def test_off_policy_corrections_on_synchronous_rollouts(compile_cache, tmp_path, correction):
    """Selected by name from the config; on synchronous rollouts behaviour ~= proximal, so
    the weights are ~1 and the update is the on-policy one."""
    trainer = make_trainer(tmp_path, **{"rl.loss.off_policy": correction})
    try:
        assert trainer.learner_config.step.loss.off_policy == correction
        metrics = trainer.train_step()
        assert metrics["train/skipped"] == 0 and np.isfinite(metrics["train/loss"])
        assert abs(metrics["train/behav_weight_mean"] - 1) < 1e-3
        assert abs(metrics["train/behav_ratio_max"] - 1) < 1e-3
        if correction == "mis":
            assert metrics["train/behav_mask_frac"] == 0
    finally:
        trainer.close()
