"""A real MCP server for the tests, built with the SDK's server framework (MCPServer in mcp 2.x,
FastMCP in 1.x). Run: `python mcp_test_server.py stdio` or `python mcp_test_server.py http PORT`."""

from __future__ import annotations

import os
import sys
import time

try:
    from mcp.server.mcpserver import MCPServer

    SDK_V1 = False
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP as MCPServer

    SDK_V1 = True

CAPITALS = {"aldoria": "Vessa", "brenmark": "Tolk", "cestavia": "Orrin"}

server = MCPServer("agentic-rl-test-server")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def capital(country: str) -> str:
    """The capital city of a (fictional) country."""
    key = country.strip().lower()
    if key not in CAPITALS:
        raise ValueError(f"unknown country {country!r}")
    return CAPITALS[key]


@server.tool()
def secret_env(name: str) -> str:
    """Returns an environment variable of the server process (to test what is inherited)."""
    return os.environ.get(name, "<unset>")


@server.tool()
def sleep(seconds: float) -> str:
    """Sleeps, then answers (to test call timeouts)."""
    time.sleep(seconds)
    return "awake"


@server.tool()
def crash() -> str:
    """Kills the server process (to test a server that dies mid-episode)."""
    os._exit(3)


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    elif SDK_V1:  # host and port are server settings in mcp 1.x
        server.settings.host, server.settings.port = "127.0.0.1", int(sys.argv[2])
        server.run("streamable-http")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
