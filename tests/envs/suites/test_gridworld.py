"""The gridworld maze: a scripted explorer solves it in 30-100 turns through the full text
path (render -> parse_action -> step), the view never shows more than the window, dense
and sparse rewards add up, layouts are deterministic, and bad actions are observations."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from agentic_rl.envs import make_env_suite
from agentic_rl.envs.base import Task
from agentic_rl.envs.suites.gridworld import (
    GridworldEnv,
    Layout,
    _distances,
    _optimal_turns,
    generate_gridworld_tasks,
    generate_layout,
    layout_fingerprint,
    scripted_solver,
)
from agentic_rl.envs.tools.parser import ParserLimits, parse_action

VIEW_RE = re.compile(r"View \(rows (-?\d+) to (-?\d+), columns (-?\d+) to (-?\d+)\):")


def call(name, **arguments):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def act(env, text, limits=None):
    return env.step(parse_action(text, env.tools, limits))


def play(env, task, policy=None):
    """One episode of `policy` (default: the scripted solver) through the text path:
    returns (texts sent, step results, initial messages)."""
    policy = policy or scripted_solver()
    first = messages = env.reset(task, seed=0)
    texts, results = [], []
    while True:
        text = policy(messages)
        texts.append(text)
        results.append(act(env, text))
        if results[-1].done:
            return texts, results, first
        messages = results[-1].observation


def corridor(length=9, item_at=5):
    """One row of floor: start at column 1, one item, the exit at the far end."""
    grid = ["#" * (length + 2), "#" + "." * length + "#", "#" * (length + 2)]
    return Task("corridor", "Collect the item, then exit.", None,
                {"grid": grid, "start": [1, 1], "exit": [1, length], "items": [[1, item_at]]})


def test_the_solver_succeeds_in_30_to_100_turns_on_default_seeds():
    suite = make_env_suite("gridworld", num_train=50, num_eval=10)
    env = suite.make_env()
    assert env.max_turns == 100 and env.view_radius == 2
    tasks = [*suite.tasks.split("train"), *suite.tasks.split("eval")]
    turns, successes = [], 0
    for task in tasks:
        texts, results, _ = play(env, task)
        last = results[-1]
        assert last.info["turn"] == len(texts) <= 100
        if last.info["success"]:
            successes += 1
            turns.append(len(texts))
            assert len(texts) >= last.info["optimal_turns"] >= 30
            assert last.info["items_collected"] == len(task.data["items"])
            assert last.reward >= 1.0 and not last.info["truncated"]
        else:
            assert len(texts) == 100 and last.info["truncated"]
    assert successes >= 0.95 * len(tasks), (successes, len(tasks))
    assert min(turns) >= 30 and max(turns) <= 100
    assert sum(turns) / len(turns) > 40  # exploring costs more than the omniscient minimum


def test_every_generated_task_needs_30_turns_even_with_the_map_known():
    tasks = generate_gridworld_tasks(30, seed=4)
    for task in tasks:
        layout = Layout.from_data(task.data)
        assert layout.optimal_turns >= 30
        assert layout.optimal_turns == _optimal_turns(layout.grid, layout.start, layout.exit,
                                                      layout.items)
    # the dynamic programme is the exact tour length: compare with brute force
    for task in tasks[:5]:
        lay = Layout.from_data(task.data)
        d = {p: _distances(lay.grid, p) for p in (lay.start, *lay.items)}
        brute = min(
            d[lay.start][order[0]] + sum(d[a][b] for a, b in zip(order, order[1:]))
            + d[order[-1]][lay.exit]
            for order in itertools.permutations(lay.items)
        )
        assert lay.optimal_turns == brute + len(lay.items)


def test_observations_show_only_the_view_window():
    task = generate_gridworld_tasks(1, seed=9)[0]
    lay = Layout.from_data(task.data)
    env = GridworldEnv(view_radius=1)
    texts, results, first = play(env, task)
    prompt = "\n".join(m["content"] for m in first)
    assert not any(row in prompt for row in lay.grid[1:-1])  # no full map row is ever shown
    items = {tuple(p) for p in lay.items}
    for msg in [first[-1], *(r.observation[0] for r in results[:-1])]:
        text = msg["content"]
        m = list(VIEW_RE.finditer(text))[-1]
        r0, r1, c0, c1 = map(int, m.groups())
        assert (r1 - r0, c1 - c0) == (2, 2)
        shown = text[m.end():].strip("\n").split("\n")
        assert len(shown) == 3 and all(len(row) == 3 for row in shown)  # nothing else
        pos = (r0 + 1, c0 + 1)
        for i, j in itertools.product(range(3), range(3)):
            r, c = r0 + i, c0 + j
            truth = lay.grid[r][c] if 0 <= r < len(lay.grid) and 0 <= c < len(lay.grid[0]) else "#"
            if (r, c) == pos:
                assert shown[i][j] == "@"
            elif (r, c) == lay.exit:
                assert shown[i][j] == "E"
            elif shown[i][j] == "*":
                assert (r, c) in items
            else:
                assert shown[i][j] == truth
    # an item is invisible until it is inside the window
    env = GridworldEnv(view_radius=2)
    start = env.reset(corridor(item_at=5), seed=0)[-1]["content"]
    assert "*" not in start.split("):")[-1]
    assert "*" not in act(env, call("move", direction="east")).observation[0]["content"]
    assert "*" in act(env, call("move", direction="east")).observation[0]["content"]


def test_dense_and_sparse_rewards_sum_correctly():
    task = generate_gridworld_tasks(1, seed=2)[0]
    dense_env, sparse_env = GridworldEnv(reward_mode="dense"), GridworldEnv(reward_mode="sparse")
    d_texts, dense, _ = play(dense_env, task)
    s_texts, sparse, _ = play(sparse_env, task)
    assert d_texts == s_texts  # the observations (and so the solver) do not depend on the mode
    assert [r.observation for r in dense] == [r.observation for r in sparse]
    assert dense[-1].info["success"]
    assert [r.reward for r in sparse] == [0.0] * (len(sparse) - 1) + [1.0]
    info = dense[-1].info
    floor = info["floor_cells"]
    initial = len({(r, c) for r in range(task.data["start"][0] - 2, task.data["start"][0] + 3)
                   for c in range(task.data["start"][1] - 2, task.data["start"][1] + 3)
                   if 0 <= r < len(task.data["grid"]) and 0 <= c < len(task.data["grid"][0])
                   and task.data["grid"][r][c] == "."})
    expected = 0.2 * (info["cells_seen"] - initial) / (floor - initial) + 0.3 + 1.0
    assert sum(r.reward for r in dense) == pytest.approx(expected)
    assert all(r.reward >= 0 for r in dense) and sum(r.reward for r in dense) <= 1.5 + 1e-9
    pickups = [r.reward for t, r in zip(d_texts, dense) if '"pick_up"' in t]
    assert len(pickups) == 3 and all(x >= 0.1 - 1e-9 for x in pickups)
    # a failed episode earns no terminal reward in either mode
    env = GridworldEnv(reward_mode="sparse", max_turns=3)
    env.reset(task, seed=0)
    assert sum(act(env, call("look")).reward for _ in range(3)) == 0.0


def test_layouts_are_deterministic_and_splits_disjoint():
    a, b = generate_gridworld_tasks(5, seed=3), generate_gridworld_tasks(5, seed=3)
    assert a == b
    assert generate_layout("x") == generate_layout("x") != generate_layout("y")
    suite = make_env_suite("gridworld", num_train=30, num_eval=30, seed=0)
    train = {layout_fingerprint(Layout.from_data(t.data)) for t in suite.tasks.split("train")}
    evals = {layout_fingerprint(Layout.from_data(t.data)) for t in suite.tasks.split("eval")}
    assert len(train) == 30 and len(evals) == 30 and not train & evals
    # excluded layouts are skipped
    first = generate_gridworld_tasks(1, seed=3)[0]
    skipped = generate_gridworld_tasks(
        1, seed=3, exclude={layout_fingerprint(Layout.from_data(first.data))})[0]
    assert skipped.data != first.data
    # the same actions replay the same episode
    env = GridworldEnv()
    t1, r1, _ = play(env, a[0])
    t2, r2, _ = play(env, a[0])
    assert t1 == t2 and [r.observation for r in r1] == [r.observation for r in r2]


def test_bad_actions_are_clear_observations_not_crashes():
    env = GridworldEnv()
    env.reset(corridor(), seed=0)
    r = act(env, call("move", direction="north"))
    text = r.observation[0]["content"]
    assert "Blocked: there is a wall to the north" in text and "row 1, column 1" in text
    assert not r.done and r.reward == 0.0
    r = act(env, call("teleport", to="exit"))
    assert "unknown tool 'teleport'" in r.observation[0]["content"]
    assert r.info["tool_error_kinds"] == ["unknown_tool"]
    r = act(env, call("move", direction="up"))
    assert "must be one of ['north', 'south', 'east', 'west']" in r.observation[0]["content"]
    assert r.info["tool_error_kinds"] == ["bad_arguments"]
    r = act(env, '<tool_call>{"name": "move", "arguments": {"direction": </tool_call>')
    assert "not valid JSON" in r.observation[0]["content"]
    r = act(env, call("pick_up", extra=1))
    assert "unexpected argument" in r.observation[0]["content"]
    r = act(env, "I will go east.")
    assert "No tool call" in r.observation[0]["content"] and r.observation[0]["role"] == "user"
    assert "There is no item here." in act(env, call("pick_up")).observation[0]["content"]
    two = call("move", direction="east") * 2
    r = act(env, two, ParserLimits(max_calls=2))
    assert "2 tool calls in one turn; at most 1" in r.observation[0]["content"]
    assert "row 1, column 1" in r.observation[0]["content"]  # nothing was done
    assert "View (" in r.observation[0]["content"]  # every error shows the view again
    assert not r.done and r.info["turn"] == 8
    # the exit is locked until every item is carried
    for _ in range(8):
        r = act(env, call("move", direction="east"))
    assert "The exit is locked: you still need 1 more item(s)." in r.observation[0]["content"]
    assert not r.done


def test_truncation_at_max_turns_ends_without_success():
    env = GridworldEnv(max_turns=4)
    env.reset(corridor(), seed=0)
    results = [act(env, call("look")) for _ in range(4)]
    assert [r.done for r in results] == [False, False, False, True]
    last = results[-1]
    assert last.info["success"] is False and last.info["truncated"] is True
    assert "Out of turns (4)" in last.observation[-1]["content"]
    with pytest.raises(RuntimeError, match="after the episode ended"):
        act(env, call("look"))
    # the corridor solved: 4 moves, pick_up, 4 moves = 9 turns = its optimal_turns
    env = GridworldEnv(max_turns=20)
    texts, results, _ = play(env, corridor())
    assert results[-1].info["success"] and len(texts) == 9 == results[-1].info["optimal_turns"]


def test_suites_and_knob_validation():
    sparse = make_env_suite("gridworld_sparse", num_train=2, num_eval=2, size=6, num_items=4,
                            view_radius=3, max_turns=80)
    env = sparse.make_env()
    assert sparse.name == "gridworld_sparse" and env.reward_mode == "sparse"
    assert (env.view_radius, env.max_turns) == (3, 80)
    assert len(sparse.tasks.split("train")[0].data["items"]) == 4
    assert len(sparse.tasks.split("train")[0].data["grid"]) == 13
    with pytest.raises(ValueError, match="min_optimal_turns"):
        make_env_suite("gridworld", num_train=1, num_eval=1, max_turns=20)
    with pytest.raises(ValueError, match="reward_mode"):
        make_env_suite("gridworld", num_train=1, num_eval=1, reward_mode="shaped")
    with pytest.raises(ValueError, match="sparse-reward suite"):
        make_env_suite("gridworld_sparse", num_train=1, num_eval=1, reward_mode="dense")
    with pytest.raises(ValueError, match="could not place"):
        generate_layout(0, size=2, num_items=1)
    with pytest.raises(ValueError, match="not a floor cell"):
        GridworldEnv().reset(Task("t", "p", None, {**corridor().data, "exit": [0, 0]}), seed=0)
