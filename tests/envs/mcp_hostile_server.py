"""A hostile MCP server for the tests and attacks: raw JSON-RPC over stdio (no SDK), so it can
break the protocol on purpose. Run: `python mcp_hostile_server.py MODE [ARG]`.

It answers `initialize`, `tools/list` and `tools/call` like a real server, with one tool `echo`
(returns its `text` argument), except where MODE makes it misbehave:

- `ok`: behaves.
- `big_result N`: a call with text "big" returns a text block of N bytes (one JSON line of
  that size); other calls echo.
- `huge_line N`: a call with text "big" writes N bytes of non-JSON without a newline, then
  a newline; other calls echo.
- `stderr_flood N`: writes N bytes to stderr at start-up and before every answer.
- `grandchild PIDFILE`: starts a detached grandchild (double fork + setsid, new process
  group and session) that sleeps for 600 s; its pid goes to PIDFILE.
- `silent`: reads requests and never answers anything (not even `initialize`).
- `silent_list`: answers `initialize`, never `tools/list`.
- `silent_call`: answers `initialize` and `tools/list`, never `tools/call`.
- `exit_mid_call`: exits (status 7) on `tools/call`, without answering.
- `garbage`: answers `tools/call` with lines that are not JSON-RPC (and invalid UTF-8).
- `garbage_init`: answers `initialize` with non-JSON garbage only.
- `many_tools N`: lists N tools (`t0` ... `tN-1`).
- `huge_schema N`: extra tools `big` (a schema with N properties), `longdesc` (a description
  of 100 N characters) and `deep` (a schema nested 200 levels deep).
- `deep_schema N`: an extra tool whose schema is nested N levels deep (2 N JSON levels).
- `bad_tools`: tools with invalid, duplicate, empty and over-long names and bad schemas.
- `paginate_forever`: every `tools/list` page has a `nextCursor`.
- `notify_flood N`: sends N log notifications before answering each call.
- `wrong_id`: answers calls with a response id nobody asked for.
- `blank_flood N`: writes N blank lines before each answer.
- `deaf`: after `tools/list`, never reads its stdin again (a writer to it blocks on a full pipe)
  and ignores SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

MODE = sys.argv[1] if len(sys.argv) > 1 else "ok"
ARG = sys.argv[2] if len(sys.argv) > 2 else ""
OUT = sys.stdout.buffer

ECHO = {
    "name": "echo",
    "description": "Echo the text back.",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}


class Raw:
    """JSON text spliced into a message as is (a schema too deep for json.dumps)."""

    def __init__(self, text: str):
        self.text = text


def dumps(obj) -> str:
    if isinstance(obj, Raw):
        return obj.text
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {dumps(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, list):
        return "[" + ", ".join(dumps(v) for v in obj) + "]"
    return json.dumps(obj)


def send(obj) -> None:
    OUT.write(dumps(obj).encode() + b"\n")
    OUT.flush()


def result(msg_id, value) -> None:
    send({"jsonrpc": "2.0", "id": msg_id, "result": value})


def text_result(text: str) -> dict:
    return {"content": [{"type": "text", "text": text}], "isError": False}


def stderr_flood() -> None:
    n = int(ARG)
    chunk = b"E" * 65535 + b"\n"
    err = sys.stderr.buffer
    while n > 0:
        err.write(chunk[:n])
        n -= len(chunk)
    err.flush()


def start_grandchild(pidfile: str) -> None:
    if os.fork() == 0:  # child
        os.setsid()
        if os.fork() == 0:  # grandchild: its own session and process group, parent gone
            with open(pidfile, "w") as f:
                f.write(str(os.getpid()))
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            time.sleep(600)
        os._exit(0)
    os.wait()


def deep(levels: int) -> str:
    return '{"type": "object", "properties": {"a": ' * levels + '{"type": "string"}' + "}}" * levels


def tools() -> list[dict]:
    listed = [ECHO]
    if MODE == "many_tools":
        listed += [
            {"name": f"t{i}", "description": f"tool {i}", "inputSchema": {"type": "object"}}
            for i in range(int(ARG))
        ]
    elif MODE == "huge_schema":
        n = int(ARG)
        props = {f"p{i}": {"type": "string", "description": "x" * 50} for i in range(n)}
        listed.append({"name": "big", "description": "big", "inputSchema": {
            "type": "object", "properties": props}})  # fmt: skip
        listed.append({"name": "deep", "description": "deep", "inputSchema": Raw(deep(200))})
        listed.append({"name": "longdesc", "description": "d" * (n * 100),
                       "inputSchema": {"type": "object"}})  # fmt: skip
    elif MODE == "deep_schema":
        listed.append({"name": "deep", "description": "deep", "inputSchema": Raw(deep(int(ARG)))})
    elif MODE == "bad_tools":
        obj = {"type": "object"}
        listed += [
            {"name": "echo", "description": "a second echo", "inputSchema": obj},
            {"name": "", "description": "empty name", "inputSchema": obj},
            {"name": "x" * 5000, "description": "long name", "inputSchema": obj},
            {"name": "rm -rf /", "description": "spaces", "inputSchema": obj},
            {"name": "a\nb", "description": "newline", "inputSchema": obj},
            {"name": "</tool_call>", "description": "tag", "inputSchema": obj},
            {"name": "arr", "description": "array schema", "inputSchema": {"type": "array"}},
            {"name": "typ", "description": "bad type", "inputSchema": {
                "type": "object", "properties": {"a": {"type": "bogus"}}}},  # fmt: skip
            {"name": "req", "description": "bad required", "inputSchema": {
                "type": "object", "required": ["zzz"]}},  # fmt: skip
            {"name": "good2", "description": None, "inputSchema": obj},
            {"name": "trail\n", "description": "trailing newline", "inputSchema": obj},
            {"name": 42, "description": "not a string", "inputSchema": obj},
            "not an object",
        ]
    return listed


def handle(msg: dict) -> None:
    method, msg_id = msg.get("method"), msg.get("id")
    if msg_id is None:  # a notification
        return
    if MODE == "silent":
        return
    if MODE == "stderr_flood":
        stderr_flood()
    if MODE == "blank_flood":
        OUT.write(b"\n" * int(ARG))
        OUT.flush()
    if method == "initialize":
        if MODE == "garbage_init":
            OUT.write(b"this is not json\n\xff\xfe{{{\n")
            OUT.flush()
            return
        version = msg.get("params", {}).get("protocolVersion", "2025-06-18")
        result(msg_id, {"protocolVersion": version, "capabilities": {"tools": {}},
                        "serverInfo": {"name": "hostile", "version": "0"}})  # fmt: skip
    elif method == "tools/list":
        if MODE == "silent_list":
            return
        page = {"tools": tools()}
        if MODE == "paginate_forever":
            page["nextCursor"] = f"c{time.monotonic_ns()}"
        result(msg_id, page)
        if MODE == "deaf":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(600)
    elif method == "tools/call":
        params = msg.get("params", {})
        text = str((params.get("arguments") or {}).get("text", ""))
        if MODE == "silent_call":
            return
        if MODE == "exit_mid_call":
            os._exit(7)
        if MODE == "big_result" and text == "big":
            result(msg_id, text_result("A" * int(ARG)))
        elif MODE == "huge_line" and text == "big":
            n, chunk = int(ARG), b"Z" * (1 << 20)
            while n > 0:
                OUT.write(chunk[:n])
                n -= len(chunk)
            OUT.write(b"\n")
            OUT.flush()
        elif MODE == "garbage":
            OUT.write(b"<html>not json</html>\n\xff\xfe\xfd garbage\n[1, 2, 3]\n{\"id\": 99}\n")
            OUT.flush()
        elif MODE == "notify_flood":
            for i in range(int(ARG)):
                send({"jsonrpc": "2.0", "method": "notifications/message",
                      "params": {"level": "info", "data": f"log {i}"}})  # fmt: skip
            result(msg_id, text_result(text))
        elif MODE == "wrong_id":
            result(987654, text_result("for someone else"))
        else:
            result(msg_id, text_result(text))
    elif method == "ping":
        result(msg_id, {})
    else:
        send({"jsonrpc": "2.0", "id": msg_id,
              "error": {"code": -32601, "message": f"no method {method}"}})  # fmt: skip


def main() -> None:
    if MODE == "grandchild":
        start_grandchild(ARG)
    if MODE == "stderr_flood":
        stderr_flood()
    for line in sys.stdin.buffer:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict):
            handle(msg)


if __name__ == "__main__":
    main()
