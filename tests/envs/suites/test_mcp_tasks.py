"""Tasks from an MCP server (agents/task_gen.py, envs/suites/mcp_tasks.py), against the real
atlas MCP server (agentic_rl/envs/tools/mcp/atlas_server.py, started over stdio):
proposals are kept only when a real call answers them, each rejection is counted by
reason, and the `mcp` environment runs episodes with the server's tools."""

from __future__ import annotations

import json
import re
import sys

import pytest

from agentic_rl.agents.task_gen import (
    generate_tool_tasks,
    generation_messages,
    hint_for,
    parse_proposal,
    write_tasks_jsonl,
)
from agentic_rl.envs import make_env_suite
from agentic_rl.envs.base import Action, Task
from agentic_rl.envs.suites.mcp_tasks import grounded_reward, load_tasks_jsonl, server_spec
from agentic_rl.envs.tools.base import ToolCall, execute_tool
from agentic_rl.envs.tools.mcp import McpToolset
from agentic_rl.envs.tools.mcp.atlas_server import generate_atlas
from agentic_rl.envs.tools.parser import render_tool_call

SERVER = f"{sys.executable} -m agentic_rl.envs.tools.mcp.atlas_server stdio"
ATLAS = generate_atlas(0)
COUNTRY = next(iter(ATLAS))
CITY = ATLAS[COUNTRY][0]


@pytest.fixture(scope="module")
def toolset():
    with McpToolset(server_spec(SERVER), timeout_s=10.0) as ts:
        yield ts


def _proposal(question, name, **arguments):
    return json.dumps({"question": question, "call": {"name": name, "arguments": arguments}})


@pytest.mark.parametrize("text,want", [
    (_proposal("Which cities are in X?", "list_cities", country="X"),
     ("Which cities are in X?", "list_cities", {"country": "X"})),
    ('Sure!\n```json\n{"question": "Q?", "name": "add", "arguments": {"a": 1, "b": 2}}\n```',
     ("Q?", "add", {"a": 1, "b": 2})),
    ('{"question": "Q?", "call": {"tool": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}}',
     ("Q?", "add", {"a": 1, "b": 2})),
    ('{"broken": true} then {"question": "Q?", "call": {"name": "t"}}', ("Q?", "t", {})),
    ("no json here", None),
    ('{"question": "", "call": {"name": "t", "arguments": {}}}', None),
    ('{"question": "Q?", "call": {"name": 3, "arguments": {}}}', None),
    (None, None),
])
def test_parse_proposal(text, want):
    assert parse_proposal(text) == want


def test_generator_sees_worked_examples_then_the_tool_and_a_fitting_hint(toolset):
    by = {t.name: t for t in toolset.tools}
    notes = ["list_countries() -> Aldoria, Brenmark",
             'city_facts({"city": "Vessa"}) -> Vessa: country Aldoria, population 412000']
    assert hint_for(by["list_cities"], notes, 0) == "Aldoria"
    assert hint_for(by["list_cities"], notes, 1) == "Brenmark"
    assert hint_for(by["add"], notes, 0) == "2 and 7"  # one number seen: a made-up pair
    notes.append('add({"a": 1, "b": 2}) -> 3.0')
    # numbers from the results only (not the call's own arguments)
    assert hint_for(by["add"], notes, 0) == "412000 and 3.0"
    assert hint_for(by["add"], notes, 1) == "3.0 and 412000"
    msgs = generation_messages(by["city_facts"], "Vessa")
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert "city_facts(city: string)" in msgs[-1]["content"] and "Vessa" in msgs[-1]["content"]


def test_generation_keeps_only_what_a_real_call_answers(toolset):
    """A scripted generator (one reply per kind of proposal, in order) against the real
    server: every rejection reason is counted once, and each kept task's reference is
    what its call returns when run again."""
    cities = ", ".join(c.name for c in ATLAS[COUNTRY])
    replies = iter([
        "I cannot write JSON",                                                    # unparsed
        _proposal(f"How big is {CITY.name}?", "city_size", city=CITY.name),       # unknown
        _proposal(f"How big is {CITY.name}?", "city_facts", town=CITY.name),      # bad args
        _proposal("What about Nowhere?", "city_facts", city="Nowhere"),           # tool error
        _proposal(f"Which cities are in {COUNTRY}?", "list_cities", country=COUNTRY),  # kept
        _proposal("Which cities are there?", "list_cities", country=COUNTRY),     # not grounded
        _proposal(f"Is {CITY.name} a city of {COUNTRY}: {cities}?", "list_cities",
                  country=COUNTRY),                                               # leaks
        _proposal(f"which cities are in {COUNTRY}", "list_cities", country=COUNTRY),  # dup
        _proposal(f"How many people live in {CITY.name}?", "city_facts", city=CITY.name),
        _proposal("What is 37 minus 19?", "subtract", a=37, b=-19),               # not grounded
        _proposal("What is 2 plus 40?", "add", a=2, b=40, c=3),                   # repaired, kept
    ])
    seen_prompts = []

    def chat(messages):
        seen_prompts.append(messages[-1]["content"])
        return next(replies)

    tasks, stats = generate_tool_tasks(chat, toolset.tools, 3, max_attempts=11)
    assert stats["attempts"] == 11 and stats["kept"] == 3 and stats["explored"] == 1
    for reason in ("unparsed", "unknown_tool", "bad_arguments", "tool_error",
                   "leaks_answer", "duplicate"):
        assert stats[reason] == 1, (reason, stats)
    assert stats["not_grounded"] == 2 and stats["repaired"] == 2  # town=; c=
    assert [t.prompt for t in tasks] == [f"Which cities are in {COUNTRY}?",
                                         f"How many people live in {CITY.name}?",
                                         "What is 2 plus 40?"]
    by = {t.name: t for t in toolset.tools}
    for t in tasks:
        (call,) = t.data["calls"]
        assert execute_tool(by[call["name"]], call["arguments"]).content.strip() == t.answer
    assert str(CITY.population) in tasks[1].answer and float(tasks[2].answer) == 42
    assert tasks[2].data["calls"][0]["arguments"] == {"a": 2, "b": 40}
    # the first proposal is for list_cities, hinted with the first country that the
    # exploration call (list_countries) returned
    assert "Tool: list_cities(" in seen_prompts[0] and f"Value: {COUNTRY}\n" in seen_prompts[0]


def test_exploration_calls_only_the_named_no_argument_tools(toolset):
    prompts = []

    def chat(messages):
        prompts.append(messages[-1]["content"])
        return "no"

    _, stats = generate_tool_tasks(chat, toolset.tools, 1, max_attempts=1, explore=())
    assert stats["explored"] == 0 and "Value: (any)" in prompts[-1]
    _, stats = generate_tool_tasks(chat, toolset.tools, 1, max_attempts=1,
                                   explore=("list_countries",))
    assert stats["explored"] == 1 and f"Value: {COUNTRY}" in prompts[-1]


def test_generation_needs_a_tool_with_arguments_and_n_positive(toolset):
    no_args = [t for t in toolset.tools if t.name == "list_countries"]
    with pytest.raises(ValueError, match="arguments"):
        generate_tool_tasks(lambda m: "", no_args, 2)
    with pytest.raises(ValueError, match="n must be"):
        generate_tool_tasks(lambda m: "", toolset.tools, 0)


def _tasks_file(tmp_path, toolset):
    tasks = [
        Task(f"t{i}", f"How many people live in {c.name}?",
             execute_tool(next(t for t in toolset.tools if t.name == "city_facts"),
                          {"city": c.name}).content,
             {"calls": [{"name": "city_facts", "arguments": {"city": c.name}}]})
        for i, c in enumerate(ATLAS[COUNTRY])]
    path = tmp_path / "tasks.jsonl"
    write_tasks_jsonl(path, tasks)
    return path, tasks


def test_mcp_env_runs_an_episode_with_the_servers_tools(tmp_path, toolset):
    path, tasks = _tasks_file(tmp_path, toolset)
    assert load_tasks_jsonl(path) == tasks
    suite = make_env_suite("mcp", server=SERVER, tasks_file=str(path), eval_fraction=0.34)
    assert len(suite.tasks.split("eval")) == 1 and len(suite.tasks.split("train")) == 2
    task = suite.tasks.split("train")[0]
    city = task.data["calls"][0]["arguments"]["city"]
    env = suite.make_env()
    assert {t.name for t in env.tools} >= {"city_facts", "list_cities", "add"}
    first = env.reset(task, seed=0)
    assert "city_facts" in first[0]["content"] and first[-1]["content"] == task.prompt
    call = ToolCall("city_facts", {"city": city}, id="c1")
    step = env.step(Action(render_tool_call("city_facts", {"city": city}), tool_calls=(call,)))
    assert not step.done and step.observation[0]["content"] == task.answer
    population = re.search(r"population (\d+)", task.answer).group(1)
    final = env.step(Action(f"<answer>{population}</answer>", content=""))
    assert final.done and final.info["success"] and final.reward == pytest.approx(1.1)
    env = suite.make_env()
    env.reset(task, seed=0)
    wrong = env.step(Action("<answer>about a million</answer>"))
    assert wrong.done and not wrong.info["success"]


def test_grounded_reward():
    task = Task("t", "q", "Vessa: country Aldoria, population 412000")
    r = grounded_reward()
    assert r("<answer>412000</answer>", task) == 1.0
    assert r("<answer>Aldoria</answer>", task) == 1.0
    assert r("<answer>412000 people</answer>", task) == 0.0
    assert r("<answer></answer>", task) == 0.0


def test_bad_tasks_files_and_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        make_env_suite("mcp", server=SERVER, tasks_file=str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "q"}\n{"prompt": "no id"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        make_env_suite("mcp", server=SERVER, tasks_file=str(bad))
    with pytest.raises(ValueError, match="tasks_file is required"):
        make_env_suite("mcp", server=SERVER)
    with pytest.raises(TypeError, match="hops"):
        make_env_suite("mcp", server=SERVER, tasks_file=str(bad), hops=2)


@pytest.mark.parametrize("variant", ["judge", "verifier", "smoke"])
def test_the_experiment_config_validates(variant):
    from agentic_rl.train.config import validate
    from agentic_rl.train.config_files import load_config_file

    cfg = validate(load_config_file(f"experiments/mcp_atlas_judge.py:{variant}"))
    assert cfg.env.name == "mcp" and cfg.judge.enabled == (variant != "verifier")
