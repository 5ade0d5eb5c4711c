"""Parser for Hermes-style tool calls: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

This is the format Qwen2.5/Qwen3 chat templates use and the one our tool system prompt
teaches models without tool templates (SmolLM2). The text comes straight from the
policy, so the parser is total: any string yields an `Action`, malformed calls become
`ToolCallError`s (shown to the agent and counted as metrics), never exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentic_rl.envs.base import Action
from agentic_rl.envs.tools import Tool, ToolCall, ToolCallError, validate_arguments

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


def split_tool_blocks(text: str) -> tuple[str, list[str], list[ToolCallError]]:
    """Splits `text` into (content outside blocks, block bodies, structural errors)."""
    content: list[str] = []
    blocks: list[str] = []
    errors: list[ToolCallError] = []
    pos = 0
    while True:
        start = text.find(TOOL_CALL_OPEN, pos)
        stray = text.find(TOOL_CALL_CLOSE, pos)
        if stray != -1 and (start == -1 or stray < start):
            errors.append(
                ToolCallError("bad_format", f"found {TOOL_CALL_CLOSE} without {TOOL_CALL_OPEN}")
            )
        if start == -1:
            content.append(text[pos:])
            break
        content.append(text[pos:start])
        body_start = start + len(TOOL_CALL_OPEN)
        end = text.find(TOOL_CALL_CLOSE, body_start)
        if end == -1:
            errors.append(
                ToolCallError(
                    "unterminated", f"{TOOL_CALL_OPEN} was never closed by {TOOL_CALL_CLOSE}"
                )
            )
            break
        body = text[body_start:end]
        if TOOL_CALL_OPEN in body:
            errors.append(ToolCallError("bad_format", f"nested {TOOL_CALL_OPEN} tags"))
        else:
            blocks.append(body)
        pos = end + len(TOOL_CALL_CLOSE)
    return "".join(content), blocks, errors


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
    content, blocks, errors = split_tool_blocks(text)
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


def format_errors(errors: Sequence[ToolCallError]) -> str:
    """The observation text for malformed calls: what went wrong and how to call correctly."""
    lines = [f"Error: {e.message}" for e in errors]
    lines.append(
        'Call a tool as <tool_call>{"name": "...", "arguments": {...}}</tool_call>, '
        "or answer without a tool call."
    )
    return "\n".join(lines)
