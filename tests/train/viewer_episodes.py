"""Episodes for the viewer tests: real rollouts of the calculator environment with three
worked examples in the prompt, played by a scripted solver (a tool call, then the answer),
plus a multi-agent row."""

from __future__ import annotations

import numpy as np

from agentic_rl.agents import run_episodes
from agentic_rl.envs import make_env_suite
from agentic_rl.rollout import (
    CharTokenizer,
    RolloutConfig,
    ScriptedPolicy,
    make_chat_format,
)
from agentic_rl.train import viewer
from tests.rollout.scripts import calculator_solver

DEMOS = 3  # worked examples: 4 messages each (question, call, result, answer)


def calculator_rollout(num_tasks: int = 2, on_episode=None):
    suite = make_env_suite("calculator", num_train=4, num_eval=4, seed=0,
                           demonstrations=DEMOS)
    fmt = make_chat_format("smollm2", CharTokenizer())
    policy = ScriptedPolicy(fmt.tok, calculator_solver, logprob=-0.25)
    tasks = suite.tasks.split("eval")[:num_tasks]
    return run_episodes(policy, fmt, suite.make_env, tasks, config=RolloutConfig(max_turns=4),
                        on_episode=on_episode)


def page_records():
    """[train row with rewards and advantages, eval row, multi-agent row]."""
    res = calculator_rollout()
    b = res.batch
    advantages = np.where(b.turn_index == 0, 0.5, -0.25) * b.loss_mask
    train = viewer.records_from_batch(b.metadata, b.turn_rewards, advantages, b.turn_index,
                                      b.loss_mask, step=6, limit=1)
    evals = [viewer.trajectory_record(res.records[1].metadata, step=6, kind="eval")]
    evals[0]["success"] = False  # one failure, for the filter
    team = {"task_id": "sql-3", "episode_id": "r0-checker", "return": 1.0, "success": True,
            "termination": "done", "num_turns": 1, "agent": "checker",
            "messages": [{"role": "system", "content": "You check SQL."},
                         {"role": "user", "content": "Draft: SELECT 1"},
                         {"role": "assistant", "content": "<answer>ok</answer>"}],
            "origins": ["prompt", "prompt", "policy"],
            "info": {"transcript": [{"agent": "writer", "text": "SELECT 1"},
                                    {"agent": "checker", "text": "<answer>ok</answer>"}]}}
    multi = [viewer.trajectory_record(team, step=6, kind="train", turn_rewards=[1.0],
                                      advantages=[0.75])]
    return train + evals + multi
