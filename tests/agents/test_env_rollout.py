"""The environment loop on the one runtime (`run_episodes` = `run_agents(EnvAgent)`): what
the runtime now guarantees for every agent program. Policy errors propagate at once,
the error budget stops a failing run early, a hung environment is dropped by the step
timeout without holding up the others (nor a worker slot), and `on_episode` hears of
each episode on the caller's thread as it ends."""

from __future__ import annotations

import threading
import time

import pytest

from agentic_rl.agents import run_agents, run_episodes
from agentic_rl.envs import make_env_suite
from agentic_rl.rollout import (
    ErrorBudgetExceeded,
    Generation,
    PolicyContractError,
    RolloutConfig,
    ScriptedPolicy,
)
from tests.agents.conftest import make_service
from tests.rollout.scripts import ToyEnv, toy_task


class _RaisingPolicy(ScriptedPolicy):
    def generate(self, requests):
        raise KeyError("sampler bug")


def test_a_policy_error_propagates_through_run_agents_at_once(fmt):
    """The policy raising is a bug: run_agents re-raises it (not a dropped episode), without
    waiting for agents that are still busy elsewhere."""
    tasks = make_env_suite("calculator", num_eval=4).tasks.split("eval")

    def agent(task, llm):
        if task.id == tasks[0].id:
            time.sleep(5)  # busy: the error must not wait for it
        llm.chat([{"role": "user", "content": "q"}])
        return 1.0

    service = make_service(_RaisingPolicy(fmt.tok, ["x"]), fmt)
    start = time.monotonic()
    try:
        with pytest.raises(KeyError, match="sampler bug"):
            run_agents(agent, tasks, service, timeout_s=60, max_error_fraction=1.0)
    finally:
        service.engine.close()
    assert time.monotonic() - start < 3
    assert not service.scopes.keys() - {"serve"}  # every rollout was finished (rows freed)


def test_a_contract_violation_is_a_policy_error(fmt):
    class Bad(ScriptedPolicy):
        def generate(self, requests):
            return [Generation([5], [0.5], "stop") for _ in requests]  # log-prob > 0

    with pytest.raises(PolicyContractError, match="<= 0"):
        run_episodes(Bad(fmt.tok, ["a"]), fmt, ToyEnv, [toy_task(0), toy_task(1)],
                     config=RolloutConfig(max_error_fraction=1.0))


def test_the_error_budget_stops_a_failing_run_early(fmt):
    """3 of 8 episodes fail at their first step: the run raises then, long before the
    five healthy episodes (1000 turns each) have played out."""
    steps = []

    class CountingEnv(ToyEnv):
        def step(self, action):
            steps.append(self.task.id)
            return super().step(action)

    tasks = [toy_task(i, fail="step") if i < 3 else toy_task(i, turns=1000, sleep=0.001)
             for i in range(8)]
    policy = ScriptedPolicy(fmt.tok, lambda req, hist: "a")
    with pytest.raises(ErrorBudgetExceeded, match=r"3 of 8 episodes failed"):
        run_episodes(policy, fmt, CountingEnv, tasks,
                     config=RolloutConfig(max_turns=1000, max_episode_tokens=10**6,
                                          max_error_fraction=0.25))
    assert len(steps) < 5 * 100, len(steps)


def test_a_hung_step_is_dropped_while_the_others_finish(fmt):
    """A step that never returns: its episode is dropped at the step timeout, the run does
    not wait for its thread, and it does not keep the only worker slot either."""
    tasks = [toy_task(0, sleep=3600)] + [toy_task(i, turns=3) for i in range(1, 4)]
    policy = ScriptedPolicy(fmt.tok, lambda req, hist: "a")
    start = time.monotonic()
    res = run_episodes(policy, fmt, ToyEnv, tasks,
                       config=RolloutConfig(step_timeout_s=0.3, max_workers=1,
                                            max_error_fraction=0.5))
    assert time.monotonic() - start < 3
    (err,) = res.errors
    assert (err.task_id, err.stage) == ("toy-0", "timeout") and "0.3 s" in err.message
    assert [m["task_id"] for m in res.batch.metadata] == ["toy-1", "toy-2", "toy-3"]
    assert all(m["num_turns"] == 3 and m["termination"] == "done" for m in res.batch.metadata)
    assert "g0s0" in policy.released  # the dropped episode's row was freed


def test_on_episode_is_called_on_the_callers_thread_as_episodes_end(fmt):
    seen = []
    tasks = [toy_task(0, turns=1), toy_task(1, fail="step"), toy_task(2, turns=3)]
    policy = ScriptedPolicy(fmt.tok, lambda req, hist: "a")
    res = run_episodes(policy, fmt, ToyEnv, tasks, config=RolloutConfig(max_error_fraction=0.5),
                       on_episode=lambda m: seen.append((threading.current_thread(), m)))
    assert {t for t, _ in seen} == {threading.main_thread()}
    metas = [m for _, m in seen]
    assert metas.count(None) == 1 and len(metas) == 3
    # the one-turn episode ended before the three-turn one
    ended = [m["task_id"] for m in metas if m is not None]
    assert ended == ["toy-0", "toy-2"]
    assert [m["task_id"] for m in res.batch.metadata] == ["toy-0", "toy-2"]
