"""MCP servers as tools, against a real MCP server (tests/envs/mcp_test_server.py) started over
stdio and over streamable HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentic_rl.envs import (
    HttpServer,
    MathToolEnv,
    McpToolset,
    Task,
    execute_tool,
    parse_action,
    stdio_server,
)
from agentic_rl.envs.tools.base import ToolExecutionError
from agentic_rl.envs.tools.mcp import content_to_text

SERVER = str(Path(__file__).parents[1] / "mcp_test_server.py")


def server_processes(marker: str) -> list[int]:
    """Pids of live processes whose command line contains `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode()
                state = (entry / "stat").read_text().split()[2]
            except OSError:
                continue
            if marker in cmdline and state != "Z":
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def toolset():
    with McpToolset(stdio_server(sys.executable, SERVER, "stdio"), timeout_s=3.0) as ts:
        yield ts


def by_name(toolset):
    return {t.name: t for t in toolset.tools}


def test_lists_tools_with_their_json_schemas(toolset):
    tools = by_name(toolset)
    assert set(tools) == {"add", "capital", "secret_env", "sleep", "crash"}
    add = tools["add"].parameters
    assert add["type"] == "object" and add["required"] == ["a", "b"]
    assert add["properties"]["a"]["type"] == "integer"
    assert tools["add"].description == "Add two integers."
    assert toolset.skipped == {}


def test_calls_and_errors_become_observations(toolset):
    tools = by_name(toolset)
    assert execute_tool(tools["add"], {"a": 2, "b": 40}).content == "42"
    assert execute_tool(tools["capital"], {"country": "Aldoria"}).content == "Vessa"
    r = execute_tool(tools["capital"], {"country": "Atlantis"})
    assert r.error == "tool_error" and "MCP tool 'capital' reported an error" in r.content
    r = execute_tool(tools["add"], {"a": "two", "b": 1})  # the server validates too
    assert r.error == "tool_error" and "reported an error" in r.content


def test_server_gets_no_host_secrets_and_close_terminates_it(monkeypatch):
    monkeypatch.setenv("AGENTIC_RL_TEST_SECRET", "hunter2")
    marker = "mcp_test_server.py stdio"
    before = set(server_processes(marker))
    ts = McpToolset(stdio_server(sys.executable, SERVER, "stdio"))
    r = execute_tool(by_name(ts)["secret_env"], {"name": "AGENTIC_RL_TEST_SECRET"})
    assert r.content == "<unset>"
    assert set(server_processes(marker)) - before
    ts.close()
    deadline = time.monotonic() + 5
    while set(server_processes(marker)) - before:
        assert time.monotonic() < deadline, "the server process outlived close()"
        time.sleep(0.05)


def test_slow_calls_time_out_and_the_session_survives(toolset):
    tools = by_name(toolset)
    start = time.monotonic()
    r = execute_tool(tools["sleep"], {"seconds": 30})
    assert r.error == "tool_error" and "did not answer within 3 s" in r.content
    assert time.monotonic() - start < 6
    assert execute_tool(tools["add"], {"a": 1, "b": 1}).content == "2"


def test_mcp_tools_in_an_environment(toolset):
    env = MathToolEnv(tools=toolset.tools)
    msgs = env.reset(Task("t", "What is 19 + 23?", "42"), seed=0)
    assert '"name": "capital"' in msgs[0]["content"]  # the server's schemas reach the prompt
    call = {"name": "add", "arguments": {"a": 19, "b": 23}}
    r = env.step(parse_action(f"<tool_call>{json.dumps(call)}</tool_call>", env.tools))
    assert r.observation[0]["content"] == "42" and r.observation[0]["name"] == "add"
    bad = {"name": "add", "arguments": {"a": "19"}}  # refused by the schema before the server
    r = env.step(parse_action(f"<tool_call>{json.dumps(bad)}</tool_call>", env.tools))
    assert r.info["tool_error_kinds"] == ["bad_arguments"]
    assert env.step(parse_action("<answer>42</answer>", env.tools)).info["success"]


def test_a_crashing_server_gives_error_observations_and_close_cleans_up():
    marker = "mcp_test_server.py"
    before = set(server_processes(marker))
    ts = McpToolset(stdio_server(sys.executable, SERVER, "stdio"), prefix="srv.")
    tools = by_name(ts)
    assert set(tools) >= {"srv.add", "srv.crash"}
    assert execute_tool(tools["srv.add"], {"a": 1, "b": 2}).content == "3"
    r = execute_tool(tools["srv.crash"], {})
    assert r.error == "tool_error" and "failed" in r.content
    r = execute_tool(tools["srv.add"], {"a": 1, "b": 2})
    assert r.error == "tool_error" and ("closed" in r.content or "lost" in r.content)
    ts.close()
    ts.close()  # idempotent
    assert set(server_processes(marker)) <= before
    assert "closed" in execute_tool(tools["srv.add"], {"a": 1, "b": 2}).content


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_streamable_http_server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, SERVER, "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
                time.sleep(0.05)
        with McpToolset(HttpServer(f"http://127.0.0.1:{port}/mcp"), timeout_s=5) as ts:
            tools = by_name(ts)
            assert execute_tool(tools["add"], {"a": 5, "b": 6}).content == "11"
            proc.kill()
            proc.wait()
            r = execute_tool(tools["add"], {"a": 5, "b": 6})
            assert r.error == "tool_error" and "failed" in r.content
    finally:
        proc.kill()
        proc.wait()


def test_connection_failures_name_the_server_and_the_cause():
    with pytest.raises(ConnectionError, match="No such file or directory"):
        McpToolset(stdio_server("/nonexistent/mcp-server"))
    crash = "import sys; sys.stderr.write('server exploded\\n'); sys.exit(1)"
    with pytest.raises(ConnectionError, match=r"(?s)server stderr:\nserver exploded"):
        McpToolset(stdio_server(sys.executable, "-c", crash))
    with pytest.raises(ConnectionError, match="127.0.0.1"):
        McpToolset(HttpServer(f"http://127.0.0.1:{free_port()}/mcp"), startup_timeout_s=10)
    with pytest.raises(TypeError, match="StdioServer or HttpServer"):
        McpToolset("python server.py")


def test_content_blocks_to_text():
    class Block:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    blocks = [
        Block(type="text", text="hello"),
        Block(type="image", mime_type="image/png"),
        Block(type="resource", resource=Block(text="inline", uri="file:///x")),
        Block(type="resource_link", uri="file:///y"),
        Block(type="mystery"),
    ]
    assert content_to_text(blocks) == (
        "hello\n[image content, image/png]\ninline\n[resource link file:///y]\n[mystery content]"
    )


def test_fuzzed_arguments_give_observations_not_crashes(toolset):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.envs.test_tool_fuzz import JSON, check_tool, valid_arguments

    tools = by_name(toolset)

    @settings(max_examples=30, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.sampled_from(["add", "secret_env"]).flatmap(
        lambda n: st.tuples(st.just(tools[n]), valid_arguments(tools[n]) | JSON)))  # fmt: skip
    def run(tool_and_args):
        check_tool(*tool_and_args)

    run()
    assert execute_tool(tools["add"], {"a": 2, "b": 2}).content == "4"


# -- hostile servers (issue item 12): tests/envs/mcp_hostile_server.py breaks the protocol -----

HOSTILE = str(Path(__file__).parents[1] / "mcp_hostile_server.py")


def hostile(mode: str, *args: str, **kwargs) -> McpToolset:
    kwargs = {"timeout_s": 3.0, "startup_timeout_s": 8.0, **kwargs}
    return McpToolset(stdio_server(sys.executable, HOSTILE, mode, *args), **kwargs)


def within(seconds: float, fn, *args, **kwargs):
    """fn(*args, **kwargs) in a daemon thread; fails (instead of hanging the suite) past
    `seconds`."""
    import threading

    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} took more than {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def echo(ts: McpToolset, text: str):
    return execute_tool(by_name(ts)["echo"], {"text": text})


def test_a_huge_result_is_a_clear_error_and_the_session_survives():
    ts = within(30, hostile, "big_result", str(32 << 20))
    try:
        start = time.monotonic()
        r = within(30, echo, ts, "big")
        assert r.error == "tool_error" and "too large" in r.content, r.content[:300]
        assert time.monotonic() - start < 15
        assert within(15, echo, ts, "hi").content == "hi"  # the session is not stuck
    finally:
        within(20, ts.close)


def test_an_endless_line_is_cut_off_and_the_session_survives():
    ts = within(30, hostile, "huge_line", str(64 << 20))
    try:
        r = within(30, echo, ts, "big")
        assert r.error == "tool_error" and "too large" in r.content, r.content[:300]
        assert within(15, echo, ts, "hi").content == "hi"
    finally:
        within(20, ts.close)


def test_server_stderr_is_kept_as_a_bounded_tail():
    ts = within(60, hostile, "stderr_flood", str(16 << 20))  # default tail: 64 KiB
    try:
        assert within(30, echo, ts, "hi").content == "hi"  # a flooding server is not blocked
        tail = ts.stderr_tail()
        assert 0 < len(tail.encode()) <= 64 << 10 and tail.rstrip().endswith("E")
        assert ts.stderr_bytes >= 32 << 20  # all of it was read (and dropped)
    finally:
        within(20, ts.close)


def test_close_ends_the_servers_detached_grandchildren(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    ts = within(30, hostile, "grandchild", str(pidfile))
    pid = None
    try:
        deadline = time.monotonic() + 15
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the grandchild did not start"
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        assert alive(pid)
        within(20, ts.close)
        deadline = time.monotonic() + 10
        while alive(pid):
            assert time.monotonic() < deadline, "a detached grandchild outlived close()"
            time.sleep(0.05)
    finally:
        if pid is not None and alive(pid):
            os.kill(pid, 9)


@pytest.mark.parametrize(("mode", "what"), [("silent", "initialize"), ("silent_list", "tools/list"),
                                            ("garbage_init", "not JSON-RPC")])  # fmt: skip
def test_a_server_that_never_answers_fails_start_up_in_time_and_is_ended(mode, what):
    marker = f"mcp_hostile_server.py {mode} "
    before = set(server_processes(marker))
    start = time.monotonic()
    with pytest.raises((TimeoutError, ConnectionError)) as info:
        within(40, hostile, mode, startup_timeout_s=4.0)
    assert time.monotonic() - start < 4.0 + 10
    assert what in str(info.value), str(info.value)
    deadline = time.monotonic() + 10
    while set(server_processes(marker)) - before:
        assert time.monotonic() < deadline, "the server outlived its failed start-up"
        time.sleep(0.05)


def test_silent_dying_and_garbage_calls_are_error_observations():
    with within(30, hostile, "silent_call") as ts:
        r = within(20, echo, ts, "hi")
        assert r.error == "tool_error" and "did not answer within 3 s" in r.content
    with within(30, hostile, "exit_mid_call") as ts:
        start = time.monotonic()
        r = within(20, echo, ts, "hi")
        assert r.error == "tool_error" and "lost" in r.content and time.monotonic() - start < 10
        r = within(20, echo, ts, "hi")
        assert r.error == "tool_error" and ("lost" in r.content or "closed" in r.content)
    with within(30, hostile, "garbage") as ts:
        r = within(20, echo, ts, "hi")
        assert r.error == "tool_error" and "not JSON-RPC" in r.content, r.content
        assert "<html>" in r.content  # an example of what it sent
    with within(30, hostile, "wrong_id") as ts:
        r = within(20, echo, ts, "hi")
        assert r.error == "tool_error" and "unexpected" in r.content, r.content


def test_floods_of_notifications_and_blank_lines_do_not_stall_calls():
    for mode, n in (("notify_flood", "5000"), ("blank_flood", "200000")):
        with within(30, hostile, mode, n) as ts:
            start = time.monotonic()
            assert within(30, echo, ts, "hi").content == "hi"
            assert time.monotonic() - start < 20, mode


def test_the_tool_listing_is_bounded():
    with within(60, hostile, "many_tools", "3000") as ts:  # default: at most 128 tools
        assert len(ts.tools) == 128 and "echo" in by_name(ts)
        assert any("too many tools" in reason for reason in ts.skipped.values())
        assert len(ts.skipped) <= 101
        assert echo(ts, "hi").content == "hi"
    from agentic_rl.envs.tools.mcp import McpLimits

    with within(60, hostile, "many_tools", "3000", limits=McpLimits(max_tools=50)) as ts:
        assert len(ts.tools) == 50
    limits = McpLimits(max_schema_chars=10_000, max_description_chars=500)
    with within(60, hostile, "huge_schema", "2000", limits=limits) as ts:
        tools = by_name(ts)
        assert "big" not in tools and "schema" in ts.skipped["big"]
        assert "deep" not in tools and "nested" in ts.skipped["deep"]
        assert len(tools["longdesc"].description) <= 500
        assert echo(ts, "hi").content == "hi"
    with within(60, hostile, "paginate_forever") as ts:
        assert "echo" in by_name(ts) and len(ts.tools) <= McpLimits().max_tools


def test_invalid_and_colliding_tool_names_are_skipped_with_reasons():
    with within(30, hostile, "bad_tools") as ts:
        tools = by_name(ts)
        assert set(tools) == {"echo", "good2"}, (set(tools), ts.skipped)
        assert tools["echo"].description == "Echo the text back."  # the first one wins
        reasons = " | ".join(ts.skipped.values())
        assert "duplicate" in reasons and "must match" in reasons
        for bad in ("arr", "typ", "req"):
            assert bad in ts.skipped, ts.skipped
        assert all(len(name) <= 100 for name in ts.skipped)
        assert "trail\n" in ts.skipped and "42" in ts.skipped  # a name that is not a string
        assert echo(ts, "hi").content == "hi"


def test_a_schema_too_deep_to_parse_is_a_clear_start_up_error():
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="nested too deeply"):
        within(30, hostile, "deep_schema", "5000")
    assert time.monotonic() - start < 20


def test_a_server_that_stops_reading_cannot_wedge_calls_or_close():
    marker = "mcp_hostile_server.py deaf "
    before = set(server_processes(marker))
    ts = within(30, hostile, "deaf")
    try:
        for _ in range(2):  # a big request fills the pipe; the writer blocks
            start = time.monotonic()
            with pytest.raises(ToolExecutionError, match="did not answer"):
                within(20, ts.call, "echo", {"text": "x" * 300_000})
            assert time.monotonic() - start < 3.0 + 10
    finally:
        start = time.monotonic()
        within(30, ts.close)
        assert time.monotonic() - start < 15
    deadline = time.monotonic() + 10
    while set(server_processes(marker)) - before:  # it ignores SIGTERM: SIGKILL ends it
        assert time.monotonic() < deadline, "a deaf server outlived close()"
        time.sleep(0.05)
