"""Trainer options that exist for ablations: `rl.train_on_observations`."""

from __future__ import annotations

import numpy as np
import pytest

from agentic_rl.rollout import EpisodeBatch, HostMetadata
from agentic_rl.train import Trainer
from agentic_rl.train.config import ConfigError, validate
from agentic_rl.train.config_files import apply_overrides, load_config_file
from agentic_rl.train.learner import LearnerBatch
from tests.train.conftest import REPO

LEARNING = REPO / "experiments" / "tiny_learning.py"


def episode_arrays():
    """Two rows: prompt (3), turn 0 (2 sampled), observation (3), turn 1 (1 sampled + an
    appended end-of-turn token), padding; and an empty padding row."""
    turn_index = np.array([[-1, -1, -1, 0, 0, 0, 0, 0, 1, 1, -1, -1],
                           [-1] * 12])
    loss_mask = np.array([[0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0],
                          [0] * 12], bool)
    attention_mask = np.array([[1] * 10 + [0, 0], [0] * 12], bool)
    return {"turn_index": turn_index, "loss_mask": loss_mask, "attention_mask": attention_mask}


def as_episodes(a) -> EpisodeBatch:
    B, T = a["loss_mask"].shape
    return EpisodeBatch(tokens=np.zeros((B, T), np.int32), attention_mask=a["attention_mask"],
                        loss_mask=a["loss_mask"], sample_logprobs=np.zeros((B, T), np.float32),
                        turn_index=a["turn_index"], turn_end=np.full((B, 2), -1, np.int32),
                        turn_rewards=np.zeros((B, 2), np.float32), group_id=np.arange(B),
                        agent_id=np.full((B, T), -1, np.int32), truncated=np.zeros(B, bool),
                        metadata=HostMetadata([{}] * B))


def test_observation_mask_adds_observations_but_never_the_prompt_or_padding():
    a = episode_arrays()
    batch = LearnerBatch.from_episodes(as_episodes(a), train_on_observations=True)
    mask = batch.loss_mask
    np.testing.assert_array_equal(mask[0], [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    assert not mask[1].any()
    assert (mask >= a["loss_mask"]).all()  # only ever adds tokens
    # the behaviour log-probs exist only where the sampler produced the token
    np.testing.assert_array_equal(batch.sampled_mask, a["loss_mask"])
    plain = LearnerBatch.from_episodes(as_episodes(a))
    np.testing.assert_array_equal(plain.loss_mask, a["loss_mask"])


def test_default_is_off_and_reuse_of_sampler_logprobs_is_rejected():
    cfg = load_config_file(f"{LEARNING}:grpo")
    assert cfg.rl.train_on_observations is False
    cfg = apply_overrides(cfg, {"rl.train_on_observations": "true",
                                "train.reuse_sample_logprobs": "true"})
    with pytest.raises(ConfigError, match="train_on_observations"):
        validate(cfg)


@pytest.mark.parametrize("on", [False, True])
def test_trainer_applies_the_option(compile_cache, tmp_path, on):
    cfg = apply_overrides(load_config_file(f"{LEARNING}:grpo"), {
        "rl.train_on_observations": str(on), "rollout.tasks_per_step": "2",
        "rollout.group_size": "2", "train.num_minibatches": "1", "train.num_epochs": "1",
        "train.max_steps": "1", "eval.every": "0", "eval.at_start": "false"})
    trainer = Trainer(cfg, tmp_path)
    try:
        trainer.train_step()
    finally:
        trainer.close()
    a = trainer.last_batch
    after_prompt = a.attention_mask & (a.turn_index >= 0)
    mask = a.loss_mask.astype(bool)
    if on:
        np.testing.assert_array_equal(mask, after_prompt)
    else:  # only sampled tokens: the observations and appended end-of-turn tokens are out
        assert (mask <= after_prompt).all() and mask.sum() < after_prompt.sum()
