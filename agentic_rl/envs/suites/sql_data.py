"""Text-to-SQL data: an offline generator of varied SQLite databases with questions and gold
SQL, and a loader for Spider-format data (`dev.json`, `tables.json`, `database/<db>/<db>.sqlite`).

The generator draws each database from one of several domains (company, library, store,
school), each with its own schema (2-3 tables with foreign keys) and seeded random
content, then instantiates question templates that cover the usual SQL skills: filters,
counting, grouping with HAVING, joins, nested subqueries, ORDER BY with LIMIT, DISTINCT.
Every question is checked against its database when generated: the gold result must be
non-empty, and "top-k" questions must have no tie at the cut-off, so each question has
exactly one correct result.

Imports: stdlib and agentic_rl.envs.base only; never jax. Over 400 lines because of the
four domains' schemas and question templates (data, not logic).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentic_rl.envs.base import Task

_FIRST = (
    "Ada Alan Bea Cruz Dana Eli Faye Gus Hana Ivo Jade Kai Lena Milo Nora Omar Pia Quin Rosa "
    "Sami Tara Uma Vik Wren Xena Yuri Zoe Abel Cleo Dion"
).split()
_LAST = (
    "Abbott Baker Chen Diaz Evans Fischer Garcia Haddad Ito Jensen Kowalski Larsen Moreau "
    "Novak Okafor Petrov Quinn Rossi Silva Tanaka Urban Vargas Weber Xu Yilmaz Zimmer"
).split()
_CITIES = (
    "Lyon Porto Kyoto Quito Tunis Oslo Perth Dakar Lima Riga Hanoi Cork Bern Accra Turin"
).split()
_ADJ = "Silent Golden Hidden Broken Crimson Distant Quiet Wild Hollow Bright Frozen Lost".split()
_NOUN = "River Garden Empire Mirror Harbor Forest Engine Signal Orchard Lantern Canyon".split()


def _people(rng: random.Random, n: int) -> list[str]:
    names = [f"{f} {ln}" for f in _FIRST for ln in _LAST]
    return rng.sample(names, n)


def _titles(rng: random.Random, n: int, suffixes: Sequence[str] = ("",)) -> list[str]:
    titles = [f"{a} {b}{s}" for a in _ADJ for b in _NOUN for s in suffixes]
    return rng.sample(titles, n)


@dataclass(frozen=True)
class Entity:
    """How the question templates talk about a domain's main table."""

    table: str
    singular: str
    plural: str
    name_col: str
    cat_col: str
    cat_phrase: str
    num_col: str
    num_phrase: str
    year_col: str
    year_verb: str


@dataclass(frozen=True)
class Domain:
    name: str
    schema: str
    fill: Callable[[sqlite3.Connection, random.Random], None]
    entity: Entity
    # Domain-specific join questions: (question with {value}, gold SQL with {value},
    # SQL listing candidate values).
    joins: tuple[tuple[str, str, str], ...]


def _fill_company(conn: sqlite3.Connection, rng: random.Random) -> None:
    depts = rng.sample(["Sales", "Research", "Legal", "Support", "Design", "Finance", "Ops"], 5)
    for i, name in enumerate(depts, 1):
        budget = rng.randrange(100, 900) * 1000
        conn.execute(
            "INSERT INTO departments VALUES (?,?,?,?)", (i, name, rng.choice(_CITIES), budget)
        )
    titles = ["Engineer", "Manager", "Analyst", "Clerk", "Director"]
    for i, name in enumerate(_people(rng, rng.randint(25, 40)), 1):
        conn.execute(
            "INSERT INTO employees VALUES (?,?,?,?,?,?)",
            (i, name, rng.randint(1, len(depts)), rng.choice(titles),
             rng.randrange(30, 150) * 1000 + rng.randrange(0, 1000), rng.randint(1995, 2023)),
        )  # fmt: skip


def _fill_library(conn: sqlite3.Connection, rng: random.Random) -> None:
    authors = _people(rng, rng.randint(8, 12))
    countries = ["France", "Japan", "Brazil", "Kenya", "Canada", "Norway"]
    for i, name in enumerate(authors, 1):
        conn.execute(
            "INSERT INTO authors VALUES (?,?,?,?)",
            (i, name, rng.choice(countries), rng.randint(1920, 1990)),
        )
    genres = ["Mystery", "Fantasy", "History", "Poetry", "Science"]
    for i, title in enumerate(_titles(rng, rng.randint(25, 40)), 1):
        conn.execute(
            "INSERT INTO books VALUES (?,?,?,?,?,?)",
            (i, title, rng.randint(1, len(authors)), rng.choice(genres), rng.randint(1950, 2023),
             rng.randint(90, 900)),
        )  # fmt: skip
    members = _people(rng, 10)
    for i in range(1, rng.randint(30, 50)):
        conn.execute(
            "INSERT INTO loans VALUES (?,?,?,?)",
            (i, rng.randint(1, 25), rng.choice(members), rng.randint(2015, 2024)),
        )


def _fill_store(conn: sqlite3.Connection, rng: random.Random) -> None:
    for i, name in enumerate(_people(rng, rng.randint(10, 15)), 1):
        conn.execute(
            "INSERT INTO customers VALUES (?,?,?,?)",
            (i, name, rng.choice(_CITIES), rng.randint(2010, 2024)),
        )
    categories = ["Toys", "Garden", "Kitchen", "Books", "Sports"]
    n_products = rng.randint(20, 30)
    for i, title in enumerate(_titles(rng, n_products, (" Kit", " Set", " Box")), 1):
        price = round(rng.randrange(199, 19999) / 100, 2)
        conn.execute(
            "INSERT INTO products VALUES (?,?,?,?,?)",
            (i, title, rng.choice(categories), price, rng.randint(2015, 2024)),
        )
    n_customers = conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0]
    for i in range(1, rng.randint(40, 70)):
        conn.execute(
            "INSERT INTO orders VALUES (?,?,?,?,?)",
            (i, rng.randint(1, n_customers), rng.randint(1, n_products), rng.randint(1, 9),
             rng.randint(2018, 2024)),
        )  # fmt: skip


def _fill_school(conn: sqlite3.Connection, rng: random.Random) -> None:
    for i, name in enumerate(_people(rng, rng.randint(25, 40)), 1):
        conn.execute(
            "INSERT INTO students VALUES (?,?,?,?,?)",
            (i, name, rng.choice(_CITIES), rng.randint(9, 12), rng.randint(2019, 2024)),
        )
    subjects = ["Algebra", "Biology", "Chemistry", "Drama", "Economics", "French", "Geometry"]
    for i, title in enumerate(subjects, 1):
        conn.execute(
            "INSERT INTO courses VALUES (?,?,?)",
            (i, title, rng.choice(["Science", "Arts", "Math"])),
        )
    n_students = conn.execute("SELECT COUNT(*) FROM students").fetchone()[0]
    pairs = rng.sample(
        [(s, c) for s in range(1, n_students + 1) for c in range(1, 8)], rng.randint(50, 80)
    )
    for s, c in pairs:
        conn.execute("INSERT INTO enrollments VALUES (?,?,?)", (s, c, rng.randint(40, 100)))


DOMAINS: tuple[Domain, ...] = (
    Domain(
        "company",
        """CREATE TABLE departments (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT,
               budget INTEGER);
           CREATE TABLE employees (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
               department_id INTEGER REFERENCES departments(id), title TEXT, salary INTEGER,
               hire_year INTEGER);""",
        _fill_company,
        Entity("employees", "employee", "employees", "name", "title", "job title", "salary",
               "salary", "hire_year", "were hired"),
        (
            ("List the names of employees who work in the {value} department.",
             "SELECT e.name FROM employees e JOIN departments d ON e.department_id = d.id "
             "WHERE d.name = '{value}'",
             "SELECT DISTINCT d.name FROM departments d "
             "JOIN employees e ON e.department_id = d.id"),
            ("What is the total salary of the employees of the {value} department?",
             "SELECT SUM(e.salary) FROM employees e JOIN departments d ON e.department_id = d.id "
             "WHERE d.name = '{value}'",
             "SELECT DISTINCT d.name FROM departments d "
             "JOIN employees e ON e.department_id = d.id"),
            ("How many employees work in departments located in {value}?",
             "SELECT COUNT(*) FROM employees e JOIN departments d ON e.department_id = d.id "
             "WHERE d.city = '{value}'",
             "SELECT DISTINCT d.city FROM departments d "
             "JOIN employees e ON e.department_id = d.id"),
        ),
    ),
    Domain(
        "library",
        """CREATE TABLE authors (id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT,
               birth_year INTEGER);
           CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT NOT NULL,
               author_id INTEGER REFERENCES authors(id), genre TEXT, year INTEGER,
               pages INTEGER);
           CREATE TABLE loans (id INTEGER PRIMARY KEY, book_id INTEGER REFERENCES books(id),
               member TEXT, loan_year INTEGER);""",
        _fill_library,
        Entity("books", "book", "books", "title", "genre", "genre", "pages", "number of pages",
               "year", "were published"),
        (
            ("List the titles of the books written by authors from {value}.",
             "SELECT b.title FROM books b JOIN authors a ON b.author_id = a.id "
             "WHERE a.country = '{value}'",
             "SELECT DISTINCT a.country FROM authors a JOIN books b ON b.author_id = a.id"),
            ("How many times were books by {value} borrowed?",
             "SELECT COUNT(*) FROM loans l JOIN books b ON l.book_id = b.id "
             "JOIN authors a ON b.author_id = a.id WHERE a.name = '{value}'",
             "SELECT DISTINCT a.name FROM authors a JOIN books b ON b.author_id = a.id "
             "JOIN loans l ON l.book_id = b.id"),
            ("Which members borrowed the book titled '{value}'?",
             "SELECT DISTINCT l.member FROM loans l JOIN books b ON l.book_id = b.id "
             "WHERE b.title = '{value}'",
             "SELECT DISTINCT b.title FROM books b JOIN loans l ON l.book_id = b.id"),
        ),
    ),
    Domain(
        "store",
        """CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT,
               signup_year INTEGER);
           CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT,
               price REAL, launch_year INTEGER);
           CREATE TABLE orders (id INTEGER PRIMARY KEY,
               customer_id INTEGER REFERENCES customers(id),
               product_id INTEGER REFERENCES products(id), quantity INTEGER,
               order_year INTEGER);""",
        _fill_store,
        Entity("products", "product", "products", "name", "category", "category", "price",
               "price", "launch_year", "were launched"),
        (
            ("What is the total quantity of products ordered by customers from {value}?",
             "SELECT SUM(o.quantity) FROM orders o JOIN customers c ON o.customer_id = c.id "
             "WHERE c.city = '{value}'",
             "SELECT DISTINCT c.city FROM customers c JOIN orders o ON o.customer_id = c.id"),
            ("List the names of the distinct products ordered by {value}.",
             "SELECT DISTINCT p.name FROM orders o JOIN products p ON o.product_id = p.id "
             "JOIN customers c ON o.customer_id = c.id WHERE c.name = '{value}'",
             "SELECT DISTINCT c.name FROM customers c JOIN orders o ON o.customer_id = c.id"),
            ("How much money did customers spend on {value} products in total (price times "
             "quantity)?",
             "SELECT SUM(p.price * o.quantity) FROM orders o JOIN products p "
             "ON o.product_id = p.id WHERE p.category = '{value}'",
             "SELECT DISTINCT p.category FROM products p JOIN orders o ON o.product_id = p.id"),
        ),
    ),
    Domain(
        "school",
        """CREATE TABLE students (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT,
               grade INTEGER, enrollment_year INTEGER);
           CREATE TABLE courses (id INTEGER PRIMARY KEY, title TEXT NOT NULL, department TEXT);
           CREATE TABLE enrollments (student_id INTEGER REFERENCES students(id),
               course_id INTEGER REFERENCES courses(id), score INTEGER,
               PRIMARY KEY (student_id, course_id));""",
        _fill_school,
        Entity("students", "student", "students", "name", "city", "home city", "grade",
               "grade level", "enrollment_year", "enrolled"),
        (
            ("What is the average score in the {value} course?",
             "SELECT AVG(e.score) FROM enrollments e JOIN courses c ON e.course_id = c.id "
             "WHERE c.title = '{value}'",
             "SELECT DISTINCT c.title FROM courses c JOIN enrollments e ON e.course_id = c.id"),
            ("List the names of students enrolled in {value}.",
             "SELECT s.name FROM students s JOIN enrollments e ON e.student_id = s.id "
             "JOIN courses c ON e.course_id = c.id WHERE c.title = '{value}'",
             "SELECT DISTINCT c.title FROM courses c JOIN enrollments e ON e.course_id = c.id"),
            ("How many courses is {value} enrolled in?",
             "SELECT COUNT(*) FROM enrollments e JOIN students s ON e.student_id = s.id "
             "WHERE s.name = '{value}'",
             "SELECT DISTINCT s.name FROM students s JOIN enrollments e ON e.student_id = s.id"),
        ),
    ),
)  # fmt: skip


def _sql_str(value: Any) -> str:
    return str(value).replace("'", "''")


def _pick(conn: sqlite3.Connection, rng: random.Random, sql: str) -> Any:
    values = [r[0] for r in conn.execute(sql).fetchall() if r[0] is not None]
    return rng.choice(values) if values else None


def _single_template(conn: sqlite3.Connection, rng: random.Random, e: Entity, kind: int):
    """One single-table question of type `kind`: (question, gold SQL) or None if degenerate."""
    t, name, cat, num, year = e.table, e.name_col, e.cat_col, e.num_col, e.year_col
    if kind == 0:
        v = _pick(conn, rng, f"SELECT DISTINCT {cat} FROM {t}")
        return (
            f"How many {e.plural} have the {e.cat_phrase} '{v}'?",
            f"SELECT COUNT(*) FROM {t} WHERE {cat} = '{_sql_str(v)}'",
        )
    if kind == 1:
        x = _pick(conn, rng, f"SELECT {num} FROM {t}")
        return (
            f"List the {name}s of the {e.plural} with a {e.num_phrase} greater than {x}.",
            f"SELECT {name} FROM {t} WHERE {num} > {x}",
        )
    if kind == 2:
        return (
            f"For each {e.cat_phrase}, what is the average {e.num_phrase} of the {e.plural}?",
            f"SELECT {cat}, AVG({num}) FROM {t} GROUP BY {cat}",
        )
    if kind == 3:
        k = rng.choice([2, 3, 5])
        order = rng.choice(["DESC", "ASC"])
        word = "highest" if order == "DESC" else "lowest"
        rows = conn.execute(
            f"SELECT {num} FROM {t} ORDER BY {num} {order} LIMIT {k + 1}"
        ).fetchall()
        if len(rows) <= k or rows[k - 1][0] == rows[k][0]:
            return None  # a tie at the cut-off would make the answer ambiguous
        return (
            f"List the {name}s of the {k} {e.plural} with the {word} {e.num_phrase}, "
            f"from the {word} down.",
            f"SELECT {name} FROM {t} ORDER BY {num} {order} LIMIT {k}",
        )
    if kind == 4:
        k = rng.randint(2, 5)
        return (
            f"Which {e.cat_phrase}s have more than {k} {e.plural}?",
            f"SELECT {cat} FROM {t} GROUP BY {cat} HAVING COUNT(*) > {k}",
        )
    if kind == 5:
        return (
            f"List the {name}s of the {e.plural} whose {e.num_phrase} is above the average.",
            f"SELECT {name} FROM {t} WHERE {num} > (SELECT AVG({num}) FROM {t})",
        )
    if kind == 6:
        a = _pick(conn, rng, f"SELECT {year} FROM {t}")
        b = a + rng.randint(2, 8)
        return (
            f"How many {e.plural} {e.year_verb} between {a} and {b} (inclusive)?",
            f"SELECT COUNT(*) FROM {t} WHERE {year} BETWEEN {a} AND {b}",
        )
    if kind == 7:
        return (
            f"How many different {e.cat_phrase}s are there among the {e.plural}?",
            f"SELECT COUNT(DISTINCT {cat}) FROM {t}",
        )
    v = _pick(conn, rng, f"SELECT DISTINCT {cat} FROM {t}")
    return (f"What is the maximum {e.num_phrase} of the {e.plural} with the {e.cat_phrase} '{v}'?",
            f"SELECT MAX({num}) FROM {t} WHERE {cat} = '{_sql_str(v)}'")  # fmt: skip


_NUM_SINGLE_KINDS = 9


def _question(conn: sqlite3.Connection, rng: random.Random, domain: Domain):
    kinds = _NUM_SINGLE_KINDS + len(domain.joins)
    kind = rng.randrange(kinds)
    if kind < _NUM_SINGLE_KINDS:
        return _single_template(conn, rng, domain.entity, kind)
    question, gold, candidates = domain.joins[kind - _NUM_SINGLE_KINDS]
    value = _pick(conn, rng, candidates)
    if value is None:
        return None
    return question.format(value=value), gold.format(value=_sql_str(value))


def build_database(path: str | os.PathLike, domain: Domain, seed: int) -> None:
    """Creates (or replaces) the SQLite file `path` with `domain`'s schema and seeded rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(domain.schema)
        domain.fill(conn, random.Random(seed))
        conn.commit()
    finally:
        conn.close()
    os.replace(tmp, path)


def generate_sql_tasks(
    db_dir: str | os.PathLike,
    *,
    num_dbs: int,
    questions_per_db: int,
    seed: int,
    id_prefix: str = "sql",
) -> list[Task]:
    """Builds `num_dbs` databases under `db_dir` (domains in turn, contents from `seed`) and
    `questions_per_db` distinct, checked questions for each. Reproducible from `seed`."""
    if num_dbs < 1 or questions_per_db < 1:
        raise ValueError(f"need num_dbs >= 1 and questions_per_db >= 1, got {num_dbs}, "
                         f"{questions_per_db}")  # fmt: skip
    tasks = []
    for d in range(num_dbs):
        domain = DOMAINS[d % len(DOMAINS)]
        db_id = f"{domain.name}_{seed}_{d}"
        path = Path(db_dir) / db_id / f"{db_id}.sqlite"
        build_database(path, domain, seed * 1000 + d)
        tasks.extend(
            _db_questions(path, db_id, domain, seed * 1000 + d, questions_per_db, id_prefix)
        )
    return tasks


def _db_questions(
    path: Path, db_id: str, domain: Domain, seed: int, n: int, id_prefix: str
) -> list[Task]:
    rng = random.Random(seed + 7919)
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    seen: set[str] = set()
    tasks: list[Task] = []
    try:
        for _ in range(50 * n):
            if len(tasks) == n:
                break
            made = _question(conn, rng, domain)
            if made is None or made[0] in seen:
                continue
            question, gold = made
            rows = conn.execute(gold).fetchall()
            if not rows or all(v is None for row in rows for v in row):
                continue
            seen.add(question)
            tasks.append(
                Task(
                    id=f"{id_prefix}-{db_id}-{len(tasks)}",
                    prompt=f"Database: {db_id}\nQuestion: {question}",
                    answer=gold,
                    data={
                        "db_path": str(path),
                        "gold_sql": gold,
                        "db_id": db_id,
                        "question": question,
                    },
                )  # fmt: skip
            )
    finally:
        conn.close()
    if len(tasks) < n:
        raise RuntimeError(f"could only make {len(tasks)} of {n} distinct questions for {db_id}")
    return tasks


# -- Spider ------------------------------------------------------------------------------------


def _spider_schema_text(entry: dict[str, Any]) -> str:
    """The schema of one tables.json entry as `table(col, col, ...)` lines."""
    tables = entry["table_names_original"]
    columns: dict[int, list[str]] = {i: [] for i in range(len(tables))}
    for table_index, column in entry["column_names_original"]:
        if table_index >= 0:
            columns[table_index].append(column)
    return "\n".join(f"{t}({', '.join(columns[i])})" for i, t in enumerate(tables))


def load_spider_tasks(
    spider_dir: str | os.PathLike,
    split_file: str = "dev.json",
    *,
    tables_file: str = "tables.json",
    limit: int | None = None,
    schema_in_prompt: bool = False,
    id_prefix: str | None = None,
) -> list[Task]:
    """Spider-format examples as tasks: `question` -> prompt, `query` -> gold SQL, and the
    database at `database/<db_id>/<db_id>.sqlite`. With `schema_in_prompt` the schema from
    `tables_file` is shown in the prompt (otherwise the agent discovers it with tools).
    Errors name the missing file or the bad example."""
    root = Path(spider_dir)
    split_path, tables_path = root / split_file, root / tables_file
    for p in (split_path, tables_path):
        if not p.is_file():
            raise FileNotFoundError(f"Spider file not found: {p}")
    schemas = {e["db_id"]: e for e in json.loads(tables_path.read_text(encoding="utf-8"))}
    examples = json.loads(split_path.read_text(encoding="utf-8"))
    if not isinstance(examples, list):
        raise ValueError(f"{split_path}: expected a JSON list of examples")
    prefix = id_prefix if id_prefix is not None else f"spider-{split_path.stem}"
    tasks = []
    for i, ex in enumerate(examples[:limit] if limit is not None else examples):
        try:
            db_id, question, gold = ex["db_id"], ex["question"], ex["query"]
        except (KeyError, TypeError):
            raise ValueError(f"{split_path}[{i}]: needs db_id, question and query") from None
        db_path = root / "database" / db_id / f"{db_id}.sqlite"
        if not db_path.is_file():
            raise FileNotFoundError(f"{split_path}[{i}]: database file not found: {db_path}")
        if db_id not in schemas:
            raise ValueError(f"{split_path}[{i}]: db_id {db_id!r} is not in {tables_path}")
        prompt = f"Database: {db_id}\nQuestion: {question}"
        if schema_in_prompt:
            prompt = f"Database: {db_id}\nSchema:\n{_spider_schema_text(schemas[db_id])}\n" \
                     f"Question: {question}"  # fmt: skip
        tasks.append(
            Task(f"{prefix}-{i}", prompt, gold,
                 {"db_path": str(db_path), "gold_sql": gold, "db_id": db_id, "question": question})
        )  # fmt: skip
    if not tasks:
        raise ValueError(f"{split_path}: no examples")
    return tasks
