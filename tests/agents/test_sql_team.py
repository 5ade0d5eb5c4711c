"""The sql_team system on generated text2sql databases, driven by a scripted policy: the
writer's wrong first draft is run and rejected by the checker (with the real read-only
run_sql tool), the revision is scored by execution match, and the rewards land on the
right agents' rows."""

from __future__ import annotations

import json

import pytest

from agentic_rl.agents import AGENTS, SqlTeam, run_agents
from agentic_rl.agents.teams import draft_sql
from agentic_rl.envs import Task, make_env_suite
from agentic_rl.rollout import CharTokenizer, ScriptedPolicy, make_chat_format
from tests.agents.conftest import make_service


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    suite = make_env_suite("text2sql", {"num_train_dbs": 1, "num_eval_dbs": 1,
                                        "questions_per_db": 2,
                                        "db_dir": str(tmp_path_factory.mktemp("db"))})
    return list(suite.tasks.split("train"))


def scripted(tasks):
    gold = {t.data["question"]: t.data["gold_sql"] for t in tasks}

    def script(request, history: str) -> str:
        if "You review SQLite" in history:
            if request.turn == 0:  # run the proposed query with the tool
                query = history.split("<answer>")[-1].split("</answer>")[0]
                call = {"name": "run_sql", "arguments": {"query": query}}
                return f"<tool_call>\n{json.dumps(call)}\n</tool_call>"
            return "wrong: no rows" if "SELECT 1 WHERE 0" in history else "ACCEPT"
        question = next(q for q in gold if q in history)
        return ("<answer>SELECT 1 WHERE 0</answer>" if request.turn == 0
                else f"<answer>{gold[question]}</answer>")

    return script


def run_team(tasks, **kw):
    fmt = make_chat_format("chatml", CharTokenizer())
    service = make_service(ScriptedPolicy(fmt.tok, scripted(tasks)), fmt,
                           max_new_tokens=400, max_context_tokens=20000,
                           agents=SqlTeam.names)
    try:
        return run_agents(SqlTeam(), tasks, service, **kw), fmt
    finally:
        service.engine.close()


def test_the_team_writes_checks_and_revises(tasks):
    result, fmt = run_team(tasks)
    assert not result.errors, result.errors
    meta = result.batch.metadata
    assert [m["agent"] for m in meta] == ["writer", "checker"] * len(tasks)
    for m in meta:
        assert m["success"] and m["info"]["checks"] == [{"draft_correct": False,
                                                         "accepted": False}]
        assert m["info"]["predicted_sql"] == m["info"]["gold_sql"]
    # team reward 1 on both rows; the checker also earned 0.5 for rejecting the wrong draft
    assert result.metrics["agent/writer/return"] == 1.0
    assert result.metrics["agent/checker/return"] == 1.5
    checker = next(i for i, m in enumerate(meta) if m["agent"] == "checker")
    text = fmt.tok.decode(result.batch.tokens[checker][result.batch.attention_mask[checker]]
                          .tolist())
    assert "<tool_response>" in text  # the real tool ran on the database


def test_team_and_posted_rewards_are_weighted(tasks):
    result, _ = run_team(tasks, team_reward_weight=0.5, posted_reward_weight=2.0)
    assert result.metrics["agent/writer/return"] == 0.5  # 0.5 x team 1
    assert result.metrics["agent/checker/return"] == 1.5  # 0.5 x 1 + 2 x its own 0.5


def test_registered_and_checked():
    assert isinstance(AGENTS.get("sql_team")(), SqlTeam)
    assert draft_sql("select a from t;") == "select a from t"
    assert draft_sql("<answer>SELECT 2</answer> then") == "SELECT 2"
    assert draft_sql("I do not know") is None
    assert draft_sql("The answer is:\n<answer>SELECT COUNT(*) FROM t;") == "SELECT COUNT(*) FROM t"
    assert draft_sql("<answer>maybe") is None
    with pytest.raises(ValueError, match="need data"):
        SqlTeam()(Task("x", "q"), None)
