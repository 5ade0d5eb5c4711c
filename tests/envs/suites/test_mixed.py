"""Multi-tool environments (search + calculator), the python_code environment, and one real-tool
environment driven by the rollout loop with a scripted policy."""

from __future__ import annotations

import json
import math
import re
import time

import pytest

from agentic_rl.agents import run_episodes
from agentic_rl.envs import (
    CodeToolEnv,
    generate_code_tasks,
    generate_mixed_tasks,
    generate_world,
    make_env_suite,
    parse_action,
)
from agentic_rl.envs.suites.code import _count_divisible
from agentic_rl.envs.suites.mixed import corpus_numbers
from agentic_rl.envs.tools.sandbox.sandbox import _processes_of_uid
from agentic_rl.rollout import (
    CharTokenizer,
    RolloutConfig,
    ScriptedPolicy,
    make_chat_format,
)
from tests.envs.agents import ToolDriver, solve_mixed, tool_call


@pytest.fixture(scope="module")
def mixed_suite():
    return make_env_suite("search_calc", num_train=20, num_eval=30)


def test_mixed_answers_need_both_tools(mixed_suite):
    """No answer is written in any document (search alone fails) and no question contains a
    number (the calculator alone has nothing to compute with)."""
    world = generate_world(0, num_people=160, num_companies=50, num_cities=40)
    numbers = corpus_numbers(world)
    tasks = [*mixed_suite.tasks.split("train"), *mixed_suite.tasks.split("eval")]
    assert len({t.data["kind"] for t in tasks}) == 3
    for t in tasks:
        assert float(t.answer) not in numbers and not re.search(r"\d", t.prompt)
        assert t.data["tools_needed"] == ("search", "calculator")
    assert generate_mixed_tasks(world, 5, seed=9) == generate_mixed_tasks(world, 5, seed=9)


def test_scripted_agent_uses_search_then_calculator(mixed_suite):
    for task in mixed_suite.tasks.split("eval"):
        env = mixed_suite.make_env()
        env.reset(task, seed=0)
        driver = ToolDriver(env)
        computed = solve_mixed(driver, task.prompt)
        result = driver.answer(computed)
        assert result.done and result.info["success"], (task.prompt, task.answer, computed)
        assert {"search", "open", "calculator"} <= set(driver.tools_used)
        assert driver.tools_used[-1] == "calculator" and driver.turns >= 5
    env = mixed_suite.make_env()
    env.reset(mixed_suite.tasks.split("eval")[0], seed=0)
    assert not ToolDriver(env).answer("12").info["success"]


def test_code_problems_have_correct_answers():
    for n, a, b, c in [(1000, 3, 5, 7), (9999, 4, 6, 9), (12345, 11, 13, 5)]:
        brute = sum(1 for i in range(1, n + 1) if (i % a == 0 or i % b == 0) and i % c != 0)
        assert _count_divisible(n, a, b, c) == brute
    tasks = generate_code_tasks(200, seed=2)
    assert len({t.prompt for t in tasks}) == 200 and len({t.data["kind"] for t in tasks}) == 5
    primes = next(t for t in tasks if t.data["kind"] == 0)
    n = int(re.search(r"below (\d+)", primes.prompt).group(1))
    is_prime = lambda p: all(p % d for d in range(2, math.isqrt(p) + 1))  # noqa: E731
    assert int(primes.answer) == sum(p for p in range(2, n) if is_prime(p))


# Code that a competent agent would write for each generated problem kind.
SOLUTIONS = [
    (r"sum of all prime numbers below (\d+)",
     "n = {0}\nsieve = bytearray([1]) * n\nsieve[:2] = b'\\x00\\x00'\n"
     "for i in range(2, int(n ** 0.5) + 1):\n    if sieve[i]:\n"
     "        sieve[i*i::i] = bytearray(len(range(i*i, n, i)))\n"
     "print(sum(i for i in range(n) if sieve[i]))"),
    (r"from 1 to (\d+) \(inclusive\) are divisible by (\d+) or (\d+) but not by (\d+)",
     "print(sum(1 for i in range(1, {0} + 1) if (i % {1} == 0 or i % {2} == 0) and i % {3}))"),
    (r"What is F\((\d+)\) modulo (\d+)",
     "a, b = 0, 1\nfor _ in range({0}):\n    a, b = b, (a + b) % {1}\nprint(a)"),
    (r"sum of the decimal digits of (\d+)\^(\d+)", "print(sum(map(int, str({0} ** {1}))))"),
    (r"Starting from (\d+),",
     "n, steps = {0}, 0\nwhile n != 1:\n    n = n // 2 if n % 2 == 0 else 3 * n + 1\n"
     "    steps += 1\nprint(steps)"),
]  # fmt: skip


def code_for(question: str) -> str:
    for pattern, template in SOLUTIONS:
        if m := re.search(pattern, question):
            return template.format(*m.groups())
    raise AssertionError(question)


def test_python_code_env_episode_and_cleanup():
    suite = make_env_suite("python_code", num_train=3, num_eval=10, wall_s=5.0)
    for task in suite.tasks.split("eval")[:5]:
        env = suite.make_env()
        assert isinstance(env, CodeToolEnv)
        env.reset(task, seed=0)
        r = env.step(parse_action(tool_call("python", code=code_for(task.prompt)), env.tools))
        assert r.observation[0]["content"].strip() == task.answer
        r = env.step(parse_action(tool_call("python", code="undefined_var"), env.tools))
        assert "NameError" in r.observation[0]["content"] and not r.done
        r = env.step(parse_action(f"<answer>{task.answer}</answer>", env.tools))
        assert r.done and r.info["success"]
        uid = env.sandbox.uid
        env.close()
        assert uid is None or _processes_of_uid(uid) == []


def test_code_env_reset_starts_a_fresh_interpreter():
    suite = make_env_suite("python_code", num_train=2, num_eval=2)
    env = suite.make_env()
    task = suite.tasks.split("eval")[0]
    env.reset(task, seed=0)
    env.step(parse_action(tool_call("python", code="secret = 1"), env.tools))
    env.reset(task, seed=1)
    r = env.step(parse_action(tool_call("python", code="secret"), env.tools))
    assert "NameError" in r.observation[0]["content"]
    env.close()


def python_solver(request, history: str) -> str:
    """Turn 0: write and run code for the problem; turn 1: answer with the printed number."""
    if request.turn == 0:
        question = re.findall(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", history, re.DOTALL)[-1]
        return "Let me compute it. " + tool_call("python", code=code_for(question))
    output = re.findall(r"<tool_response>\n(.*?)\n</tool_response>", history, re.DOTALL)[-1]
    return f"<answer>{output.strip()}</answer>"


def test_python_code_env_through_the_rollout_loop():
    suite = make_env_suite("python_code", num_train=2, num_eval=4)
    made = []

    def make_env():
        env = suite.make_env()
        made.append(env)
        return env

    tok = CharTokenizer()
    policy = ScriptedPolicy(tok, python_solver, logprob=-0.5)
    config = RolloutConfig(max_turns=4, max_new_tokens=1024, max_episode_tokens=8192)
    res = run_episodes(
        policy, make_chat_format("smollm2", tok), make_env, suite.tasks.split("eval"),
        group_size=2, config=config,
    )  # fmt: skip
    assert not res.errors and res.metrics["success_rate"] == 1.0
    assert res.batch.tokens.shape[0] == 8
    for meta in res.batch.metadata:
        assert [c["name"] for c in meta["tool_calls"]] == ["python"]
        assert meta["num_turns"] == 2 and meta["termination"] == "done"
        tool_msg = meta["messages"][3]
        assert tool_msg["role"] == "tool" and json.dumps(tool_msg["content"])
    assert len(made) == 8
    # The loop closes every env on its worker threads; closing kills each sandbox.
    deadline = time.monotonic() + 10
    while not all(env.sandbox._closed for env in made):
        assert time.monotonic() < deadline, "the rollout did not close its environments"
        time.sleep(0.05)
    assert all(env.sandbox.uid is None or _processes_of_uid(env.sandbox.uid) == [] for env in made)
