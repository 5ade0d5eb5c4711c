"""The trainer with the LLM judge on (`judge.enabled`): a step runs with the policy as its
own judge, the judge's metrics are logged and its part reaches the rewards; bad judge
settings are config errors; the default is off."""

from __future__ import annotations

import numpy as np
import pytest

from agentic_rl.train import Trainer
from agentic_rl.train.config import ConfigError, validate
from agentic_rl.train.config_files import apply_overrides

SMALL = {"rollout.tasks_per_step": 2, "rollout.group_size": 4, "train.max_steps": 1,
         "eval.every": 0, "eval.at_start": False, "log.progress": False,
         "log.tensorboard": False, "checkpoint.export_final": False}


def test_default_is_off(tiny_config, tmp_path):
    cfg = apply_overrides(tiny_config(), SMALL)
    assert cfg.judge.enabled is False


@pytest.mark.parametrize("overrides,match", [
    ({"judge.mode": "best"}, "judge.mode"),
    ({"judge.prompt": "no placeholder"}, "trajectories"),
    ({"judge.neutral": 1.5}, "neutral"),
    ({"judge.eps": 0.0}, "eps"),
    ({"judge.max_context_tokens": 100}, "max_context_tokens"),
    ({"rollout.group_size": 1, "train.micro_batch_size": 0}, "group_size"),
])
def test_judge_config_errors(tiny_config, overrides, match):
    cfg = apply_overrides(tiny_config(), {**SMALL, "judge.enabled": "true", **overrides})
    with pytest.raises(ConfigError, match=match):
        validate(cfg)


@pytest.mark.slow  # compiles a judge sampler of its own (about a minute on a loaded CPU)
def test_steps_with_the_policy_as_judge(tiny_config, tmp_path):
    cfg = apply_overrides(tiny_config(), {
        **SMALL, "train.max_steps": 2, "judge.enabled": "true", "judge.w_verifier": 0.0,
        "judge.w_judge": 1.0, "judge.max_new_tokens": 8, "judge.max_context_tokens": 1024,
        "judge.neutral": 0.25})
    trainer = Trainer(cfg, tmp_path)
    try:
        _, row = trainer.train()  # step 2: the judge's sampler follows the new weights
    finally:
        trainer.close()
    assert row["judge/groups"] == 2 and row["judge/calls"] >= 2
    # a random tiny model writes no scores: every episode gets the neutral score, which
    # with w_verifier=0 is the whole reward of its last turn
    assert row["judge/neutral_scores"] == 8 and row["judge/malformed"] == 2
    rewards = np.asarray(trainer.last_batch.turn_rewards)[:8]
    np.testing.assert_allclose(rewards.sum(axis=1), 0.25, rtol=1e-6)
