"""Learning, not just running: the tiny random model learns guess-the-number with GRPO and
with PPO (experiments/tiny_learning.py), from a greedy success of ~0 to >= 0.9.

The game is set so that 0.9 needs the environment's feedback: the best fixed guess
sequence wins 69% of the held-out games (asserted below from the eval tasks themselves).
"""

from __future__ import annotations

from collections import Counter

import pytest

from agentic_rl.train import Trainer
from agentic_rl.train.builders import build_suite
from agentic_rl.train.config_files import load_config_file
from agentic_rl.train.metrics import read_jsonl
from tests.train.conftest import REPO

CONFIG = REPO / "experiments" / "tiny_learning.py"
TARGET = 0.9


def best_fixed_sequence_success(cfg) -> float:
    """Success of the best feedback-blind policy on the eval games: with a range of 3 and
    two guesses it wins on the two secrets it guesses, so: the two commonest secrets."""
    suite = build_suite(cfg)
    tasks = suite.tasks.split(cfg.env.eval_split)[: cfg.eval.num_episodes]
    counts = Counter(t.data["secret"] for t in tasks)
    assert cfg.env.kwargs.high - cfg.env.kwargs.low == 2 and cfg.env.kwargs.max_guesses == 2
    return sum(c for _, c in counts.most_common(2)) / len(tasks)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["grpo", "ppo"])
def test_tiny_model_learns_to_use_the_feedback(compile_cache, tmp_path, variant):
    cfg = load_config_file(f"{CONFIG}:{variant}")
    assert best_fixed_sequence_success(cfg) < TARGET - 0.15
    trainer = Trainer(cfg, tmp_path)
    try:
        trainer.train()
    finally:
        trainer.close()
    evals = [(r["step"], r["eval/success_rate"]) for r in read_jsonl(tmp_path / "metrics.jsonl")
             if "eval/success_rate" in r]
    assert evals[0][0] == 0 and evals[-1][0] == cfg.train.max_steps, evals
    untrained, final = evals[0][1], evals[-1][1]
    assert untrained <= 0.2, evals  # the random policy does not play the game
    assert final >= TARGET, evals
