"""What the MCP client's parts share: `McpLimits`, the server specs (`StdioServer`,
`HttpServer`), the lazy SDK import, result-to-text and schema checks, the skip log.
What is enforced, and why, is in the `agentic_rl.envs.tools.mcp` package docstring.

Imports: stdlib, the optional `mcp` package (lazily) and agentic_rl.envs.tools.base only;
never jax.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentic_rl.envs.tools.base import require_positive

MARKER_VAR = "AGENTIC_RL_MCP_SESSION"
_TOOL_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")  # fullmatch: no trailing "\n"
_ID_RE = re.compile(rb'"id"\s*:\s*(-?\d{1,19}|"[^"\\]{0,200}")')


@dataclass(frozen=True)
class McpLimits:
    """Bounds on what one MCP server may cost (see the module docstring)."""

    max_message_bytes: int = 4 << 20
    max_stderr_bytes: int = 64 << 10
    max_bad_lines: int = 10_000
    max_tools: int = 128
    max_list_pages: int = 100
    max_schema_chars: int = 16 << 10
    max_schema_depth: int = 32
    max_description_chars: int = 2000
    max_result_chars: int = 1 << 20
    max_skipped_listed: int = 100
    close_grace_s: float = 1.0

    def __post_init__(self):
        require_positive(self)


@dataclass(frozen=True)
class StdioServer:
    """An MCP server started as a subprocess speaking JSON-RPC over stdin/stdout.

    `env` is the server's whole environment on top of the SDK's minimal default set
    (PATH, HOME, ...) and our marker variable: the host's other variables, e.g. API keys,
    are not passed on.
    """

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None


@dataclass(frozen=True)
class HttpServer:
    """An MCP server reached over streamable HTTP at `url` (e.g. http://127.0.0.1:8000/mcp)."""

    url: str


def _import_mcp():
    try:
        import mcp
        from mcp.shared.message import SessionMessage
    except ImportError as e:
        raise ImportError("MCP tools need the MCP Python SDK: pip install 'mcp>=1.26'") from e
    return mcp, SessionMessage


def _http_client(url: str):
    try:  # mcp >= 2
        from mcp.client.streamable_http import streamable_http_client as connect
    except ImportError:  # mcp 1.x
        from mcp.client.streamable_http import streamablehttp_client as connect
    return connect(url)


def _message_validator():
    """obj -> a JSON-RPC message model (the SDK's own validation; 2.x or 1.x API)."""
    from mcp import types

    adapter = getattr(types, "jsonrpc_message_adapter", None)
    if adapter is not None:  # mcp >= 2
        return lambda obj: adapter.validate_python(obj, by_name=False)
    return types.JSONRPCMessage.model_validate  # mcp 1.x


def _field(obj: Any, *names: str, default: Any = None) -> Any:
    """The first present attribute among `names` (the SDK renamed fields between 1.x and 2.x)."""
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


def _leaf_exception(error: BaseException) -> BaseException:
    """The first innermost exception of (nested) exception groups, which name the real cause."""
    while getattr(error, "exceptions", None):
        error = error.exceptions[0]
    return error


def _is_disconnect(error: BaseException) -> bool:
    """Whether `error` means the transport is gone (names differ across SDK versions:
    McpError "Connection closed", anyio's ClosedResourceError/BrokenResourceError, ...)."""
    kind = type(error).__name__
    return (
        "Closed" in kind
        or "Broken" in kind
        or kind == "EndOfStream"
        or "connection closed" in str(error).lower()
    )


def _short(text: Any, limit: int = 100) -> str:
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def content_to_text(blocks: Sequence[Any], limit: int | None = None) -> str:
    """Joins an MCP result's content blocks: text as is, other kinds as short placeholders.

    With `limit`, stops once that many characters are gathered (the rest is summarised).
    """
    parts: list[str] = []
    total = 0
    blocks = list(blocks or ())
    for i, block in enumerate(blocks):
        if limit is not None and total > limit:
            parts.append(f"[{len(blocks) - i} more content blocks omitted]")
            break
        kind = getattr(block, "type", "unknown")
        if kind == "text":
            piece = str(getattr(block, "text", ""))
        elif kind in ("image", "audio"):
            mime = _field(block, "mime_type", "mimeType", default="?")
            piece = f"[{kind} content, {_short(mime, 60)}]"
        elif kind == "resource":
            resource = getattr(block, "resource", None)
            text = getattr(resource, "text", None)
            uri = _short(str(getattr(resource, "uri", "?")), 200)
            piece = str(text) if text is not None else f"[resource {uri}]"
        elif kind == "resource_link":
            piece = f"[resource link {_short(str(getattr(block, 'uri', '?')), 200)}]"
        else:
            piece = f"[{_short(str(kind), 40)} content]"
        if limit is not None and len(piece) > limit - total:
            piece = piece[: max(0, limit - total)] + "\n[result cut: too large]"
        parts.append(piece)
        total += len(piece) + 1
    return "\n".join(parts)


def _too_deep(obj: Any, limit: int) -> bool:
    """Whether `obj` nests dicts/lists more than `limit` levels (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _schema_problem(schema: Any, limits: McpLimits) -> str | None:
    """Why an input schema cannot be offered to the policy, or None."""
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        return "input schema is not a JSON object schema (type 'object')"
    if _too_deep(dict(schema), limits.max_schema_depth):
        return f"input schema is nested too deeply (over {limits.max_schema_depth} levels)"
    try:
        size = len(json.dumps(schema))
    except (TypeError, ValueError, RecursionError):
        return "input schema is not JSON-serialisable"
    if size > limits.max_schema_chars:
        return f"input schema is too large ({size} > {limits.max_schema_chars} characters)"
    return None


class _SkipLog:
    """`skipped` with a bound: the first `limit` names, then one summary entry."""

    def __init__(self, target: dict[str, str], limit: int):
        self.target, self.limit, self.extra = target, limit, 0

    def add(self, name: Any, reason: str) -> None:
        key = _short(name if isinstance(name, str) else repr(name))
        if key in self.target or len(self.target) < self.limit:
            self.target.setdefault(key, reason)
            return
        self.extra += 1
        self.target["..."] = f"{self.extra} more tools skipped (last reason: {reason})"
