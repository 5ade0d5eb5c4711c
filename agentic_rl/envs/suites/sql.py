"""Text-to-SQL: `SqlEnv`, execution-match scoring (`score_sql`) and the `text2sql` suite.

The agent inspects the schema and runs queries over several turns, then answers with
its final query in `<answer>...</answer>`. The reward is execution match: the final
query's result equals the gold query's result as a multiset of rows (as a sequence
when the gold query has ORDER BY), with numbers compared after rounding to 9
significant digits so float noise (AVG in a different order) does not decide it.
Every query (tool calls and the scored answer alike) runs through the read-only
`ReadOnlyDatabase` of `agentic_rl.envs.tools.sql`, whose docstring lists what it enforces.
The generated databases and the Spider loader are in `agentic_rl.envs.suites.sql_data`.

Imports: stdlib and agentic_rl.envs (base, rewards, suite, tasks, tools, suites.sql_data)
only; never jax.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from agentic_rl.envs.base import Action, Message, StepResult, Task, message
from agentic_rl.envs.rewards import ANSWER_TAG_RE
from agentic_rl.envs.suite import ENVS, EnvSuite, temporary_dir
from agentic_rl.envs.suites.sql_data import generate_sql_tasks, load_spider_tasks
from agentic_rl.envs.tasks import TaskSet
from agentic_rl.envs.tools.base import (
    Tool,
    ToolExecutionError,
    run_tool_calls,
    tool_error_step,
    tool_system_prompt,
)
from agentic_rl.envs.tools.sql import ReadOnlyDatabase, SqlError, SqlLimits, sql_tools

_FENCE_RE = re.compile(r"```(?:sql)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_ORDER_BY_RE = re.compile(r"\border\s+by\b", re.IGNORECASE)


def _normalize_value(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        return float(f"{number:.9g}") if math.isfinite(number) else str(number)
    return value


def normalize_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows with numbers normalised (int 3 == float 3.0; float noise beyond 9 digits ignored)."""
    return [tuple(_normalize_value(v) for v in row) for row in rows]


def gold_is_ordered(gold_sql: str) -> bool:
    """Whether row order matters: the gold query has ORDER BY (the Spider convention)."""
    return bool(_ORDER_BY_RE.search(gold_sql))


def results_match(
    gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]], ordered: bool
) -> bool:
    """Execution match: equal row sequences if `ordered`, else equal multisets of rows."""
    g, p = normalize_rows(gold), normalize_rows(pred)
    return g == p if ordered else Counter(g) == Counter(p)


def extract_sql(text: str) -> str | None:
    """The final SQL in a reply: the last `<answer>` block, else the last ```sql fence."""
    for pattern in (ANSWER_TAG_RE, _FENCE_RE):
        found = pattern.findall(text)
        if found and found[-1].strip():
            return found[-1].strip().rstrip(";").strip()
    return None


@dataclass(frozen=True)
class SqlScore:
    correct: bool
    executes: bool
    reason: str


def score_sql(db: ReadOnlyDatabase, predicted: str | None, gold_sql: str) -> SqlScore:
    """Execution match of `predicted` against `gold_sql` on `db` (with a reason for logs)."""
    if predicted is None:
        return SqlScore(False, False, "no SQL found in <answer></answer>")
    limit, budget = db.limits.max_compare_rows, db.limits.max_compare_bytes
    # A broken gold query is a data bug: raise.
    gold = db.query(gold_sql, max_rows=limit, max_bytes=budget)
    try:
        pred = db.query(predicted, max_rows=limit, max_bytes=budget)
    except SqlError as e:
        return SqlScore(False, False, str(e))
    if pred.byte_limit is not None:
        return SqlScore(False, True, f"result exceeds the scoring limit of {budget:,} bytes")
    if pred.truncated:
        return SqlScore(False, True, f"result has more than {limit} rows")
    if gold.truncated:
        return SqlScore(False, True, "the gold result exceeds the scoring limits; cannot score")
    if results_match(gold.rows, pred.rows, gold_is_ordered(gold_sql)):
        return SqlScore(True, True, "match")
    return SqlScore(False, True, "result differs from the gold result")


SQL_INSTRUCTIONS = (
    "You are an expert SQL analyst working with a SQLite database. Use the tools to list the "
    "tables, inspect their columns and run exploratory SELECT queries. The database is "
    "read-only. When you are confident, reply with the single SQL query that answers the "
    "question inside <answer></answer> tags (for example <answer>SELECT name FROM t</answer>) "
    "and no tool call."
)


@dataclass
class SqlEnv:
    """Multi-turn text-to-SQL (see the module docstring). A task's `data` holds `db_path`
    and `gold_sql`. Tool turns earn 0; the answer turn earns `correct` (1.0 on execution
    match) plus `valid_weight` if the final query runs at all."""

    limits: SqlLimits = field(default_factory=SqlLimits)
    valid_weight: float = 0.0
    instructions: str = SQL_INSTRUCTIONS
    tools: tuple[Tool, ...] = field(init=False)
    _db: ReadOnlyDatabase | None = field(default=None, init=False, repr=False)
    _task: Task | None = field(default=None, init=False, repr=False)
    _done: bool = field(default=False, init=False, repr=False)

    def __post_init__(self):
        self.tools = sql_tools(self._current_db, self.limits)

    def _current_db(self) -> ReadOnlyDatabase:
        if self._db is None:
            raise ToolExecutionError("no database is open (reset() was not called)")
        return self._db

    def reset(self, task: Task, seed: int) -> list[Message]:
        del seed
        for key in ("db_path", "gold_sql"):
            if key not in task.data:
                raise ValueError(f"task {task.id!r}: text-to-SQL tasks need data[{key!r}]")
        self.close()
        self._db = ReadOnlyDatabase(task.data["db_path"], self.limits)
        self._task, self._done = task, False
        system = self.instructions + "\n\n" + tool_system_prompt(self.tools)
        return [message("system", system), message("user", task.prompt)]

    def step(self, action: Action) -> StepResult:
        if self._task is None or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        if action.errors:
            return tool_error_step(action.errors)
        if action.tool_calls:
            return run_tool_calls(self.tools, action.tool_calls)
        return self._finish(action.text)

    def _finish(self, text: str) -> StepResult:
        assert self._task is not None and self._db is not None
        self._done = True
        predicted = extract_sql(text)
        score = score_sql(self._db, predicted, self._task.data["gold_sql"])
        reward = float(score.correct) + self.valid_weight * float(score.executes)
        info = {
            "success": score.correct,
            "reward_components": {"correct": float(score.correct), "valid": float(score.executes)},
            "predicted_sql": predicted,
            "gold_sql": self._task.data["gold_sql"],
            "reason": score.reason,
        }
        self.close()
        return StepResult([], reward, True, info)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


@ENVS.register("text2sql")
def text2sql_suite(
    *,
    spider_dir: str | os.PathLike | None = None,
    train_file: str = "train_spider.json",
    eval_file: str = "dev.json",
    schema_in_prompt: bool = False,
    limit: int | None = None,
    db_dir: str | os.PathLike | None = None,
    num_train_dbs: int = 8,
    num_eval_dbs: int = 4,
    questions_per_db: int = 40,
    seed: int = 0,
    timeout_s: float = 2.0,
    max_rows: int = 50,
    valid_weight: float = 0.0,
    gamma: float = 1.0,
) -> EnvSuite:
    """Multi-turn text-to-SQL with execution-match reward.

    With `spider_dir` the splits are Spider-format files there (`train_file`, `eval_file`,
    `tables.json`, `database/`); otherwise databases are generated into `db_dir` (default: a
    temporary directory), and the eval databases are distinct from the training ones.
    """
    if spider_dir is not None:
        load = partial(load_spider_tasks, spider_dir, schema_in_prompt=schema_in_prompt,
                       limit=limit)  # fmt: skip
        splits = {"train": load(train_file), "eval": load(eval_file)}
    else:
        root = Path(db_dir) if db_dir is not None else temporary_dir("agentic_rl_sql_")
        splits = {
            "train": generate_sql_tasks(root, num_dbs=num_train_dbs,
                                        questions_per_db=questions_per_db, seed=seed,
                                        id_prefix="sql-train"),
            "eval": generate_sql_tasks(root, num_dbs=num_eval_dbs,
                                       questions_per_db=questions_per_db, seed=seed + 1,
                                       id_prefix="sql-eval"),
        }  # fmt: skip
    limits = SqlLimits(timeout_s=timeout_s, max_rows=max_rows)
    make = partial(SqlEnv, limits=limits, valid_weight=valid_weight)
    return EnvSuite("text2sql", make, TaskSet(splits), gamma)
