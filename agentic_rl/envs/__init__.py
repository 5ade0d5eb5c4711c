"""POMDP environments, tools and verifiable rewards (plain Python: never imports jax/flax).

Entry points: `ENVS` / `make_env_suite(name, **config)` give an `EnvSuite` (a factory
of `Env` instances + task splits + gamma); `parse_action` turns assistant text into an
`Action` with validated tool calls.

Map of the package:

- `base`: Task, Action, StepResult, the `Env` protocol, `message`.
- `suite`: `EnvSuite`, the `ENVS` registry, `make_env_suite`; importing it registers
  every suite in `suites/` (registration in one place).
- `tasks`: task sets, GSM8K loading, arithmetic generation. `rewards`: verifiable rewards.
- `tools/`: `base` (Tool, ToolCall, ToolResult, schema validation, execute_tool, tool
  prompts), `parser`, `calculator`, `files` (file access confined to one directory),
  `mcp` (`McpToolset` turns any MCP server into tools), `search` (BM25 index),
  `sql` (read-only SQLite), `sandbox/` (sandboxed, stateful Python interpreter), `web/`
  (a generated website, its local HTTP server and a confined text browser).
- `suites/`: one module per environment family (env class, task generation, registered
  suites): `math` (calculator, gsm8k), `guess_number`, `code` (python_code), `search`
  (search_qa), `mixed` (search_calc), `sql` (text2sql; databases in `sql_data`), `web`
  (web_search_extract), `gridworld` (gridworld, gridworld_sparse) and `fs_investigation`
  (long-horizon).

Optional heavy dependencies (bm25s, mcp, bs4) are imported only when used.

Imports: stdlib, agentic_rl.registry and agentic_rl.envs only; never jax.
"""

from agentic_rl.envs.base import Action, Env, Message, StepResult, Task, message
from agentic_rl.envs.rewards import (
    CompositeReward,
    RewardFn,
    extract_final_answer,
    f1_answer_reward,
    format_reward,
    normalize_text,
    numeric_answer_reward,
    numeric_match,
    parse_number,
    string_answer_reward,
    string_match,
    token_f1,
)
from agentic_rl.envs.suite import ENVS, EnvSuite, make_env_suite
from agentic_rl.envs.suites.code import CodeToolEnv, generate_code_tasks, make_code_env
from agentic_rl.envs.suites.guess_number import GuessNumberEnv, extract_guess, generate_guess_tasks
from agentic_rl.envs.suites.math import MathToolEnv, default_math_reward
from agentic_rl.envs.suites.mixed import generate_mixed_tasks, make_mixed_env_factory
from agentic_rl.envs.suites.search import (
    World,
    generate_search_tasks,
    generate_world,
    load_corpus_jsonl,
    load_qa_jsonl,
)
from agentic_rl.envs.suites.sql import SqlEnv, score_sql
from agentic_rl.envs.suites.sql_data import generate_sql_tasks, load_spider_tasks
from agentic_rl.envs.suites.web import WebEnv, generate_web_tasks, solve_web_task
from agentic_rl.envs.tasks import (
    GSM8K_DIR_ENV,
    TaskSet,
    generate_arithmetic_tasks,
    load_gsm8k_jsonl,
    parse_gsm8k_answer,
    resolve_gsm8k_dir,
)
from agentic_rl.envs.tools.base import (
    Tool,
    ToolCall,
    ToolCallError,
    ToolExecutionError,
    ToolResult,
    execute_tool,
    format_errors,
    tool_error_step,
    tool_system_prompt,
    validate_arguments,
)
from agentic_rl.envs.tools.calculator import (
    CalculatorError,
    CalculatorLimits,
    calculator_tool,
    evaluate_expression,
    format_number,
)
from agentic_rl.envs.tools.files import (
    ConfinedFiles,
    FsLimits,
    PathRefused,
    file_tools,
    search_files_tool,
)
from agentic_rl.envs.tools.mcp import HttpServer, McpToolset, StdioServer, stdio_server
from agentic_rl.envs.tools.parser import ParserLimits, parse_action
from agentic_rl.envs.tools.sandbox.sandbox import (
    CellResult,
    CodeSandbox,
    SandboxError,
    SandboxLimits,
    namespaces_available,
    python_tool,
)
from agentic_rl.envs.tools.search import Document, SearchIndex, search_tools
from agentic_rl.envs.tools.sql import ReadOnlyDatabase, SqlError, SqlLimits

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
    "WebEnv",
    "World",
    "calculator_tool",
    "default_math_reward",
    "evaluate_expression",
    "execute_tool",
    "extract_final_answer",
    "extract_guess",
    "f1_answer_reward",
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
    "generate_web_tasks",
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
    "search_files_tool",
    "search_tools",
    "solve_web_task",
    "stdio_server",
    "string_answer_reward",
    "string_match",
    "token_f1",
    "tool_error_step",
    "tool_system_prompt",
    "validate_arguments",
]
