"""POMDP environments, tools and verifiable rewards (plain Python: never imports jax/flax).

Entry points: `ENVS` / `make_env_suite(name, **config)` give an `EnvSuite` (a factory
of `Env` instances + task splits + gamma); `parse_action` turns assistant text into an
`Action` with validated tool calls.

Real-tool environments (registered by `tool_suites`): `text2sql` (SQLite, read-only),
`search_qa` (BM25 over a local corpus), `search_calc` (search + calculator), and
`python_code` (a sandboxed, stateful interpreter). `McpToolset` turns any MCP server
into tools and `file_tools` gives file access confined to one directory. Optional heavy
dependencies (bm25s, mcp) are imported only when used.
"""

from agentic_rl.envs import tool_suites  # noqa: F401 - registers the real-tool envs
from agentic_rl.envs.base import Action, Env, Message, StepResult, Task, message
from agentic_rl.envs.calculator import (
    CalculatorError,
    CalculatorLimits,
    calculator_tool,
    evaluate_expression,
    format_number,
)
from agentic_rl.envs.code_env import CodeToolEnv, generate_code_tasks, make_code_env
from agentic_rl.envs.code_sandbox import (
    CellResult,
    CodeSandbox,
    SandboxError,
    SandboxLimits,
    namespaces_available,
    python_tool,
)
from agentic_rl.envs.fs_tool import ConfinedFiles, FsLimits, PathRefused, file_tools
from agentic_rl.envs.guess_number import GuessNumberEnv, extract_guess, generate_guess_tasks
from agentic_rl.envs.math_env import MathToolEnv, default_math_reward
from agentic_rl.envs.mcp_tools import HttpServer, McpToolset, StdioServer, stdio_server
from agentic_rl.envs.mixed_env import generate_mixed_tasks, make_mixed_env_factory
from agentic_rl.envs.registry import ENVS, EnvSuite, make_env_suite
from agentic_rl.envs.rewards import (
    CompositeReward,
    RewardFn,
    extract_final_answer,
    format_reward,
    normalize_text,
    numeric_answer_reward,
    numeric_match,
    parse_number,
    string_answer_reward,
    string_match,
)
from agentic_rl.envs.search_env import (
    Document,
    SearchIndex,
    World,
    generate_search_tasks,
    generate_world,
    load_corpus_jsonl,
    load_qa_jsonl,
    search_tools,
)
from agentic_rl.envs.sql_data import generate_sql_tasks, load_spider_tasks
from agentic_rl.envs.sql_env import ReadOnlyDatabase, SqlEnv, SqlError, SqlLimits, score_sql
from agentic_rl.envs.tasks import (
    GSM8K_DIR_ENV,
    TaskSet,
    generate_arithmetic_tasks,
    load_gsm8k_jsonl,
    parse_gsm8k_answer,
    resolve_gsm8k_dir,
)
from agentic_rl.envs.tool_parser import ParserLimits, format_errors, parse_action
from agentic_rl.envs.tools import (
    Tool,
    ToolCall,
    ToolCallError,
    ToolExecutionError,
    ToolResult,
    execute_tool,
    tool_system_prompt,
    validate_arguments,
)

__all__ = [
    "ENVS",
    "GSM8K_DIR_ENV",
    "Action",
    "CalculatorError",
    "CalculatorLimits",
    "CellResult",
    "CodeSandbox",
    "CodeToolEnv",
    "CompositeReward",
    "ConfinedFiles",
    "Document",
    "Env",
    "EnvSuite",
    "FsLimits",
    "GuessNumberEnv",
    "HttpServer",
    "MathToolEnv",
    "McpToolset",
    "Message",
    "ParserLimits",
    "PathRefused",
    "ReadOnlyDatabase",
    "RewardFn",
    "SandboxError",
    "SandboxLimits",
    "SearchIndex",
    "SqlEnv",
    "SqlError",
    "SqlLimits",
    "StdioServer",
    "StepResult",
    "Task",
    "TaskSet",
    "Tool",
    "ToolCall",
    "ToolCallError",
    "ToolExecutionError",
    "ToolResult",
    "World",
    "calculator_tool",
    "default_math_reward",
    "evaluate_expression",
    "execute_tool",
    "extract_final_answer",
    "extract_guess",
    "file_tools",
    "format_errors",
    "format_number",
    "format_reward",
    "generate_arithmetic_tasks",
    "generate_code_tasks",
    "generate_guess_tasks",
    "generate_mixed_tasks",
    "generate_search_tasks",
    "generate_sql_tasks",
    "generate_world",
    "load_corpus_jsonl",
    "load_gsm8k_jsonl",
    "load_qa_jsonl",
    "load_spider_tasks",
    "make_code_env",
    "make_env_suite",
    "make_mixed_env_factory",
    "message",
    "namespaces_available",
    "normalize_text",
    "numeric_answer_reward",
    "numeric_match",
    "parse_action",
    "parse_gsm8k_answer",
    "parse_number",
    "python_tool",
    "resolve_gsm8k_dir",
    "score_sql",
    "search_tools",
    "stdio_server",
    "string_answer_reward",
    "string_match",
    "tool_system_prompt",
    "validate_arguments",
]
