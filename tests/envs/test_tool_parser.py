"""Hermes tool-call parsing: well-formed calls validate, every malformed shape becomes a
ToolCallError (never an exception), including under fuzzing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentic_rl.envs import Action, ParserLimits, Tool, calculator_tool, format_errors, parse_action


def _echo_tool() -> Tool:
    return Tool(
        name="lookup",
        description="look something up",
        parameters={
            "type": "object",
            "properties": {
                "key": {"type": "string"},
                "count": {"type": "integer", "minimum": 0},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["key"],
            "additionalProperties": False,
        },
        fn=lambda **kw: kw,
    )


TOOLS = (calculator_tool(), _echo_tool())


def call(name, arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def test_parses_a_valid_call_and_keeps_the_surrounding_text():
    text = "I will compute.\n" + call("calculator", {"expression": "1+1"}) + "\n"
    action = parse_action(text, TOOLS, id_prefix="call_3")
    assert action.text == text
    assert action.content == "I will compute."
    assert not action.errors and action.attempted_tool_call
    (c,) = action.tool_calls
    assert (c.name, dict(c.arguments), c.id) == ("calculator", {"expression": "1+1"}, "call_3_0")


def test_plain_text_is_not_a_tool_call():
    action = parse_action("The answer is <answer>4</answer>.", TOOLS)
    assert action == Action(text=action.text, content=action.text)
    assert not action.attempted_tool_call


def test_arguments_may_be_a_json_string_openai_style():
    body = json.dumps({"name": "calculator", "arguments": json.dumps({"expression": "2"})})
    action = parse_action(f"<tool_call>{body}</tool_call>", TOOLS)
    assert action.tool_calls[0].arguments == {"expression": "2"}


def test_several_calls_allowed_when_the_limit_says_so():
    text = call("calculator", {"expression": "1"}) + call("lookup", {"key": "k"})
    action = parse_action(text, TOOLS, ParserLimits(max_calls=2))
    assert [c.name for c in action.tool_calls] == ["calculator", "lookup"]
    assert [c.id for c in action.tool_calls] == ["call_0", "call_1"]


@pytest.mark.parametrize(
    "text, kind, fragment",
    [
        ("<tool_call>{not json}</tool_call>", "bad_json", "not valid JSON"),
        ("<tool_call></tool_call>", "bad_json", "not valid JSON"),
        ("<tool_call>[1, 2]</tool_call>", "bad_format", "JSON object"),
        ('<tool_call>{"arguments": {}}</tool_call>', "bad_format", "JSON object"),
        ('<tool_call>{"name": 3}</tool_call>', "bad_format", "JSON object"),
        (call("rm_rf", {}), "unknown_tool", "available: calculator, lookup"),
        (call("calculator", {}), "bad_arguments", "missing required argument 'expression'"),
        (call("calculator", {"expression": 12}), "bad_arguments", "must be of type string"),
        (call("calculator", {"expression": "1", "x": 1}), "bad_arguments", "unexpected argument"),
        (call("calculator", [1]), "bad_arguments", "must be a JSON object"),
        (call("lookup", {"key": "k", "count": -1}), "bad_arguments", "out of range"),
        (call("lookup", {"key": "k", "count": True}), "bad_arguments", "type integer"),
        (call("lookup", {"key": "k", "count": 1.5}), "bad_arguments", "type integer"),
        (call("lookup", {"key": "k", "mode": "c"}), "bad_arguments", "must be one of"),
        (call("lookup", {"key": "k", "tags": ["a", 1]}), "bad_arguments", "tags[1]"),
        (call("calculator", {"expression": "1" * 300}), "bad_arguments", "too long"),
        (call("calculator", {"expression": "1+1"}) * 2, "too_many_calls", "2 tool calls"),
        (call("lookup", {"key": "x" * 5000}), "too_large", "too large"),
        (
            '<tool_call>{"name": "calculator", "arguments": {"expression": "1"}}',
            "unterminated",
            "never closed",
        ),
        ("oops </tool_call>", "bad_format", "without <tool_call>"),
        ("<tool_call><tool_call>{}</tool_call>", "bad_format", "nested"),
        (
            '<tool_call>{"name": "calculator", "arguments": "{bad"}</tool_call>',
            "bad_arguments",
            "not valid JSON",
        ),
        ("<tool_call>" + "[" * 3000 + "]" * 1000 + "</tool_call>", "bad_json", "not valid JSON"),
    ],
)
def test_malformed_calls_become_errors(text, kind, fragment):
    action = parse_action(text, TOOLS)
    assert action.attempted_tool_call
    assert kind in [e.kind for e in action.errors], action.errors
    assert any(fragment in e.message for e in action.errors), action.errors
    assert "Error:" in format_errors(action.errors)


def test_too_many_calls_executes_none():
    action = parse_action(call("calculator", {"expression": "1"}) * 3, TOOLS)
    assert action.tool_calls == () and [e.kind for e in action.errors] == ["too_many_calls"]


def test_rejects_non_string_text():
    with pytest.raises(TypeError, match="as str"):
        parse_action(None, TOOLS)  # type: ignore[arg-type]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
_fragments = st.sampled_from(
    [
        "<tool_call>",
        "</tool_call>",
        "{",
        "}",
        '"name"',
        '"arguments"',
        ":",
        ",",
        '"calculator"',
        '"lookup"',
        '"expression"',
        '"1+1"',
        "[",
        "]",
        "\n",
        " ",
        "NaN",
        "1e999",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(_fragments, max_size=40).map("".join),
        st.builds(
            lambda n, a: f"<tool_call>{json.dumps({'name': n, 'arguments': a})}</tool_call>",
            st.sampled_from(["calculator", "lookup", "nope"]),
            _json,
        ),
    )
)
def test_fuzz_parser_never_raises(text):
    action = parse_action(text, TOOLS)
    assert isinstance(action, Action) and action.text == text
    assert len(action.tool_calls) <= 1
    for c in action.tool_calls:
        assert c.name in {"calculator", "lookup"}
    if "<tool_call>" in text:
        assert action.attempted_tool_call
