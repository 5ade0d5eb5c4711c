"""Counterfactual credit between agents (`run_agents(credit="counterfactual")`) and the
GuessTeam system, on the real chat service with a scripted policy whose answers change
from one visit of a prompt to the next, so factual and counterfactual runs differ in a
known way."""

from __future__ import annotations

import itertools

import pytest

from agentic_rl.agents import AGENTS, GuessTeam, load_agent, run_agents
from agentic_rl.envs import Task
from agentic_rl.rollout import CharTokenizer, ScriptedPolicy, make_chat_format
from agentic_rl.train.config import ConfigError, default_config, validate
from tests.agents.conftest import make_service

PROMPT = "Guess my number from 1 to 3."


def game(secret: int, i: int = 0) -> Task:
    return Task(f"guess-{i}", PROMPT, answer=str(secret),
                data={"low": 1, "high": 3, "secret": secret})


def visits(answers: dict[str, list[str]]):
    """A script answering the n-th visit of a prompt (keyed by a text in it) with
    answers[key][n] (the last one from then on); `seen` counts the visits."""
    seen = dict.fromkeys(answers, 0)

    def script(request, history: str) -> str:
        key = next(k for k in answers if k in history.rsplit("user\n", 1)[-1])
        n = seen[key]
        seen[key] += 1
        return answers[key][min(n, len(answers[key]) - 1)]

    return script, seen


def play(tasks, script, program=None, **kw):
    fmt = make_chat_format("chatml", CharTokenizer())
    policy = ScriptedPolicy(fmt.tok, script)
    service = make_service(policy, fmt, max_new_tokens=4, max_context_tokens=512,
                           agents=GuessTeam.names)
    try:
        result = run_agents(program or GuessTeam(), tasks, service, **kw)
        assert set(service.scopes) == {"serve"}  # every scratch rollout was finished
        return result, policy
    finally:
        service.engine.close()


def test_the_team_plays_the_game():
    script, _ = visits({PROMPT: ["2"], "2 higher": ["3"], "2 correct": ["2"],
                        "2 lower": ["3"]})
    result, _ = play([game(3, 0), game(2, 1), game(1, 2)], script)
    assert not result.errors, result.errors
    meta = result.batch.metadata
    assert [m["agent"] for m in meta] == ["opener", "closer"] * 3
    assert [m["info"]["hint"] for m in meta[::2]] == ["higher", "correct", "lower"]
    assert [m["success"] for m in meta[::2]] == [True, True, False]
    # the team reward lands on both agents' rows
    assert [m["turn_rewards"][-1] for m in meta] == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_own_rewards_are_posted_per_agent():
    script, _ = visits({PROMPT: ["1"], "1 higher": ["3"]})
    result, _ = play([game(3)], script, program=GuessTeam(own_weight=0.5),
                     team_reward_weight=0.0)
    opener, closer = result.batch.metadata
    assert opener["turn_rewards"] == [0.0]  # its own guess was wrong
    assert closer["turn_rewards"] == [0.5]  # its own guess was right


def test_a_task_without_a_secret_is_refused():
    script, _ = visits({PROMPT: ["2"]})
    result, _ = play([Task("t", PROMPT)], script, max_error_fraction=1.0)
    assert "data['secret']" in result.errors[0].message


def test_counterfactual_credit_replays_the_earlier_agents_and_resamples_the_rest():
    # factual: opener 2, closer 3 -> win. Counterfactual for the opener (nothing
    # replayed): opener 1, closer ("1 higher") 2 -> loss, baseline 0. For the closer
    # (the opener's "2" replayed, not sampled): closer 3 again -> win, baseline 1.
    script, seen = visits({PROMPT: ["2", "1"], "2 higher": ["3", "3"], "1 higher": ["2"]})
    result, policy = play([game(3)], script, credit="counterfactual")
    assert not result.errors, result.errors
    opener, closer = result.batch.metadata  # the scratch runs left no rows
    assert opener["credit_baseline"] == 0.0 and closer["credit_baseline"] == 1.0
    assert opener["turn_rewards"] == [1.0]  # its "2" is what won
    assert closer["turn_rewards"] == [0.0]  # it would have won anyway
    # the episode's own return and success are kept for the metrics
    assert opener["return"] == closer["return"] == 1.0
    assert result.metrics["success_rate"] == 1.0
    assert result.metrics["credit/counterfactual_runs"] == 2.0
    assert result.metrics["credit/counterfactual_failed"] == 0.0
    assert result.metrics["credit/counterfactual_mismatches"] == 0.0
    # 2 factual calls, 2 for the opener's counterfactual, 1 for the closer's (the
    # opener's call replayed): the prompt was sampled twice, "2 higher" twice
    assert seen == {PROMPT: 2, "2 higher": 2, "1 higher": 1}
    assert sum(len(batch) for batch in policy.calls) == 5


def test_team_credit_is_unchanged():
    script, seen = visits({PROMPT: ["2", "1"], "2 higher": ["3", "3"], "1 higher": ["2"]})
    result, _ = play([game(3)], script)
    assert [m["turn_rewards"] for m in result.batch.metadata] == [[1.0], [1.0]]
    assert "credit_baseline" not in result.batch.metadata[0]
    assert seen == {PROMPT: 1, "2 higher": 1, "1 higher": 0}


def test_a_program_that_is_not_deterministic_is_counted_and_resampled():
    counter = itertools.count()

    def program(task, llm):  # its first message changes on every run
        r = llm.chat([{"role": "user", "content": f"{PROMPT} #{next(counter)}"}],
                     agent="opener")
        r = llm.chat([{"role": "user", "content": "2 higher"}], agent="closer")
        return float(r["choices"][0]["message"]["content"] == "3")

    script, seen = visits({PROMPT: ["2"], "2 higher": ["3"]})
    result, _ = play([game(3)], script, program=program, credit="counterfactual")
    assert result.metrics["credit/counterfactual_mismatches"] == 1.0  # the closer's run
    assert seen[PROMPT] == 3  # the mismatched call was sampled, not replayed


def test_a_failing_counterfactual_run_keeps_the_team_reward():
    runs = itertools.count()

    def program(task, llm):
        r = llm.chat([{"role": "user", "content": PROMPT}], agent="opener")
        if next(runs) > 0:
            raise RuntimeError("only once")
        return float(r["choices"][0]["message"]["content"] == "2")

    script, _ = visits({PROMPT: ["2"]})
    result, _ = play([game(3)], script, program=program, credit="counterfactual")
    (row,) = result.batch.metadata
    assert row["turn_rewards"] == [1.0] and row["credit_baseline"] is None
    assert result.metrics["credit/counterfactual_failed"] == 1.0


def test_credit_and_agent_options_are_checked():
    with pytest.raises(ValueError, match="credit must be"):
        play([game(3)], visits({PROMPT: ["2"]})[0], credit="shapley")
    with pytest.raises(ValueError, match=r"has no option \['own_wieght'\]"):
        load_agent("guess_team", {"own_wieght": 1.0}, suite=None, transport="inprocess")
    with pytest.raises(ValueError, match="not one"):
        load_agent("tests.x:y", {"own_weight": 1.0})
    assert load_agent("guess_team", {"own_weight": 2.0}, suite=None).own_weight == 2.0
    assert "guess_team" in AGENTS
    c = default_config()
    c.agent.credit = "shapley"
    with pytest.raises(ConfigError, match="agent.credit"):
        validate(c)
    c.agent.credit, c.agent.transport = "counterfactual", "http"
    with pytest.raises(ConfigError, match="inprocess"):
        validate(c)
