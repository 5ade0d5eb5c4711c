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

Layout: `common` (limits, server specs, SDK import, shared checks), `stdio` (the bounded
stdio transport and the process-tree scan), `toolset` (`McpToolset`, `stdio_server`).

Imports: stdlib, the optional `mcp` package (lazily) and agentic_rl.envs.tools only;
never jax.
"""

from agentic_rl.envs.tools.mcp.common import (
    MARKER_VAR,
    HttpServer,
    McpLimits,
    StdioServer,
    content_to_text,
)
from agentic_rl.envs.tools.mcp.toolset import McpToolset, stdio_server

__all__ = [
    "MARKER_VAR",
    "HttpServer",
    "McpLimits",
    "McpToolset",
    "StdioServer",
    "content_to_text",
    "stdio_server",
]
