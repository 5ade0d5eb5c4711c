"""Attacks on the read-only SQL tool (`run_sql`) and on the reward scoring of an answer.

Each attack plays a hostile policy against a fresh SQLite file: it sends its SQL the way a
policy does (a `<tool_call>` parsed by `parse_action`, or a final `<answer>` that
`SqlEnv` scores) and then checks that the defence held:

- the call returned in bounded time (`LIMIT_S` limit, `GRACE_S` slack for a loaded host);
- the process did not grow by more than `MAX_RSS_GROWTH_MB` (ru_maxrss: each attack runs in
  a fresh child process, so the high-water mark is the attack's own);
- the database file is byte-identical and no file appeared next to it (journal, ATTACH or
  VACUUM INTO targets, which the attacks point into the same directory);
- a refused call came back as an error observation (never an exception, never a crash:
  the harness classifies a SIGSEGV or a hang of this child itself).

Items: "1" = fts3_tokenizer pointer overwrite (SIGSEGV), "2" = time limit bypassed by
one expensive SQLite step / unbounded result bytes / close() blocking; "new" = same
classes, cases of our own.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agentic_rl.envs import SqlEnv, SqlLimits, Task, parse_action
from agentic_rl.envs.suites.sql_data import DOMAINS, build_database
from scripts.attacks import Attack

LIMIT_S = 2.0  # the SQL time limit the attacks run under
GRACE_S = 8.0  # a call may take LIMIT_S + GRACE_S before it counts as a bypass
MAX_RSS_GROWTH_MB = 256
GOLD = "SELECT name FROM employees WHERE salary > 100000"
PRINTF3 = "SELECT " + ", ".join(["length(printf('%.*c', 2147483647, 'x'))"] * 3)
FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
ROWS = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < {n})"
# 2**19 'a' (512 KiB) built with cheap steps, then a needle / set derived from it.
BIG = (
    "WITH RECURSIVE s(x) AS (SELECT 'a' UNION ALL SELECT x || x FROM s WHERE length(x) < 500000),"
    " a(x) AS (SELECT max(x) FROM s)"
)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Fixture:
    """A temporary company database, an env on it, and checks of what happened to it."""

    def __init__(self, fts: bool = False):
        self.dir = Path(tempfile.mkdtemp(prefix="sql-attack-"))
        self.db = self.dir / "company.sqlite"
        build_database(self.db, DOMAINS[0], seed=1)
        if fts:
            conn = sqlite3.connect(self.db)
            conn.execute("CREATE VIRTUAL TABLE docs USING fts3(body)")
            conn.execute("INSERT INTO docs VALUES ('hello world')")
            conn.commit()
            conn.close()
        self.digest = hashlib.sha256(self.db.read_bytes()).hexdigest()
        self.files = sorted(p.name for p in self.dir.iterdir())
        self.env = SqlEnv(limits=SqlLimits(timeout_s=LIMIT_S))
        self.reset()

    def reset(self) -> None:
        task = Task("attack", "q", GOLD, {"db_path": str(self.db), "gold_sql": GOLD})
        self.env.reset(task, 0)

    def tool(self, sql: str) -> str:
        """`run_sql(sql)` as a policy calls it; the observation text."""
        call = {"name": "run_sql", "arguments": {"query": sql}}
        result = self.env.step(parse_action(f"<tool_call>{json.dumps(call)}</tool_call>",
                                            self.env.tools))  # fmt: skip
        return "\n".join(m["content"] for m in result.observation)

    def score(self, sql: str) -> tuple[float, str]:
        """The final answer `sql`, scored; (reward, reason)."""
        result = self.env.step(parse_action(f"<answer>{sql}</answer>", self.env.tools))
        self.reset()
        return result.reward, str(result.info.get("reason"))

    def damage(self) -> str | None:
        if hashlib.sha256(self.db.read_bytes()).hexdigest() != self.digest:
            return "the database file changed"
        new = sorted(set(p.name for p in self.dir.iterdir()) - set(self.files))
        return f"new files next to the database: {new}" if new else None

    def close(self) -> None:
        self.env.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _measured(fn: Callable[[], str | None]) -> str | None:
    """Runs `fn`, then reports a bypass of the time or memory bound."""
    rss0, t0 = _maxrss_mb(), time.monotonic()
    escaped = fn()
    seconds, growth = time.monotonic() - t0, _maxrss_mb() - rss0
    if seconds > LIMIT_S + GRACE_S:
        return f"took {seconds:.1f} s with a {LIMIT_S:g} s limit" + (
            f"; {escaped}" if escaped else ""
        )
    if growth > MAX_RSS_GROWTH_MB:
        return f"memory grew by {growth:.0f} MB" + (f"; {escaped}" if escaped else "")
    return escaped


def tool_attack(
    *queries: str,
    expect: str | None = None,
    fts: bool = False,
    check: Callable[[str], str | None] | None = None,
) -> Callable[[], str | None]:
    """Sends each query through run_sql. `expect`: every observation must be an error
    containing this text; `check(observation)` may report an escape."""  # fmt: skip

    def run() -> str | None:
        fx = _Fixture(fts=fts)
        try:

            def calls() -> str | None:
                for sql in queries:
                    obs = fx.tool(sql)
                    if expect is not None and not (obs.startswith("Error:") and expect in obs):
                        return f"{sql[:60]!r} was not refused ({expect!r}): {obs[:160]!r}"
                    if check is not None and (problem := check(obs)):
                        return f"{sql[:60]!r}: {problem}"
                return None

            return _measured(calls) or fx.damage()
        finally:
            fx.close()

    return run


def score_attack(
    *queries: str,
    expect: str | None = None,
    check: Callable[[float, str], str | None] | None = None,
) -> Callable[[], str | None]:
    """Answers with each query; the scoring must end in bounded time and memory with
    reward 0 (the gold is a normal query), and the reason must contain `expect`."""  # fmt: skip

    def run() -> str | None:
        fx = _Fixture()
        try:

            def answers() -> str | None:
                for sql in queries:
                    reward, reason = fx.score(sql)
                    if reward > 0:
                        return f"answer {sql[:60]!r} earned reward {reward}"
                    if expect is not None and expect not in reason:
                        return f"answer {sql[:60]!r}: reason {reason[:160]!r} lacks {expect!r}"
                    if check is not None and (problem := check(reward, reason)):
                        return problem
                return None

            return _measured(answers) or fx.damage()
        finally:
            fx.close()

    return run


def _no_blob(obs: str) -> str | None:
    return "a pointer leaked" if "<blob" in obs else None


def _is_error(obs: str) -> str | None:
    return None if obs.startswith("Error:") else f"not an error: {obs[:160]!r}"


def _truncated(obs: str) -> str | None:
    return None if "truncated" in obs or obs.startswith("Error:") else "result not truncated"


def _fts_pointer_overwrite() -> str | None:
    """Item 1 verbatim: replace the 'simple' tokenizer by 0x4141..., then use FTS."""
    fx = _Fixture(fts=True)
    try:
        obs = fx.tool("SELECT fts3_tokenizer('simple', x'4141414141414141')")
        fx.tool("SELECT * FROM docs WHERE docs MATCH 'hello'")  # SIGSEGV here when it got in
        fx.tool("SELECT body FROM docs")
        if not obs.startswith("Error:") or "fts3_tokenizer" not in obs:
            return f"fts3_tokenizer was not refused: {obs[:160]!r}"
        return fx.damage()
    finally:
        fx.close()


def _close_during_stuck_query() -> str | None:
    """close() (the env ending an episode) while a query is running must not block."""
    fx = _Fixture()
    try:
        fx.env = SqlEnv(limits=SqlLimits(timeout_s=60.0))
        fx.reset()
        worker = threading.Thread(target=fx.tool, args=(FOREVER,), daemon=True)
        worker.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        fx.env.close()
        seconds = time.monotonic() - t0
        worker.join(10)
        if seconds > 3:
            return f"close() blocked {seconds:.1f} s behind a running query"
        if worker.is_alive():
            return "the running query was not stopped by close()"
        return fx.damage()
    finally:
        fx.close()


def _wide(n: int) -> str:
    return "WITH a(x) AS (SELECT randomblob(900000)) SELECT " + ", ".join(["x"] * n) + " FROM a"


_WRITES = [
    "DELETE FROM employees",
    "delete from employees",
    "/* hi */ UPDATE employees SET salary = 0",
    "-- c\nINSERT INTO departments VALUES (99, 'X', 'Y', 1)",
    "REPLACE INTO departments VALUES (1, 'X', 'Y', 1)",
    "WITH t AS (SELECT 1) DELETE FROM employees",
    "WITH t AS (SELECT 1) UPDATE sqlite_master SET sql = 'x'",
    "DROP TABLE employees",
    "ALTER TABLE employees RENAME TO e2",
    "CREATE INDEX i ON employees(name)",
    "BEGIN IMMEDIATE",
    "SAVEPOINT s",
    "REINDEX",
    "ANALYZE",
]

ATTACKS: list[Attack] = [
    # -- item 1: fts3_tokenizer (pointer leak + overwrite = code-execution primitive) -------
    Attack("fts3_tokenizer_overwrite_then_match", "1", _fts_pointer_overwrite,
           description="fts3_tokenizer('simple', x'41..') then MATCH on an FTS table"),
    Attack("fts3_tokenizer_pointer_leak", "1",
           tool_attack("SELECT fts3_tokenizer('simple')", "SELECT hex(fts3_tokenizer('porter'))",
                       expect="fts3_tokenizer is not allowed", check=_no_blob, fts=True)),
    Attack("fts3_tokenizer_disguised", "1",
           tool_attack("SELECT FTS3_TOKENIZER/**/('simple')", "SELECT \"fts3_tokenizer\"('simple')",
                       "SELECT (SELECT fts3_tokenizer('simple'))",
                       "SELECT 1 FROM employees WHERE fts3_tokenizer('simple') IS NOT NULL",
                       expect="fts3_tokenizer is not allowed")),
    Attack("fts3_tokenizer_in_scoring", "1",
           score_attack("SELECT fts3_tokenizer('simple', x'4141414141414141')",
                        expect="fts3_tokenizer is not allowed")),
    Attack("load_extension", "new",
           tool_attack("SELECT load_extension('/tmp/evil.so')",
                       "SELECT load_extension('libc.so.6', 'system')",
                       expect="load_extension is not allowed")),
    Attack("fts_match_and_internals", "new",
           tool_attack("SELECT * FROM docs WHERE docs MATCH 'h*'", "SELECT snippet(docs) FROM docs",
                       "SELECT * FROM docs_segdir", fts=True, check=None)),
    # -- item 2: one expensive SQLite step (no progress-handler call in between) ----------
    Attack("printf_width_3x_tool", "2", tool_attack(PRINTF3, expect="printf is not allowed"),
           description="3 x printf('%.*c', 2147483647, 'x'): 48 s with a 2 s limit"),
    Attack("printf_width_3x_scoring", "2", score_attack(PRINTF3, expect="printf is not allowed")),
    Attack("printf_variants", "new",
           tool_attack("SELECT format('%.*c', 2147483647, 'x')", "SELECT printf('%2147483647d', 1)",
                       "SELECT printf('%!.2147483647f', 1.0)", "SELECT PrInTf('%.*c', 1e9, 'x')",
                       expect="is not allowed")),
    Attack("instr_quadratic", "new",
           tool_attack(f"{BIG}, b(y) AS (SELECT substr(x, 1, 250000) || 'b' FROM a) SELECT "
                       + ", ".join(["instr(x, y)"] * 40) + " FROM a, b")),
    Attack("replace_quadratic_and_growth", "new",
           tool_attack(f"{BIG}, b(y) AS (SELECT substr(x, 1, 250000) || 'b' FROM a) SELECT "
                       + ", ".join(["length(replace(x, y, ''))"] * 20) + " FROM a, b",
                       f"{BIG} SELECT length(replace(x, 'a', x)) FROM a",
                       f"{BIG} SELECT length(replace(replace(x, 'a', 'aa'), 'a', 'aa')) FROM a")),
    Attack("trim_quadratic", "new",
           tool_attack(f"{BIG}, b(y) AS (SELECT replace(substr(x, 1, 8000), 'a', 'b') || 'a' "
                       "FROM a) SELECT " + ", ".join(["length(trim(x, y))"] * 20) + " FROM a, b")),
    Attack("like_long_patterns", "new",
           tool_attack(f"{BIG} SELECT x LIKE '%' || substr(x, 1, 60000) || 'b%' FROM a",
                       f"{BIG} SELECT " + ", ".join(["x LIKE '%' || substr(x, 1, 60) || 'b%'"] * 40)
                       + " FROM a",
                       check=_is_error)),
    Attack("like_many_wildcards", "new",
           tool_attack(f"{BIG} SELECT " + ", ".join(["x LIKE '" + "%a" * 30 + "b'"] * 8)
                       + " FROM a",
                       f"{BIG} SELECT " + ", ".join(["x GLOB '" + "*a" * 30 + "b'"] * 8)
                       + " FROM a")),
    Attack("glob_class_patterns", "new",
           tool_attack(f"{BIG} SELECT " + ", ".join(["x GLOB '*[" + "b" * 58 + "]*'"] * 8)
                       + " FROM a",
                       f"{BIG} SELECT x GLOB '*' || substr(x, 1, 5000) || 'b*' FROM a")),
    Attack("string_doubling_and_blobs", "new",
           tool_attack("WITH RECURSIVE s(x) AS (SELECT 'a' UNION ALL SELECT x || x || x || x "
                       "FROM s) SELECT length(x) FROM s",
                       "SELECT length(randomblob(2000000000))", "SELECT zeroblob(2000000000)",
                       "SELECT hex(randomblob(900000))", "SELECT length(char(" +
                       ", ".join(["1114111"] * 200) + "))", check=_is_error)),
    Attack("recursive_cte_forever_tool", "2", tool_attack(FOREVER, expect="time limit")),
    Attack("recursive_cte_forever_scoring", "2", score_attack(FOREVER, expect="time limit")),
    Attack("huge_cross_join", "new",
           tool_attack("SELECT count(*) FROM employees a, employees b, employees c, employees d, "
                       "employees e, employees f", "SELECT a.name FROM employees a, employees b, "
                       "employees c, employees d, employees e ORDER BY random() LIMIT 1",
                       expect="time limit")),
    Attack("sort_of_big_rows", "new",
           tool_attack(ROWS.format(n=100000) + " SELECT randomblob(100000) FROM r ORDER BY 1 "
                       "LIMIT 1", ROWS.format(n=10**9) + " SELECT count(DISTINCT randomblob(1000)) "
                       "FROM r", check=_is_error)),
    Attack("json_functions", "new",
           tool_attack("SELECT json('[1]')", "SELECT * FROM json_each('[1,2]')",
                       "SELECT count(*) FROM json_tree('[[[[1]]]]')", "SELECT '[1]' ->> '$[0]'",
                       expect="not allowed")),
    Attack("eponymous_virtual_tables", "new",
           tool_attack("SELECT * FROM pragma_function_list", "SELECT * FROM pragma_database_list",
                       "SELECT count(*) FROM pragma_module_list", "SELECT * FROM dbstat",
                       "SELECT * FROM sqlite_dbpage", check=_is_error)),
    # -- item 2: result size in bytes ------------------------------------------------------
    Attack("blob_columns_tool", "2",
           tool_attack(ROWS.format(n=60) + " SELECT " + ", ".join(["randomblob(900000)"] * 10)
                       + " FROM r", check=_truncated),
           description="10 x ~1 MB columns x 51 rows returned 522 MiB"),
    Attack("zeroblob_columns_tool", "2",
           tool_attack(ROWS.format(n=60) + " SELECT " + ", ".join(["zeroblob(900000)"] * 10)
                       + " FROM r", check=_is_error)),
    Attack("blob_columns_scoring", "2",
           score_attack(ROWS.format(n=400) + " SELECT " + ", ".join(["randomblob(100000)"] * 10)
                        + " FROM r", expect="bytes"),
           description="scoring fetched up to max_compare_rows rows of any size (1.6 GiB)"),
    Attack("text_columns_one_row", "new",
           tool_attack("SELECT " + ", ".join(["hex(randomblob(450000))"] * 60), check=_truncated)),
    Attack("wide_row_of_big_values", "new",
           tool_attack(_wide(400), _wide(700), expect="too many columns")),
    Attack("wide_row_scoring", "new", score_attack(_wide(400), expect="too many columns")),
    # -- writes, files, PRAGMAs, statements ----------------------------------------------
    Attack("writes_every_form", "new", tool_attack(*_WRITES, check=_is_error)),
    Attack("writes_in_scoring", "new", score_attack(*_WRITES[:6])),
    Attack("attach_database", "new",
           tool_attack("ATTACH DATABASE 'evil.sqlite' AS e", "attach 'file:evil2.sqlite?mode=rwc' "
                       "as e", "SELECT * FROM e.sqlite_master", check=_is_error)),
    Attack("vacuum_into", "new",
           tool_attack("VACUUM INTO 'copy.sqlite'", "/**/vacuum into 'copy2.sqlite'",
                       "VACUUM main INTO 'copy3.sqlite'", check=_is_error)),
    Attack("pragma_writes", "new",
           tool_attack("PRAGMA writable_schema = 1", "PRAGMA journal_mode = WAL",
                       "PRAGMA query_only = 0", "PRAGMA user_version = 7",
                       "PRAGMA cache_size = -100000000", "PRAGMA mmap_size = 1000000000000",
                       "PRAGMA temp_store_directory = '/tmp'", "PRAGMA hard_heap_limit = 1",
                       "PRAGMA trusted_schema = 1", "PRAGMA page_size = 512",
                       expect="not allowed")),
    Attack("pragma_leaks", "new",
           tool_attack("PRAGMA database_list", "PRAGMA compile_options", "PRAGMA function_list",
                       "SELECT * FROM pragma_database_list", "PRAGMA main.database_list",
                       "SELECT sqlite_compileoption_get(0)", expect="not allowed",
                       check=lambda o: "company.sqlite" in o and "a path leaked" or None)),
    Attack("temp_objects", "new",
           tool_attack("CREATE TEMP TABLE t(x)", "CREATE TEMP VIEW v AS SELECT 1",
                       "CREATE TEMP TRIGGER t AFTER INSERT ON employees BEGIN SELECT 1; END",
                       "CREATE VIRTUAL TABLE temp.f USING fts3(x)", "WITH x AS (SELECT 1) "
                       "CREATE TABLE y(z)", check=_is_error)),
    Attack("multiple_statements", "new",
           tool_attack("SELECT 1; DROP TABLE employees", "SELECT 1;\nDELETE FROM employees",
                       "SELECT 1 --\n; UPDATE employees SET salary = 0",
                       "SELECT ';'; DELETE FROM employees", check=_is_error)),
    Attack("comments_and_unicode_keywords", "new",
           tool_attack("/* SELECT */ DELETE FROM employees", "--\nDROP TABLE employees",
                       "ＤＥＬＥＴＥ FROM employees", "DEL\u200bETE FROM employees",
                       "D\u0415LETE FROM employees", "\u00a0DELETE FROM employees",
                       "SELECT \"printf\"('%.*c', 2147483647, 'x')",
                       "SELECT printf/**/('%.*c', 2147483647, 'x')", check=_is_error)),
    Attack("long_and_deep_sql", "new",
           tool_attack("SELECT " + "(" * 1900 + "1" + ")" * 1900,
                       "SELECT " + " + ".join(["1"] * 1300),
                       "SELECT " + "(SELECT " * 400 + "1" + ")" * 400,
                       "SELECT 1 " + "UNION SELECT 1 " * 260,
                       "SELECT " + "-" * 3900 + "1", "SELECT '" + "x" * 3990 + "'",
                       "SELECT coalesce(" + ", ".join(["1"] * 200) + ")", check=None)),
    Attack("parameters_and_bad_text", "new",
           tool_attack("SELECT ?", "SELECT :x", "SELECT $x", "SELECT @x", "SELECT '\udcff'",
                       "SELECT x'zz'", "SELECT CAST(x'ff' AS TEXT)", check=None)),
    Attack("close_during_stuck_query", "2", _close_during_stuck_query,
           description="close() waited for the stuck query's lock"),
]  # fmt: skip
