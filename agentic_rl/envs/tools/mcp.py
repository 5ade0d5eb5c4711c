"""MCP servers as tools: any Model Context Protocol server (stdio or streamable HTTP) becomes
a tuple of `Tool`s, through the official `mcp` Python SDK.

`McpToolset` keeps one client session open for its lifetime on a private event loop in a
background thread (MCP sessions are async and bound to the loop that opened them, while
tools are called from the rollout's worker threads). It lists the server's tools with
their JSON schemas and wraps each as a `Tool` whose function forwards the call to the
server. Everything that can go wrong becomes an observation, never an exception in the
episode: a tool result flagged `isError`, a protocol error from the server, a timeout, a
server that died.

A server is untrusted too. What is enforced (limits in `McpLimits`):

- Start-up (spawn, `initialize`, every `tools/list` page) must finish within
  `startup_timeout_s`, else `TimeoutError` naming the step it waited for; other start-up
  failures are `ConnectionError`. Both carry the diagnostics below and the server's
  stderr tail, and the server is ended before they are raised.
- Every call is bounded by `timeout_s`; the session stays usable after a timeout.
- stdio servers speak through our own transport (not the SDK's `stdio_client`): one
  JSON-RPC line is at most `max_message_bytes` (a longer line is discarded while it is
  read, in linear time, and the request it answers fails with "too large"); blank lines
  are ignored; lines that are not JSON-RPC are counted and dropped (more than
  `max_bad_lines` ends the connection), and an answer that cannot be parsed or
  validated fails its request at once; answers to ids nobody asked for are dropped and
  counted. A timeout or failure message names what the server sent meanwhile.
- The server's stderr is drained continuously (a chatty server never blocks) and only
  its last `max_stderr_bytes` are kept (`stderr_tail()`; `stderr_bytes` counts all).
- Listing: at most `max_list_pages` pages and `max_tools` tools (the rest skipped);
  a tool is skipped, with the reason in `skipped`, when its entry is malformed, its
  name is not a valid tool name or repeats an earlier one, or its input schema is not
  an object schema, is nested more than `max_schema_depth` levels or is longer than
  `max_schema_chars` as JSON. Descriptions are cut to `max_description_chars`. `skipped`
  lists at most `max_skipped_listed` names (then one summary entry).
- Results: the text gathered from a result is cut at `max_result_chars` before the
  tool's own `max_output_chars` truncation.
- `close()` ends the server's whole process tree: the server is started in its own
  session and process group; on close its stdin is closed, then after `close_grace_s`
  SIGTERM and, 1 s later, SIGKILL go to the process group and to every process found
  by a /proc scan: descendants of the server, members of its group or session, and any
  process whose environment carries this toolset's random marker variable
  (`AGENTIC_RL_MCP_SESSION`, set in the server's environment), which finds detached
  grandchildren (double fork + setsid) too. A process that both leaves the session and
  replaces its environment escapes this scan (only a cgroup or PID namespace would
  catch it).

HTTP servers use the SDK's streamable HTTP client: timeouts, listing limits and result
cutting apply, but a single response is read whole by the SDK before our limits see it.

Uses only what the SDK's 1.x and 2.x APIs share (`ClientSession`, `SessionMessage`, the
streamable HTTP client under its 1.x or 2.x name; tested with mcp 2.3, and with 1.26
before the stdio transport was ours). The SDK is imported lazily, so
`import agentic_rl.envs` does not pull it in.

Imports: stdlib, the optional `mcp` package (lazily) and agentic_rl.envs.tools.base only;
never jax.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import os
import re
import secrets
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentic_rl.envs.tools.base import Tool, ToolExecutionError, require_positive

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


# -- process tree -------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int, int, str]]:
    """pid -> (ppid, process group, session, start time) of every live process (Linux /proc)."""
    table = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if stat[0] in (b"Z", b"X"):
            continue
        table[int(name)] = (int(stat[1]), int(stat[2]), int(stat[3]), stat[19].decode())
    return table


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read(1 << 20)
    except OSError:  # gone, or another user's process
        return False


def _server_family(leader: int, marker: str) -> dict[int, str]:
    """pid -> start time of the server `leader`, its descendants, its group and session
    members, and every process carrying `marker` in its environment."""
    table = _proc_table()
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (ppid, _, _, _) in table.items():
        children[ppid].append(pid)
    found = {leader} if leader in table else set()
    todo = [leader]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    needle = f"{MARKER_VAR}={marker}".encode()
    me = os.getpid()
    for pid, (_, pgid, sid, _) in table.items():
        if pid != me and (pgid == leader or sid == leader or _has_marker(pid, needle)):
            found.add(pid)
    found.discard(me)
    return {pid: table[pid][3] for pid in found if pid in table}


def _signal_family(leader: int, family: dict[int, str], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, sig)
    current = _proc_table()
    for pid, started in family.items():
        if pid in current and current[pid][3] == started:  # the same process, not a reused pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


# -- the bounded stdio transport ----------------------------------------------------------------


class _StdioTransport:
    """Runs a stdio server and bridges its pipes to the session's streams (see the module
    docstring for what it bounds). Lives on the toolset's event loop."""

    def __init__(self, server: StdioServer, limits: McpLimits, skips: _SkipLog):
        self.server, self.limits, self.skips = server, limits, skips
        self.marker = secrets.token_hex(16)
        self.process: Any = None
        self.stopping = False
        self.own_exit: int | None = None  # exit status if the server exited on its own
        self.stderr = bytearray()
        self.stderr_bytes = 0
        self.bad_lines = 0
        self.bad_examples: collections.deque[tuple[int, str]] = collections.deque(maxlen=8)
        self.unexpected = 0
        self.oversized = 0
        self.notifications = 0
        self.fatal: str | None = None
        self.pending: dict[Any, str] = {}
        self.listed = 0

    # what the server did, for error messages

    def counters(self) -> tuple[int, ...]:
        return self.bad_lines, self.unexpected, self.oversized, self.notifications

    def diagnostics(self, since: tuple[int, ...] = (0, 0, 0, 0)) -> str:
        bad, unexpected, oversized, notifications = (
            a - b for a, b in zip(self.counters(), since)
        )
        notes = []
        if bad:
            example = next((text for n, text in self.bad_examples if n > since[0]), None)
            notes.append(
                f"the server wrote {bad} line(s) that are not JSON-RPC messages"
                + (f", e.g. {example!r}" if example else "")
            )
        if unexpected:
            notes.append(f"the server sent {unexpected} answer(s) with an unexpected id")
        if oversized:
            notes.append(f"{oversized} message(s) from the server were too large and dropped")
        if notifications > 1000:
            notes.append(f"the server sent {notifications} notifications meanwhile")
        if self.fatal:
            notes.append(self.fatal)
        process = self.process
        if self.own_exit is None and not self.stopping and process is not None:
            self.own_exit = process.returncode
        if self.own_exit is not None:
            notes.append(f"the server exited with status {self.own_exit}")
        return f" ({'; '.join(notes)})" if notes else ""

    def stderr_tail(self) -> str:
        return bytes(self.stderr[-self.limits.max_stderr_bytes :]).decode("utf-8", "replace")

    # the pipes

    @contextlib.asynccontextmanager
    async def connect(self):
        import anyio
        from mcp.client.stdio import get_default_environment

        _, session_message = _import_mcp()
        validate = _message_validator()
        env = {**get_default_environment(), **(self.server.env or {}), MARKER_VAR: self.marker}
        process = await anyio.open_process(
            [self.server.command, *self.server.args],
            env=env,
            cwd=self.server.cwd,
            start_new_session=True,
        )
        self.process = process
        to_session, from_server = anyio.create_memory_object_stream(0)
        to_server, from_session = anyio.create_memory_object_stream(0)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read_stdout, process, to_session, validate, session_message)
                tg.start_soon(self._write_stdin, process, from_session, to_session)
                tg.start_soon(self._read_stderr, process)
                try:
                    yield from_server, to_server
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._stop(process)
                    tg.cancel_scope.cancel()
        finally:
            for stream in (to_session, from_server, to_server, from_session):
                with contextlib.suppress(Exception):
                    await stream.aclose()

    async def _read_stdout(self, process, to_session, validate, session_message) -> None:
        import anyio

        limit = self.limits.max_message_bytes
        buf = bytearray()
        scanned = 0  # buf[:scanned] holds no newline
        dropping, head, dropped = False, b"", 0  # inside an over-long line
        try:
            async with to_session:
                while True:
                    try:
                        chunk = await process.stdout.receive(1 << 16)
                    except (anyio.EndOfStream, anyio.ClosedResourceError,
                            anyio.BrokenResourceError, OSError):  # fmt: skip
                        return
                    if dropping:
                        newline = chunk.find(b"\n")
                        if newline < 0:
                            dropped += len(chunk)
                            continue
                        dropped += newline
                        dropping = False
                        await self._oversized(head, dropped, to_session, validate, session_message)
                        chunk = chunk[newline + 1 :]
                    buf += chunk
                    start = 0
                    while (newline := buf.find(b"\n", max(start, scanned))) >= 0:
                        line = bytes(buf[start:newline])
                        start = newline + 1
                        if len(line) > limit:
                            await self._oversized(
                                line[:512], len(line), to_session, validate, session_message
                            )
                        else:
                            await self._deliver(line, to_session, validate, session_message)
                        if self.fatal:
                            return
                    del buf[:start]
                    scanned = len(buf)
                    if len(buf) > limit:
                        dropping, head, dropped = True, bytes(buf[:512]), len(buf)
                        buf.clear()
                        scanned = 0
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return  # the session is gone

    def _bad_line(self, line: bytes) -> None:
        self.bad_lines += 1
        self.bad_examples.append((self.bad_lines, _short(line[:200].decode("utf-8", "replace"))))
        if self.bad_lines > self.limits.max_bad_lines:
            self.fatal = (
                f"the server wrote more than {self.limits.max_bad_lines} lines that are not "
                "JSON-RPC messages; the connection was closed"
            )

    def _claim(self, head: bytes) -> tuple[bool, Any]:
        """(found, id) of the pending request an unreadable answer starting with `head` is
        for: the id written in it if that one is pending, else the only pending request."""
        match = _ID_RE.search(head)
        if match is not None:
            with contextlib.suppress(ValueError):
                rid = json.loads(match.group(1))
                if rid in self.pending:
                    return True, rid
        if len(self.pending) == 1:
            return True, next(iter(self.pending))
        return False, None

    async def _fail_request(self, rid: Any, reason: str, to_session, validate, message) -> None:
        self.pending.pop(rid, None)
        error = {"jsonrpc": "2.0", "id": rid, "error": {"code": -32603, "message": reason}}
        await to_session.send(message(validate(error)))

    async def _oversized(self, head: bytes, size: int, to_session, validate, message) -> None:
        self.oversized += 1
        found, rid = self._claim(head)
        if found:
            reason = (
                f"the server's answer was too large ({size} bytes > "
                f"{self.limits.max_message_bytes} bytes) and was discarded"
            )
            await self._fail_request(rid, reason, to_session, validate, message)

    async def _deliver(self, line: bytes, to_session, validate, message) -> None:
        line = line.strip()
        if not line:
            return
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            looks_like_answer = line.startswith(b"{") and b'"jsonrpc"' in line[:512]
            found, rid = self._claim(line[:512]) if looks_like_answer else (False, None)
            if not found:
                self._bad_line(line)
                return
            why = "nested too deeply" if isinstance(e, RecursionError) else _short(str(e), 80)
            reason = f"the server's answer is not valid JSON ({why})"
            await self._fail_request(rid, reason, to_session, validate, message)
            return
        is_answer = (
            isinstance(obj, dict) and "method" not in obj and ("result" in obj or "error" in obj)
        )
        rid = obj.get("id") if isinstance(obj, dict) else None
        if isinstance(obj, dict) and "method" in obj and rid is None:
            self.notifications += 1
        if is_answer:
            try:
                method = self.pending.pop(rid)
            except (KeyError, TypeError):  # nobody asked (or an unhashable id)
                self.unexpected += 1
                return
            if method == "tools/list":
                self._filter_listing(obj)
        try:
            parsed = validate(obj)
        except (ValueError, TypeError, RecursionError) as e:
            if not is_answer:
                self._bad_line(line)
                return
            reason = f"the server's answer is not a valid JSON-RPC message: {_short(str(e), 200)}"
            await self._fail_request(rid, reason, to_session, validate, message)
            return
        await to_session.send(message(parsed))

    def _filter_listing(self, obj: dict) -> None:
        """Drops the tools of a `tools/list` answer that would fail validation or break the
        limits, so one bad tool cannot fail the whole listing (reasons go to `skipped`)."""
        from mcp import types

        result = obj.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return
        kept = []
        cap = 2 * self.limits.max_tools  # `_wrap_tools` enforces the exact limit
        for entry in result["tools"]:
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                self.skips.add(name, "tool entry has no string 'name'")
                continue
            if self.listed >= cap:
                self.skips.add(name, f"too many tools (the limit is {self.limits.max_tools})")
                continue
            schema = entry.get("inputSchema", entry.get("input_schema"))
            problem = _schema_problem(schema, self.limits)
            if problem is None:
                try:
                    types.ListToolsResult.model_validate({"tools": [entry]})
                except (ValueError, TypeError, RecursionError) as e:
                    problem = f"malformed tool entry: {_short(str(e), 200)}"
            if problem is not None:
                self.skips.add(name, problem)
                continue
            self.listed += 1
            kept.append(entry)
        result["tools"] = kept

    async def _write_stdin(self, process, from_session, to_session) -> None:
        import anyio

        try:
            async with from_session:
                async for session_message in from_session:
                    model = session_message.message
                    data = model.model_dump_json(by_alias=True, exclude_unset=True)
                    with contextlib.suppress(ValueError):
                        obj = json.loads(data)
                        if isinstance(obj, dict) and "method" in obj and "id" in obj:
                            if len(self.pending) < 10_000:
                                self.pending[obj["id"]] = obj["method"]
                    await process.stdin.send(data.encode("utf-8") + b"\n")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            # The server stopped reading: end the read side so requests fail, not hang.
            self.fatal = self.fatal or "the server stopped reading its input"
            await to_session.aclose()

    async def _read_stderr(self, process) -> None:
        import anyio

        keep = self.limits.max_stderr_bytes
        while True:
            try:
                chunk = await process.stderr.receive(1 << 16)
            except (anyio.EndOfStream, anyio.ClosedResourceError,
                    anyio.BrokenResourceError, OSError):  # fmt: skip
                return
            self.stderr_bytes += len(chunk)
            self.stderr += chunk
            if len(self.stderr) > 2 * keep:
                del self.stderr[:-keep]

    async def _stop(self, process) -> None:
        """Closes stdin, waits `close_grace_s`, then ends the whole process tree."""
        import anyio

        if self.own_exit is None:
            self.own_exit = process.returncode
        self.stopping = True
        family = _server_family(process.pid, self.marker)  # before the tree can dissolve
        with anyio.move_on_after(self.limits.close_grace_s), contextlib.suppress(Exception):
            await process.stdin.aclose()  # bounded: a full pipe to a deaf server can block
        await self._wait_exit(process, self.limits.close_grace_s)
        family.update(_server_family(process.pid, self.marker))
        _signal_family(process.pid, family, signal.SIGTERM)
        deadline = anyio.current_time() + 1.0
        while anyio.current_time() < deadline:
            current = _proc_table()
            if not any(current.get(pid, (0, 0, 0, None))[3] == st for pid, st in family.items()):
                break
            await anyio.sleep(0.02)
        family.update(_server_family(process.pid, self.marker))
        _signal_family(process.pid, family, signal.SIGKILL)
        await self._wait_exit(process, 2.0)
        for stream in (process.stdout, process.stderr):
            with anyio.move_on_after(1.0), contextlib.suppress(Exception):
                await stream.aclose()
        # Close asyncio's subprocess transport now, while the loop runs (else it warns at
        # garbage collection, after the loop closed); nothing public exposes it.
        transport = getattr(getattr(process, "_process", None), "_transport", None)
        with contextlib.suppress(Exception):
            transport.close()

    @staticmethod
    async def _wait_exit(process, timeout: float) -> None:
        import anyio

        deadline = anyio.current_time() + timeout
        while process.returncode is None and anyio.current_time() < deadline:
            await anyio.sleep(0.01)


# -- the toolset ---------------------------------------------------------------------------------


@dataclass
class McpToolset:
    """A live connection to one MCP server and its tools (see the module docstring).

    Use as a context manager or call `close()`; `prefix` is prepended to every tool name
    (e.g. "files." when several servers are combined). `timeout_s` bounds each call and
    `startup_timeout_s` the whole start-up.
    """

    server: StdioServer | HttpServer
    prefix: str = ""
    timeout_s: float = 30.0
    startup_timeout_s: float = 30.0
    max_output_chars: int = 4000
    limits: McpLimits = field(default_factory=McpLimits)
    tools: tuple[Tool, ...] = field(default=(), init=False)
    skipped: dict[str, str] = field(default_factory=dict, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _session: Any = field(default=None, init=False, repr=False)
    _scope: Any = field(default=None, init=False, repr=False)
    _closing: bool = field(default=False, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _error: BaseException | None = field(default=None, init=False, repr=False)
    _dead: str | None = field(default=None, init=False, repr=False)
    _phase: str = field(default="starting the server", init=False, repr=False)
    _transport: _StdioTransport | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.server, (StdioServer, HttpServer)):
            raise TypeError(f"server must be a StdioServer or HttpServer, got {self.server!r}")
        if not (self.timeout_s > 0 and self.startup_timeout_s > 0):
            raise ValueError("McpToolset: timeout_s and startup_timeout_s must be > 0")
        self._skips = _SkipLog(self.skipped, self.limits.max_skipped_listed)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="mcp-client", daemon=True
        )
        self._thread.start()
        # The loop enforces startup_timeout_s itself; this is the backstop.
        if not ready.wait(self.startup_timeout_s + 15.0):
            self.close()
            raise TimeoutError(self._startup_timeout_message())
        error = self._error
        if error is None and self._session is None:
            error = ConnectionError("the toolset was closed during start-up")
        if error is not None:
            leaf = _leaf_exception(error)
            self.close()  # ends the server before the error is raised
            if isinstance(leaf, TimeoutError):
                raise TimeoutError(self._startup_timeout_message()) from None
            raise ConnectionError(
                f"could not connect to MCP server {self.server}: {type(leaf).__name__}: "
                f"{_short(str(leaf), 2000)}{self._diagnostics()}{self._stderr_note()}"
            ) from leaf

    def _startup_timeout_message(self) -> str:
        return (
            f"MCP server {self.server} did not answer within {self.startup_timeout_s:g} s "
            f"(waiting for {self._phase}){self._diagnostics()}{self._stderr_note()}"
        )

    # -- the background loop -------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as e:  # noqa: BLE001 - reported by __post_init__ or calls
            if not ready.is_set():
                self._error = e
        finally:
            self._dead = self._dead or "the connection to the MCP server is closed"
            ready.set()

    async def _main(self, ready: threading.Event) -> None:
        import anyio

        mcp, _ = _import_mcp()
        self._loop = asyncio.get_running_loop()
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self._closing:  # close() ran before the scope existed
                return
            deadline = anyio.current_time() + self.startup_timeout_s
            async with contextlib.AsyncExitStack() as stack:
                # Entering these starts tasks but waits for nothing the server does; the
                # timeout scope wraps only the waits (anyio scopes must nest properly).
                if isinstance(self.server, StdioServer):
                    self._transport = _StdioTransport(self.server, self.limits, self._skips)
                    streams = await stack.enter_async_context(self._transport.connect())
                else:
                    streams = await stack.enter_async_context(_http_client(self.server.url))
                session = await stack.enter_async_context(
                    mcp.ClientSession(streams[0], streams[1])
                )
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    self._phase = "the answer to initialize"
                    await session.initialize()
                    self._phase = "the answer to tools/list"
                    listed = await self._list_tools(session)
                self.tools = self._wrap_tools(listed)
                self._session = session
                self._phase = "ready"
                ready.set()
                await anyio.sleep_forever()

    async def _list_tools(self, session: Any) -> list[Any]:
        from mcp import types

        tools, cursor, seen = [], None, set()
        for _ in range(self.limits.max_list_pages):  # a server paginating forever is cut off
            if cursor is None:
                result = await session.list_tools()
            else:
                try:
                    params = types.PaginatedRequestParams(cursor=cursor)
                    result = await session.list_tools(params=params)
                except TypeError:  # an SDK without `params`
                    result = await session.list_tools(cursor=cursor)
            tools.extend(result.tools)
            cursor = _field(result, "next_cursor", "nextCursor")
            if not cursor or cursor in seen or len(tools) > 2 * self.limits.max_tools:
                break
            seen.add(cursor)
        return tools

    def _diagnostics(self, since: tuple[int, ...] = (0, 0, 0, 0)) -> str:
        return self._transport.diagnostics(since) if self._transport is not None else ""

    def stderr_tail(self) -> str:
        """The last `limits.max_stderr_bytes` the server wrote to stderr (stdio servers)."""
        return self._transport.stderr_tail() if self._transport is not None else ""

    @property
    def stderr_bytes(self) -> int:
        """How many bytes the server wrote to stderr in all (most are not kept)."""
        return self._transport.stderr_bytes if self._transport is not None else 0

    def _stderr_note(self) -> str:
        tail = self.stderr_tail()[-1500:].strip()
        return f"\nserver stderr:\n{tail}" if tail else ""

    # -- tools ---------------------------------------------------------------------------------

    def _wrap_tools(self, listed: Sequence[Any]) -> tuple[Tool, ...]:
        lim = self.limits
        tools: list[Tool] = []
        names: set[str] = set()
        for spec in listed:
            remote = getattr(spec, "name", None)
            if not isinstance(remote, str):
                self._skips.add(remote, "tool entry has no string 'name'")
                continue
            name = f"{self.prefix}{remote}"
            if len(tools) >= lim.max_tools:
                self._skips.add(remote, f"too many tools (the limit is {lim.max_tools})")
                continue
            if not _TOOL_NAME_RE.fullmatch(name):
                self._skips.add(
                    remote, f"tool name {_short(name, 80)!r} must match {_TOOL_NAME_RE.pattern}"
                )
                continue
            if name in names:
                self._skips.add(remote, f"duplicate tool name {name!r} (the first one is kept)")
                continue
            schema = _field(spec, "input_schema", "inputSchema", default={"type": "object"})
            problem = _schema_problem(schema, lim)
            if problem is not None:
                self._skips.add(remote, problem)
                continue
            description = str(spec.description or remote)[: lim.max_description_chars]
            try:
                tool = Tool(
                    name=name,
                    description=description,
                    parameters=dict(schema),
                    fn=self._caller(remote),
                    timeout_s=self.timeout_s + 5.0,
                    max_output_chars=self.max_output_chars,
                )
            except (ValueError, TypeError) as e:
                self._skips.add(remote, _short(str(e), 300))
                continue
            names.add(name)
            tools.append(tool)
        return tuple(tools)

    def _caller(self, remote_name: str):
        def call(**arguments: Any) -> str:
            return self.call(remote_name, arguments)

        return call

    def call(self, name: str, arguments: Mapping[str, Any]) -> str:
        """Calls server tool `name`; returns its text or raises `ToolExecutionError`."""
        loop, session = self._loop, self._session
        if self._dead or loop is None or session is None or loop.is_closed():
            raise ToolExecutionError(self._dead or "the MCP server is not connected")
        since = self._transport.counters() if self._transport is not None else (0, 0, 0, 0)
        coro = asyncio.wait_for(session.call_tool(name, dict(arguments)), self.timeout_s)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop stopped in the meantime
            coro.close()
            raise ToolExecutionError("the connection to the MCP server is closed") from None
        try:
            result = future.result(self.timeout_s + 2.0)
        except (TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()
            raise ToolExecutionError(
                f"MCP tool {name!r} did not answer within {self.timeout_s:g} s"
                f"{self._diagnostics(since)}"
            ) from None
        except concurrent.futures.CancelledError:
            raise ToolExecutionError(
                f"MCP tool {name!r} failed: the MCP toolset was closed during the call"
            ) from None
        except Exception as e:  # noqa: BLE001 - protocol errors, a dead server, ...
            raise ToolExecutionError(
                self._describe_failure(name, e) + self._diagnostics(since)
            ) from None
        limit = self.limits.max_result_chars
        text = content_to_text(_field(result, "content", default=()), limit=limit)
        structured = _field(result, "structured_content", "structuredContent")
        if not text and structured is not None:
            text = _short(str(structured), limit)
        if _field(result, "is_error", "isError", default=False):
            raise ToolExecutionError(
                f"MCP tool {name!r} reported an error: {text or '(no details)'}"
            )
        return text or "(empty result)"

    def _describe_failure(self, name: str, error: BaseException) -> str:
        error = _leaf_exception(error)
        lost = _is_disconnect(error) or not self._thread or not self._thread.is_alive()
        if lost:
            self._dead = "the MCP server connection was lost (the server may have exited)"
            return f"MCP tool {name!r} failed: {self._dead}"
        return f"MCP tool {name!r} failed: {_short(str(error), 2000) or type(error).__name__}"

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Ends the session (a stdio server's whole process tree is ended) and stops the
        thread; idempotent."""
        self._closing = True
        loop, scope = self._loop, self._scope
        if loop is not None and scope is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(scope.cancel)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.limits.close_grace_s + 10.0)
        self._dead = "the MCP toolset is closed"

    def __enter__(self) -> McpToolset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stdio_server(command: str, *args: str, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None) -> StdioServer:  # fmt: skip
    """Shorthand for `StdioServer(command, args, env, cwd)`."""
    return StdioServer(command, tuple(args), env, None if cwd is None else str(cwd))

