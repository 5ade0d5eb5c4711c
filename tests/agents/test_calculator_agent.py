"""The gateway experiment's agent (experiments/agents/calculator_openai.py, written only
against the openai SDK, with OpenAI `tools=` and `tool_calls`) produces, through the real
gateway, exactly the batch of the environment version of the task: same prompt with the
worked examples, same tool results, same sampled turns and rewards."""

from __future__ import annotations

import numpy as np

from agentic_rl.agents import Gateway, run_agents, run_episodes
from agentic_rl.envs import make_env_suite
from agentic_rl.rollout import RolloutConfig, ScriptedPolicy, make_chat_format
from agentic_rl.train.config_files import load_config_file
from experiments.agents.calculator_openai import agent
from tests.agents.conftest import make_service
from tests.agents.test_runtime import assert_same_batch
from tests.rollout.scripts import calculator_solver
from tests.train.conftest import REPO


def test_the_openai_sdk_agent_trains_on_the_environments_tokens():
    from agentic_rl.rollout import CharTokenizer

    cfg = load_config_file(f"{REPO / 'experiments' / 'smollm2_calculator_gateway.py'}")
    fmt = make_chat_format("smollm2", CharTokenizer())
    suite = make_env_suite("calculator", cfg.env.kwargs, num_eval=6)
    tasks = suite.tasks.split("eval")
    r = cfg.rollout
    rcfg = RolloutConfig(max_turns=r.max_turns, max_new_tokens=400, max_episode_tokens=4096)
    reference = run_episodes(ScriptedPolicy(fmt.tok, calculator_solver, logprob=-0.1), fmt,
                             suite.make_env, tasks, group_size=2, config=rcfg)
    service = make_service(ScriptedPolicy(fmt.tok, calculator_solver, logprob=-0.1), fmt,
                           max_new_tokens=400, max_context_tokens=4096, max_turns=r.max_turns,
                           render_tools=cfg.agent.render_tools)
    try:
        with Gateway(service) as gw:
            result = run_agents(agent, tasks, service, group_size=2, gateway_url=gw.url,
                                num_turns=r.max_turns)
    finally:
        service.engine.close()
    assert not result.errors and reference.metrics["success_rate"] == 1.0
    assert result.metrics["success_rate"] == 1.0
    assert_same_batch(reference.batch, result.batch)
    assert np.all(result.batch.turn_rewards[:, 1] == 1.1)
    assert service.metrics["prefix_breaks"] == 0
