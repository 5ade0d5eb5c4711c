"""The relative LLM judge: reply parsing (cases and fuzz), retry-then-neutral, caching with
a counting scripted policy behind the real batching engine and chat service, reward
combination, multi-row and multi-agent rendering, config validation."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentic_rl.agents import BatchingEngine, ChatService
from agentic_rl.agents.judge import (
    Combine,
    Judge,
    JudgeConfig,
    ServiceChat,
    Trajectory,
    combine_rewards,
    judge_batch,
    judge_service_config,
    pairwise_agreement,
    parse_scores,
    render_trajectory,
    trajectory_from_rows,
    trajectory_keys,
)
from agentic_rl.rollout import ScriptedPolicy

# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("text,n,want", [
    ('{"scores": [{"id": 1, "score": 0.7, "why": "ok"}, {"id": 2, "score": 0.2}]}', 2,
     {1: 0.7, 2: 0.2}),
    ('[0.1, 0.9, 0.5]', 3, {1: 0.1, 2: 0.9, 3: 0.5}),
    ('Sure! ```json\n{"scores": [{"id": 2, "score": 1}, {"id": 1, "score": 0}]}\n``` done', 2,
     {1: 0.0, 2: 1.0}),
    ('{"1": 0.3, "2": {"score": "0.8"}}', 2, {1: 0.3, 2: 0.8}),
    ('{"scores": [{"trajectory_id": "trajectory_1", "score": 7}, '
     '{"trajectory_id": "2", "score": -3}]}', 2, {1: 1.0, 2: 0.0}),  # clamped
    ('Attempt 1: 0.9\nAttempt 2: 0.25', 2, {1: 0.9, 2: 0.25}),
    ('{"scores": [{"id": 1, "score": 0.5}, {"id": 1, "score": 0.9}, {"id": 9, "score": 1}]}',
     2, {1: 0.5}),  # repeated id: first wins; out of range ignored
    ('{"scores": [{"id": 1, "score": NaN}, {"id": 2, "score": true}]}', 2, {}),
    ('no scores here', 3, {}),
    ('', 2, {}),
    ('{"scores": [{"id": 1, "score": 0.4}', 2, {1: 0.4}),  # cut JSON: the line fallback
    ('prose {"x": 1} then {"scores": [0.2, 0.6]}', 2, {1: 0.2, 2: 0.6}),
])
def test_parse_scores_cases(text, n, want):
    assert parse_scores(text, n) == pytest.approx(want)


def test_a_copied_format_example_is_not_a_score():
    """The embedded model copies the prompt's example reply: that must read as no scores
    (then retry, then neutral), not as the example's numbers."""
    from agentic_rl.agents.judge import DEFAULT_PROMPT, STRICT_RETRY

    assert parse_scores(DEFAULT_PROMPT, 4) == {}
    assert parse_scores(STRICT_RETRY, 2) == {}


def test_parse_scores_odd_inputs():
    assert parse_scores(None, 2) == {}
    assert parse_scores("[0.5]", 0) == {}
    assert parse_scores("[" * 5000 + "]" * 5000, 2) == {}  # deep nesting: no RecursionError
    assert parse_scores("{" * 100_000, 2) == {}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400), st.integers(0, 6))
def test_parse_scores_never_raises(text, n):
    out = parse_scores(text, n)
    assert set(out) <= set(range(1, n + 1))
    assert all(0.0 <= v <= 1.0 for v in out.values())


def test_parse_scores_fuzz_json_like():
    rng = random.Random(0)
    pieces = ['{', '}', '[', ']', '"scores"', ':', ',', '"id"', '"score"', '1', '2', '0.5',
              '-1e9', 'NaN', 'null', '"x"', '```', 'Attempt 2:', ' ', '\n', '1e400']
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        out = parse_scores(text, 3)
        assert all(0.0 <= v <= 1.0 and i in (1, 2, 3) for i, v in out.items())


# ------------------------------------------------------------------ judge with a fake chat


def _traj(*texts):
    return [Trajectory([(None, "assistant", t)]) for t in texts]


class FakeChat:
    def __init__(self, replies):
        self.replies, self.calls = list(replies), []

    def __call__(self, messages):
        self.calls.append(messages)
        return self.replies.pop(0) if self.replies else "nothing"


def test_retry_then_neutral():
    chat = FakeChat(["garbage", '{"scores": [{"id": 1, "score": 0.9}]}'])
    judge = Judge(chat, JudgeConfig(neutral=0.5))
    assert judge.score_group("t", _traj("a", "b", "c")) == [0.9, 0.5, 0.5]
    assert len(chat.calls) == 2
    retry = chat.calls[1]
    assert retry[-2] == {"role": "assistant", "content": "garbage"}
    assert "[1, 2, 3]" in retry[-1]["content"]  # the missing ids are named
    m = judge.metrics
    assert (m["calls"], m["retries"], m["malformed"], m["neutral_scores"]) == (2, 1, 1, 2)


def test_retry_completes_the_scores():
    chat = FakeChat(['{"scores": [{"id": 1, "score": 0.9}]}', "[0.1, 0.3]"])
    judge = Judge(chat)
    assert judge.score_group("t", _traj("a", "b")) == [0.9, 0.3]  # id 1 kept from the first
    assert judge.metrics["malformed"] == 0 and judge.metrics["retries"] == 1


def test_a_raising_chat_gives_neutral_scores():
    def boom(messages):
        raise ConnectionError("down")

    judge = Judge(boom, JudgeConfig(neutral=0.25))
    assert judge.score_group("t", _traj("a", "b")) == [0.25, 0.25]
    assert judge.metrics["errors"] == 1 and judge.metrics["malformed"] == 1


def test_a_group_of_one_is_not_judged():
    chat = FakeChat([])
    assert Judge(chat).score_group("t", _traj("a")) == [0.5]
    assert not chat.calls


def test_prompt_shrinks_to_fit():
    chat = FakeChat(["[1, 0]"])
    judge = Judge(chat, JudgeConfig(max_prompt_tokens=300, max_chars_per_trajectory=5000,
                                    max_chars_per_message=5000),
                  count_tokens=lambda msgs: sum(len(m["content"]) for m in msgs) // 4)
    judge.score_group("t", _traj("x" * 5000, "y" * 5000))
    assert sum(len(m["content"]) for m in chat.calls[0]) // 4 <= 300
    assert judge.metrics["shrunk"] > 0


# ------------------------------------------------------------------ caching, real service


def test_cache_with_a_counting_policy(fmt):
    def script(request, history):
        n = history.count("=== Attempt")
        return json.dumps({"scores": [{"id": i, "score": i / n} for i in range(1, n + 1)]})

    policy = ScriptedPolicy(fmt.tok, script)
    engine = BatchingEngine(policy, window_s=0.002)
    try:
        service = ChatService(engine, fmt, judge_service_config(200, 8192))
        judge = Judge(ServiceChat(service, max_tokens=200))
        group = ("Add 2 and 3.", _traj("5", "6", "The sum is 5."))
        other = ("Add 2 and 3.", _traj("5", "7"))
        first = judge.score_groups([group, other])
        assert first == [[1 / 3, 2 / 3, 1.0], [0.5, 1.0]]
        calls = sum(len(c) for c in policy.calls)
        assert calls == 2
        again = judge.score_groups([group, other, group])
        assert again == [first[0], first[1], first[0]]
        assert sum(len(c) for c in policy.calls) == calls  # no second call
        assert judge.metrics["cache_hits"] == 3
        # a different rubric is a different input
        judge2 = Judge(judge.chat, JudgeConfig(rubric="Shorter is better."))
        judge2.cache = judge.cache
        judge2.score_group(*group)
        assert sum(len(c) for c in policy.calls) == calls + 1
        assert not service.scopes.keys() - {"serve"}  # each judge call's scope finished
    finally:
        engine.close()


# ------------------------------------------------------------------ rendering


def test_multi_row_episode_renders_each_message_once():
    first = {"messages": [{"role": "system", "content": "sys"},
                          {"role": "user", "content": "task?"},
                          {"role": "assistant", "content": "step one"},
                          {"role": "user", "content": "obs one"},
                          {"role": "assistant", "content": "step two"}],
             "origins": ["prompt", "prompt", "policy", "environment", "policy"],
             "turn_offset": 0, "continued": True}
    second = {"messages": [{"role": "system", "content": "sys"},
                           {"role": "user", "content": "task?"},
                           {"role": "user", "content": "summary of one and two"},
                           {"role": "assistant", "content": "step three"}],
              "origins": ["prompt", "prompt", "prompt", "policy"], "turn_offset": 2,
              "continued": False}
    t = trajectory_from_rows([second, first])
    assert [c for _, _, c in t.steps] == ["step one", "obs one", "step two", "step three"]
    text = render_trajectory(t, 10_000, 1000)
    assert "sys" not in text and "task?" not in text


def test_multi_agent_rendering_tags_agents_in_call_order():
    prefix = "abcdef123456"

    def cid(k):
        return f"chatcmpl-{prefix}{k:012x}"

    solver = {"agent": "solver", "messages": [
        {"role": "user", "content": "task?"}, {"role": "assistant", "content": "draft 12"},
        {"role": "user", "content": "critic says: check"},
        {"role": "assistant", "content": "final 13"}],
        "origins": ["prompt", "policy", "environment", "policy"], "call_ids": [cid(0), cid(2)]}
    critic = {"agent": "critic", "messages": [
        {"role": "user", "content": "review draft 12"},
        {"role": "assistant", "content": "check the carry"}],
        "origins": ["prompt", "policy"], "call_ids": [cid(1)]}
    t = trajectory_from_rows([solver, critic])
    assert [(a, c) for a, _, c in t.steps] == [
        ("solver", "draft 12"), ("critic", "check the carry"),
        ("solver", "critic says: check"), ("solver", "final 13")]
    text = render_trajectory(t, 10_000, 1000)
    assert "critic (assistant): check the carry" in text


def test_truncation_keeps_head_and_tail():
    t = Trajectory([(None, "assistant", "HEAD" + "x" * 5000 + "TAIL")])
    text = render_trajectory(t, 200, 100)
    assert len(text) <= 200 and "HEAD" in text and "TAIL" in text and "[...]" in text


# ------------------------------------------------------------------ combining


def test_weighted_and_judge_only():
    tr = np.array([[0.0, 1.0], [0.5, 0.0], [0.0, 0.0]], np.float32)
    last = np.array([1, 0, -1])
    final, traj, group = np.array([True] * 3), np.array([0, 1, -1]), np.array([0, 0, -1])
    judge = np.array([0.2, 0.8])
    out = combine_rewards(tr, last, final, traj, group, judge, Combine("weighted", 0.5, 2.0))
    np.testing.assert_allclose(out, [[0.0, 0.5 + 0.4], [0.25 + 1.6, 0.0], [0.0, 0.0]],
                               rtol=1e-6)
    only = combine_rewards(tr, last, final, traj, group, judge, Combine("weighted", 0.0, 1.0))
    np.testing.assert_allclose(only, [[0.0, 0.2], [0.8, 0.0], [0.0, 0.0]], rtol=1e-6)


def test_tiebreak_orders_only_ties():
    # group 0: returns 1, 1, 0 (the judge prefers the failure); group 1: all 0
    tr = np.array([[1.0], [1.0], [0.0], [0.0], [0.0]], np.float32)
    last, final = np.zeros(5, int), np.ones(5, bool)
    traj, group = np.arange(5), np.array([0, 0, 0, 1, 1])
    judge = np.array([0.1, 0.9, 1.0, 0.3, 0.7])
    out = combine_rewards(tr, last, final, traj, group, judge, Combine("tiebreak", eps=1.0))
    r = out[:, 0]
    assert r[1] > r[0] > r[2]  # ties broken, the verifier's order kept
    assert r[4] > r[3]
    assert np.all(r[:2] > 0.9) and r[2] < 0.6


def test_only_the_final_row_gets_the_judge_part():
    tr = np.array([[0.0, 0.0], [0.0, 1.0]], np.float32)
    last, final = np.array([1, 1]), np.array([False, True])  # row 0: continued
    traj, group = np.array([0, 0]), np.array([0, 0])
    out = combine_rewards(tr, last, final, traj, group, np.array([0.4]),
                          Combine("weighted", 1.0, 1.0))
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.0, 1.4]], rtol=1e-6)


def test_trajectory_keys_multi_agent_and_padding():
    meta = [{"rollout_id": "g0s0", "agent": "a", "group_id": 0},
            {"rollout_id": "g0s0", "agent": "b", "group_id": 2},
            {"rollout_id": "g0s1", "agent": "a", "group_id": 0, "continued": True},
            {"rollout_id": "g1s0", "agent": "a", "group_id": 1},
            {"group_id": 3, "sample_index": 0}, {"group_id": 3, "sample_index": 1},
            {"padding": True}]
    traj, group, final = trajectory_keys(meta)
    assert traj.tolist() == [0, 0, 1, 2, 3, 4, -1]
    assert group.tolist() == [0, 0, 0, 1, 2, 2, -1]
    assert final.tolist() == [True, True, False, True, True, True, False]


def test_judge_batch_end_to_end_with_a_fake_chat():
    def row(g, s, answer, reward):
        return {"group_id": g, "sample_index": s, "messages": [
            {"role": "user", "content": f"task {g}"}, {"role": "assistant", "content": answer}],
            "origins": ["prompt", "policy"]}, [reward]

    rows = [row(0, 0, "right", 1.0), row(0, 1, "wrong", 0.0), row(1, 0, "a", 0.0),
            row(1, 1, "b", 0.0)]
    meta = [m for m, _ in rows] + [{"padding": True}]
    tr = np.array([r for _, r in rows] + [[0.0]], np.float32)
    te = np.array([[3], [3], [3], [3], [-1]])

    def chat(messages):
        body = messages[-1]["content"]
        return "[0.9, 0.1]" if "right" in body else "[0.2, 0.6]"

    out = judge_batch(Judge(chat), meta, tr, te, Combine("weighted", 0.0, 1.0))
    np.testing.assert_allclose(out.turn_rewards[:, 0], [0.9, 0.1, 0.2, 0.6, 0.0], rtol=1e-6)
    assert out.metrics["judge/pairwise_accuracy"] == 1.0 and out.metrics["judge/pairs"] == 1
    assert out.metrics["judge/calls"] == 2


def test_pairwise_agreement():
    a = pairwise_agreement([0.9, 0.1, 0.5, 0.5], [1, 0, 1, 0], [0, 0, 1, 1])
    assert a == {"pairs": 2.0, "pairwise_accuracy": 0.75, "kendall_tau": 0.5,
                 "judge_ties": 0.5}
    assert pairwise_agreement([0.1, 0.2], [1, 1], [0, 0]) == {"pairs": 0.0}


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("kwargs", [{"prompt": "no placeholder"}, {"neutral": 2.0},
                                    {"retries": -1}, {"max_prompt_tokens": 10}])
def test_judge_config_errors(kwargs):
    with pytest.raises(ValueError):
        JudgeConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"mode": "max"}, {"eps": 0.0},
                                    {"w_judge": float("nan")}])
def test_combine_errors(kwargs):
    with pytest.raises(ValueError):
        Combine(**kwargs)


def test_openai_chat_through_the_gateway(fmt):
    """The URL source: any OpenAI-compatible server, here our own gateway."""
    from agentic_rl.agents import Gateway
    from agentic_rl.agents.judge import OpenAIChat

    policy = ScriptedPolicy(fmt.tok, lambda request, history: '{"scores": [0.25, 0.75]}')
    engine = BatchingEngine(policy, window_s=0.002)
    try:
        service = ChatService(engine, fmt, judge_service_config(64, 8192))
        with Gateway(service) as gw:
            judge = Judge(OpenAIChat(gw.url + "/v1", max_tokens=64))
            assert judge.score_group("t", _traj("a", "b")) == [0.25, 0.75]
        assert judge.metrics["calls"] == 1
    finally:
        engine.close()
