"""Agent programs through `run_agents`: the environment loop run as an agent program gives
the environment loop's batch exactly (in-process and over HTTP with the openai SDK),
prefix breaks start new rows, rewards arrive by return value, reward function or post,
failures are dropped within the error budget, and concurrent agents share batches."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import openai
import pytest

from agentic_rl.agents import AgentResult, EnvAgent, Gateway, run_agents, run_episodes
from agentic_rl.envs import make_env_suite
from agentic_rl.rollout import RolloutConfig, ScriptedPolicy
from agentic_rl.rollout.types import ErrorBudgetExceeded
from tests.agents.conftest import make_service
from tests.rollout.scripts import binary_search_player, calculator_solver

FIELDS = ("tokens", "attention_mask", "loss_mask", "sample_logprobs", "turn_index", "turn_end",
          "turn_rewards", "group_id", "agent_id", "truncated")


def assert_same_batch(a, b):
    for name in FIELDS:
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)),
                                      err_msg=name)


@pytest.mark.parametrize("transport", ["inprocess", "http"])
@pytest.mark.parametrize("env", ["calculator", "guess_number"])
def test_env_as_agent_program_gives_the_env_loops_batch(fmt, env, transport):
    """Same tokens, masks, log-probs, turn ends, rewards and truncation as run_episodes,
    including the limits: binary search needs up to 7 guesses, max_turns is 5."""
    if env == "calculator":
        suite, script, max_turns = make_env_suite("calculator", num_eval=6), calculator_solver, 4
    else:
        suite, script, max_turns = (make_env_suite("guess_number", num_eval=6),
                                    binary_search_player, 5)
    tasks = suite.tasks.split("eval")
    rcfg = RolloutConfig(max_turns=max_turns, max_new_tokens=200, max_episode_tokens=2048)
    reference = run_episodes(ScriptedPolicy(fmt.tok, script, logprob=-0.25), fmt,
                             suite.make_env, tasks, group_size=2, config=rcfg, seed=7)
    service = make_service(ScriptedPolicy(fmt.tok, script, logprob=-0.25), fmt,
                           max_new_tokens=200, max_context_tokens=2048, max_turns=max_turns)
    try:
        gateway = Gateway(service).start() if transport == "http" else None
        result = run_agents(EnvAgent(suite.make_env, transport=transport), tasks, service,
                            group_size=2, seed=7, num_turns=max_turns,
                            gateway_url=gateway.url if gateway else None)
    finally:
        if transport == "http":
            gateway.stop()
        service.engine.close()
    assert not result.errors and not reference.errors
    assert_same_batch(reference.batch, result.batch)
    for key in ("success_rate", "mean_return", "truncated_rate", "mean_turns"):
        assert result.metrics[key] == reference.metrics[key], key
    if env == "guess_number":
        assert 0 < reference.metrics["truncated_rate"] < 1  # the limit was exercised


def chat_agent(turns=2, prefix_break_at=None):
    """An agent with its own loop: asks `turns` times, optionally dropping history."""

    def agent(task, llm):
        messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": task.prompt}]
        for k in range(turns):
            r = llm.chat(messages)
            messages.append(r["choices"][0]["message"])
            messages.append({"role": "user", "content": f"more {k}"})
            if k == prefix_break_at:
                messages = messages[:2] + messages[-1:]  # forget the turn: history rewritten
        return 1.0

    return agent


def test_a_rewritten_history_starts_a_new_row_and_is_counted(fmt):
    tasks = make_env_suite("calculator", num_eval=2).tasks.split("eval")
    service = make_service(ScriptedPolicy(fmt.tok, ["a", "b", "c", "d"]), fmt)
    try:
        result = run_agents(chat_agent(turns=3, prefix_break_at=0), tasks, service)
    finally:
        service.engine.close()
    rows = [m["episode_id"] for m in result.batch.metadata]
    assert rows == ["g0s0", "g0s0.1", "g1s0", "g1s0.1"]
    assert [m["num_turns"] for m in result.batch.metadata] == [1, 2, 1, 2]
    assert service.metrics["prefix_breaks"] == 2
    # the second row continues the first one's episode (its turns are the episode's
    # turns 1-2); the episode reward sits on the episode's last turn only, and the
    # episode counts once in the metrics, with its 3 turns
    assert [(r.episode, r.turn_offset) for r in result.records] == [
        (("g0s0", "g0s0"), 0), (("g0s0", "g0s0"), 1), (("g1s0", "g1s0"), 0),
        (("g1s0", "g1s0"), 1)]
    assert [m["continued"] for m in result.batch.metadata] == [True, False, True, False]
    assert result.batch.turn_rewards[:, :2].tolist() == [[0, 0], [0, 1], [0, 0], [0, 1]]
    assert [m["return"] for m in result.batch.metadata] == [1.0] * 4
    assert result.batch.group_id.tolist() == [0, 0, 1, 1]
    assert result.metrics["num_episodes"] == 2 and result.metrics["mean_turns"] == 3


def test_an_unbroken_conversation_is_one_row(fmt):
    tasks = make_env_suite("calculator", num_eval=1).tasks.split("eval")
    service = make_service(ScriptedPolicy(fmt.tok, ["a", "b", "c"]), fmt)
    try:
        result = run_agents(chat_agent(turns=3), tasks, service)
    finally:
        service.engine.close()
    assert [m["num_turns"] for m in result.batch.metadata] == [3]
    assert service.metrics["prefix_breaks"] == 0


def test_rewards_by_return_reward_function_and_post(fmt):
    tasks = make_env_suite("calculator", num_eval=3).tasks.split("eval")

    def agent(task, llm):
        r1 = llm.chat([{"role": "user", "content": task.prompt}])
        llm.reward(0.25, call_id=r1["id"])  # for the first call
        llm.chat([{"role": "user", "content": task.prompt}, r1["choices"][0]["message"],
                  {"role": "user", "content": "sure?"}])
        llm.reward(0.5)  # for the episode
        return AgentResult(answer=task.answer if task.id.endswith("0") else "wrong")

    service = make_service(ScriptedPolicy(fmt.tok, ["x", "y"]), fmt)
    try:
        result = run_agents(agent, tasks, service,
                            reward_fn=lambda task, answer: float(answer == task.answer))
    finally:
        service.engine.close()
    rewards = result.batch.turn_rewards[:, :2].tolist()
    expect = [[0.25, 0.5 + float(t.id.endswith("0"))] for t in tasks]
    assert rewards == expect
    assert [m["success"] for m in result.batch.metadata] == [True] * 3  # return > 0


def test_rewards_posted_over_http_and_bad_posts(fmt):
    tasks = make_env_suite("calculator", num_eval=1).tasks.split("eval")
    errors = {}

    def agent(task, llm):
        client = openai.OpenAI(base_url=llm.base_url, api_key=llm.api_key, max_retries=0)
        r = client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                 "content": "hi"}])
        post = httpx.post(f"{llm.rollout_url}/reward", json={"reward": 2.0, "call_id": r.id})
        post.raise_for_status()
        errors["unknown call"] = httpx.post(f"{llm.rollout_url}/reward",
                                            json={"reward": 1.0, "call_id": "nope"})
        errors["nan"] = httpx.post(f"{llm.rollout_url}/reward", content=b'{"reward": NaN}')
        errors["unknown rollout"] = httpx.post(f"{llm.rollout_url}x/reward",
                                               json={"reward": 1.0})
        return None

    service = make_service(ScriptedPolicy(fmt.tok, ["x"]), fmt)
    try:
        with Gateway(service) as gw:
            result = run_agents(agent, tasks, service, gateway_url=gw.url)
    finally:
        service.engine.close()
    assert result.batch.turn_rewards[0, 0] == 2.0
    assert result.batch.metadata[0]["agent"] == "m"  # the agent's name: the model field
    assert errors["unknown call"].status_code == 404
    assert errors["nan"].status_code == 400
    assert errors["unknown rollout"].status_code == 404
    for r in errors.values():
        assert set(r.json()["error"]) >= {"message", "type"}


def test_async_agents_and_concurrent_calls_share_batches(fmt):
    tasks = make_env_suite("calculator", num_eval=8).tasks.split("eval")

    async def agent(task, llm):
        r = await llm.achat([{"role": "user", "content": task.prompt}])
        await asyncio.sleep(0)
        return float(r["choices"][0]["message"]["content"] == "ok")

    policy = ScriptedPolicy(fmt.tok, ["ok"])
    service = make_service(policy, fmt)
    service.engine.window_s = 0.5  # long enough that 16 threads arrive within it
    live = {"n": 0}
    service.engine.expected = lambda: live["n"]
    try:
        result = run_agents(agent, tasks, service, group_size=2,
                            on_live=lambda n: live.update(n=n))
    finally:
        service.engine.close()
    assert result.metrics["success_rate"] == 1.0 and result.batch.batch_size == 16
    assert max(len(c) for c in policy.calls) == 16  # one sampler call for all of them


def test_failures_are_dropped_within_the_error_budget(fmt):
    tasks = make_env_suite("calculator", num_eval=8).tasks.split("eval")

    def agent(task, llm):
        llm.chat([{"role": "user", "content": "q"}])
        if task.id == tasks[0].id:
            raise RuntimeError("agent bug")
        if task.id == tasks[1].id:
            time.sleep(3)
        if task.id == tasks[2].id:
            return [1]  # not a reward
        return 1.0

    service = make_service(ScriptedPolicy(fmt.tok, ["x"]), fmt)
    try:
        result = run_agents(agent, tasks, service, timeout_s=1.5, max_error_fraction=0.5)
        stages = sorted((e.task_id == tasks[1].id, e.stage) for e in result.errors)
        assert stages == [(False, "agent"), (False, "agent"), (True, "timeout")]
        assert result.batch.batch_size == 5
        assert "agent bug" in " ".join(e.message for e in result.errors)
        with pytest.raises(ErrorBudgetExceeded, match="3 of 8 agent episodes failed"):
            run_agents(agent, tasks, service, timeout_s=1.5, max_error_fraction=0.25)
    finally:
        service.engine.close()


def test_an_agent_that_never_calls_the_llm_is_an_error(fmt):
    tasks = make_env_suite("calculator", num_eval=4).tasks.split("eval")
    service = make_service(ScriptedPolicy(fmt.tok, ["x"]), fmt)
    try:
        result = run_agents(lambda task, llm: 1.0 if task.id == tasks[0].id else
                            llm.chat([{"role": "user", "content": "q"}]) and 1.0,
                            tasks, service)
    finally:
        service.engine.close()
    assert [e.message for e in result.errors] == ["the agent made no LLM call"]


def test_n_choices_fork_rows_and_limits_truncate(fmt):
    tasks = make_env_suite("calculator", num_eval=1).tasks.split("eval")
    seen = {}

    def agent(task, llm):
        r = llm.chat([{"role": "user", "content": "q"}], n=2)
        assert len(r["choices"]) == 2 and len(set(r["agentic_rl"]["rows"])) == 2
        second = r["choices"][1]["message"]
        messages = [{"role": "user", "content": "q"}, second, {"role": "user", "content": "z" *
                                                               300}]
        try:
            llm.chat(messages)
        except Exception as e:  # noqa: BLE001
            seen["error"] = e
        return 1.0

    service = make_service(ScriptedPolicy(fmt.tok, ["x"]), fmt, max_context_tokens=200)
    try:
        result = run_agents(agent, tasks, service)
    finally:
        service.engine.close()
    assert seen["error"].status == 400 and seen["error"].code == "context_length_exceeded"
    meta = result.batch.metadata
    assert [m["episode_id"] for m in meta] == ["g0s0", "g0s0.1"]
    assert result.batch.truncated.tolist() == [False, True]  # the second row hit the limit


def test_rows_beyond_the_per_episode_cap_are_dropped_oldest_first(fmt):
    tasks = make_env_suite("calculator", num_eval=2).tasks.split("eval")
    service = make_service(ScriptedPolicy(fmt.tok, ["a", "b", "c", "d"]), fmt)
    try:
        result = run_agents(chat_agent(turns=3, prefix_break_at=0), tasks, service,
                            max_rows_per_episode=1)
    finally:
        service.engine.close()
    assert [m["episode_id"] for m in result.batch.metadata] == ["g0s0.1", "g1s0.1"]
    assert result.metrics["dropped_rows"] == 2
    assert result.batch.turn_rewards[:, :2].tolist() == [[0, 1], [0, 1]]  # final reward kept
