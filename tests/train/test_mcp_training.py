"""The trainer on the `mcp` environment: episodes against a real MCP server (the atlas
server over stdio, its tools called from the rollout's worker threads), one GRPO step and
an evaluation with the tiny model."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from agentic_rl.agents.task_gen import write_tasks_jsonl
from agentic_rl.envs.base import Task
from agentic_rl.envs.tools.mcp.atlas_server import generate_atlas
from agentic_rl.train import Trainer
from agentic_rl.train.config_files import apply_overrides
from agentic_rl.train.metrics import read_jsonl


@pytest.mark.slow  # a real MCP server and a trainer step (about 1.5 min on a loaded CPU)
def test_a_step_and_an_eval_against_a_real_mcp_server(tiny_config, tmp_path):
    cities = [c for cs in generate_atlas(0).values() for c in cs][:6]
    tasks = [Task(f"t{i}", f"How many people live in {c.name}?", str(c.population),
                  {"calls": [{"name": "city_facts", "arguments": {"city": c.name}}]})
             for i, c in enumerate(cities)]
    write_tasks_jsonl(tmp_path / "tasks.jsonl", tasks)
    cfg = apply_overrides(tiny_config(), {
        "env.name": "mcp",
        "env.kwargs": {"server": f"{sys.executable} -m agentic_rl.envs.tools.mcp.atlas_server "
                                 "stdio", "tasks_file": str(tmp_path / "tasks.jsonl"),
                       "eval_fraction": 0.34},
        "rollout.max_turns": 2, "rollout.max_episode_tokens": 4096,
        "rollout.length_bucket": 4096, "train.max_steps": 1, "eval.every": 1,
        "eval.num_episodes": 2, "eval.at_start": False, "log.progress": False,
        "log.tensorboard": False, "checkpoint.export_final": False})
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        (row,) = trainer.train()
    finally:
        trainer.close()
    assert row["step"] == 1
    evals = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "eval/success_rate" in r]
    assert [r["step"] for r in evals] == [1]
    meta = trainer.last_metadata
    assert len(meta) == 8  # 2 tasks x 4 episodes
    prompts = [m["messages"][0]["content"] for m in meta]
    # the system prompt lists the server's tools (as the MCP server described them)
    assert all("city_facts" in p and "list_countries" in p for p in prompts)
    assert np.isfinite(row["train/loss"]) and np.isfinite(row["train/pg_loss"])
