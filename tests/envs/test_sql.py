"""Text-to-SQL on real SQLite files: generator, read-only enforcement, limits, scoring, the env,
the Spider loader and the suite."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
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
from agentic_rl.envs.sql_data import DOMAINS, build_database
from agentic_rl.envs.sql_env import extract_sql, first_keyword, results_match, score_sql


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
