"""`AgentTrainer(agent=..., tasks=..., transport="http")`: a Python function written with
the openai SDK, trained on a list of tasks with no environment at all."""

from __future__ import annotations

import math

import openai
import pytest

from agentic_rl.envs import Task
from agentic_rl.train import AgentTrainer


def says_yes(task, llm):
    client = openai.OpenAI(base_url=llm.base_url, api_key=llm.api_key, max_retries=0)
    reply = client.chat.completions.create(
        model="policy", messages=[{"role": "user", "content": task.prompt}])
    return float("y" in (reply.choices[0].message.content or ""))


@pytest.mark.slow
def test_agent_trainer_trains_a_function_on_tasks(compile_cache, tmp_path):
    tasks = [Task(f"t{i}", f"Say yes ({i})") for i in range(8)]
    # the shapes of tests/train/test_loop.py's facade test: one compilation for both
    trainer = AgentTrainer(
        model="tiny", agent=says_yes, tasks=tasks, transport="http", workdir=tmp_path,
        tasks_per_step=2, group_size=4, max_new_tokens=8, max_turns=3, chat_format="chatml",
        lora_rank=4, overrides={"rollout.max_episode_tokens": 640,
                                "rollout.length_bucket": 640, "eval.every": 0,
                                "log.progress": False})
    try:
        history = trainer.train(steps=2)
        report = trainer.evaluate(num_episodes=4)
    finally:
        trainer.trainer.close()
    assert [h["step"] for h in history] == [1, 2]
    assert all(h["rollout/num_episodes"] == 8 for h in history)
    assert all(math.isfinite(h["train/loss"]) for h in history)
    assert report["eval/num_episodes"] == 4
    assert trainer.cfg.agent.program == "tests.agents.test_facade:says_yes"
