"""Fuzzed input to every real tool and environment: schema-valid but hostile arguments must give
a clear error observation (a `ToolExecutionError`, never an unexpected exception or a hang),
schema-invalid ones are refused by the parser, arbitrary assistant text never crashes a
step, and every backend still works (and is unchanged) afterwards."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentic_rl.envs import (
    CodeSandbox,
    ConfinedFiles,
    SandboxLimits,
    SearchIndex,
    SqlEnv,
    Task,
    calculator_tool,
    execute_tool,
    file_tools,
    generate_world,
    parse_action,
    python_tool,
    search_tools,
)
from agentic_rl.envs.suites.sql_data import DOMAINS, build_database

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # reproducible: a failure here is a bug, never a flake
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HOSTILE = [
    "", " ", "\x00", "../../../etc/passwd", "/etc/passwd", "~root", "..", ".", "//", "\\\\",
    "'; DROP TABLE employees; --", "SELECT * FROM sqlite_master", "PRAGMA writable_schema=1",
    "ATTACH '/tmp/x' AS y", "%s%s%n", "{}", "[", "😀" * 50, "A" * 5000, "-1", "1e309", "nan",
    "import os; os.system('id')", "while True: pass", "__import__('os').fork()",
    "9**9**9", "1/0", "open('/etc/shadow').read()", "<tool_call>",
    "\ud800", "a\udcffb", "x = '\ud83d'",  # lone surrogates: valid JSON escapes, not UTF-8
]  # fmt: skip


def strings(schema) -> st.SearchStrategy:
    limit = min(schema.get("maxLength", 300), 300)
    lo = schema.get("minLength", 0)
    return st.one_of(st.sampled_from(HOSTILE), st.text(max_size=limit)).filter(
        lambda s: lo <= len(s) <= schema.get("maxLength", 10**9)
    )


def value_for(schema) -> st.SearchStrategy:
    kind = schema.get("type")
    if kind == "string":
        return strings(schema)
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**63)), schema.get("maximum", 2**63))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    return st.none()


def valid_arguments(tool) -> st.SearchStrategy:
    """Schema-valid argument dicts for `tool` (optional arguments sometimes left out)."""
    props, required = tool.parameters.get("properties", {}), tool.parameters.get("required", [])
    fixed = {k: value_for(props[k]) for k in required}
    optional = {k: value_for(v) for k, v in props.items() if k not in required}
    return st.fixed_dictionaries(fixed, optional=optional)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


def call_text(name, arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def check_tool(tool, arguments) -> None:
    """Through the parser, as in a rollout: executes only if valid; never an unexpected error."""
    action = parse_action(call_text(tool.name, arguments), [tool])
    if action.errors:
        assert all(e.message for e in action.errors)  # e.g. "<tool_call>" inside an argument
        return
    result = execute_tool(tool, action.tool_calls[0].arguments)
    assert isinstance(result.content, str) and result.content
    assert result.error in (None, "tool_error"), (arguments, result)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sql_env(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzzdb") / "company.sqlite"
    build_database(path, DOMAINS[0], seed=2)
    env = SqlEnv()
    env.reset(Task("t", "q", None, {"db_path": str(path), "gold_sql": "SELECT 1"}), 0)
    yield env, path
    env.close()


@pytest.fixture(scope="module")
def search():
    return search_tools(SearchIndex(generate_world(3).documents))


@pytest.fixture(scope="module")
def sandbox():
    with CodeSandbox(SandboxLimits(wall_s=2.0, cpu_s=1.0, memory_mb=256)) as sb:
        yield sb


@pytest.mark.parametrize("tool_index", [0, 1, 2])
def test_fuzz_sql_tools(sql_env, tool_index):
    env, path = sql_env
    before = digest(path)
    tool = env.tools[tool_index]

    @FUZZ
    @given(valid_arguments(tool))
    def run(arguments):
        check_tool(tool, arguments)

    run()
    assert digest(path) == before
    assert execute_tool(env.tools[0], {}).content == "departments, employees"


@pytest.mark.parametrize("tool_index", [0, 1])
def test_fuzz_search_tools(search, tool_index):
    tool = search[tool_index]

    @FUZZ
    @given(valid_arguments(tool))
    def run(arguments):
        check_tool(tool, arguments)

    run()
    assert execute_tool(search[1], {"doc_id": "city-0"}).ok


def test_fuzz_calculator():
    tool = calculator_tool()

    @FUZZ
    @given(valid_arguments(tool))
    def run(arguments):
        check_tool(tool, arguments)

    run()


def test_fuzz_python_tool(sandbox):
    tool = python_tool(sandbox)

    @settings(FUZZ, max_examples=40)
    @given(valid_arguments(tool))
    def run(arguments):
        check_tool(tool, arguments)

    run()
    assert execute_tool(tool, {"code": "2 + 2"}).content == "4"


def test_fuzz_file_tools(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "seed.txt").write_text("seed")
    tools = file_tools(ConfinedFiles(root))

    @FUZZ
    @given(st.sampled_from(tools).flatmap(lambda t: st.tuples(st.just(t), valid_arguments(t))))
    def run(tool_and_args):
        check_tool(*tool_and_args)

    run()
    assert [p.name for p in outside.iterdir()] == ["secret"] and (outside / "secret").read_text()
    assert all(p.resolve().is_relative_to(root.resolve()) for p in root.rglob("*"))


def test_schema_invalid_arguments_are_refused_by_the_parser(sql_env, search):
    tools = [*sql_env[0].tools, *search, calculator_tool()]

    @FUZZ
    @given(st.sampled_from(tools), JSON)
    def run(tool, arguments):
        action = parse_action(call_text(tool.name, arguments), tools)
        if not action.tool_calls:
            assert action.errors
        else:  # it happened to be valid: it must then execute cleanly
            result = execute_tool(tool, action.tool_calls[0].arguments)
            assert result.error in (None, "tool_error")

    run()


FRAGMENTS = [
    "<tool_call>", "</tool_call>", '{"name": "run_sql", "arguments": {"query": "', '"}}',
    '{"name": "search", "arguments": {"query": "x", "k": 3}}', "<answer>", "</answer>",
    "SELECT * FROM employees", "```sql", "```", "{", "}", '"', "\\", "\n",
]  # fmt: skip
ASSISTANT_TEXT = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=12), max_size=12).map(
    "".join
)


def test_fuzzed_assistant_text_never_crashes_a_step(sql_env, search):
    from agentic_rl.envs import MathToolEnv

    db_path = str(sql_env[1])

    @FUZZ
    @given(ASSISTANT_TEXT, st.integers(0, 1))
    def run(text, which):
        if which == 0:
            env = SqlEnv()
            env.reset(Task("t", "q", None, {"db_path": db_path, "gold_sql": "SELECT 1"}), 0)
        else:
            env = MathToolEnv(tools=(*search, calculator_tool()))
            env.reset(Task("t", "q", "1"), 0)
        result = env.step(parse_action(text, env.tools))
        assert result.done or result.observation
        if hasattr(env, "close"):
            env.close()

    run()
