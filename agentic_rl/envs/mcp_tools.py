"""MCP servers as tools: any Model Context Protocol server (stdio or streamable HTTP) becomes
a tuple of `Tool`s, through the official `mcp` Python SDK.

`McpToolset` keeps one client session open for its lifetime on a private event loop in a
background thread (MCP sessions are async and bound to the loop that opened them, while
tools are called from the rollout's worker threads). It lists the server's tools with
their JSON schemas and wraps each as a `Tool` whose function forwards the call to the
server. Everything that can go wrong becomes an observation, never an exception in the
episode: a tool result flagged `isError`, a protocol error from the server, a timeout, a
server that died. Server tools whose name or schema the tool layer cannot represent are
skipped and listed in `skipped` with the reason.

Uses only what the SDK's 1.x and 2.x APIs share (`ClientSession`, `stdio_client`, the
streamable HTTP client under its 1.x or 2.x name; tested with mcp 1.26 and 2.3). The
SDK is imported lazily, so `import agentic_rl.envs` does not pull it in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentic_rl.envs.tools import Tool, ToolExecutionError


@dataclass(frozen=True)
class StdioServer:
    """An MCP server started as a subprocess speaking JSON-RPC over stdin/stdout.

    `env` is the server's whole environment on top of the SDK's minimal default set
    (PATH, HOME, ...): the host's other variables, e.g. API keys, are not passed on.
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
        from mcp.client.stdio import StdioServerParameters, stdio_client
    except ImportError as e:
        raise ImportError("MCP tools need the MCP Python SDK: pip install 'mcp>=1.26'") from e
    return mcp, StdioServerParameters, stdio_client


def _http_client(url: str):
    try:  # mcp >= 2
        from mcp.client.streamable_http import streamable_http_client as connect
    except ImportError:  # mcp 1.x
        from mcp.client.streamable_http import streamablehttp_client as connect
    return connect(url)


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


def content_to_text(blocks: Sequence[Any]) -> str:
    """Joins an MCP result's content blocks: text as is, other kinds as short placeholders."""
    parts = []
    for block in blocks or ():
        kind = getattr(block, "type", "unknown")
        if kind == "text":
            parts.append(str(getattr(block, "text", "")))
        elif kind in ("image", "audio"):
            mime = _field(block, "mime_type", "mimeType", default="?")
            parts.append(f"[{kind} content, {mime}]")
        elif kind == "resource":
            resource = getattr(block, "resource", None)
            text = getattr(resource, "text", None)
            parts.append(
                str(text) if text is not None else f"[resource {getattr(resource, 'uri', '?')}]"
            )
        elif kind == "resource_link":
            parts.append(f"[resource link {getattr(block, 'uri', '?')}]")
        else:
            parts.append(f"[{kind} content]")
    return "\n".join(parts)


@dataclass
class McpToolset:
    """A live connection to one MCP server and its tools (see the module docstring).

    Use as a context manager or call `close()`; `prefix` is prepended to every tool name
    (e.g. "files." when several servers are combined). `timeout_s` bounds each call.
    """

    server: StdioServer | HttpServer
    prefix: str = ""
    timeout_s: float = 30.0
    startup_timeout_s: float = 30.0
    max_output_chars: int = 4000
    tools: tuple[Tool, ...] = field(default=(), init=False)
    skipped: dict[str, str] = field(default_factory=dict, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _session: Any = field(default=None, init=False, repr=False)
    _stop: asyncio.Event | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _error: BaseException | None = field(default=None, init=False, repr=False)
    _dead: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.server, (StdioServer, HttpServer)):
            raise TypeError(f"server must be a StdioServer or HttpServer, got {self.server!r}")
        self._errlog = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="mcp-client", daemon=True
        )
        self._thread.start()
        if not ready.wait(self.startup_timeout_s):
            self.close()
            raise TimeoutError(f"MCP server {self.server} did not answer within "
                               f"{self.startup_timeout_s:g} s")  # fmt: skip
        if self._error is not None:
            error = _leaf_exception(self._error)
            tail = self._stderr_tail()
            self.close()
            raise ConnectionError(
                f"could not connect to MCP server {self.server}: {type(error).__name__}: "
                f"{error}{tail}"
            ) from error

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
        mcp, params_cls, stdio_client = _import_mcp()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            if isinstance(self.server, StdioServer):
                params = params_cls(
                    command=self.server.command,
                    args=list(self.server.args),
                    env=dict(self.server.env) if self.server.env is not None else None,
                    cwd=self.server.cwd,
                )
                streams = await stack.enter_async_context(stdio_client(params, errlog=self._errlog))
            else:
                streams = await stack.enter_async_context(_http_client(self.server.url))
            session = await stack.enter_async_context(mcp.ClientSession(streams[0], streams[1]))
            await session.initialize()
            listed = await self._list_tools(session)
            self.tools = self._wrap_tools(listed)
            self._session = session
            ready.set()
            await self._stop.wait()

    @staticmethod
    async def _list_tools(session: Any) -> list[Any]:
        tools, cursor = [], None
        for _ in range(100):  # a server that paginates forever cannot hang start-up
            result = (
                await session.list_tools(cursor=cursor) if cursor else await session.list_tools()
            )
            tools.extend(result.tools)
            cursor = _field(result, "next_cursor", "nextCursor")
            if not cursor:
                break
        return tools

    def _stderr_tail(self) -> str:
        try:
            self._errlog.seek(0)
            tail = self._errlog.read()[-1500:].strip()
        except (OSError, ValueError):
            return ""
        return f"\nserver stderr:\n{tail}" if tail else ""

    # -- tools ---------------------------------------------------------------------------------

    def _wrap_tools(self, listed: Sequence[Any]) -> tuple[Tool, ...]:
        tools = []
        for spec in listed:
            name = f"{self.prefix}{spec.name}"
            schema = _field(spec, "input_schema", "inputSchema", default={"type": "object"})
            try:
                tool = Tool(
                    name=name,
                    description=str(spec.description or spec.name),
                    parameters=dict(schema),
                    fn=self._caller(spec.name),
                    timeout_s=self.timeout_s + 5.0,
                    max_output_chars=self.max_output_chars,
                )
            except (ValueError, TypeError) as e:
                self.skipped[str(spec.name)] = str(e)
                continue
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
        coro = asyncio.wait_for(session.call_tool(name, dict(arguments)), self.timeout_s)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop stopped in the meantime
            coro.close()
            raise ToolExecutionError("the connection to the MCP server is closed") from None
        try:
            result = future.result(self.timeout_s + 2.0)
        except TimeoutError:
            future.cancel()
            raise ToolExecutionError(
                f"MCP tool {name!r} did not answer within {self.timeout_s:g} s"
            ) from None
        except Exception as e:  # noqa: BLE001 - protocol errors, a dead server, ...
            raise ToolExecutionError(self._describe_failure(name, e)) from None
        text = content_to_text(result.content)
        structured = _field(result, "structured_content", "structuredContent")
        if not text and structured is not None:
            text = str(structured)
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
        return f"MCP tool {name!r} failed: {str(error) or type(error).__name__}"

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Ends the session (a stdio server process is terminated) and stops the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(15.0)
        self._dead = "the MCP toolset is closed"
        with contextlib.suppress(OSError, ValueError):
            self._errlog.close()

    def __enter__(self) -> McpToolset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stdio_server(command: str, *args: str, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None) -> StdioServer:  # fmt: skip
    """Shorthand for `StdioServer(command, args, env, cwd)`."""
    return StdioServer(command, tuple(args), env, None if cwd is None else str(cwd))
