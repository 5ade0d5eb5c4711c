"""DPO as a trainer algorithm (`rl.algo=dpo`): online (pairs from each step's rollout
groups) and offline (a JSONL of ranked pairs), on the tiny model of
experiments/tiny_learning.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agentic_rl.rollout.preferences import load_preference_pairs
from agentic_rl.train import Trainer
from agentic_rl.train.config import ConfigError, validate
from agentic_rl.train.config_files import apply_overrides, load_config_file
from tests.train.conftest import REPO

LEARNING = REPO / "experiments" / "tiny_learning.py"
SMALL = {"rollout.tasks_per_step": "2", "rollout.group_size": "2", "train.num_minibatches": "1",
         "train.num_epochs": "1", "eval.every": "0", "eval.at_start": "false",
         "rl.algo": "dpo"}


def make_config(**overrides):
    return apply_overrides(load_config_file(f"{LEARNING}:grpo"),
                           {**SMALL, **{k: str(v) for k, v in overrides.items()}})


def write_pairs(path, n=2):
    lines = [{"prompt": f"Say yes {i}.", "chosen": "yes yes", "rejected": "no"}
             for i in range(n)]
    lines[0] = {"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Say yes."}],
                "chosen": "yes <|im_end|> yes", "rejected": "no"}  # a marker stays text
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_offline_dpo_grows_the_preference_margin(compile_cache, tmp_path):
    """Four steps over the same two pairs: at step 1 the policy is its reference (margin
    0); the chosen-over-rejected log-ratio margin then grows and every pair is ranked
    right."""
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    cfg = make_config(**{"rl.dpo.pairs_file": pairs, "rl.dpo.beta": 0.5,
                         "train.max_steps": 4, "optim.learning_rate": 3e-3})
    trainer = Trainer(validate(cfg), tmp_path / "run")
    try:
        history = trainer.train()
    finally:
        trainer.close()
    margin = [h["train/reward_margin"] for h in history]
    assert [h["train/num_pairs"] for h in history] == [2, 2, 2, 2]
    assert abs(margin[0]) < 1e-5
    assert margin[-1] > margin[1] > margin[0] and margin[-1] > 0.1, margin
    assert history[-1]["train/reward_accuracy"] == 1.0
    assert all(h["train/skipped"] == 0 for h in history)
    # the rows were the file's pairs: the chosen one of pair 0 kept its marker as text
    b = trainer.last_batch
    assert b.tokens.shape[0] == 4 and list(b.group_id) == [0, 0, 1, 1]


def test_online_dpo_pairs_the_best_and_worst_episode_of_each_group(compile_cache, tmp_path):
    cfg = make_config(**{"rollout.group_size": 4, "train.max_steps": 2})
    trainer = Trainer(validate(cfg), tmp_path)
    try:
        history = trainer.train()
    finally:
        trainer.close()
    for h in history:
        assert np.isfinite(h["train/loss"]) and h["train/skipped"] == 0
        assert 0 <= h["train/num_pairs"] <= 2  # one per group whose returns differ
    assert trainer.need_ref  # the reference: the frozen initial copy (no LoRA here)


@pytest.mark.parametrize("overrides,match", [
    ({"train.num_minibatches": "2", "rollout.tasks_per_step": "2"}, "whole batch"),
    ({"rollout.group_size": "1"}, "group_size must be >= 2"),
    ({"rl.dpo.beta": "0"}, "beta must be > 0"),
    ({"rl.dpo.pairs_file": "/nonexistent.jsonl"}, "is not a file"),
])
def test_dpo_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        validate(make_config(**overrides))


def test_pairs_file_for_another_algo_is_refused(tmp_path):
    cfg = make_config(**{"rl.algo": "grpo", "rl.dpo.pairs_file": write_pairs(tmp_path / "p")})
    with pytest.raises(ConfigError, match="pairs_file is for rl.algo='dpo'"):
        validate(cfg)


@pytest.mark.parametrize("line,match", [
    ("not json", "not JSON"),
    ('{"prompt": "x", "chosen": "a"}', "'rejected' must be the reply text"),
    ('{"messages": [{"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"}',
     "role in"),
    ('{"chosen": "a", "rejected": "b"}', "needs 'messages'"),
])
def test_bad_preference_lines_name_the_line(tmp_path, line, match):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "ok", "chosen": "a", "rejected": "b"}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"pairs.jsonl:2: .*{match}"):
        load_preference_pairs(path)
