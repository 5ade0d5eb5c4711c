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


# -- the closing tag inside JSON strings (issue item 13) ------------------------------------


def test_a_raw_closing_tag_inside_a_json_string_is_carried():
    key = 'print("</tool_call>") and </tool_call></tool_call>'
    text = "Sure. " + call("lookup", {"key": key}) + " done"
    action = parse_action(text, TOOLS)
    assert not action.errors, action.errors
    assert action.tool_calls[0].arguments == {"key": key}
    assert action.content == "Sure.  done"


def test_an_opening_tag_inside_a_json_string_is_not_nesting():
    action = parse_action(call("lookup", {"key": "<tool_call>{}</tool_call>"}), TOOLS)
    assert not action.errors, action.errors
    assert action.tool_calls[0].arguments == {"key": "<tool_call>{}</tool_call>"}


def test_the_json_escape_of_the_closing_tag_round_trips():
    text = '<tool_call>{"name": "lookup", "arguments": {"key": "a <\\/tool_call> b"}}</tool_call>'
    action = parse_action(text, TOOLS)
    assert action.tool_calls[0].arguments == {"key": "a </tool_call> b"}


def test_a_call_cut_inside_a_string_by_the_stop_string_says_how_to_escape():
    # What the sampler returns when the policy writes a raw </tool_call> inside a string:
    # generation stops at the first </tool_call>, mid-string.
    text = '<tool_call>{"name": "lookup", "arguments": {"key": "a </tool_call>'
    action = parse_action(text, TOOLS)
    assert [e.kind for e in action.errors] == ["bad_json"]
    assert "<\\/tool_call>" in action.errors[0].message
    assert "inside a JSON string" in action.errors[0].message


def test_two_calls_with_tags_in_strings_split_correctly():
    text = call("lookup", {"key": "x</tool_call>"}) + " and " + call("lookup", {"key": "y"})
    action = parse_action(text, TOOLS, ParserLimits(max_calls=2))
    assert not action.errors, action.errors
    got = [dict(c.arguments) for c in action.tool_calls]
    assert got == [{"key": "x</tool_call>"}, {"key": "y"}]


def test_render_tool_call_escapes_the_closing_tag_and_round_trips():
    from agentic_rl.envs.tools.parser import render_tool_call

    args = {"key": 'a</tool_call>b <tool_call> "q" \\ </', "tags": ["</tool_call>"]}
    text = render_tool_call("lookup", args)
    assert text.count("</tool_call>") == 1 and text.endswith("</tool_call>")
    assert "<\\/tool_call>" in text
    action = parse_action(text, TOOLS)
    assert not action.errors and action.tool_calls[0].arguments == args


def test_tool_call_stop_finds_the_close_outside_strings_only():
    from agentic_rl.envs.tools.parser import tool_call_stop

    text = '<tool_call>{"name": "x", "arguments": {"a": "</tool_call>"}}</tool_call> tail'
    assert tool_call_stop(text) == len(text) - len(" tail")
    assert tool_call_stop('<tool_call>{"a": "</tool_call>') is None  # still inside a string
    assert tool_call_stop("no call </tool_call>") == len("no call </tool_call>")  # stray: stop
    assert tool_call_stop("plain text") is None


def test_scanning_hostile_text_costs_linear_time():
    import time

    texts = [
        "<tool_call>" + '"' * 2_000_000 + "</tool_call>",
        "<tool_call>" + "<" * 2_000_000,
        "<tool_call>" + '"\\' * 1_000_000 + "</tool_call>" * 1000,
        ("<tool_call>" + '{"a": "</tool_call>') * 50_000,
    ]
    for text in texts:
        start = time.monotonic()
        action = parse_action(text, TOOLS)
        assert action.errors and time.monotonic() - start < 10


_pieces = ['"', "\\", "/", "<", ">", "</tool_call>", "<tool_call>", "a", "é", "\n", "\ud800"]
_strings = st.lists(st.sampled_from(_pieces), max_size=12).map("".join) | st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"key": _strings}, optional={"tags": st.lists(_strings, max_size=3)}))
def test_fuzz_rendered_calls_round_trip(arguments):
    from agentic_rl.envs.tools.parser import render_tool_call, tool_call_stop

    text = render_tool_call("lookup", arguments)
    # what the sampler keeps: the text up to its first raw stop string is the whole call
    assert text.find("</tool_call>") + len("</tool_call>") == len(text)
    assert tool_call_stop(text) == len(text)
    action = parse_action(text, TOOLS, ParserLimits(max_call_chars=1 << 16))
    assert not action.errors, (text, action.errors)
    assert dict(action.tool_calls[0].arguments) == arguments
