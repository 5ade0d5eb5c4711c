"""Parser for Hermes-style tool calls: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

This is the format Qwen2.5/Qwen3 chat templates use and the one our tool system prompt
teaches models without tool templates (SmolLM2). The text comes straight from the
policy, so the parser is total: any string yields an `Action`, malformed calls become
`ToolCallError`s (shown to the agent and counted as metrics), never exceptions.

A block ends at the first `</tool_call>` outside JSON strings: the body is lexed for
strings (with backslash escapes), so an argument may carry `</tool_call>` or
`<tool_call>` verbatim, and `<tool_call>` counts as nesting only outside strings. The
JSON escape `<\\/tool_call>` is an ordinary string escape and round-trips;
`render_tool_call` writes every `</` inside strings that way, so what it renders parses
back to the same call and contains exactly one raw `</tool_call>`, at its end.

The sampler stops generation at the first raw `</tool_call>`, even inside a string (see
`RolloutConfig.stop_strings`), so in a rollout a raw closing tag inside a string cuts
the call there: the body then ends inside a JSON string, and the error says to write
`<\\/tool_call>` instead. `tool_call_stop` is the JSON-aware stop test a sampler can use
instead of the plain stop string.

Cost is linear in the text: the lexer jumps between `"`, `\\` and `<` with a regex, a
body is lexed for at most `2 * max_call_chars + 1024` characters (a longer one is
`too_large` without further lexing), and each search for a stray closing tag covers
only the text up to the next opening tag.

Imports: stdlib, agentic_rl.envs.base and agentic_rl.envs.tools.base only; never jax.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentic_rl.envs.base import Action
from agentic_rl.envs.tools.base import Tool, ToolCall, ToolCallError, validate_arguments

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


@dataclass(frozen=True)
class ParserLimits:
    """Bounds on what one turn may ask for.

    `max_calls` is the number of tool calls allowed per turn (more is an error and none
    are executed, so the agent learns the rule instead of a silent truncation);
    `max_call_chars` bounds one call's JSON, checked before parsing so a huge argument
    costs nothing.
    """

    max_calls: int = 1
    max_call_chars: int = 4096

    def __post_init__(self):
        if self.max_calls < 1 or self.max_call_chars < 16:
            raise ValueError(f"ParserLimits out of range: {self}")


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


_LEX = re.compile(r'["\\<]')
_CUT_IN_STRING = (
    "tool call is not valid JSON: it ends inside a JSON string, at a raw </tool_call>; "
    "inside strings write </ as <\\/ (e.g. <\\/tool_call>)"
)


def _find_close(text: str, pos: int, endpos: int) -> tuple[int, int, bool]:
    """Lexes `text[pos:endpos]` (a call body) for the closing tag outside JSON strings.

    Returns (index of that closing tag or -1, index of the first raw closing tag seen inside
    a string or -1, whether an opening tag occurs outside strings before the close).
    """
    in_string, first_in_string, nested = False, -1, False
    search = _LEX.search
    while (m := search(text, pos, endpos)) is not None:
        j = m.start()
        c = text[j]
        if c == '"':
            in_string = not in_string
            pos = j + 1
        elif c == "\\":
            pos = j + 2 if in_string else j + 1
        elif text.startswith(TOOL_CALL_CLOSE, j):
            if not in_string:
                return j, first_in_string, nested
            if first_in_string < 0:
                first_in_string = j
            pos = j + len(TOOL_CALL_CLOSE)
        elif not in_string and text.startswith(TOOL_CALL_OPEN, j):
            nested = True
            pos = j + len(TOOL_CALL_OPEN)
        else:
            pos = j + 1
    return -1, first_in_string, nested


def tool_call_stop(text: str) -> int | None:
    """Where a JSON-aware sampler should stop: the end of the first `</tool_call>` that is
    outside JSON strings (one closing a block, or a stray one outside any block), or None
    while there is none yet (e.g. generation is inside a string of an open call)."""
    pos = 0
    while True:
        start = text.find(TOOL_CALL_OPEN, pos)
        stray = text.find(TOOL_CALL_CLOSE, pos, len(text) if start == -1 else start)
        if stray != -1:
            return stray + len(TOOL_CALL_CLOSE)
        if start == -1:
            return None
        body_start = start + len(TOOL_CALL_OPEN)
        end, _, _ = _find_close(text, body_start, len(text))
        if end == -1:
            return None
        return end + len(TOOL_CALL_CLOSE)


def split_tool_blocks(
    text: str, max_body_chars: int | None = None
) -> tuple[str, list[str], list[ToolCallError]]:
    """Splits `text` into (content outside blocks, block bodies, structural errors).

    A body ends at the first closing tag outside JSON strings (see the module docstring).
    With `max_body_chars`, a body is lexed for at most that many characters; a longer one
    is a `too_large` error and parsing resumes after the next raw closing tag.
    """
    content: list[str] = []
    blocks: list[str] = []
    errors: list[ToolCallError] = []
    pos = 0
    n = len(text)
    while True:
        start = text.find(TOOL_CALL_OPEN, pos)
        if text.find(TOOL_CALL_CLOSE, pos, n if start == -1 else start) != -1:
            errors.append(
                ToolCallError("bad_format", f"found {TOOL_CALL_CLOSE} without {TOOL_CALL_OPEN}")
            )
        if start == -1:
            content.append(text[pos:])
            break
        content.append(text[pos:start])
        body_start = start + len(TOOL_CALL_OPEN)
        endpos = n if max_body_chars is None else min(n, body_start + max_body_chars)
        end, cut, nested = _find_close(text, body_start, endpos)
        if end == -1 and endpos < n:  # lexing stopped at the bound: too large, skip it
            errors.append(
                ToolCallError(
                    "too_large", f"tool call is too large (more than {max_body_chars} characters)"
                )
            )
            resume = text.find(TOOL_CALL_CLOSE, endpos - len(TOOL_CALL_CLOSE) + 1)
            if resume == -1:
                break
            pos = resume + len(TOOL_CALL_CLOSE)
            continue
        if end == -1 and cut == -1:
            errors.append(
                ToolCallError(
                    "unterminated", f"{TOOL_CALL_OPEN} was never closed by {TOOL_CALL_CLOSE}"
                )
            )
            break
        if end == -1:  # only raw closing tags inside a string: the call was cut there
            errors.append(ToolCallError("bad_json", _CUT_IN_STRING))
            pos = cut + len(TOOL_CALL_CLOSE)
            continue
        if nested:
            errors.append(ToolCallError("bad_format", f"nested {TOOL_CALL_OPEN} tags"))
        else:
            blocks.append(text[body_start:end])
        pos = end + len(TOOL_CALL_CLOSE)
    return "".join(content), blocks, errors


def render_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
    """The text of one call, `<tool_call>\\n{json}\\n</tool_call>`, that `parse_action` reads
    back as the same call: every `</` inside a JSON string is written `<\\/` (a JSON
    escape), so the only raw `</tool_call>` is the closing one and a sampler stopping at
    that stop string keeps the whole call."""
    obj = {"name": name, "arguments": arguments}
    body = json.dumps(obj, ensure_ascii=False)
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep them as JSON escapes
        body = json.dumps(obj)
    # Outside strings JSON has no '<', so every '</' is inside a string.
    body = body.replace("</", "<\\/")
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


def parse_call_body(
    body: str, tools: Mapping[str, Tool], limits: ParserLimits, call_id: str = ""
) -> ToolCall | ToolCallError:
    """Parses one `<tool_call>` body into a validated `ToolCall`, or the reason it is invalid."""
    body = body.strip()
    if len(body) > limits.max_call_chars:
        return ToolCallError(
            "too_large",
            f"tool call is too large ({len(body)} > {limits.max_call_chars} characters)",
        )
    try:
        obj: Any = json.loads(body)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        return ToolCallError("bad_json", f"tool call is not valid JSON: {_short(str(e))}")
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return ToolCallError(
            "bad_format", 'tool call must be a JSON object {"name": ..., "arguments": {...}}'
        )
    name = obj["name"]
    args = obj.get("arguments", {})
    if isinstance(args, str):  # OpenAI style: arguments as a JSON-encoded string
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):
            return ToolCallError("bad_arguments", "arguments string is not valid JSON")
    tool = tools.get(name)
    if tool is None:
        available = ", ".join(sorted(tools)) or "(none: answer without tools)"
        return ToolCallError(
            "unknown_tool", f"unknown tool {_short(name, 40)!r}; available: {available}"
        )
    err = validate_arguments(tool, args)
    if err is not None:
        return ToolCallError("bad_arguments", err)
    return ToolCall(name=name, arguments=args, id=call_id)


def parse_action(
    text: str,
    tools: Sequence[Tool] | Mapping[str, Tool] = (),
    limits: ParserLimits | None = None,
    *,
    id_prefix: str = "call",
) -> Action:
    """Parses one assistant turn into an `Action` (total: never raises on any `text`).

    Calls get ids `f"{id_prefix}_{i}"`. More than `limits.max_calls` blocks is a single
    `too_many_calls` error and no call is returned.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_action expects the assistant text as str, got {type(text)}")
    limits = limits or ParserLimits()
    by_name = dict(tools) if isinstance(tools, Mapping) else {t.name: t for t in tools}
    content, blocks, errors = split_tool_blocks(text, 2 * limits.max_call_chars + 1024)
    calls: list[ToolCall] = []
    if len(blocks) > limits.max_calls:
        errors.append(
            ToolCallError(
                "too_many_calls",
                f"{len(blocks)} tool calls in one turn; at most {limits.max_calls} allowed",
            )
        )
    else:
        for i, body in enumerate(blocks):
            parsed = parse_call_body(body, by_name, limits, f"{id_prefix}_{i}")
            (calls if isinstance(parsed, ToolCall) else errors).append(parsed)
    return Action(text=text, content=content.strip(), tool_calls=tuple(calls), errors=tuple(errors))
