"""Text-to-SQL on real SQLite files: generator, read-only enforcement, limits, scoring, the env,
the Spider loader and the suite."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentic_rl.envs import (
    Env,
    ReadOnlyDatabase,
    SqlEnv,
    SqlError,
    SqlLimits,
    Task,
    generate_sql_tasks,
    load_spider_tasks,
    make_env_suite,
    parse_action,
)
from agentic_rl.envs.suites.sql import extract_sql, results_match, score_sql
from agentic_rl.envs.suites.sql_data import DOMAINS, build_database
from agentic_rl.envs.tools.sql import first_keyword, format_result


def call(name, **arguments):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def act(env, text):
    return env.step(parse_action(text, env.tools))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    return generate_sql_tasks(
        tmp_path_factory.mktemp("sqldbs"), num_dbs=4, questions_per_db=30, seed=3
    )


@pytest.fixture
def company_db(tmp_path) -> Path:
    path = tmp_path / "company.sqlite"
    build_database(path, DOMAINS[0], seed=1)
    return path


def test_generator_is_reproducible_varied_and_every_gold_query_answers(tasks, tmp_path):
    again = generate_sql_tasks(tmp_path, num_dbs=4, questions_per_db=30, seed=3)
    assert [t.prompt for t in again] == [t.prompt for t in tasks]
    assert [t.data["gold_sql"] for t in again] == [t.data["gold_sql"] for t in tasks]
    first, second = Path(tasks[0].data["db_path"]), Path(again[0].data["db_path"])
    dump = lambda p: list(sqlite3.connect(p).iterdump())  # noqa: E731
    assert dump(first) == dump(second)
    assert len({t.data["db_id"] for t in tasks}) == 4
    assert {t.data["db_id"].split("_")[0] for t in tasks} == {d.name for d in DOMAINS}
    golds = " ".join(t.data["gold_sql"] for t in tasks)
    for skill in ("JOIN", "GROUP BY", "HAVING", "ORDER BY", "LIMIT", "DISTINCT", "(SELECT", "AVG"):
        assert skill in golds, skill
    for t in tasks:
        db = ReadOnlyDatabase(t.data["db_path"])
        assert db.query(t.data["gold_sql"]).rows, t.id
        assert score_sql(db, t.data["gold_sql"], t.data["gold_sql"]).correct
        db.close()


def test_top_k_questions_have_no_tie_at_the_cut(tasks):
    for t in tasks:
        gold = t.data["gold_sql"]
        m = re.search(r"ORDER BY (\w+) (DESC|ASC) LIMIT (\d+)", gold)
        if not m:
            continue
        col, order, k = m.group(1), m.group(2), int(m.group(3))
        table = re.search(r"FROM (\w+)", gold).group(1)
        conn = sqlite3.connect(t.data["db_path"])
        values = [r[0] for r in conn.execute(f"SELECT {col} FROM {table} ORDER BY {col} {order}")]
        assert values[k - 1] != values[k], t.prompt


WRITE_ATTEMPTS = [
    "DELETE FROM employees",
    "UPDATE employees SET salary = 0",
    "INSERT INTO departments VALUES (99, 'X', 'Y', 1)",
    "DROP TABLE employees",
    "CREATE TABLE evil (x)",
    "CREATE TEMP TABLE evil (x)",
    "ALTER TABLE employees ADD COLUMN evil",
    "VACUUM",
    "REINDEX",
    "ANALYZE",
    "BEGIN",
    "PRAGMA journal_mode = WAL",
    "PRAGMA user_version = 7",
    "PRAGMA writable_schema = 1",
    "WITH t AS (SELECT 1) INSERT INTO departments SELECT 98, 'X', 'Y', 1 FROM t",
    "WITH t AS (SELECT 1) DELETE FROM employees",
    "SELECT 1; DROP TABLE employees",
    "SELECT load_extension('/tmp/evil.so')",
    "  -- sneaky comment\n  DELETE FROM employees",
]


@pytest.mark.parametrize("sql", WRITE_ATTEMPTS)
def test_writes_are_refused_with_a_clear_message_and_the_file_is_untouched(company_db, sql):
    before, mtime = digest(company_db), company_db.stat().st_mtime_ns
    db = ReadOnlyDatabase(company_db)
    with pytest.raises(SqlError, match=r"refused|only one SQL statement"):
        db.query(sql)
    assert db.query("SELECT COUNT(*) FROM employees").rows[0][0] > 0  # still usable
    db.close()
    assert digest(company_db) == before and company_db.stat().st_mtime_ns == mtime
    assert not any(p.name.endswith(("-wal", "-journal")) for p in company_db.parent.iterdir())


def test_attach_is_refused_and_creates_no_file(company_db, tmp_path):
    target = tmp_path / "attached.sqlite"
    db = ReadOnlyDatabase(company_db)
    with pytest.raises(SqlError, match="refused: ATTACH"):
        db.query(f"ATTACH DATABASE '{target}' AS x")
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):  # authorizer layer
        db._conn.execute(f"ATTACH DATABASE '{target}' AS x")
    db._conn.set_authorizer(None)
    with pytest.raises(sqlite3.OperationalError, match="too many attached"):  # limit layer
        db._conn.execute(f"ATTACH DATABASE '{target}' AS x")
    assert not target.exists()


def test_each_layer_blocks_writes_on_its_own(company_db):
    """Bypassing the keyword check, the authorizer refuses; bypassing both, mode=ro refuses."""
    before = digest(company_db)
    db = ReadOnlyDatabase(company_db)
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        db._conn.execute("DELETE FROM employees")
    db._conn.set_authorizer(None)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db._conn.execute("DELETE FROM employees")
    db.close()
    assert digest(company_db) == before


def test_introspection_pragmas_and_reads_are_allowed(company_db):
    db = ReadOnlyDatabase(company_db)
    info = db.query("PRAGMA table_info(employees)")
    assert "salary" in [r[1] for r in info.rows]
    assert db.tables() == ["departments", "employees"]
    schema = db.table_schema("EMPLOYEES")
    assert schema.startswith("CREATE TABLE employees") and re.search(r"-- \d+ rows$", schema)
    with pytest.raises(SqlError, match="no table named 'nope'; tables: departments, employees"):
        db.table_schema("nope")
    rows = db.query(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) "
        "SELECT SUM(x) FROM c"
    ).rows
    assert rows == [(15,)]


def test_runaway_queries_are_stopped_by_the_time_limit(company_db):
    db = ReadOnlyDatabase(company_db, SqlLimits(timeout_s=0.3))
    for sql in (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c",
        "SELECT COUNT(*) FROM employees a, employees b, employees c, employees d, employees e",
    ):
        with pytest.raises(SqlError, match="exceeded the 0.3 s time limit"):
            db.query(sql)
    assert db.query("SELECT 1").rows == [(1,)]  # the deadline is reset after a timeout


def test_size_caps(company_db):
    db = ReadOnlyDatabase(company_db, SqlLimits(max_rows=5, max_blob_bytes=10_000))
    with pytest.raises(SqlError, match="too big"):
        db.query("SELECT randomblob(100000)")
    res = db.query("SELECT * FROM employees")
    assert len(res.rows) == 5 and res.truncated
    with pytest.raises(SqlError, match="too long"):
        db.query("SELECT " + "1 + " * 2000 + "1")
    with pytest.raises(SqlError, match="NUL"):
        db.query("SELECT 1\x00")
    with pytest.raises(SqlError, match="no result set"):
        db.query("-- only a comment")


def test_missing_database_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.sqlite"):
        ReadOnlyDatabase(tmp_path / "nope.sqlite")


def test_results_match_rules():
    assert results_match([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], ordered=False)
    assert not results_match([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], ordered=True)
    assert not results_match([(1,), (1,), (2,)], [(1,), (2,), (2,)], ordered=False)  # multisets
    assert results_match([(3,)], [(3.0,)], ordered=False)
    assert results_match([(0.1 + 0.2,)], [(0.3,)], ordered=True)
    assert not results_match([(0.3,)], [(0.31,)], ordered=True)
    assert not results_match([(1, 2)], [(2, 1)], ordered=False)  # columns are positional
    assert not results_match([("A",)], [("a",)], ordered=False)


def test_extract_sql_and_first_keyword():
    assert extract_sql("so <answer> SELECT 1; </answer>") == "SELECT 1"
    assert extract_sql("```sql\nSELECT 2\n```") == "SELECT 2"
    assert extract_sql("<answer>SELECT 1</answer> then <answer>SELECT 3</answer>") == "SELECT 3"
    assert extract_sql("no query here") is None and extract_sql("<answer> </answer>") is None
    assert first_keyword(" /* c */ -- x\n with t as (select 1) select * from t") == "WITH"
    assert first_keyword("-- nothing") is None


def sql_task(db_path, question, gold):
    return Task("t", question, gold, {"db_path": str(db_path), "gold_sql": gold})


def test_sql_env_multi_turn_episode(company_db):
    gold = "SELECT name FROM employees WHERE salary > 100000"
    env = SqlEnv()
    assert isinstance(env, Env)
    msgs = env.reset(sql_task(company_db, "Who earns more than 100000?", gold), seed=0)
    assert [m["role"] for m in msgs] == ["system", "user"] and "run_sql" in msgs[0]["content"]
    r = act(env, call("list_tables"))
    assert r.observation[0]["content"] == "departments, employees" and r.reward == 0
    r = act(env, call("describe_table", table="employees"))
    assert "salary INTEGER" in r.observation[0]["content"]
    r = act(env, call("run_sql", query="DELETE FROM employees"))
    assert r.observation[0]["content"].startswith("Error: refused: DELETE")
    assert r.info["tool_exec_errors"] == ["tool_error"] and not r.done
    r = act(env, call("run_sql", query="SELECT COUNT(*) AS n FROM employees"))
    assert re.fullmatch(r"n\n\d+\n\(1 row\)", r.observation[0]["content"])
    r = act(env, call("run_sql", querry="SELECT 1"))
    assert r.info["tool_error_kinds"] == ["bad_arguments"]
    # A different but equivalent query, rows in another order: still a match.
    answer = "SELECT e.name FROM employees AS e WHERE NOT e.salary <= 100000 ORDER BY e.name DESC"
    r = act(env, f"The answer is <answer>{answer}</answer>")
    assert r.done and r.reward == 1.0 and r.info["success"] and r.info["reason"] == "match"
    with pytest.raises(RuntimeError, match="after the episode ended"):
        act(env, "again")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("<answer>SELECT name FROM employees</answer>", "differs"),
        ("<answer>DROP TABLE employees</answer>", "refused"),
        ("<answer>SELEC name FROM employees</answer>", "syntax error"),
        ("I don't know", "no SQL found"),
    ],
)
def test_sql_env_wrong_answers_score_zero_with_a_reason(company_db, reply, reason):
    env = SqlEnv(valid_weight=0.1)
    env.reset(sql_task(company_db, "q", "SELECT name FROM employees WHERE salary > 100000"), 0)
    r = act(env, reply)
    assert r.done and not r.info["success"] and reason in r.info["reason"]
    assert r.reward == (0.1 if reason == "differs" else 0.0)


def test_ordered_gold_requires_the_same_order(company_db):
    gold = "SELECT name FROM employees ORDER BY salary DESC LIMIT 3"
    env = SqlEnv()
    env.reset(sql_task(company_db, "q", gold), 0)
    asc = "SELECT name FROM (SELECT name, salary FROM employees ORDER BY salary DESC LIMIT 3) "
    r = act(env, f"<answer>{asc}ORDER BY salary ASC</answer>")
    assert not r.info["success"]
    env.reset(sql_task(company_db, "q", gold), 0)
    assert act(env, f"<answer>{gold}</answer>").info["success"]


def test_task_without_db_is_rejected(company_db):
    with pytest.raises(ValueError, match="gold_sql"):
        SqlEnv().reset(Task("t", "q", None, {"db_path": str(company_db)}), 0)
    with pytest.raises(RuntimeError, match="before reset"):
        act(SqlEnv(), "x")


def make_spider_dir(root: Path) -> Path:
    db_id = "concert_singer"
    build_database(root / "database" / db_id / f"{db_id}.sqlite", DOMAINS[2], seed=5)
    tables = [
        {
            "db_id": db_id,
            "table_names_original": ["customers", "products"],
            "column_names_original": [[-1, "*"], [0, "id"], [0, "name"], [1, "id"], [1, "price"]],
        }
    ]
    dev = [
        {"db_id": db_id, "question": "How many customers are there?",
         "query": "SELECT count(*) FROM customers"},
        {"db_id": db_id, "question": "Most expensive product?",
         "query": "SELECT name FROM products ORDER BY price DESC LIMIT 1"},
    ]  # fmt: skip
    (root / "tables.json").write_text(json.dumps(tables))
    (root / "dev.json").write_text(json.dumps(dev))
    (root / "train_spider.json").write_text(json.dumps(dev[:1]))
    return root


def test_spider_loader(tmp_path):
    root = make_spider_dir(tmp_path)
    tasks = load_spider_tasks(root, "dev.json")
    assert [t.id for t in tasks] == ["spider-dev-0", "spider-dev-1"]
    assert tasks[0].data["gold_sql"] == "SELECT count(*) FROM customers"
    assert tasks[0].prompt == "Database: concert_singer\nQuestion: How many customers are there?"
    with_schema = load_spider_tasks(root, "dev.json", schema_in_prompt=True, limit=1)
    assert "customers(id, name)\nproducts(id, price)" in with_schema[0].prompt
    env = SqlEnv()
    env.reset(tasks[1], 0)
    assert act(env, f"<answer>{tasks[1].data['gold_sql']}</answer>").info["success"]
    suite = make_env_suite("text2sql", spider_dir=root)
    assert len(suite.tasks.split("train")) == 1 and len(suite.tasks.split("eval")) == 2


def test_spider_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="dev.json"):
        load_spider_tasks(tmp_path)
    root = make_spider_dir(tmp_path)
    os.remove(root / "database" / "concert_singer" / "concert_singer.sqlite")
    with pytest.raises(FileNotFoundError, match=r"dev.json\[0\]: database file not found"):
        load_spider_tasks(root)
    (root / "dev.json").write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(ValueError, match="needs db_id, question and query"):
        load_spider_tasks(root)


def test_text2sql_suite_generates_unseen_eval_databases(tmp_path):
    suite = make_env_suite(
        "text2sql", db_dir=tmp_path, num_train_dbs=2, num_eval_dbs=1, questions_per_db=5
    )
    train, evals = suite.tasks.split("train"), suite.tasks.split("eval")
    assert (len(train), len(evals)) == (10, 5)
    assert not {t.data["db_id"] for t in train} & {t.data["db_id"] for t in evals}
    env = suite.make_env()
    env.reset(evals[0], 0)
    r = act(env, f"<answer>{evals[0].data['gold_sql']}</answer>")
    assert r.info["success"]


# --- Hardening against a hostile policy (attack run: fts3_tokenizer crash, single-step
# time-limit bypass, unbounded result bytes, close() blocking). Each test reproduces an
# attack class; bounded() keeps a test from hanging when a defence is missing.


def bounded(fn, timeout_s: float):
    """Runs `fn()` in a daemon thread: (finished, {"value"| "error": ...}, seconds)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            box["error"] = e

    t0 = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return not thread.is_alive(), box, time.monotonic() - t0


def refusal(db, sql) -> str:
    with pytest.raises(SqlError) as info:
        db.query(sql)
    return str(info.value)


FTS_ATTACK = r"""
import sqlite3, sys
from agentic_rl.envs.tools.sql import ReadOnlyDatabase, SqlError
path = sys.argv[1]
w = sqlite3.connect(path)
w.execute("CREATE VIRTUAL TABLE docs USING fts3(body)")
w.execute("INSERT INTO docs VALUES ('hello world')")
w.commit()
w.close()
db = ReadOnlyDatabase(path)
for sql in ("SELECT fts3_tokenizer('simple', x'4141414141414141')",
            "SELECT * FROM docs WHERE docs MATCH 'hello'", "SELECT body FROM docs"):
    try:
        print("rows", db.query(sql).rows, flush=True)
    except SqlError as e:
        print("SqlError:", e, flush=True)
"""


def test_fts3_tokenizer_cannot_replace_the_tokenizer_and_crash_the_host(tmp_path):
    """Item 1: fts3_tokenizer(name, pointer) then a query on an FTS table was a SIGSEGV."""
    proc = subprocess.run(
        [sys.executable, "-c", FTS_ATTACK, str(tmp_path / "fts.sqlite")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, f"child died (rc={proc.returncode}): {proc.stderr[-300:]}"
    lines = proc.stdout.splitlines()
    assert "function fts3_tokenizer is not allowed" in lines[0], lines
    assert lines[2] == "rows [('hello world',)]", lines  # the FTS table itself stays readable


DENIED = [
    ("SELECT fts3_tokenizer('simple')", "function fts3_tokenizer is not allowed"),
    ("SELECT FTS3_TOKENIZER/**/('simple')", "function fts3_tokenizer is not allowed"),
    ("SELECT \"fts3_tokenizer\"('simple')", "function fts3_tokenizer is not allowed"),
    ("SELECT printf('%d', 1)", "function printf is not allowed"),
    ("SELECT format('%d', 1)", "function format is not allowed"),
    ("SELECT zeroblob(10)", "function zeroblob is not allowed"),
    ("SELECT json('[1]')", "function json is not allowed"),
    ("SELECT '[1]' -> '$[0]'", "function -> is not allowed"),
    ("SELECT sqlite_compileoption_get(0)", "function sqlite_compileoption_get is not allowed"),
    ("SELECT load_extension('/tmp/evil.so')", "function load_extension is not allowed"),
    ("SELECT name FROM employees WHERE name MATCH 'x'", "function match is not allowed"),
    ("SELECT * FROM json_each('[1,2]')", "reading json_each is not allowed"),
    ("SELECT * FROM pragma_database_list", "PRAGMA database_list is not allowed"),
    ("PRAGMA database_list", "PRAGMA database_list is not allowed"),
    ("PRAGMA compile_options", "PRAGMA compile_options is not allowed"),
    ("PRAGMA cache_size = -2000000", "PRAGMA cache_size is not allowed"),
    ("PRAGMA query_only = 0", "PRAGMA query_only is not allowed"),
    ("PRAGMA page_size = 512", "PRAGMA page_size is not allowed"),
]


@pytest.mark.parametrize(("sql", "message"), DENIED)
def test_functions_tables_and_pragmas_are_allow_listed(company_db, sql, message):
    db = ReadOnlyDatabase(company_db)
    assert message in refusal(db, sql)
    assert db.query("SELECT COUNT(*) FROM employees").rows[0][0] > 0  # still usable
    db.close()


def test_allowed_functions_cover_text_to_sql(company_db):
    db = ReadOnlyDatabase(company_db)
    row = db.query(
        "SELECT count(*), sum(salary), total(salary), round(avg(salary), 2), min(salary),"
        " max(salary), group_concat(DISTINCT title), count(DISTINCT department_id),"
        " abs(-2), coalesce(NULL, 1), ifnull(NULL, 2), nullif(3, 3), iif(1, 'y', 'n'),"
        " upper('a'), lower('B'), length('abc'), substr('abcdef', 2, 3), instr('abc', 'c'),"
        " replace('aXa', 'X', 'b'), trim('  x '), trim('xxaxx', 'x'), ltrim('xa', 'x'),"
        " rtrim('ax', 'x'), typeof(1.5), cast(round(2.5) AS INTEGER), strftime('%Y', '2020-05-01'),"
        " date('2020-01-31', '+1 day'), julianday('2020-01-02') - julianday('2020-01-01'),"
        " 'abc' LIKE 'A%', 'abc' GLOB 'a*', hex('A'), quote('a'), unicode('A'), char(66),"
        " length(randomblob(4)), sqlite_version() IS NOT NULL FROM employees"
    ).rows[0]
    assert row[8:13] == (2, 1, 2, None, "y")
    assert row[13:23] == ("A", "b", 3, "bcd", 3, "aba", "x", "a", "a", "a")
    assert row[23:27] == ("real", 3, "2020", "2020-02-01")
    assert row[27:] == (1.0, 1, 1, "41", "'a'", 65, "B", 4, 1)
    ranked = db.query(
        "SELECT name, row_number() OVER (ORDER BY salary DESC), rank() OVER w,"
        " dense_rank() OVER w, lag(salary) OVER w, sum(salary) OVER w"
        " FROM employees WINDOW w AS (ORDER BY salary DESC) LIMIT 3"
    ).rows
    assert [r[1] for r in ranked] == [1, 2, 3]
    assert "salary" in [r[1] for r in db.query("SELECT * FROM pragma_table_info('employees')").rows]
    db.close()


def test_linear_time_overrides_match_sqlite_builtins(company_db):
    """instr/replace/trim(X, Y) are replaced by linear-time versions: same results."""
    values = [None, 0, 12, -3, 1.5, 0.1, 1e20, 1e-5, -0.0, 2.5e-300, 123456789.123456789, "",
              "a", "abc", "aXbXc", "ÄbÇb", "  pad  ", "xyx", b"", b"ab", b"b", "."]  # fmt: skip
    plain = sqlite3.connect(":memory:")
    db = ReadOnlyDatabase(company_db)
    db._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 2)  # the agent has no parameters
    checks = ["instr(?1, ?2)", "trim(?1, ?2)", "ltrim(?1, ?2)", "rtrim(?1, ?2)",
              "replace(?1, ?2, 'Z')", "replace(?1, 'b', ?2)", "replace(?1, ?2, NULL)"]  # fmt: skip
    for expr in checks:
        for x in values:
            for y in values:
                expected = plain.execute(f"SELECT typeof({expr}), {expr}", (x, y)).fetchone()
                got = db._conn.execute(f"SELECT typeof({expr}), {expr}", (x, y)).fetchone()
                assert got == expected, (expr, x, y)
    floats = [1.0 / 3, 2.0**60, 1e15, 1e16, 123e-7, -7.25e100, 0.5, 1e14 + 0.5, 9.99999999999999e22]
    sql = "SELECT instr(?1, '9'), replace(?1, '.', ','), trim(?1, '1')"
    for f in floats:
        assert db._conn.execute(sql, (f,)).fetchone() == plain.execute(sql, (f,)).fetchone(), f
    db.close()


# Strings of 2**19 'a' built in a few cheap steps (no helper function needed).
BIG = (
    "WITH RECURSIVE s(x) AS (SELECT 'a' UNION ALL SELECT x || x FROM s WHERE length(x) < 500000),"
    " a(x) AS (SELECT max(x) FROM s)"
)


def test_one_expensive_function_call_cannot_outlive_the_time_limit(company_db):
    """Item 2: a single SQLite step (one function call) never reaches the progress handler;
    e.g. 3 x printf('%.*c', 2147483647, 'x') ran 48 s with a 2 s limit."""
    db = ReadOnlyDatabase(company_db, SqlLimits(timeout_s=2.0))
    printf3 = "SELECT " + ", ".join(["length(printf('%.*c', 2147483647, 'x'))"] * 3)
    quadratic = [  # O(n*m) in one call: instr/replace/trim with a long needle or set
        f"{BIG}, b(y) AS (SELECT substr(x, 1, 250000) || 'b' FROM a)"
        " SELECT instr(x, y), instr(x, y), instr(x, y) FROM a, b",
        f"{BIG}, b(y) AS (SELECT substr(x, 1, 250000) || 'b' FROM a)"
        " SELECT length(replace(x, y, '')), length(replace(x, y, '')) FROM a, b",
        f"{BIG}, b(y) AS (SELECT replace(substr(x, 1, 8000), 'a', 'b') || 'a' FROM a)"
        " SELECT length(trim(x, y)), length(ltrim(x, y)) FROM a, b",
    ]
    like9 = f"{BIG} SELECT " + ", ".join(["x LIKE '%' || substr(x, 1, 60) || 'b%'"] * 9) + " FROM a"
    like_long = f"{BIG} SELECT x LIKE '%' || substr(x, 1, 1000) || 'b%' FROM a"
    # Many linear but costly calls in one step: the replacements check the deadline.
    many = f"{BIG} SELECT " + " + ".join(["length(ltrim(x, x))"] * 150) + " FROM a"
    for sql, outcome in [
        (printf3, "function printf is not allowed"),
        (quadratic[0], [(0, 0, 0)]),
        (quadratic[1], [(2**19, 2**19)]),
        (quadratic[2], [(0, 0)]),
        (like9, "more than 8 LIKE/GLOB"),
        (like_long, "LIKE or GLOB pattern too complex"),
        (many, None),
    ]:
        done, box, seconds = bounded(lambda sql=sql: db.query(sql), 30)
        assert done and seconds < 10, (sql[-80:], seconds)
        if outcome is None:  # either result, as long as it is bounded
            assert "value" in box or "time limit" in str(box.get("error")), box
        elif isinstance(outcome, str):
            assert isinstance(box.get("error"), SqlError) and outcome in str(box["error"]), box
        else:
            assert box["value"].rows == outcome, box
    like8 = f"{BIG} SELECT " + ", ".join(["x LIKE '%' || substr(x, 1, 60) || 'b%'"] * 8) + " FROM a"
    done, box, seconds = bounded(lambda: db.query(like8), 30)
    assert done and seconds < 10 and box["value"].rows == [(0,) * 8], (seconds, box)
    db.close()


def test_the_watchdog_stops_a_query_without_the_progress_handler(company_db):
    """The deadline is enforced from outside the SQLite step (conn.interrupt())."""
    db = ReadOnlyDatabase(company_db, SqlLimits(timeout_s=0.5))
    db._conn.set_progress_handler(None, 0)
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    done, box, seconds = bounded(lambda: db.query(forever), 15)
    assert done and seconds < 10
    assert isinstance(box.get("error"), SqlError) and "0.5 s time limit" in str(box["error"])
    assert db.query("SELECT 1").rows == [(1,)]  # no stale interrupt hits the next query
    db.close()


def test_results_are_bounded_in_bytes(company_db):
    """Item 2: 10 blob columns x 51 rows returned ~500 MiB; scoring fetched 10000 rows."""
    db = ReadOnlyDatabase(company_db)
    blobs = ", ".join(["randomblob(900000)"] * 10)
    rows60 = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 60)"
    res = db.query(f"{rows60} SELECT {blobs} FROM r")
    fetched = sum(len(v) for row in res.rows for v in row)
    assert res.truncated and fetched <= 4_000_000, fetched
    text = format_result(res, db.limits)
    assert "truncated" in text and "bytes" in text, text
    # Text cells are counted while a row is built: a row larger than the budget is cut.
    hexes = ", ".join(["hex(randomblob(450000))"] * 20)
    res = db.query(f"SELECT {hexes}")
    assert res.truncated and res.rows == []
    assert "bytes" in format_result(res, db.limits)
    # One row cannot have thousands of 1 MB columns: the column count is limited.
    wide = "WITH a(x) AS (SELECT randomblob(900000)) SELECT " + ", ".join(["x"] * 300) + " FROM a"
    assert "too many columns" in refusal(db, wide)
    assert len(db.query("SELECT * FROM employees").columns) == 6  # normal queries unaffected
    db.close()


def test_scoring_is_bounded_in_time_and_bytes(company_db):
    gold = "SELECT name FROM employees WHERE salary > 100000"
    env = SqlEnv(limits=SqlLimits(timeout_s=2.0), valid_weight=0.1)
    env.reset(sql_task(company_db, "q", gold), 0)
    slow = "SELECT " + ", ".join(["length(printf('%.*c', 2147483647, 'x'))"] * 3)
    done, box, seconds = bounded(lambda: act(env, f"<answer>{slow}</answer>"), 30)
    assert done and seconds < 10, seconds
    r = box["value"]
    assert r.done and r.reward == 0.0 and "function printf is not allowed" in r.info["reason"]
    env.reset(sql_task(company_db, "q", gold), 0)
    big = (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 300) "
        "SELECT " + ", ".join(["randomblob(100000)"] * 10) + " FROM r"
    )
    done, box, seconds = bounded(lambda: act(env, f"<answer>{big}</answer>"), 60)
    assert done and seconds < 20, seconds
    r = box["value"]
    assert not r.info["success"] and "bytes" in r.info["reason"], r.info["reason"]
    assert r.reward == 0.1  # it ran: `executes`, but cannot be correct


def test_close_does_not_wait_for_a_running_query(company_db):
    db = ReadOnlyDatabase(company_db, SqlLimits(timeout_s=60.0))
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    box: dict = {}

    def run():
        try:
            db.query(forever)
        except SqlError as e:
            box["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    time.sleep(0.5)
    done, _, seconds = bounded(db.close, 20)
    assert done and seconds < 5, seconds
    worker.join(10)
    assert not worker.is_alive() and "closed" in str(box.get("error")), box
    assert "closed" in refusal(db, "SELECT 1")
    db.close()  # idempotent


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT '\ud800'",
        "SELECT ?",
        "SELECT :name",
        "SELECT " + "(" * 300 + "1" + ")" * 300,
        "SELECT " + " + ".join(["1"] * 600),
        "SELECT 1 " + "UNION ALL SELECT 1 " * 200,
        "SELECT abs(-9223372036854775807 - 1)",
        "SELECT * FROM nope",
        "SELECT 1; SELECT 2",
        "ＤＥＬＥＴＥ FROM employees",
        "DEL\u200bETE FROM employees",
        "/* */ VACUUM INTO '/tmp/agentic_rl_vacuum.sqlite'",
        "CREATE TEMP TRIGGER t AFTER INSERT ON employees BEGIN SELECT 1; END",
        "CREATE TEMP VIEW v AS SELECT 1",
    ],
)
def test_every_failure_is_a_clear_sql_error(company_db, sql):
    db = ReadOnlyDatabase(company_db)
    message = refusal(db, sql)
    assert message and len(message) < 600
    assert db.query("SELECT 1").rows == [(1,)]
    db.close()
    assert not Path("/tmp/agentic_rl_vacuum.sqlite").exists()


def test_layers_refuse_vacuum_into_without_the_keyword_check(company_db, tmp_path):
    target = tmp_path / "copy.sqlite"
    db = ReadOnlyDatabase(company_db)
    with pytest.raises(sqlite3.Error):
        db._conn.execute(f"VACUUM INTO '{target}'")
    assert not target.exists()
    db.close()
