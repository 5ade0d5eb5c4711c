"""Multi-agent systems as agent programs: each agent's calls are one row attributed to it
(agent_id on its sampled tokens), rows are grouped by (task, agent), per-agent rewards
land on that agent's row, frozen agents act but are not trained, agents run their own
tools, and the shipped pipeline and critique loop orchestrate them."""

from __future__ import annotations

import json

import numpy as np

from agentic_rl.agents import Agent, AgentSystem, critique_loop, pipeline, run_agents
from agentic_rl.envs import Task, calculator_tool
from agentic_rl.rollout import CharTokenizer, ScriptedPolicy, make_chat_format
from tests.agents.conftest import make_service

TASKS = [Task("t0", "What is 2+3?", answer="5"), Task("t1", "What is 4+4?", answer="8")]


def script(request, history: str) -> str:
    """The writer proposes 'maybe 4' first and the right sum after a critique; the critic
    rejects 'maybe' and accepts anything else; the calculator agent calls its tool."""
    if "You compute." in history:
        if request.turn == 0:
            expr = history.split("What is ")[-1].split("?")[0]
            call = {"name": "calculator", "arguments": {"expression": expr}}
            return f"<tool_call>\n{json.dumps(call)}\n</tool_call>"
        return "result " + history.split("<tool_response>\n")[-1].split("\n")[0]
    if "You check." in history:
        return "ACCEPT" if "maybe" not in history.split("Proposed answer:")[-1] else "wrong"
    if "You write." in history:
        return "maybe 4" if request.turn == 0 else "5 for sure"
    return "?"


def run(system, **kw):
    fmt = make_chat_format("chatml", CharTokenizer())
    service = make_service(ScriptedPolicy(fmt.tok, script), fmt, max_new_tokens=300)
    try:
        return run_agents(system, TASKS, service, **kw), service
    finally:
        service.engine.close()


def test_a_critique_loop_gives_one_row_per_agent_with_its_own_rewards():
    system = AgentSystem(
        [Agent("writer", "You write."), Agent("checker", "You check.")],
        critique_loop("writer", "checker", rounds=2,
                      reward=lambda task, answer: float(task.answer in answer),
                      critic_reward=lambda task, proposal, verdict:
                          float(("ACCEPT" in verdict) == (task.answer in proposal))))
    result, service = run(system)
    meta = result.batch.metadata
    assert [(m["task_id"], m["agent"], m["num_turns"]) for m in meta] == [
        ("t0", "writer", 2), ("t0", "checker", 2), ("t1", "writer", 2), ("t1", "checker", 2)]
    ids = {name: service.agent_ids[name] for name in ("writer", "checker")}
    for b, m in enumerate(meta):
        sampled = result.batch.agent_id[b][result.batch.loss_mask[b]]
        assert set(sampled.tolist()) == {ids[m["agent"]]}  # tokens attributed to the agent
    # (task, agent) groups: the two writers are not one group with the two checkers
    groups = result.batch.group_id.tolist()
    assert groups[0] != groups[1] and len(set(groups)) == 4
    # t0: team reward 1 (the revised "5 for sure" is right) on every row's last turn, and
    # the checker earned 1 per correct verdict (rejecting "maybe 4", accepting the 5);
    # t1 (answer 8): no team reward, the checker right only in rejecting "maybe 4"
    rewards = result.batch.turn_rewards[:, :2].tolist()
    assert rewards == [[0, 1], [1, 2], [0, 0], [1, 0]]
    assert result.metrics["agent/checker/return"] == 2.0
    assert meta[0]["info"]["verdicts"] == ["wrong", "ACCEPT"]


def test_frozen_agents_act_but_are_not_trained():
    system = AgentSystem([Agent("writer", "You write."), Agent("checker", "You check.")],
                         critique_loop("writer", "checker"))
    result, _ = run(system, train_agents="writer")
    assert [m["agent"] for m in result.batch.metadata] == ["writer", "writer"]
    assert result.metrics["frozen_rows"] == 2
    assert result.batch.metadata[0]["num_turns"] == 2  # the critique still reached it


def test_a_pipeline_with_a_tool_using_agent():
    system = AgentSystem([Agent("calc", "You compute.", tools=(calculator_tool(),)),
                          Agent("writer", "You write.")],
                         pipeline("calc", "writer",
                                  reward=lambda task, answer: float("maybe" in answer)))
    result, _ = run(system)
    meta = result.batch.metadata
    assert [(m["agent"], m["num_turns"]) for m in meta[:2]] == [("calc", 2), ("writer", 1)]
    assert meta[0]["tool_calls"][0]["name"] == "calculator"
    transcript = meta[0]["info"]["transcript"]
    assert transcript[0] == {"agent": "calc", "text": "result 5"}
    assert np.all(result.batch.turn_rewards[:, :2].sum(axis=1) == 1.0)
