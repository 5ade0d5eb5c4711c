"""Ready-made multi-agent systems over the project's environments' tasks.

`SqlTeam` (registered as the agent program "sql_team"), over `text2sql` tasks: a writer
drafts the SQL for a question (it sees the database's schema), a checker runs the draft
with the read-only `run_sql` tool and replies ACCEPT or a critique, the writer revises;
at most `rounds` revisions. The team reward is execution match of the last draft (the
text2sql environment's scorer); the checker also earns `checker_weight` per verdict that
is right (ACCEPT on a correct draft, a critique on a wrong one), so it can be trained to
catch wrong queries. It is the shape of Agent-Lightning's Spider agent, as an ordinary
`AgentSystem` (its two agents can share one LoRA adapter or have one each).

    python -m agentic_rl.train --config experiments/sql_team.py --workdir runs/sql_team

`GuessTeam` (agent program "guess_team"), over `guess_number` tasks: an opener makes a
first guess, the game answers "correct", "higher" or "lower", and a closer, who sees only
that first guess and the answer, gives the team's final guess (the reward: it is the
secret). The opener's part is pure information (its guess matters only through the
answer it gets), which is what makes it a test of credit between agents; small enough
for the tiny character model (experiments/tiny_team.py, the `multi_agent` ablations).

Imports: agentic_rl.envs and agentic_rl.agents only.
"""

from __future__ import annotations

import re
from typing import Any

from agentic_rl.agents.runtime import AGENTS, AgentLLM, AgentResult
from agentic_rl.agents.system import Agent, AgentSystem, critique_loop
from agentic_rl.envs.base import Task
from agentic_rl.envs.suites.guess_number import extract_guess
from agentic_rl.envs.suites.sql import extract_sql, score_sql
from agentic_rl.envs.tools.sql import ReadOnlyDatabase, SqlError, SqlLimits, sql_tools

WRITER = ("You write SQLite queries. Reply with one query that answers the question inside "
          "<answer></answer> tags, for example <answer>SELECT name FROM t</answer>. When a "
          "reviewer finds a problem, reply with the corrected query the same way.")
CHECKER = ("You review SQLite queries. Run the proposed query with the run_sql tool, then "
           "reply ACCEPT if its result answers the question, or say what is wrong.")
# Worked examples for small models (SmolLM2-135M answers in prose without them), on a
# schema unlike the generated databases', so they show the format, not the answers.
WRITER_EXAMPLES = (
    "Example 1.\nThe database:\nCREATE TABLE pets (id INTEGER PRIMARY KEY, name TEXT, "
    "species TEXT, age INTEGER)\nQuestion: How many pets are cats?\nReply: "
    "<answer>SELECT COUNT(*) FROM pets WHERE species = 'cat'</answer>\n\n"
    "Example 2.\nThe database:\nCREATE TABLE owners (id INTEGER PRIMARY KEY, name TEXT)\n"
    "CREATE TABLE pets (id INTEGER PRIMARY KEY, name TEXT, owner_id INTEGER)\nQuestion: "
    "For each owner, how many pets do they have?\nReply: <answer>SELECT o.name, COUNT(*) "
    "FROM owners o JOIN pets p ON p.owner_id = o.id GROUP BY o.name</answer>"
)
CHECKER_EXAMPLE = (
    "Example: first reply\n<tool_call>\n{\"name\": \"run_sql\", \"arguments\": "
    "{\"query\": \"SELECT COUNT(*) FROM pets WHERE species = 'cat'\"}}\n</tool_call>\n"
    "then, after seeing the result, reply ACCEPT or what is wrong."
)
_BARE_SQL = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)


def draft_sql(text: str) -> str | None:
    """The query in a writer's reply: the last <answer> block or ```sql fence; else a
    SELECT / WITH statement after an <answer> tag left unclosed (small models end their
    turn right after the query), or the whole reply when it is a bare statement."""
    text = text or ""
    found = extract_sql(text)
    if found is None:
        tail = text.rsplit("<answer>", 1)[-1]
        if _BARE_SQL.match(tail):
            found = tail.strip().rstrip(";").strip() or None
    return found


class SqlTeam:
    """A writer and a checker on a text2sql task (see the module docstring). A task's
    `data` holds `db_path` and `gold_sql`, as the text2sql environment's tasks do."""

    names = ("writer", "checker")

    def __init__(self, *, rounds: int = 1, checker_weight: float = 0.5,
                 limits: SqlLimits | None = None, show_schema: bool = True,
                 max_tool_rounds: int = 2, examples: bool = True):
        if rounds < 0 or checker_weight < 0:
            raise ValueError(f"rounds and checker_weight must be >= 0, got {rounds}, "
                             f"{checker_weight}")
        self.rounds, self.checker_weight = rounds, checker_weight
        self.limits = limits or SqlLimits()
        self.show_schema, self.max_tool_rounds = show_schema, max_tool_rounds
        self.examples = examples

    def _correct(self, db: ReadOnlyDatabase, task: Task, text: str) -> bool:
        return score_sql(db, draft_sql(text), task.data["gold_sql"]).correct

    def __call__(self, task: Task, llm: AgentLLM) -> AgentResult:
        for key in ("db_path", "gold_sql"):
            if key not in task.data:
                raise ValueError(f"task {task.id!r}: sql_team tasks need data[{key!r}] "
                                 "(the text2sql environment's tasks have them)")
        db = ReadOnlyDatabase(task.data["db_path"], self.limits)
        try:
            return self._run(db, task, llm)
        finally:
            db.close()

    def _run(self, db: ReadOnlyDatabase, task: Task, llm: AgentLLM) -> AgentResult:
        writer = f"{WRITER}\n\n{WRITER_EXAMPLES}" if self.examples else WRITER
        checker = f"{CHECKER}\n\n{CHECKER_EXAMPLE}" if self.examples else CHECKER
        if self.show_schema:
            try:
                schema = "\n".join(db.table_schema(t) for t in db.tables())
            except SqlError as e:  # an unreadable schema: the writer goes without it
                schema = f"(schema unavailable: {e})"
            writer = f"{writer}\n\nNow the real task.\nThe database:\n{schema}"
        run_sql = next(t for t in sql_tools(lambda: db, self.limits) if t.name == "run_sql")
        checks: list[dict[str, Any]] = []

        def verdict_reward(task: Task, proposal: str, verdict: str) -> float:
            right = self._correct(db, task, proposal)
            accepted = "ACCEPT" in verdict
            checks.append({"draft_correct": right, "accepted": accepted})
            return self.checker_weight * float(accepted == right)

        system = AgentSystem(
            [Agent("writer", writer), Agent("checker", checker, tools=(run_sql,),
                                           max_tool_rounds=self.max_tool_rounds)],
            critique_loop("writer", "checker", rounds=self.rounds,
                          reward=lambda task, answer: float(self._correct(db, task, answer)),
                          critic_reward=verdict_reward if self.rounds else None))
        result = system(task, llm)
        result.success = bool(result.reward)
        result.info.update({"predicted_sql": draft_sql(result.answer or ""),
                            "gold_sql": task.data["gold_sql"], "checks": checks})
        return result


class GuessTeam:
    """An opener and a closer on a guess-the-number task (see the module docstring).

    Best play: the opener guesses the middle (2 of 1..3), the closer repeats it on
    "correct" and moves one up or down on "higher" / "lower": success 1.0. An opener
    fixed on an end (1) caps the team at 2/3, whatever the closer does; a closer that
    ignores the answer, at 1/3 per fixed guess. `own_weight` > 0 also posts each agent a
    reward of its own (`ctx.reward(..., agent=)`): the opener's own guess being right,
    the closer's final guess being right. That is the obvious per-agent reward and a
    misaligned one for the opener (any guess is right 1 time in 3; only the middle one
    informs): train with agent.team_reward_weight=0 to see credit by it alone.
    A task's `data` holds `secret` (the guess_number tasks do).
    """

    names = ("opener", "closer")

    def __init__(self, *, own_weight: float = 0.0):
        if own_weight < 0:
            raise ValueError(f"own_weight must be >= 0, got {own_weight}")
        self.own_weight = own_weight
        self.system = AgentSystem([Agent("opener"), Agent("closer")], self._play)

    def _play(self, ctx) -> AgentResult:
        secret = ctx.task.data["secret"]
        first = extract_guess(ctx.act("opener", ctx.task.prompt))
        if first is None:
            hint = "invalid"
        else:
            hint = "correct" if first == secret else "higher" if first < secret else "lower"
        final = extract_guess(ctx.act("closer", f"{first if first is not None else '?'} "
                                                f"{hint}"))
        win = final == secret
        if self.own_weight:
            ctx.reward(self.own_weight * float(first == secret), agent="opener")
            ctx.reward(self.own_weight * float(win), agent="closer")
        return AgentResult(reward=float(win), answer=None if final is None else str(final),
                           success=win, info={"first": first, "hint": hint, "final": final})

    def __call__(self, task: Task, llm: AgentLLM) -> AgentResult:
        if "secret" not in (task.data or {}):
            raise ValueError(f"task {task.id!r}: guess_team tasks need data['secret'] (the "
                             "guess_number environment's tasks have it)")
        return self.system(task, llm)


@AGENTS.register("guess_team")
def _guess_team(own_weight: float = 0.0, **_) -> GuessTeam:
    """The opener + closer team on guess_number tasks (`agent.program=guess_team`)."""
    return GuessTeam(own_weight=own_weight)


@AGENTS.register("sql_team")
def _sql_team(**_) -> SqlTeam:
    """The writer + checker team on text2sql tasks (`agent.program=sql_team`)."""
    return SqlTeam()
