"""The file-system investigation: the scripted solver follows every chain through the full
text path in exactly 2 x hops x chains + 1 turns, observations reveal only what was
opened or matched, worlds are deterministic, and bad actions are observations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentic_rl.envs import make_env_suite
from agentic_rl.envs.base import Task
from agentic_rl.envs.suites.fs_investigation import (
    FsInvestigationEnv,
    generate_fs_tasks,
    generate_world,
    score_answer,
    scripted_solver,
    world_of,
)
from agentic_rl.envs.tools.parser import ParserLimits, parse_action


def call(name, **arguments):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def act(env, text, limits=None):
    return env.step(parse_action(text, env.tools, limits))


def play(env, task, policy=None):
    policy = policy or scripted_solver()
    first = messages = env.reset(task, seed=0)
    texts, results = [], []
    while True:
        texts.append(policy(messages))
        results.append(act(env, texts[-1]))
        if results[-1].done:
            return texts, results, first
        messages = results[-1].observation


@pytest.fixture
def env(tmp_path):
    e = FsInvestigationEnv(base_dir=tmp_path)
    yield e
    e.close()


def test_the_solver_succeeds_in_37_turns_at_the_default_difficulty():
    suite = make_env_suite("fs_investigation", num_train=8, num_eval=4)
    env = suite.make_env()
    assert env.max_turns == 100
    for task in [*suite.tasks.split("train"), *suite.tasks.split("eval")]:
        texts, results, _ = play(env, task)
        last = results[-1]
        assert last.info["success"] and last.reward == 1.0, last.info
        assert len(texts) == last.info["turn"] == 2 * 6 * 3 + 1 == 37
        assert texts[-1].startswith("<answer>") and last.info["predicted"] == task.answer
        # every turn but the answer is one tool call: 18 searches and 18 reads
        assert sum('"search_files"' in t for t in texts) == sum('"read_file"' in t for t in texts)


@pytest.mark.parametrize("chains,hops,distractors", [(1, 3, 0), (2, 4, 5), (4, 8, 60)])
def test_the_turn_count_follows_the_knobs(env, chains, hops, distractors):
    task = generate_fs_tasks(1, 5, num_chains=chains, hops=hops, num_distractors=distractors)[0]
    texts, results, _ = play(env, task)
    assert results[-1].info["success"] and len(texts) == 2 * hops * chains + 1
    world = world_of(task)
    assert len(world.chains) == chains and all(len(c) == hops for c in world.chains)


def test_observations_reveal_only_what_was_opened(env):
    task = generate_fs_tasks(1, 7)[0]
    world = world_of(task)
    texts, results, first = play(env, task)
    prompt = "\n".join(m["content"] for m in first)
    assert not any(a in prompt for a in world.answers)
    reads = [json.loads(t.split("<tool_call>")[1].split("</tool_call>")[0])["arguments"]["path"]
             for t in texts if '"read_file"' in t]
    assert reads == [p for chain in world.chains for p in chain]  # the chains, in order
    shown = ""
    for text, r in zip(texts, results):
        content = "".join(m["content"] for m in r.observation)
        if '"read_file"' in text:  # a read shows exactly that file
            path = json.loads(text.split("<tool_call>")[1].split("</tool_call>")[0])
            assert content == world.files[path["arguments"]["path"]]
        elif '"search_files"' in text:  # a search shows matching lines only
            for line in content.splitlines():
                path, _, rest = line.partition(":")
                number, _, matched = rest.partition(": ")
                assert world.files[path].splitlines()[int(number) - 1].strip() == matched
        for i, chain in enumerate(world.chains):
            if world.answers[i] in content:
                assert world.files[chain[-1]] == content  # the code shows only in its record
        shown += content
    assert all(a in shown for a in world.answers)
    # the files of other chains' hops never appear before they are read
    opened = set(reads)
    others = [p for p in world.files if p.startswith("people/") and p not in opened]
    assert others and not any(world.files[p] in shown for p in others)


def test_worlds_are_deterministic_and_splits_disjoint():
    assert generate_world("a") == generate_world("a")
    assert generate_world("a").files != generate_world("b").files
    a, b = generate_fs_tasks(3, 1), generate_fs_tasks(3, 1)
    assert a == b
    suite = make_env_suite("fs_investigation", num_train=6, num_eval=6)
    train = {t.data["world_seed"] for t in suite.tasks.split("train")}
    evals = {t.data["world_seed"] for t in suite.tasks.split("eval")}
    assert len(train) == len(evals) == 6 and not train & evals
    assert not {t.answer for t in suite.tasks.split("train")} & {
        t.answer for t in suite.tasks.split("eval")}
    world = world_of(a[0])
    assert a[0].answer == ", ".join(world.answers) and len(set(world.answers)) == 3
    # chains are disjoint and end at a service whose upstream is none
    services = [p for chain in world.chains for p in chain[1:-1]]
    assert len(services) == len(set(services)) == 3 * 4
    for chain in world.chains:
        assert "upstream = none" in world.files[chain[-2]]
        assert all("upstream = none" not in world.files[p] for p in chain[1:-2])


def test_bad_actions_are_clear_observations_not_crashes(env):
    env.reset(generate_fs_tasks(1, 0)[0], seed=0)
    cases = [
        (call("read_file", path="../../etc/passwd"), "'..' is not allowed in paths"),
        (call("read_file", path="/etc/passwd"), "absolute paths are not allowed"),
        (call("search_files", pattern="root", path="../"), "'..' is not allowed in paths"),
        (call("list_files", path="nowhere"), "no such directory: 'nowhere'"),
        (call("read_file", path="incidents"), "is a directory, not a file"),
        (call("write_file", path="x", content="y"), "unknown tool 'write_file'"),
        (call("search_files"), "missing required argument 'pattern'"),
        (call("search_files", pattern=""), "too short"),
        ('<tool_call>{"name": "read_file", </tool_call>', "not valid JSON"),
    ]
    for text, expected in cases:
        r = act(env, text)
        assert not r.done and expected in r.observation[0]["content"], (text, r.observation)
    r = act(env, call("list_files") * 2, ParserLimits(max_calls=2))
    assert "2 tool calls in one turn; at most 1 allowed" in r.observation[0]["content"]
    r = act(env, call("search_files", pattern="zzzz-not-there"))
    assert "no matches for 'zzzz-not-there'" in r.observation[0]["content"]
    assert r.info["turn"] == 11


def test_truncation_and_wrong_answers(tmp_path):
    task = generate_fs_tasks(1, 0)[0]
    env = FsInvestigationEnv(max_turns=3, base_dir=tmp_path)
    env.reset(task, seed=0)
    results = [act(env, call("list_files")) for _ in range(3)]
    assert [r.done for r in results] == [False, False, True]
    assert results[-1].info["success"] is False and results[-1].info["truncated"]
    assert results[-1].reward == 0.0
    assert "Out of turns (3)" in results[-1].observation[-1]["content"]
    with pytest.raises(RuntimeError, match="after the episode ended"):
        act(env, call("list_files"))
    codes = task.answer.split(", ")
    for text, right in [
        (f"<answer>{task.answer}</answer>", 3),
        (f"<answer> {codes[0].lower()} ,{codes[1]},  {codes[2]} </answer>", 3),
        (f"<answer>{codes[0]}, {codes[2]}, {codes[1]}</answer>", 1),
        (f"<answer>{codes[0]}, {codes[1]}</answer>", 0),
        (f"The codes are {task.answer}", 0),
    ]:
        assert score_answer(text, codes)[0] == right, text
    strict = FsInvestigationEnv(base_dir=tmp_path)
    strict.reset(task, seed=0)
    r = act(strict, f"<answer>{codes[0]}, {codes[2]}, {codes[1]}</answer>")
    assert r.done and r.reward == 0.0 and not r.info["success"] and r.info["correct_parts"] == 1
    lenient = FsInvestigationEnv(partial_credit=True, base_dir=tmp_path)
    lenient.reset(task, seed=0)
    r = act(lenient, f"<answer>{codes[0]}, {codes[2]}, {codes[1]}</answer>")
    assert r.reward == pytest.approx(1 / 3) and not r.info["success"]


def test_episode_directories_are_fresh_and_removed(tmp_path):
    env = FsInvestigationEnv(base_dir=tmp_path)
    task = generate_fs_tasks(1, 0)[0]
    env.reset(task, seed=0)
    (root,) = list(tmp_path.iterdir())
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert files == set(world_of(task).files)
    act(env, f"<answer>{task.answer}</answer>")
    assert not root.exists()
    env.reset(task, seed=0)  # a finished env can start another episode
    assert len(list(tmp_path.iterdir())) == 1
    env.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="world_seed"):
        env.reset(Task("t", "p", "x", {}), seed=0)


def test_suite_knobs():
    suite = make_env_suite("fs_investigation", num_train=2, num_eval=1, hops=4, num_chains=2,
                           num_distractors=10, max_turns=50, max_search_matches=5)
    env = suite.make_env()
    try:
        assert env.max_turns == 50 and env.limits.max_search_matches == 5
        task = suite.tasks.split("train")[0]
        assert task.data["hops"] == 4 and len(task.answer.split(", ")) == 2
        env.reset(task, seed=0)
        r = act(env, call("search_files", pattern="upstream"))
        assert "more matches not shown (at most 5)" in r.observation[0]["content"]
        assert Path(env.tools[0].fn.__self__.root).is_dir()
    finally:
        env.close()
