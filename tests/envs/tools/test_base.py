"""Tool definitions and execution: schema checks at definition time; at run time sync and
async tools, timeouts, exceptions and huge outputs all become text observations."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from agentic_rl.envs import (
    Tool,
    ToolExecutionError,
    calculator_tool,
    execute_tool,
    tool_system_prompt,
)

OBJ = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}


def make(fn, **kw) -> Tool:
    return Tool(name="t", description="test tool", parameters=OBJ, fn=fn, **kw)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"name": "bad name"}, ValueError, "must match"),
        ({"name": ""}, ValueError, "must match"),
        ({"fn": 3}, TypeError, "callable"),
        ({"parameters": {"type": "string"}}, ValueError, "type 'object'"),
        (
            {"parameters": {"type": "object", "properties": {"x": {"type": "float"}}}},
            ValueError,
            "unsupported type",
        ),
        (
            {"parameters": {"type": "object", "properties": {}, "required": ["y"]}},
            ValueError,
            "not in properties",
        ),
        ({"timeout_s": 0}, ValueError, "timeout_s"),
    ],
)
def test_tool_definition_is_checked(kwargs, error, fragment):
    base = {"name": "t", "description": "d", "parameters": OBJ, "fn": lambda x: x}
    with pytest.raises(error, match=fragment):
        Tool(**{**base, **kwargs})


def test_sync_and_async_tools_return_text():
    assert execute_tool(make(lambda x: x * 2), {"x": 4}).content == "8"

    async def slow_double(x):
        await asyncio.sleep(0.01)
        return {"double": x * 2}

    result = execute_tool(make(slow_double), {"x": 4})
    assert result.ok and json.loads(result.content) == {"double": 8}


def test_async_tool_works_inside_a_running_event_loop():
    async def double(x):
        return x * 2

    async def main():
        return execute_tool(make(double), {"x": 5})

    assert asyncio.run(main()).content == "10"


@pytest.mark.parametrize("is_async", [False, True])
def test_slow_tool_times_out_into_an_error_observation(is_async):
    async def slow_async(x):
        await asyncio.sleep(5)

    def slow_sync(x):
        time.sleep(5)

    start = time.perf_counter()
    result = execute_tool(make(slow_async if is_async else slow_sync, timeout_s=0.1), {"x": 1})
    assert time.perf_counter() - start < 1.0
    assert result.error == "timeout" and "timed out after 0.1 s" in result.content


def test_exceptions_become_error_text():
    def boom(x):
        raise KeyError("secret internals")

    def expected(x):
        raise ToolExecutionError("x must be positive")

    r1 = execute_tool(make(boom), {"x": 1})
    assert r1.error == "exception" and "KeyError" in r1.content
    r2 = execute_tool(make(expected), {"x": 1})
    assert (r2.error, r2.content) == ("tool_error", "Error: x must be positive")


def test_huge_output_is_truncated():
    result = execute_tool(make(lambda x: "y" * 10_000, max_output_chars=100), {"x": 1})
    assert result.content.startswith("y" * 100)
    assert "truncated: 10000 characters" in result.content and len(result.content) < 200


def test_tool_system_prompt_lists_schemas_in_hermes_format():
    prompt = tool_system_prompt([calculator_tool()])
    inside = prompt.split("<tools>\n")[1].split("\n</tools>")[0]
    schema = json.loads(inside)
    assert schema["function"]["name"] == "calculator"
    assert schema["function"]["parameters"]["required"] == ["expression"]
    assert (
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        in prompt
    )
    assert "at most one function per turn" in prompt
    with pytest.raises(ValueError, match="at least one tool"):
        tool_system_prompt([])


@pytest.mark.parametrize("name", ["calc\n", "calc\nrm", "", "9calc", "a b", "x" * 65])
def test_bad_tool_names_are_refused(name):
    """`$` matches before a trailing newline: the name check must use fullmatch."""
    with pytest.raises(ValueError, match="tool name"):
        Tool(name, "d", {"type": "object", "properties": {}}, lambda: "")
