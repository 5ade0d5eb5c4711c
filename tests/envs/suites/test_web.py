"""The web_search_extract suite: tasks per hop count, determinism, disjoint splits, the
environment's server lifecycle, rewards (exact match, token F1) and the scripted solver,
which answers through the tools over real HTTP."""

from __future__ import annotations

import socket
from collections import defaultdict

import pytest

from agentic_rl.envs import make_env_suite, parse_action, token_f1
from agentic_rl.envs.suites.web import (
    TEMPLATES,
    WebEnv,
    generate_web_tasks,
    solve_web_task,
    web_reward,
)
from agentic_rl.envs.tools.parser import render_tool_call


@pytest.fixture(scope="module")
def suite():
    return make_env_suite("web_search_extract", num_train=150, num_eval=150)


@pytest.fixture(scope="module")
def site(suite):
    return suite.make_env().site


def _step(env, text):
    return env.step(parse_action(text, env.tools))


def test_tasks_cover_each_hop_count(suite):
    for split in ("train", "eval"):
        tasks = suite.tasks.split(split)
        by_hops = defaultdict(int)
        for t in tasks:
            by_hops[t.data["hops"]] += 1
            assert t.data["subset"] == f"{t.data['hops']}_hop"
            assert len(t.data["path"]) == t.data["hops"]
        assert dict(by_hops) == {1: 50, 2: 50, 3: 50}
    kinds = {t.data["kind"] for t in suite.tasks.split("train")}
    assert kinds == {t.key for t in TEMPLATES}


def test_tasks_are_deterministic_and_splits_disjoint(suite, site):
    again = make_env_suite("web_search_extract", num_train=150, num_eval=150)
    assert again.tasks.split("train") == suite.tasks.split("train")
    assert again.tasks.split("eval") == suite.tasks.split("eval")
    other = make_env_suite("web_search_extract", num_train=150, num_eval=150, seed=1)
    assert other.tasks.split("train") != suite.tasks.split("train")
    train = {t.prompt for t in suite.tasks.split("train")}
    assert len(train) == 150 and not train & {t.prompt for t in suite.tasks.split("eval")}
    only3 = generate_web_tasks(site, 20, seed=5, hops=(3,))
    assert {t.data["hops"] for t in only3} == {3}
    with pytest.raises(ValueError, match="hops"):
        generate_web_tasks(site, 5, seed=0, hops=(4,))
    with pytest.raises(ValueError, match="could only make"):
        generate_web_tasks(site, 5000, seed=0, hops=(1,))


def test_multi_hop_answers_are_only_on_the_last_page(suite, site):
    for t in suite.tasks.split("eval"):
        path = t.data["path"]
        assert path[0] == site.entity_by_title(t.data["start"]).path
        assert t.answer in site.pages[path[-1]].text()
        for earlier in path[:-1]:
            assert t.answer not in site.pages[earlier].text(), t.prompt


def test_env_starts_and_stops_its_server(suite):
    task = suite.tasks.split("eval")[0]
    with suite.make_env() as env:
        assert env.server is None
        with pytest.raises(RuntimeError, match="before reset"):
            _step(env, "<answer>x</answer>")
        messages = env.reset(task, seed=0)
        assert [m["role"] for m in messages] == ["system", "user"]
        assert messages[1]["content"] == task.prompt and '"name": "open"' in messages[0]["content"]
        port = env.server.port
        out = _step(env, render_tool_call("open", {"url": "/"}))
        assert not out.done and out.observation[0]["content"].startswith("Localpedia")
        env.reset(task, seed=0)  # the next episode of this instance reuses the server
        assert env.server.port == port
    assert env.server is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    env.close()  # idempotent


def test_error_observations_through_the_env(suite):
    with suite.make_env() as env:
        env.reset(suite.tasks.split("eval")[0], seed=0)
        out = _step(env, '<tool_call>{"name": "open", "arguments": {"url": 7}}</tool_call>')
        assert out.info["tool_error_kinds"] == ["bad_arguments"] and not out.done
        out = _step(env, render_tool_call("open", {"url": "/wiki/Nope"}))
        assert out.observation[0]["content"].startswith("Error: 404 Not Found")
        assert out.info["tool_exec_errors"] == ["tool_error"]
        out = _step(env, render_tool_call("open", {"url": "http://127.0.0.1:1/"}))
        assert "refused" in out.observation[0]["content"]


def test_rewards_exact_match_and_f1(suite):
    tasks = suite.tasks.split("eval")
    number = next(t for t in tasks if t.data["kind"] == "city_population")
    person = next(t for t in tasks if t.data["kind"] == "maker_founder")
    assert " " in person.answer
    with suite.make_env() as env:
        env.reset(number, 0)
        out = _step(env, f"<answer>{number.answer}</answer>")
        assert out.done and out.info["success"] and out.reward == pytest.approx(1.1)
        assert out.info["reward_components"] == {"correct": 1.0, "f1": 1.0, "format": 1.0}
        env.reset(number, 0)  # the thousands separators are punctuation: 1234567 == 1,234,567
        assert _step(env, f"<answer>{number.answer.replace(',', '')}</answer>").info["success"]
        env.reset(person, 0)
        first = person.answer.split()[0]
        out = _step(env, f"<answer>{first}</answer>")
        assert not out.info["success"]
        assert out.info["reward_components"]["f1"] == pytest.approx(2 / 3)
        assert out.reward == pytest.approx(0.1)
        env.reset(person, 0)
        out = _step(env, "no tags, just words")
        assert not out.info["success"] and out.reward == 0.0
    shaped = WebEnv(env.site, web_reward(f1_weight=0.5))
    with shaped:
        shaped.reset(person, 0)
        assert _step(shaped, f"<answer>{first}</answer>").reward == pytest.approx(0.1 + 1 / 3)
    assert token_f1("the Mira Tolvan", "mira tolvan") == 1.0
    assert token_f1("Mira Tolvans", "Mira Tolvan") == 0.5
    assert token_f1(None, "x") == 0.0 and token_f1("", "x") == 0.0


def test_scripted_solver_succeeds_over_http(suite):
    """>= 95% per hop count on 50 eval tasks each, with every fact read through the tools
    (the server counts the requests); turns grow with the hops."""
    stats = defaultdict(list)
    with suite.make_env() as env:
        for task in suite.tasks.split("eval"):
            env.reset(task, seed=0)
            before = env.server.requests
            solved = solve_web_task(env, task.prompt)
            assert solved.result.done
            tool_calls = len(solved.tools_used)
            assert env.server.requests >= before + tool_calls  # redirects may add requests
            assert solved.result.info["pages_visited"][-1] == task.data["path"][-1] or not \
                solved.result.info["success"]
            stats[task.data["hops"]].append((solved.result.info["success"], solved.turns))
    report = {h: (sum(s for s, _ in v) / len(v), sum(n for _, n in v) / len(v))
              for h, v in sorted(stats.items())}
    print("\nscripted web solver: hops -> (success, mean turns)", report)
    for hops, (success, _) in report.items():
        assert success >= 0.95, (hops, success)
    turns = [report[h][1] for h in (1, 2, 3)]
    assert turns[0] >= 3 and turns[0] < turns[1] < turns[2]


def test_scripted_solver_fails_when_it_should(suite):
    task = suite.tasks.split("eval")[0]
    with suite.make_env() as env:
        env.reset(task, 0)
        out = solve_web_task(env, "What is the meaning of life?")
        assert out.answer is None and not out.result.info["success"] and out.turns == 1
        env.reset(task, 0)
        out = solve_web_task(env, "In what year was Nobody Atall Qqzx founded?")
        assert out.answer is None and not out.result.info["success"]
