"""Tools an agent can call: the `Tool` contract and each concrete tool.

base (Tool, ToolCall, ToolResult, schema validation, execute_tool, tool prompts), parser
(assistant text -> Action with validated calls), calculator, files (confined file access),
mcp (MCP servers as tools), search (BM25 index + search/open), sql (read-only SQLite),
sandbox/ (the sandboxed Python interpreter and its `python` tool).

Imports: stdlib (and optional backends, lazily) and agentic_rl.envs.base only; never jax.
"""
