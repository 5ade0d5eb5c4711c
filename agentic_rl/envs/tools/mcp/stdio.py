"""The bounded stdio transport for MCP servers (`_StdioTransport`) and the /proc scan that
finds and ends a server's whole process tree. What it enforces, and why, is in the
`agentic_rl.envs.tools.mcp` package docstring.

Imports: stdlib, the optional `mcp` package (lazily) and agentic_rl.envs.tools.mcp.common
only; never jax.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import secrets
import signal
from typing import Any

from agentic_rl.envs.tools.mcp.common import (
    _ID_RE,
    MARKER_VAR,
    McpLimits,
    StdioServer,
    _import_mcp,
    _message_validator,
    _schema_problem,
    _short,
    _SkipLog,
)

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
