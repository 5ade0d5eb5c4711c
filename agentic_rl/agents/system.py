"""Multi-agent systems: named agents, an orchestration that lets them talk, and the result
as one agent program.

    system = AgentSystem([Agent("writer", WRITER_PROMPT), Agent("checker", CHECK_PROMPT,
                                                                tools=(sql_tool,))],
                         critique_loop("writer", "checker", rounds=2))
    result = run_agents(system, tasks, service, train_agents="writer")

Each agent keeps its own conversation (its instructions as the system prompt, then every
message addressed to it and every reply it gave), so each agent's calls form one
unbroken chain, hence one training row, attributed to it: the call carries the agent's
name, the chat service gives its tokens that agent's `agent_id`. An agent with tools runs
them itself between its calls (parsed from the OpenAI `tool_calls` of the reply) until it
answers in text. The orchestration is an ordinary function of an `AgentContext`; the
module ships a pipeline (each agent transforms the previous one's output) and a critique
loop (a proposer revises until a critic accepts).

Rewards: the orchestration's return value is the team reward (every row's last turn);
`ctx.reward(value, agent=name)` gives one agent a reward of its own (on that agent's last
call), e.g. a checker rewarded for catching a wrong query.

Imports: agentic_rl.envs and agentic_rl.agents only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentic_rl.agents.openai_format import APIError
from agentic_rl.agents.runtime import AgentLLM, AgentResult, _as_result
from agentic_rl.envs.base import Task
from agentic_rl.envs.tools.base import Tool, execute_tool


@dataclass(frozen=True)
class Agent:
    """One agent: its name, system prompt, tools (executed by the system), and how many
    tool rounds one `act` may take before the agent must answer in text."""

    name: str
    instructions: str = ""
    tools: tuple[Tool, ...] = ()
    max_tool_rounds: int = 3

    def __post_init__(self):
        if not self.name or "/" in self.name or not self.name.isprintable():
            raise ValueError(f"agent name must be a non-empty printable string without '/', "
                             f"got {self.name!r}")


@dataclass
class AgentContext:
    """What an orchestration works with: the task, `act(agent, message)`, `reward`."""

    task: Task
    llm: AgentLLM
    agents: dict[str, Agent]
    conversations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    last_call: dict[str, str] = field(default_factory=dict)
    transcript: list[tuple[str, str]] = field(default_factory=list)  # (agent, reply)
    truncated: bool = False  # a trainer limit ended some agent's part

    def act(self, agent: str, message: str) -> str:
        """Sends `message` to `agent` (continuing its conversation), runs the tools it
        calls, and returns its text reply. A limit of the trainer (turns, context) ends
        the agent's part: the reply is then "" and `truncated` is set."""
        spec = self.agents[agent]
        conv = self.conversations.setdefault(agent, [])
        if not conv and spec.instructions:
            conv.append({"role": "system", "content": spec.instructions})
        conv.append({"role": "user", "content": message})
        schemas = [t.schema() for t in spec.tools]
        by_name = {t.name: t for t in spec.tools}
        for _ in range(spec.max_tool_rounds + 1):
            try:
                r = self.llm.chat(conv, agent=agent, **({"tools": schemas} if schemas else {}))
            except APIError as e:
                if e.code in ("context_length_exceeded", "max_turns_exceeded"):
                    self.truncated = True
                    return ""
                raise
            self.last_call[agent] = r["id"]
            reply = r["choices"][0]["message"]
            conv.append(reply)
            calls = reply.get("tool_calls") or []
            if not calls:
                text = reply.get("content") or ""
                self.transcript.append((agent, text))
                return text
            for call in calls:
                fn = call["function"]
                result = execute_tool(by_name[fn["name"]], json.loads(fn["arguments"]))
                conv.append({"role": "tool", "tool_call_id": call["id"],
                             "content": result.content})
        self.transcript.append((agent, ""))
        return ""

    def reward(self, value: float, agent: str | None = None) -> None:
        """A reward for one agent (on its last call), or for the team (every row)."""
        if agent is None:
            self.llm.reward(value)
        elif agent in self.last_call:
            self.llm.reward(value, call_id=self.last_call[agent])


Orchestration = Callable[[AgentContext], Any]


class AgentSystem:
    """Named agents plus an orchestration, usable as an agent program (`system(task, llm)`)."""

    def __init__(self, agents: Sequence[Agent], orchestration: Orchestration):
        names = [a.name for a in agents]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"agent names must be unique and non-empty, got {names}")
        self.agents = {a.name: a for a in agents}
        self.orchestration = orchestration

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.agents)

    def __call__(self, task: Task, llm: AgentLLM) -> AgentResult:
        ctx = AgentContext(task, llm, self.agents)
        result = _as_result(self.orchestration(ctx))
        result.truncated = result.truncated or ctx.truncated
        result.info.setdefault("transcript", [{"agent": a, "text": t}
                                              for a, t in ctx.transcript])
        return result


def pipeline(*names: str, reward: Callable[[Task, str], float] | None = None) -> Orchestration:
    """Each agent gets the task (the first) or the previous agent's output, in order; the
    last output is the answer (scored by `reward(task, answer)` if given)."""

    def run(ctx: AgentContext) -> AgentResult:
        text = ctx.task.prompt
        for i, name in enumerate(names):
            text = ctx.act(name, text if i == 0 else
                           f"Task: {ctx.task.prompt}\n\nPrevious step:\n{text}")
        score = None if reward is None else float(reward(ctx.task, text))
        return AgentResult(reward=score, answer=text)

    return run


def critique_loop(proposer: str, critic: str, *, rounds: int = 2, accept: str = "ACCEPT",
                  reward: Callable[[Task, str], float] | None = None,
                  critic_reward: Callable[[Task, str, str], float] | None = None
                  ) -> Orchestration:
    """The proposer answers; the critic replies `accept` or a critique, which goes back to
    the proposer; at most `rounds` revisions. The last proposal is the answer (scored by
    `reward(task, answer)`); `critic_reward(task, proposal, verdict)` rewards the critic
    for each verdict (e.g. for rejecting a wrong proposal)."""

    def run(ctx: AgentContext) -> AgentResult:
        proposal = ctx.act(proposer, ctx.task.prompt)
        verdicts = []
        for _ in range(rounds):
            verdict = ctx.act(critic, f"Task: {ctx.task.prompt}\n\nProposed answer:\n"
                                      f"{proposal}\n\nReply {accept} or say what is wrong.")
            verdicts.append(verdict)
            if critic_reward is not None:
                ctx.reward(float(critic_reward(ctx.task, proposal, verdict)), agent=critic)
            if accept in verdict or ctx.truncated:
                break
            proposal = ctx.act(proposer, f"A reviewer says:\n{verdict}\n\nRevise your answer.")
        score = None if reward is None else float(reward(ctx.task, proposal))
        return AgentResult(reward=score, answer=proposal, info={"verdicts": verdicts})

    return run
