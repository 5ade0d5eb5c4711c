"""The read-only SQLite query tool: `ReadOnlyDatabase`, `SqlLimits`, `format_result`, `sql_tools`.

Imports: stdlib and agentic_rl.envs.tools.base only; never jax. The text-to-SQL env and its
execution-match scoring live in `agentic_rl.envs.suites.sql`.

One cohesive module over 400 lines: every layer below guards the same `query` call, and
splitting the authorizer from the connection it is installed on would scatter one defence.

Every query the policy writes (tool calls and the scored answer alike) runs through
`ReadOnlyDatabase.query`, which enforces, by independent layers:

- No writes. Statements starting with a write/DDL/transaction keyword are refused up
  front; the file is opened with `mode=ro` and `PRAGMA query_only = ON`; the attached-
  database limit is 0 (so ATTACH and VACUUM INTO cannot open another file).
- An authorizer allow-list (`set_authorizer`), checked when a statement is compiled:
  only SELECT, reading the database's own tables and views (not eponymous virtual tables
  such as json_each), recursive CTEs, the functions in `ALLOWED_FUNCTIONS` (standard
  aggregate, window, string, date/time and math functions; not printf/format,
  fts3_tokenizer, load_extension, zeroblob, json or FTS functions) and the read-only
  introspection PRAGMAs in `ALLOWED_PRAGMAS`. Everything else (writes, DDL, temp
  objects, ATTACH/DETACH, transactions, other PRAGMAs) is refused by name. At most
  `max_pattern_calls` LIKE/GLOB may appear in one statement.
- A wall-clock limit enforced from outside the SQLite step: a watchdog thread calls
  `Connection.interrupt()` at the deadline (a progress handler catches the common case
  sooner). SQLite checks for an interrupt only at VM jump instructions, so one long
  function call (or a run of calls in one straight-line step) cannot be interrupted;
  every allowed function is therefore bounded per call: SQLITE_LIMIT_LENGTH caps every
  string/blob at `max_blob_bytes`, LIKE/GLOB patterns at `max_pattern_bytes`, and
  `instr`, `replace` and two-argument `trim`/`ltrim`/`rtrim`, quadratic in SQLite 3.40,
  are replaced by linear-time versions with the same results, which also stop at the
  deadline themselves. Expression depth, compound SELECTs, function arguments and result
  columns are capped too; query parameters are not accepted.
- Bounded results: rows are fetched one at a time and fetching stops at `max_rows` rows
  or `max_result_bytes` bytes (text is counted while a row is built), and the
  observation says so. Scoring fetches at most `max_compare_rows` rows and
  `max_compare_bytes` bytes per result; a larger answer scores 0 with that reason.
- `close()` interrupts a running query and never waits more than a second for it.

Every failure becomes an `SqlError` whose message says what was refused and why
("refused: function fts3_tokenizer is not allowed ...", "the query exceeded the 2 s
time limit ..."); the tools turn it into an observation, scoring into a reason.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentic_rl.envs.tools.base import Tool, ToolExecutionError, require_positive

# Functions the agent may call (the authorizer's SQLITE_FUNCTION action), by lower-case
# name. An allow-list: a function not named here - one compiled into this SQLite build or
# added by a later version - is refused until someone has checked it. The criterion is
# what text-to-SQL needs (Spider/BIRD-style queries) and what is cheap per call, since one
# call runs inside one SQLite step that neither the interrupt nor the progress handler can
# stop: each function below costs O(bytes of its arguments), and arguments are capped by
# SQLITE_LIMIT_LENGTH, except LIKE/GLOB (O(text x pattern): the pattern is capped and the
# number of LIKE/GLOB per statement too); instr, replace and trim(X, Y) are replaced by
# linear-time versions (see `ReadOnlyDatabase._register_functions`). Deliberately absent:
# printf/format (one call with a huge width/precision loops for seconds, measured 16 s,
# whatever the limits), fts3_tokenizer (leaks and replaces a C pointer: host crash),
# load_extension, zeroblob, json* and the -> / ->> operators, match/snippet/offsets/
# matchinfo (FTS), sqlite_compileoption_*, sqlite_offset, changes/total_changes/
# last_insert_rowid.
_AGGREGATE_FUNCTIONS = "count sum total avg min max group_concat string_agg"
_WINDOW_FUNCTIONS = (
    "row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value "
    "nth_value"
)
_SCALAR_FUNCTIONS = (
    "abs coalesce ifnull iif nullif likely unlikely likelihood typeof length octet_length "
    "lower upper substr substring trim ltrim rtrim replace instr char unicode hex unhex quote "
    "round random randomblob min max concat concat_ws sqlite_version like glob"
)
_DATE_FUNCTIONS = "date time datetime julianday strftime unixepoch timediff"
_MATH_FUNCTIONS = (
    "acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log "
    "log10 log2 mod pi pow power radians sign sin sinh sqrt tan tanh trunc"
)
ALLOWED_FUNCTIONS = frozenset(
    " ".join(
        [_AGGREGATE_FUNCTIONS, _WINDOW_FUNCTIONS, _SCALAR_FUNCTIONS, _DATE_FUNCTIONS,
         _MATH_FUNCTIONS]
    ).split()
)  # fmt: skip
_PATTERN_FUNCTIONS = frozenset({"like", "glob"})
# Read-only schema introspection (also as pragma_<name>(...) table-valued functions).
ALLOWED_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
# PRAGMAs allowed only in their reading form (no value): FTS3/4 tables read page_size
# when they connect, so an FTS table in the database stays readable.
_READ_FORM_PRAGMAS = frozenset({"page_size"})
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_temp_master"})
_KNOWN_MODULES = frozenset(
    "json_each json_tree jsonb_each jsonb_tree fts3 fts4 fts5 fts4aux fts3tokenize fts5vocab "
    "rtree rtree_i32 geopoly dbstat sqlite_dbpage sqlite_dbdata sqlite_dbptr sqlite_stmt "
    "generate_series carray completion csv zipfile".split()
)
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
_SQLITE_RECURSIVE = getattr(sqlite3, "SQLITE_RECURSIVE", 33)
# SQLite limits beyond those derived from SqlLimits (defaults in parentheses). Deep
# expressions and long compounds only cost compile time and stack; no task needs more.
_FIXED_LIMITS = {
    "SQLITE_LIMIT_EXPR_DEPTH": 250,  # (1000)
    "SQLITE_LIMIT_COMPOUND_SELECT": 100,  # (500)
    "SQLITE_LIMIT_FUNCTION_ARG": 32,  # (127)
    "SQLITE_LIMIT_VARIABLE_NUMBER": 0,  # no ?/:name parameters: the agent writes literals
    "SQLITE_LIMIT_TRIGGER_DEPTH": 1,  # nothing can fire a trigger on a read-only file
    "SQLITE_LIMIT_WORKER_THREADS": 0,
}
# Statements refused by their first keyword (unknown words are left to SQLite's parser,
# so a typo gets a syntax error, not a misleading refusal).
_REFUSED_STATEMENTS = frozenset(
    "INSERT UPDATE DELETE REPLACE UPSERT CREATE DROP ALTER ATTACH DETACH VACUUM REINDEX ANALYZE "
    "BEGIN COMMIT END ROLLBACK SAVEPOINT RELEASE EXPLAIN".split()
)
_READ_ONLY_HINT = (
    "The database is read-only: use SELECT queries "
    "(PRAGMA table_info(<table>) is allowed for schema inspection)."
)
_FUNCTION_HINT = "only standard aggregate, window, string, date/time and math functions are"
_LEADING_RE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_KEYWORD_RE = re.compile(r"[A-Za-z]+")
_CELL_OVERHEAD = 8  # bytes counted per fetched value on top of its text/blob length


class SqlError(ToolExecutionError):
    """A query failed or was refused; the message is what the agent sees."""


@dataclass(frozen=True)
class SqlLimits:
    """Bounds on one query (see the module docstring).

    `timeout_s`: wall-clock limit of one query. `max_rows` rows and `max_result_bytes`
    bytes are fetched for the agent; scoring fetches `max_compare_rows` rows and
    `max_compare_bytes` bytes per result. `max_value_chars` cuts long cells in
    observations, `max_output_chars` the whole observation. `max_sql_chars`: query
    length. `max_blob_bytes`: any string/blob a query reads or builds
    (SQLITE_LIMIT_LENGTH). `max_result_columns`: columns of a result (raised to the widest
    table or view of the database). `max_pattern_bytes`: a LIKE/GLOB pattern;
    `max_pattern_calls`: LIKE/GLOB operators in one statement.
    """

    timeout_s: float = 2.0
    max_rows: int = 50
    max_compare_rows: int = 10_000
    max_value_chars: int = 120
    max_output_chars: int = 4000
    max_sql_chars: int = 4000
    max_blob_bytes: int = 1_000_000
    max_result_bytes: int = 4_000_000
    max_compare_bytes: int = 32_000_000
    max_result_columns: int = 64
    max_pattern_bytes: int = 64
    max_pattern_calls: int = 8

    def __post_init__(self):
        require_positive(self)


@dataclass(frozen=True)
class QueryResult:
    """`truncated`: rows were left out; `byte_limit` is set when fetching stopped at that
    byte budget (otherwise the row limit cut it)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    byte_limit: int | None = None


class _ResultTooLarge(Exception):
    """Raised by the text factory when a fetch passes its byte budget."""


class _FunctionRefused(Exception):
    """Raised by a replacement SQL function; the reason is in `ReadOnlyDatabase._func_error`."""


class _Watchdog:
    """One daemon thread per process that calls `callback()` once its deadline passes,
    unless the deadline was disarmed first. It is how a query is stopped from outside the
    SQLite step that runs it."""

    def __init__(self):
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int]] = []
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, callback: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._ids)
            self._callbacks[token] = callback
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, args=(self._cond,), name="sql-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._callbacks.pop(token, None)

    def _run(self, cond: threading.Condition) -> None:
        while True:
            with cond:
                if cond is not self._cond:  # reset after a fork: this thread is stale
                    return
                while True:
                    while self._heap and self._heap[0][1] not in self._callbacks:
                        heapq.heappop(self._heap)  # disarmed
                    if not self._heap:
                        cond.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    cond.wait(delay)
                _, token = heapq.heappop(self._heap)
                callback = self._callbacks.pop(token)
            try:
                callback()
            except Exception:  # noqa: BLE001 - a failed interrupt must not kill the watchdog
                pass


_WATCHDOG = _Watchdog()


class ReadOnlyDatabase:
    """A read-only, time- and size-bounded connection to one SQLite file (see the module
    docstring).

    Thread-safe (tools run in worker threads): queries are serialised by a lock, and
    `close()` may be called from any thread while a query runs.
    """

    def __init__(self, path: str | Path, limits: SqlLimits | None = None):
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise FileNotFoundError(f"SQLite database not found: {self.path}")
        self.limits = limits or SqlLimits()
        uri = self.path.as_uri() + "?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()  # held for the whole of a query
        self._state = threading.Lock()  # guards the fields below and conn.interrupt/close
        self._active: int | None = None  # id of the running query
        self._query_ids = itertools.count(1)
        self._stop_reason: str | None = None  # "timeout" or "closed" once interrupted
        self._closed = False
        self._conn_closed = False
        self._deadline = math.inf
        self._denied: str | None = None  # first refusal of the statement being compiled
        self._func_error: str | None = None
        self._pattern_calls = 0
        self._fetched = 0
        self._fetch_budget: int | None = None
        self._aux: sqlite3.Connection | None = None  # for SQLite's own REAL -> TEXT
        try:
            self._conn.text_factory = self._text
            self._conn.execute("PRAGMA query_only = ON")
            self._readable, widest = self._scan_schema()
            self._modules = self._virtual_modules()
            self._apply_limits(widest)
            self._register_functions()
            self._conn.set_authorizer(self._authorize)
            self._conn.set_progress_handler(self._progress, 1000)
        except BaseException:
            self._conn.close()
            raise

    # -- setup ----------------------------------------------------------------------

    def _scan_schema(self) -> tuple[frozenset[str], int]:
        """Lower-case names of the tables/views the agent may read, and the widest one's
        column count (the result-column limit must not make a table unreadable)."""
        try:
            names = [
                str(r[0])
                for r in self._conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
                ).fetchall()
            ]
        except sqlite3.Error:  # not a database, or corrupt: queries will say so
            return frozenset(_SCHEMA_TABLES), 0
        widest = 0
        for name in names:
            try:
                cols = self._conn.execute(f"PRAGMA table_xinfo({_quote_ident(name)})").fetchall()
            except sqlite3.Error:  # e.g. a virtual table whose module is not compiled in
                continue
            widest = max(widest, len(cols))
        readable = {n.lower() for n in names} | _SCHEMA_TABLES
        readable |= {f"pragma_{p}" for p in ALLOWED_PRAGMAS}
        return frozenset(readable), widest

    def _virtual_modules(self) -> frozenset[str]:
        """Names of the virtual-table modules (json_each, dbstat, fts3, ...): usable as
        eponymous tables, so never readable through a table-less READ check."""
        try:
            rows = self._conn.execute("SELECT name FROM pragma_module_list").fetchall()
        except sqlite3.Error:
            rows = []
        return _KNOWN_MODULES | {str(r[0]).lower() for r in rows}

    def _apply_limits(self, widest_table: int) -> None:
        setlimit = getattr(self._conn, "setlimit", None)
        if setlimit is None:  # Python < 3.11: the authorizer still refuses ATTACH
            return
        lim = self.limits
        setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        setlimit(sqlite3.SQLITE_LIMIT_LENGTH, lim.max_blob_bytes)
        setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 4 * lim.max_sql_chars)
        setlimit(sqlite3.SQLITE_LIMIT_COLUMN, max(lim.max_result_columns, widest_table))
        setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, lim.max_pattern_bytes)
        for name, value in _FIXED_LIMITS.items():
            if hasattr(sqlite3, name):
                setlimit(getattr(sqlite3, name), value)

    def _register_functions(self) -> None:
        """SQLite 3.40's instr, replace and trim(X, Y) take O(len(X) * len(Y)) time in one
        call (a 512 KiB haystack and a 256 KiB needle: 5 s; trim with an 8000-character
        set: 20 s). These versions give the same results in linear time."""
        create = self._conn.create_function
        create("instr", 2, self._instr, deterministic=True)
        create("replace", 3, self._replace, deterministic=True)
        create("trim", 2, lambda x, y: self._trim(x, y, True, True), deterministic=True)
        create("ltrim", 2, lambda x, y: self._trim(x, y, True, False), deterministic=True)
        create("rtrim", 2, lambda x, y: self._trim(x, y, False, True), deterministic=True)

    # -- callbacks from SQLite ---------------------------------------------------------

    def _authorize(self, action: int, arg1: Any, arg2: Any, db_name: Any, source: Any) -> int:
        if action == sqlite3.SQLITE_SELECT or action == _SQLITE_RECURSIVE:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ:
            table = str(arg1).lower()
            if table in self._readable:
                return sqlite3.SQLITE_OK
            if arg2 == "" and db_name is None and not self._is_virtual_module(table):
                return sqlite3.SQLITE_OK  # count(*) over a CTE or subquery: no column read
            if table.startswith("pragma_"):
                return self._deny(f"PRAGMA {table[7:]} is not allowed. {_READ_ONLY_HINT}")
            return self._deny(
                f"reading {arg1} is not allowed (only the database's own tables and views)"
            )
        if action == sqlite3.SQLITE_FUNCTION:
            name = str(arg2).lower()
            if name not in ALLOWED_FUNCTIONS:
                return self._deny(f"function {name} is not allowed ({_FUNCTION_HINT})")
            if name in _PATTERN_FUNCTIONS and self._active is not None:
                self._pattern_calls += 1
                if self._pattern_calls > self.limits.max_pattern_calls:
                    return self._deny(
                        f"more than {self.limits.max_pattern_calls} LIKE/GLOB patterns in one "
                        "query are not allowed (each costs time proportional to text x pattern)"
                    )
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = str(arg1).lower()
            if name in ALLOWED_PRAGMAS or (name in _READ_FORM_PRAGMAS and arg2 is None):
                return sqlite3.SQLITE_OK
            return self._deny(f"PRAGMA {arg1} is not allowed. {_READ_ONLY_HINT}")
        if action == sqlite3.SQLITE_UPDATE and str(arg1).lower() in _SCHEMA_TABLES:
            # SQLite asks this while it first connects a virtual table (a pragma_* table,
            # an FTS table). IGNORE updates nothing; a real UPDATE of the schema table is
            # refused by the keyword check and by SQLite ("may not be modified").
            return sqlite3.SQLITE_IGNORE
        what = _ACTION_NAMES.get(action, f"operation {action}")
        return self._deny(f"{what} is not allowed. {_READ_ONLY_HINT}")

    def _is_virtual_module(self, name: str) -> bool:
        return name in self._modules or name.startswith("pragma_")

    def _deny(self, reason: str) -> int:
        if self._denied is None:
            self._denied = reason
        return sqlite3.SQLITE_DENY

    def _progress(self) -> int:
        if time.monotonic() > self._deadline:
            self._stop_reason = self._stop_reason or "timeout"
            return 1
        return 0

    def _text(self, raw: bytes) -> str:
        if self._fetch_budget is not None:
            self._fetched += len(raw) + _CELL_OVERHEAD
            if self._fetched > self._fetch_budget:
                raise _ResultTooLarge
        return raw.decode("utf-8", "replace")

    # -- linear-time replacements of instr / replace / trim(X, Y) -------------------------

    def _as_text(self, value: Any) -> str:
        """A non-NULL argument as SQLite's sqlite3_value_text() sees it."""
        if isinstance(value, str):
            return value
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if isinstance(value, float):  # SQLite's own REAL -> TEXT rendering
            if self._aux is None:
                self._aux = sqlite3.connect(":memory:", check_same_thread=False)
            return self._aux.execute("SELECT CAST(? AS TEXT)", (value,)).fetchone()[0]
        return str(value)

    def _check_time(self) -> None:
        """Each replacement call is linear but not free (a 1 MB argument: up to ~50 ms), and
        many calls can share one SQLite step: they stop at the deadline themselves."""
        if self._closed or time.monotonic() > self._deadline:
            self._stop_reason = self._stop_reason or ("closed" if self._closed else "timeout")
            raise _FunctionRefused

    def _instr(self, haystack: Any, needle: Any) -> int | None:
        self._check_time()
        if haystack is None or needle is None:
            return None
        if isinstance(haystack, bytes) and isinstance(needle, bytes):
            return haystack.find(needle) + 1  # byte position; an empty needle gives 1
        return self._as_text(haystack).find(self._as_text(needle)) + 1

    def _replace(self, x: Any, y: Any, z: Any) -> Any:
        self._check_time()
        if x is None or y is None:
            return None
        pattern = self._as_text(y)
        if not pattern or pattern[0] == "\x00":
            # SQLite returns X itself for an empty pattern (a blob as the text it read)
            return self._as_text(x) if isinstance(x, bytes) else x
        if z is None:
            return None
        text, repl = self._as_text(x), self._as_text(z)
        count = text.count(pattern)
        if count and len(repl) > len(pattern):
            grow = len(repl.encode("utf-8", "replace")) - len(pattern.encode("utf-8", "replace"))
            size = len(text.encode("utf-8", "replace")) + count * grow
            if size > self.limits.max_blob_bytes:
                self._func_error = (
                    f"replace() would build a {size:,}-byte string; values are limited to "
                    f"{self.limits.max_blob_bytes:,} bytes (string or blob too big)"
                )
                raise _FunctionRefused
        return text.replace(pattern, repl)

    def _trim(self, x: Any, chars: Any, left: bool, right: bool) -> str | None:
        self._check_time()
        if x is None or chars is None:
            return None
        text, charset = self._as_text(x), self._as_text(chars)
        if len(charset) > 64:
            charset = "".join(set(charset))
        if not charset:
            return text
        if len(charset) <= 64:  # str.strip is linear for a short set
            if left and right:
                return text.strip(charset)
            return text.lstrip(charset) if left else text.rstrip(charset)
        members = set(charset)
        start, end = 0, len(text)
        while left and start < end and text[start] in members:
            start += 1
        while right and end > start and text[end - 1] in members:
            end -= 1
        return text[start:end]

    # -- queries -------------------------------------------------------------------------

    def _interrupt(self, query_id: int, reason: str) -> None:
        with self._state:
            if self._active == query_id and not self._conn_closed:
                self._stop_reason = self._stop_reason or reason
                self._conn.interrupt()

    def _close_connection(self) -> None:
        """Closes the SQLite handle; the caller holds `_lock` (no query is running)."""
        with self._state:
            if self._conn_closed:
                return
            self._conn_closed = True
            self._conn.close()
            if self._aux is not None:
                self._aux.close()

    def close(self) -> None:
        """Stops a running query (interrupt) and closes the connection. Never waits more
        than about a second: if the query does not return by then, it closes the
        connection itself when it does."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            if self._active is not None and not self._conn_closed:
                self._stop_reason = "closed"
                self._conn.interrupt()
        if self._lock.acquire(timeout=1.0):
            try:
                self._close_connection()
            finally:
                self._lock.release()

    def query(
        self, sql: str, max_rows: int | None = None, max_bytes: int | None = None
    ) -> QueryResult:
        """Runs one statement; raises `SqlError` with a clear message on any failure.

        At most `max_rows` rows (default `limits.max_rows`) and `max_bytes` bytes (default
        `limits.max_result_bytes`) are fetched; `truncated`/`byte_limit` say what was cut.
        """
        if not isinstance(sql, str):
            raise SqlError(f"the query must be a string, got {type(sql).__name__}")
        if len(sql) > self.limits.max_sql_chars:
            raise SqlError(f"the query is too long ({len(sql)} > {self.limits.max_sql_chars})")
        if "\x00" in sql:
            raise SqlError("the query contains a NUL character")
        keyword = first_keyword(sql)
        if keyword in _REFUSED_STATEMENTS:
            raise SqlError(f"refused: {keyword} statements are not allowed. {_READ_ONLY_HINT}")
        limit = self.limits.max_rows if max_rows is None else max_rows
        budget = self.limits.max_result_bytes if max_bytes is None else max_bytes
        if self._closed:
            raise SqlError("the database is closed")
        if not self._lock.acquire(timeout=self.limits.timeout_s + 1.0):
            raise SqlError("the database is still busy with an earlier query; try again")
        try:
            if self._closed:
                raise SqlError("the database is closed")
            return self._run(sql, limit, budget)
        finally:
            if self._closed:
                self._close_connection()
            self._lock.release()

    def _run(self, sql: str, limit: int, budget: int) -> QueryResult:
        query_id = next(self._query_ids)
        deadline = time.monotonic() + self.limits.timeout_s
        with self._state:
            self._active, self._stop_reason = query_id, None
        self._denied = self._func_error = None
        self._pattern_calls, self._fetched, self._fetch_budget = 0, 0, budget
        self._deadline = deadline
        token = _WATCHDOG.arm(deadline, lambda: self._interrupt(query_id, "timeout"))
        cursor = None
        try:
            cursor = self._conn.execute(sql)
            if cursor.description is None:
                raise SqlError("the statement returned no result set; use a SELECT query")
            columns = tuple(str(d[0]) for d in cursor.description)
            rows: list[tuple[Any, ...]] = []
            over_budget = False
            while len(rows) <= limit:  # one row past the limit says "truncated"
                try:
                    row = cursor.fetchone()
                except _ResultTooLarge:
                    over_budget = True
                    break
                if row is None:
                    break
                self._fetched += sum(
                    len(v) + _CELL_OVERHEAD if isinstance(v, bytes) else _CELL_OVERHEAD
                    for v in row
                    if not isinstance(v, str)  # text was counted by the text factory
                )
                if self._fetched > budget:
                    over_budget = True
                    break
                rows.append(row)
        except SqlError:
            raise
        except _ResultTooLarge:  # a text cell of the first row, built during execute()
            columns, rows, over_budget = (), [], True
        except sqlite3.Error as e:
            raise self._explain(e) from None
        except Exception as e:  # noqa: BLE001 - e.g. UnicodeEncodeError, MemoryError
            raise SqlError(f"query failed: {type(e).__name__}: {e}") from None
        finally:
            _WATCHDOG.disarm(token)
            with self._state:
                self._active = None
            self._deadline = math.inf
            self._fetch_budget = None
            if cursor is not None:
                try:
                    cursor.close()
                except sqlite3.Error:
                    pass
        if over_budget:
            return QueryResult(columns, rows[:limit], truncated=True, byte_limit=budget)
        return QueryResult(columns, rows[:limit], truncated=len(rows) > limit)

    def _explain(self, error: sqlite3.Error) -> SqlError:
        text = str(error)
        lim = self.limits
        if self._denied:
            return SqlError(f"refused: {self._denied}")
        if "not authorized" in text:
            return SqlError(f"refused: this statement is not allowed. {_READ_ONLY_HINT}")
        stopped = "interrupted" in text or (
            self._stop_reason is not None and "user-defined function raised" in text
        )
        if stopped:
            if self._stop_reason == "closed":
                return SqlError("the query was stopped because the database was closed")
            return SqlError(
                f"the query exceeded the {lim.timeout_s:g} s time limit and was stopped; "
                "simplify it (e.g. avoid cross joins without conditions)"
            )
        if self._func_error:
            return SqlError(f"SQL error: {self._func_error}")
        if "user-defined function raised exception" in text:
            return SqlError("SQL error: instr/replace/trim could not read their arguments")
        if "one statement at a time" in text:
            return SqlError("only one SQL statement per call is allowed")
        if "too big" in text:
            text += f" (a value may hold at most {lim.max_blob_bytes:,} bytes)"
        elif "pattern too complex" in text:
            text += f" (a LIKE/GLOB pattern may be at most {lim.max_pattern_bytes} bytes)"
        elif "too many columns" in text:
            text += f" (at most {self._conn.getlimit(sqlite3.SQLITE_LIMIT_COLUMN)})"
        elif "too many SQL variables" in text or "bindings" in text:
            text = "query parameters (?, :name) are not supported; write the values inline"
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
    if result.byte_limit is not None:
        lines.append(
            f"(showing the first {n} rows: the result was truncated after "
            f"{result.byte_limit:,} bytes; select fewer or shorter columns, or add LIMIT)"
        )
    elif result.truncated:
        lines.append(f"(showing the first {n} rows; add LIMIT or aggregate to see less)")
    else:
        lines.append(f"({n} row{'s' if n != 1 else ''})")
    text = "\n".join(lines)
    if len(text) > limits.max_output_chars:
        text = text[: limits.max_output_chars] + "\n[output truncated]"
    return text


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
