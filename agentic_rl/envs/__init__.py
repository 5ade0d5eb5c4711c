"""POMDP environments, tools and verifiable rewards (plain Python: never imports jax/flax).

Entry points: `ENVS` / `make_env_suite(name, **config)` give an `EnvSuite` (a factory
of `Env` instances + task splits + gamma); `parse_action` turns assistant text into an
`Action` with validated tool calls.
"""

from agentic_rl.envs.base import Action, Env, Message, StepResult, Task, message
from agentic_rl.envs.calculator import (
    CalculatorError,
    CalculatorLimits,
    calculator_tool,
    evaluate_expression,
    format_number,
)
from agentic_rl.envs.guess_number import GuessNumberEnv, extract_guess, generate_guess_tasks
from agentic_rl.envs.math_env import MathToolEnv, default_math_reward
from agentic_rl.envs.registry import ENVS, EnvRegistry, EnvSuite, make_env_suite
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
    "CompositeReward",
    "Env",
    "EnvRegistry",
    "EnvSuite",
    "GuessNumberEnv",
    "MathToolEnv",
    "Message",
    "ParserLimits",
    "RewardFn",
    "StepResult",
    "Task",
    "TaskSet",
    "Tool",
    "ToolCall",
    "ToolCallError",
    "ToolExecutionError",
    "ToolResult",
    "calculator_tool",
    "default_math_reward",
    "evaluate_expression",
    "execute_tool",
    "extract_final_answer",
    "extract_guess",
    "format_errors",
    "format_number",
    "format_reward",
    "generate_arithmetic_tasks",
    "generate_guess_tasks",
    "load_gsm8k_jsonl",
    "make_env_suite",
    "message",
    "normalize_text",
    "numeric_answer_reward",
    "numeric_match",
    "parse_action",
    "parse_gsm8k_answer",
    "parse_number",
    "resolve_gsm8k_dir",
    "string_answer_reward",
    "string_match",
    "tool_system_prompt",
    "validate_arguments",
]
