"""MCP servers as tools, against a real MCP server (tests/envs/mcp_test_server.py) started over
stdio and over streamable HTTP."""

from __future__ import annotations

import json
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
from agentic_rl.envs.mcp_tools import content_to_text

SERVER = str(Path(__file__).with_name("mcp_test_server.py"))


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
