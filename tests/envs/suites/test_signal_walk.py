"""The signal walk: the scripted solver succeeds in exactly `length` turns, a random a/b
policy almost never does (exact binomial tail, checked by simulation), rewards add up,
bad replies are observations, signs hold between shown cells, splits are disjoint."""

from __future__ import annotations

import random

import pytest

from agentic_rl.envs import make_env_suite
from agentic_rl.envs.base import Action
from agentic_rl.envs.suites.signal_walk import (
    SignalWalkEnv,
    generate_signal_walk_tasks,
    random_success_probability,
    scripted_solver,
)


def act(text):
    return Action(text=text, content=text)


def play(env, task, policy):
    """One episode; returns (replies, step results)."""
    messages = env.reset(task, seed=0)
    replies, results = [], []
    while True:
        reply = policy(messages)
        result = env.step(act(reply))
        replies.append(reply)
        results.append(result)
        if result.done:
            return replies, results
        messages = result.observation


@pytest.mark.parametrize("sign_every", [1, 3, 7])
def test_scripted_solver_succeeds_in_exactly_length_turns(sign_every):
    suite = make_env_suite("signal_walk", num_train=10, num_eval=10, sign_every=sign_every)
    for task in [*suite.tasks.split("train")[:10], *suite.tasks.split("eval")[:10]]:
        replies, results = play(suite.make_env(), task, scripted_solver())
        assert len(results) == 30 and results[-1].info["success"] is True
        assert "".join(replies) == task.data["signs"]
        assert sum(r.reward for r in results) == pytest.approx(2.0)  # 30 x 1/30 + 1.0


def test_random_policy_almost_never_succeeds():
    p = random_success_probability(30, 40)
    assert p == pytest.approx(0.001111, abs=1e-6)
    assert random_success_probability(2, 2) == 0.25
    suite = make_env_suite("signal_walk", num_train=50, num_eval=10)
    rng = random.Random(0)
    wins = n = 0
    for i in range(4000):
        task = suite.tasks.split("train")[i % 50]
        _, results = play(suite.make_env(), task, lambda _m: rng.choice("ab"))
        wins += results[-1].info["success"]
        n += 1
        assert len(results) <= 40
    assert wins / n < 0.005  # expected 0.0011 (4.4 of 4000)


def test_wrong_and_invalid_replies_stay_and_truncate():
    env = SignalWalkEnv(max_turns=3)
    task = generate_signal_walk_tasks(1, 0, length=5)[0]
    first = env.reset(task, seed=0)[0]["content"]
    sign = task.data["signs"][0]
    assert first.endswith(" " + sign)
    wrong = "b" if sign == "a" else "a"
    r = env.step(act(wrong))
    assert (r.reward, r.done, r.info["position"]) == (0.0, False, 0)
    assert r.observation[0]["content"] == sign
    r = env.step(act("hello"))
    assert r.reward == 0.0 and r.info["valid_action"] is False
    assert r.observation[0]["content"] == f"? {sign}"
    r = env.step(act(sign))
    assert r.reward == pytest.approx(0.2) and r.done and r.info == {
        "valid_action": True, "position": 1, "success": False, "truncated": True}
    with pytest.raises(RuntimeError):
        env.step(act("a"))


def test_signs_hold_between_shown_cells_and_blank_elsewhere():
    env = SignalWalkEnv(max_turns=40, sign_text="sign {sign}", blank_text=".")
    task = generate_signal_walk_tasks(1, 3, length=30, sign_every=4, sign_text="sign {sign}")[0]
    signs = task.data["signs"]
    assert all(signs[i] == signs[4 * (i // 4)] for i in range(30))
    env.reset(task, seed=0)
    for pos in range(1, 30):
        obs = env.step(act(signs[pos - 1])).observation[0]["content"]
        assert obs == (f"sign {signs[pos]}" if pos % 4 == 0 else ".")


def test_tasks_are_deterministic_and_splits_disjoint():
    a = make_env_suite("signal_walk", num_train=200, num_eval=100, seed=5)
    b = make_env_suite("signal_walk", num_train=200, num_eval=100, seed=5)
    assert [t.data for t in a.tasks.split("train")] == [t.data for t in b.tasks.split("train")]
    train = {t.data["signs"] for t in a.tasks.split("train")}
    evals = {t.data["signs"] for t in a.tasks.split("eval")}
    assert len(train) == 200 and len(evals) == 100 and not train & evals
    # few distinct corridors: the eval split still avoids the train one
    small = make_env_suite("signal_walk", length=8, sign_every=2, num_train=10, num_eval=6)
    assert not ({t.data["signs"] for t in small.tasks.split("train")}
                & {t.data["signs"] for t in small.tasks.split("eval")})
    with pytest.raises(ValueError, match="distinct corridors"):
        make_env_suite("signal_walk", length=8, sign_every=2, num_train=10, num_eval=7)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="must all differ"):
        SignalWalkEnv(sign_text="x")
    with pytest.raises(ValueError, match="no episode can succeed"):
        make_env_suite("signal_walk", length=30, max_turns=20)
