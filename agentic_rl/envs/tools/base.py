"""Tools: a name, a description, JSON-schema parameters and an execute function.

Everything a tool receives comes from the policy, i.e. is untrusted: arguments are
validated against the schema before execution, execution runs in a daemon thread with
a timeout (a hung tool cannot hang the episode), exceptions become error text, and the
output is truncated. `execute_tool` therefore never raises for anything a model can do.

`require_positive` is the one check shared by the tools' limits dataclasses,
`run_tool_calls` the one way an env turns a turn's tool calls into observations, and
`tool_error_step` the one way it answers a turn with malformed calls.

Imports: stdlib and agentic_rl.envs.base only; never jax.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentic_rl.envs.base import StepResult, message

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")

# JSON-schema type name -> Python types accepted (bool is excluded from numbers below).
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}
_MAX_SCHEMA_DEPTH = 16


class ToolExecutionError(Exception):
    """Raised by a tool function for an expected failure; its message is shown to the agent."""


@dataclass(frozen=True)
class ToolCall:
    """A well-formed call: the tool exists and the arguments match its schema."""

    name: str
    arguments: Mapping[str, Any]
    id: str = ""


@dataclass(frozen=True)
class ToolCallError:
    """A malformed call attempt. `kind` is a short metric key, `message` is shown to the agent.

    Kinds: bad_json, bad_format, unknown_tool, bad_arguments, too_many_calls, too_large,
    unterminated.
    """

    kind: str
    message: str


@dataclass(frozen=True)
class ToolResult:
    """The text observation of one execution; `error` is None on success."""

    content: str
    error: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Tool:
    """A callable tool exposed to the policy.

    `fn` is called with the validated arguments as keyword arguments and may be sync or
    async; it returns the observation (str, or anything JSON-serialisable). It reports an
    expected failure by raising `ToolExecutionError`. `timeout_s=None` waits forever.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    fn: Callable[..., Any] = field(compare=False)
    timeout_s: float | None = 10.0
    max_output_chars: int = 4000

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise ValueError(
                f"tool name {self.name!r} must match {_NAME_RE.pattern} (letters, digits, _.-)"
            )
        if not callable(self.fn):
            raise TypeError(f"tool {self.name!r}: fn must be callable, got {type(self.fn)}")
        check_parameters_schema(self.parameters, where=f"tool {self.name!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"tool {self.name!r}: timeout_s must be > 0 or None")
        if self.max_output_chars < 1:
            raise ValueError(f"tool {self.name!r}: max_output_chars must be >= 1")

    def schema(self) -> dict[str, Any]:
        """The OpenAI/Hermes function description placed in the tool system prompt."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


def check_parameters_schema(schema: Any, *, where: str) -> None:
    """Checks a tool's parameter schema is an object schema this module can validate."""
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        raise ValueError(f"{where}: parameters must be a JSON schema with type 'object'")
    props = schema.get("properties", {})
    if not isinstance(props, Mapping):
        raise ValueError(f"{where}: parameters.properties must be an object")
    for name, sub in props.items():
        if not isinstance(sub, Mapping):
            raise ValueError(f"{where}: schema of parameter {name!r} must be an object")
        t = sub.get("type")
        types = t if isinstance(t, list) else [t] if t is not None else []
        unknown = [x for x in types if x not in _JSON_TYPES]
        if unknown:
            raise ValueError(f"{where}: parameter {name!r} has unsupported type(s) {unknown}")
    missing = [r for r in schema.get("required", []) if r not in props]
    if missing:
        raise ValueError(f"{where}: required parameters {missing} are not in properties")


def _type_ok(value: Any, type_name: str) -> bool:
    if type_name in ("integer", "number"):
        if isinstance(value, bool):
            return False
        if type_name == "integer":
            return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    return isinstance(value, _JSON_TYPES[type_name])


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_value(schema: Mapping[str, Any], value: Any, path: str, depth: int = 0) -> str | None:
    """Validates `value` against a JSON-schema subset; returns an error message or None.

    Supported keywords: type (name or list), enum, properties, required,
    additionalProperties (bool), items, minLength/maxLength, minimum/maximum,
    maxItems. Unknown keywords are ignored, as JSON schema prescribes.
    """
    if depth > _MAX_SCHEMA_DEPTH:
        return f"{path}: value is nested too deeply"
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_type_ok(value, x) for x in types):
            return f"{path} must be of type {' or '.join(types)}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path} must be one of {list(schema['enum'])}, got {_short(value)}"
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", math.inf):
            return f"{path} is too long ({len(value)} > {schema['maxLength']} characters)"
        if len(value) < schema.get("minLength", 0):
            return f"{path} is too short (< {schema['minLength']} characters)"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", -math.inf) or value > schema.get("maximum", math.inf):
            return f"{path} = {_short(value)} is out of range"
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", math.inf):
            return f"{path} has too many items ({len(value)})"
        items = schema.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                err = validate_value(items, item, f"{path}[{i}]", depth + 1)
                if err:
                    return err
    if isinstance(value, dict):
        return _validate_object(schema, value, path, depth)
    return None


def _validate_object(schema: Mapping[str, Any], value: dict, path: str, depth: int) -> str | None:
    props = schema.get("properties", {})
    for key in schema.get("required", []):
        if key not in value:
            return f"{path} is missing required argument {key!r}"
    if schema.get("additionalProperties", True) is False:
        extra = [k for k in value if k not in props]
        if extra:
            return f"{path} has unexpected argument(s) {_short(extra)}; allowed: {list(props)}"
    for key, sub in props.items():
        if key in value:
            err = validate_value(sub, value[key], f"{path}.{key}", depth + 1)
            if err:
                return err
    return None


def validate_arguments(tool: Tool, arguments: Any) -> str | None:
    """Validates call arguments against `tool.parameters`; returns an error message or None."""
    if not isinstance(arguments, dict):
        return f"arguments of {tool.name!r} must be a JSON object, got {type(arguments).__name__}"
    err = _validate_object(tool.parameters, arguments, "arguments", 0)
    return None if err is None else f"bad arguments for {tool.name!r}: {err}"


def _format_output(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[output truncated: {len(text)} characters in total]"


def _call(fn: Callable[..., Any], arguments: Mapping[str, Any]) -> Any:
    out = fn(**arguments)
    if inspect.isawaitable(out):

        async def _await():
            return await out

        out = asyncio.run(_await())
    return out


def execute_tool(tool: Tool, arguments: Mapping[str, Any]) -> ToolResult:
    """Runs `tool` on already-validated arguments; never raises for tool misbehaviour.

    The call runs in a daemon thread joined with `tool.timeout_s`, which bounds the wait
    for sync and async tools alike (async tools get their own event loop in that
    thread, so this also works when the caller is inside a running loop). A timed-out
    thread is abandoned, not killed: tools with side effects must bound themselves.
    """
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = _call(tool.fn, arguments)
        except BaseException as e:  # noqa: BLE001 - everything a tool does becomes text
            box["error"] = e

    start = time.perf_counter()
    thread = threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True)
    thread.start()
    thread.join(tool.timeout_s)
    elapsed = time.perf_counter() - start
    if thread.is_alive():
        msg = f"Error: tool {tool.name!r} timed out after {tool.timeout_s:g} s"
        return ToolResult(msg, error="timeout", duration_s=elapsed)
    if "error" in box:
        e = box["error"]
        if isinstance(e, ToolExecutionError):
            text, kind = f"Error: {e}", "tool_error"
        else:
            text, kind = f"Error: tool {tool.name!r} failed: {type(e).__name__}: {e}", "exception"
        return ToolResult(_truncate(text, tool.max_output_chars), error=kind, duration_s=elapsed)
    content = _truncate(_format_output(box.get("value")), tool.max_output_chars)
    return ToolResult(content, duration_s=elapsed)


def tool_system_prompt(tools: Sequence[Tool], max_calls_per_turn: int = 1) -> str:
    """The Hermes tool prompt (Qwen2.5/Qwen3 templates use this text), for any chat model.

    Models whose chat template knows no tools (SmolLM2) get the same text appended to the
    system message, so one tool-call format serves every model.
    """
    if not tools:
        raise ValueError("tool_system_prompt needs at least one tool")
    return schema_system_prompt([t.schema() for t in tools], max_calls_per_turn)


def schema_system_prompt(schemas: Sequence[Mapping[str, Any]], max_calls_per_turn: int = 1) -> str:
    """`tool_system_prompt` for OpenAI function descriptions
    (`{"type": "function", "function": {...}}`), e.g. a chat request's `tools`: the
    environments and the gateway render tools with the same text."""
    if not schemas:
        raise ValueError("a tool prompt needs at least one tool")
    signatures = "\n".join(json.dumps(s, ensure_ascii=False) for s in schemas)
    limit = (
        "Call at most one function per turn."
        if max_calls_per_turn == 1
        else f"Call at most {max_calls_per_turn} functions per turn."
    )
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{signatures}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n'
        f"{limit} Each result comes back inside <tool_response></tool_response> tags."
    )


def require_positive(limits: Any) -> None:
    """Raises ValueError unless every field of the limits dataclass `limits` is > 0."""
    for name, value in vars(limits).items():
        if not value > 0:
            raise ValueError(f"{type(limits).__name__}.{name} must be > 0, got {value!r}")


def run_tool_calls(tools: Sequence[Tool], calls: Sequence[ToolCall]) -> StepResult:
    """Runs one turn's (already validated) calls: one tool observation each, reward 0, not
    done; `info["tool_exec_errors"]` lists the execution errors."""
    by_name = {t.name: t for t in tools}
    observations, exec_errors = [], []
    for call in calls:
        result = execute_tool(by_name[call.name], call.arguments)
        observations.append(message("tool", result.content, name=call.name, tool_call_id=call.id))
        if not result.ok:
            exec_errors.append(result.error)
    return StepResult(observations, 0.0, False, {"tool_exec_errors": exec_errors})


def format_errors(errors: Sequence[ToolCallError]) -> str:
    """The observation text for malformed calls: what went wrong and how to call correctly."""
    lines = [f"Error: {e.message}" for e in errors]
    lines.append(
        'Call a tool as <tool_call>{"name": "...", "arguments": {...}}</tool_call>, '
        "or answer without a tool call."
    )
    return "\n".join(lines)


def tool_error_step(errors: Sequence[ToolCallError], suffix: str = "") -> StepResult:
    """The answer to a turn whose tool calls were malformed (nothing is run): one `error`
    tool observation (`format_errors`, then `suffix`), reward 0, not done;
    `info["tool_error_kinds"]` lists the errors' kinds."""
    obs = message("tool", format_errors(errors) + suffix, name="error")
    return StepResult([obs], 0.0, False, {"tool_error_kinds": [e.kind for e in errors]})
