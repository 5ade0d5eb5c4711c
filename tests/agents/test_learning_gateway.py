"""Learning through the gateway: the guess-number game of experiments/tiny_learning.py,
played by an agent program that talks to the policy only through the `openai` SDK over
HTTP (its own loop; the game is its own tool, posting each turn's reward over HTTP),
reaches the same >= 0.9 greedy success as the environment loop."""

from __future__ import annotations

import pytest

from agentic_rl.train import Trainer
from agentic_rl.train.config_files import apply_overrides, load_config_file
from agentic_rl.train.metrics import read_jsonl
from tests.train.conftest import REPO

CONFIG = REPO / "experiments" / "tiny_learning.py"


@pytest.mark.slow
def test_an_openai_sdk_agent_learns_through_the_gateway(compile_cache, tmp_path):
    cfg = apply_overrides(load_config_file(f"{CONFIG}:grpo"), {
        "agent.program": "env", "agent.transport": "http", "eval.every": 30})
    trainer = Trainer(cfg, tmp_path)
    try:
        assert trainer.programs.gateway is not None  # a real HTTP server
        trainer.train()
    finally:
        trainer.close()
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    evals = [(r["step"], r["eval/success_rate"]) for r in rows if "eval/success_rate" in r]
    assert evals[0] == (0, 0.0) and evals[-1][0] == cfg.train.max_steps, evals
    assert evals[-1][1] >= 0.9, evals
    train_rows = [r for r in rows if "rollout/gateway/prefix_breaks" in r]
    assert len(train_rows) == cfg.train.max_steps
    assert all(r["rollout/gateway/prefix_breaks"] == 0 for r in train_rows)
    errors = read_jsonl(tmp_path / "errors.jsonl") if (tmp_path / "errors.jsonl").exists() else []
    assert not errors, errors[:3]  # why episodes were dropped, when any were
    assert all(r["rollout/num_episodes"] == 128 for r in train_rows)
