"""`McpToolset`: one live MCP client session (stdio or streamable HTTP) as a tuple of
`Tool`s, on a private event loop; `stdio_server` shorthand. What it enforces, and why, is
in the `agentic_rl.envs.tools.mcp` package docstring.

Imports: stdlib, the optional `mcp` package (lazily), agentic_rl.envs.tools.base and
agentic_rl.envs.tools.mcp (common, stdio) only; never jax.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentic_rl.envs.tools.base import Tool, ToolExecutionError
from agentic_rl.envs.tools.mcp.common import (
    _TOOL_NAME_RE,
    HttpServer,
    McpLimits,
    StdioServer,
    _field,
    _http_client,
    _import_mcp,
    _is_disconnect,
    _leaf_exception,
    _schema_problem,
    _short,
    _SkipLog,
    content_to_text,
)
from agentic_rl.envs.tools.mcp.stdio import _StdioTransport

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
