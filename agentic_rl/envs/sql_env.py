"""Text-to-SQL on real SQLite files: a read-only query tool, execution-match reward, the env.

The agent inspects the schema and runs queries over several turns, then answers with
its final query in `<answer>...</answer>`. The reward is execution match: the final
query's result equals the gold query's result as a multiset of rows (as a sequence
when the gold query has ORDER BY), with numbers compared after rounding to 9
significant digits so float noise (AVG in a different order) does not decide it.

The agent's connection cannot change anything, by independent layers: statements
starting with a write/DDL/transaction keyword are refused up front; the file is opened
with `mode=ro`; an authorizer allows only reads (SELECT, reading columns, functions,
recursive CTEs and a few introspection PRAGMAs such as `table_info`) and refuses writes,
DDL, ATTACH/DETACH, transactions and every other PRAGMA; and the attached-database
limit is 0. A progress
handler stops any query after `timeout_s`, string/blob sizes are capped, and results are
cut to `max_rows`.
Every failure becomes an observation that says what was refused and why.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentic_rl.envs.base import Action, Message, StepResult, Task, message
from agentic_rl.envs.rewards import ANSWER_TAG_RE
from agentic_rl.envs.tool_parser import format_errors
from agentic_rl.envs.tools import Tool, ToolExecutionError, execute_tool, tool_system_prompt

# Authorizer action codes (sqlite3.h) that the agent may perform; everything else is denied.
_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
_ALLOWED_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
_DENIED_FUNCTIONS = frozenset({"load_extension"})
_ACTION_NAMES = {
    1: "CREATE INDEX", 2: "CREATE TABLE", 3: "CREATE TEMP INDEX", 4: "CREATE TEMP TABLE",
    5: "CREATE TEMP TRIGGER", 6: "CREATE TEMP VIEW", 7: "CREATE TRIGGER", 8: "CREATE VIEW",
    9: "DELETE", 10: "DROP INDEX", 11: "DROP TABLE", 12: "DROP TEMP INDEX",
    13: "DROP TEMP TABLE", 14: "DROP TEMP TRIGGER", 15: "DROP TEMP VIEW", 16: "DROP TRIGGER",
    17: "DROP VIEW", 18: "INSERT", 19: "PRAGMA", 22: "BEGIN/COMMIT/ROLLBACK",
    23: "UPDATE", 24: "ATTACH", 25: "DETACH", 26: "ALTER TABLE", 27: "REINDEX",
    28: "ANALYZE", 29: "CREATE VIRTUAL TABLE", 30: "DROP VIRTUAL TABLE", 31: "function",
    32: "SAVEPOINT",
}  # fmt: skip
# Statements refused by their first keyword (unknown words are left to SQLite's parser,
# so a typo gets a syntax error, not a misleading refusal).
_REFUSED_STATEMENTS = frozenset(
    "INSERT UPDATE DELETE REPLACE UPSERT CREATE DROP ALTER ATTACH DETACH VACUUM REINDEX ANALYZE "
    "BEGIN COMMIT END ROLLBACK SAVEPOINT RELEASE EXPLAIN".split()
)
_LEADING_RE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_KEYWORD_RE = re.compile(r"[A-Za-z]+")
_FENCE_RE = re.compile(r"```(?:sql)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_ORDER_BY_RE = re.compile(r"\border\s+by\b", re.IGNORECASE)


class SqlError(ToolExecutionError):
    """A query failed or was refused; the message is what the agent sees."""


@dataclass(frozen=True)
class SqlLimits:
    """`timeout_s` bounds one query (progress handler); `max_rows` rows are shown to the
    agent, `max_compare_rows` are fetched when scoring; `max_value_chars` cuts long cells
    in observations; `max_blob_bytes` caps any string/blob a query may build."""

    timeout_s: float = 2.0
    max_rows: int = 50
    max_compare_rows: int = 10_000
    max_value_chars: int = 120
    max_output_chars: int = 4000
    max_sql_chars: int = 4000
    max_blob_bytes: int = 1_000_000

    def __post_init__(self):
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"SqlLimits.{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    truncated: bool = False


class ReadOnlyDatabase:
    """A read-only, time-bounded connection to one SQLite file (see the module docstring).

    Thread-safe (tools run in worker threads): queries are serialised by a lock.
    """

    def __init__(self, path: str | Path, limits: SqlLimits | None = None):
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise FileNotFoundError(f"SQLite database not found: {self.path}")
        self.limits = limits or SqlLimits()
        uri = self.path.as_uri() + "?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._conn.text_factory = lambda b: b.decode("utf-8", "replace")
        self._lock = threading.Lock()
        self._deadline = math.inf
        self._denied: str | None = None
        self._apply_limits()
        self._conn.set_authorizer(self._authorize)
        self._conn.set_progress_handler(self._progress, 1000)

    def _apply_limits(self) -> None:
        setlimit = getattr(self._conn, "setlimit", None)
        if setlimit is None:  # Python < 3.11: the authorizer still refuses ATTACH
            return
        setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.limits.max_blob_bytes)
        setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 4 * self.limits.max_sql_chars)

    def _authorize(self, action: int, arg1: Any, arg2: Any, db_name: Any, trigger: Any) -> int:
        if action == sqlite3.SQLITE_PRAGMA:
            if str(arg1).lower() in _ALLOWED_PRAGMAS:
                return sqlite3.SQLITE_OK
            self._denied = f"PRAGMA {arg1}"
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in _DENIED_FUNCTIONS:
            self._denied = f"the function {arg2}()"
            return sqlite3.SQLITE_DENY
        if action in _ALLOWED_ACTIONS:
            return sqlite3.SQLITE_OK
        self._denied = _ACTION_NAMES.get(action, f"operation {action}")
        return sqlite3.SQLITE_DENY

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def query(self, sql: str, max_rows: int | None = None) -> QueryResult:
        """Runs one statement; raises `SqlError` with a clear message on any failure."""
        if not isinstance(sql, str):
            raise SqlError(f"the query must be a string, got {type(sql).__name__}")
        if len(sql) > self.limits.max_sql_chars:
            raise SqlError(f"the query is too long ({len(sql)} > {self.limits.max_sql_chars})")
        if "\x00" in sql:
            raise SqlError("the query contains a NUL character")
        keyword = first_keyword(sql)
        if keyword in _REFUSED_STATEMENTS:
            raise SqlError(
                f"refused: {keyword} statements are not allowed. The database is read-only: "
                "use SELECT queries (PRAGMA table_info(<table>) is allowed for schema inspection)."
            )
        limit = self.limits.max_rows if max_rows is None else max_rows
        with self._lock:
            self._denied = None
            self._deadline = time.monotonic() + self.limits.timeout_s
            try:
                cursor = self._conn.execute(sql)
                if cursor.description is None:
                    raise SqlError("the statement returned no result set; use a SELECT query")
                rows = cursor.fetchmany(limit + 1)
                cursor.close()
            except sqlite3.Error as e:
                raise self._explain(e) from None
            except (OverflowError, ValueError, MemoryError) as e:
                raise SqlError(f"query failed: {type(e).__name__}: {e}") from None
            finally:
                self._deadline = math.inf
        columns = tuple(str(d[0]) for d in cursor.description)
        return QueryResult(columns, rows[:limit], truncated=len(rows) > limit)

    def _explain(self, error: sqlite3.Error) -> SqlError:
        text = str(error)
        if "not authorized" in text or self._denied:
            what = self._denied or "this statement"
            return SqlError(
                f"refused: {what} is not allowed. The database is read-only: use SELECT queries "
                "(PRAGMA table_info(<table>) is allowed for schema inspection)."
            )
        if "interrupted" in text:
            return SqlError(
                f"the query exceeded the {self.limits.timeout_s:g} s time limit and was stopped; "
                "simplify it (e.g. avoid cross joins without conditions)"
            )
        if "one statement at a time" in text:
            return SqlError("only one SQL statement per call is allowed")
        return SqlError(f"SQL error: {text}")

    def tables(self) -> list[str]:
        rows = self.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name",
            max_rows=10_000,
        ).rows
        return [str(r[0]) for r in rows]

    def table_schema(self, table: str) -> str:
        """The CREATE statement of `table` (found case-insensitively) and its row count."""
        found = self.query(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
            f"AND lower(name) = lower({_quote_literal(table)})",
            max_rows=1,
        ).rows
        if not found:
            raise SqlError(
                f"no table named {table!r}; tables: {', '.join(self.tables()) or '(none)'}"
            )
        name, sql = found[0]
        count = self.query(f"SELECT COUNT(*) FROM {_quote_ident(name)}", max_rows=1).rows[0][0]
        return f"{sql};\n-- {count} rows"


def first_keyword(sql: str) -> str | None:
    """The statement's first keyword (upper case) after whitespace and comments, if any."""
    start = _LEADING_RE.match(sql).end()
    found = _KEYWORD_RE.match(sql, start)
    return found.group(0).upper() if found else None


def _quote_literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _quote_ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def _show_value(value: Any, max_chars: int) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<blob {len(value)} bytes>"
    text = str(value)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def format_result(result: QueryResult, limits: SqlLimits) -> str:
    """A compact text table: header line, one line per row, then the row count."""
    lines = [" | ".join(result.columns)]
    for row in result.rows:
        lines.append(" | ".join(_show_value(v, limits.max_value_chars) for v in row))
    n = len(result.rows)
    if result.truncated:
        lines.append(f"(showing the first {n} rows; add LIMIT or aggregate to see less)")
    else:
        lines.append(f"({n} row{'s' if n != 1 else ''})")
    text = "\n".join(lines)
    if len(text) > limits.max_output_chars:
        text = text[: limits.max_output_chars] + "\n[output truncated]"
    return text


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
    limit = db.limits.max_compare_rows
    gold = db.query(gold_sql, max_rows=limit)  # a broken gold query is a data bug: raise
    try:
        pred = db.query(predicted, max_rows=limit)
    except SqlError as e:
        return SqlScore(False, False, str(e))
    if pred.truncated:
        return SqlScore(False, True, f"result has more than {limit} rows")
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
            obs = message("tool", format_errors(action.errors), name="error")
            return StepResult(
                [obs], 0.0, False, {"tool_error_kinds": [e.kind for e in action.errors]}
            )
        if action.tool_calls:
            by_name = {t.name: t for t in self.tools}
            observations, errors = [], []
            for call in action.tool_calls:
                result = execute_tool(by_name[call.name], call.arguments)
                observations.append(
                    message("tool", result.content, name=call.name, tool_call_id=call.id)
                )
                if not result.ok:
                    errors.append(result.error)
            return StepResult(observations, 0.0, False, {"tool_exec_errors": errors})
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


def sql_tools(get_db: Any, limits: SqlLimits) -> tuple[Tool, ...]:
    """`list_tables`, `describe_table(table)` and `run_sql(query)` over `get_db()`."""

    def list_tables() -> str:
        tables = get_db().tables()
        return ", ".join(tables) if tables else "(the database has no tables)"

    def describe_table(table: str) -> str:
        return get_db().table_schema(table)

    def run_sql(query: str) -> str:
        return format_result(get_db().query(query), limits)

    no_args = {"type": "object", "properties": {}, "additionalProperties": False}
    return (
        Tool("list_tables", "List the tables of the database.", no_args, list_tables),
        Tool(
            "describe_table",
            "Show a table's CREATE TABLE statement (columns, types, keys) and row count.",
            {
                "type": "object",
                "properties": {"table": {"type": "string", "maxLength": 200}},
                "required": ["table"],
                "additionalProperties": False,
            },
            describe_table,
        ),
        Tool(
            "run_sql",
            f"Run one read-only SQLite SELECT query and see up to {limits.max_rows} result rows.",
            {
                "type": "object",
                "properties": {"query": {"type": "string", "maxLength": limits.max_sql_chars}},
                "required": ["query"],
                "additionalProperties": False,
            },
            run_sql,
            timeout_s=limits.timeout_s + 10.0,
            max_output_chars=limits.max_output_chars + 200,
        ),
    )
