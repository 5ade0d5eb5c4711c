"""Math word problems solved with tools: the `calculator` and `gsm8k` environments.

Episode: the system prompt explains the answer format and lists the tools; the user
message is the problem. Each turn the agent either calls a tool (the observation is
the tool's result, reward 0) or answers without a tool call, which ends the episode
with the verifiable reward (sparse, terminal). Malformed tool calls are answered with
an error observation so the agent can recover within the episode.
Registers the `calculator` and `gsm8k` suites (`calculator_suite`, `gsm8k_suite`).

Imports: stdlib and agentic_rl.envs (base, rewards, suite, tasks, tools) only; never jax.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from agentic_rl.envs.base import Action, Env, Message, StepResult, Task, message
from agentic_rl.envs.rewards import CompositeReward, format_reward, numeric_answer_reward
from agentic_rl.envs.suite import ENVS, EnvSuite
from agentic_rl.envs.tasks import (
    GSM8K_DIR_ENV,
    TaskSet,
    generate_arithmetic_tasks,
    load_gsm8k_jsonl,
    resolve_gsm8k_dir,
)
from agentic_rl.envs.tools.base import (
    Tool,
    ToolCall,
    execute_tool,
    run_tool_calls,
    tool_error_step,
    tool_system_prompt,
)
from agentic_rl.envs.tools.calculator import calculator_tool

MATH_INSTRUCTIONS = (
    "You are a careful math assistant. Solve the problem step by step. Use the calculator "
    "tool for arithmetic. When you know the final answer, reply with <answer>NUMBER</answer> "
    "and no tool call."
)


# A short system prompt for small models: the tool format is shown, not specified by a
# JSON schema (the Hermes schema prompt costs ~250 tokens that a 135M model ignores).
COMPACT_CALCULATOR_INSTRUCTIONS = (
    "You are a math assistant with a calculator. To compute, call it like this:\n"
    '<tool_call>\n{"name": "calculator", "arguments": {"expression": "12 * 7"}}\n</tool_call>\n'
    "The result comes back in <tool_response></tool_response>. Then give the final answer "
    "like this: <answer>84</answer>"
)

# Worked examples (question, calculator expression); the answers come from the calculator.
_CALCULATOR_EXAMPLES = (
    ("What is 12 * 7?", "12 * 7"),
    ("What is 95 - 38?", "95 - 38"),
    ("What is (6 + 9) / 5?", "(6 + 9) / 5"),
    ("What is 48 / 4 + 23?", "48 / 4 + 23"),
)


def calculator_demonstrations(k: int, tool: Tool) -> list[Message]:
    """`k` worked episodes as chat history: question, tool call, tool result, answer.

    Few-shot demonstrations in the conversation are how a small model learns a tool-call
    format it was never tuned on: SmolLM2-135M almost never emits a parseable call from
    the schema prompt alone, but copies a shown exchange. The results are computed by
    `tool`, so a demonstration can never show a wrong answer.
    """
    if not 0 <= k <= len(_CALCULATOR_EXAMPLES):
        raise ValueError(f"demonstrations must be in 0..{len(_CALCULATOR_EXAMPLES)}, got {k}")
    out: list[Message] = []
    for question, expression in _CALCULATOR_EXAMPLES[:k]:
        result = execute_tool(tool, {"expression": expression})
        assert result.ok, result
        call = json.dumps({"name": tool.name, "arguments": {"expression": expression}})
        out += [
            message("user", question),
            message("assistant", f"<tool_call>\n{call}\n</tool_call>"),
            message("tool", result.content, name=tool.name),
            message("assistant", f"<answer>{result.content}</answer>"),
        ]
    return out


def default_math_reward(format_weight: float = 0.1) -> CompositeReward:
    """Correctness (1.0) plus a small bonus for the `<answer>` format; "correct" decides success."""
    return CompositeReward(
        {"correct": (numeric_answer_reward(), 1.0), "format": (format_reward(), format_weight)}
    )


@dataclass
class MathToolEnv:
    """A tool-using math environment (one episode per instance; see `Env`).

    `success_term` names the reward component that decides `info["success"]`.
    `demonstrations` (chat messages, e.g. `calculator_demonstrations`) go between the
    system prompt and the problem; `describe_tools=False` leaves the JSON-schema tool
    prompt out of the system message (when the instructions or demonstrations show the
    format instead).
    """

    tools: Sequence[Tool]
    reward: CompositeReward = field(default_factory=default_math_reward)
    instructions: str = MATH_INSTRUCTIONS
    success_term: str = "correct"
    max_calls_per_turn: int = 1
    demonstrations: Sequence[Message] = ()
    describe_tools: bool = True
    _task: Task | None = field(default=None, init=False, repr=False)
    _done: bool = field(default=False, init=False, repr=False)

    def __post_init__(self):
        if self.success_term not in self.reward.terms:
            terms = list(self.reward.terms)
            raise ValueError(f"success_term {self.success_term!r} is not a reward term: {terms}")

    def reset(self, task: Task, seed: int) -> list[Message]:
        del seed  # the task fully determines the episode
        self._task, self._done = task, False
        system = self.instructions
        if self.tools and self.describe_tools:
            system += "\n\n" + tool_system_prompt(self.tools, self.max_calls_per_turn)
        return [message("system", system), *self.demonstrations, message("user", task.prompt)]

    def step(self, action: Action) -> StepResult:
        if self._task is None or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        if action.errors:
            return tool_error_step(action.errors)
        if action.tool_calls:
            return self._run_tools(action.tool_calls)
        return self._finish(action.text)

    def _run_tools(self, calls: Sequence[ToolCall]) -> StepResult:
        return run_tool_calls(self.tools, calls)

    def _finish(self, text: str) -> StepResult:
        assert self._task is not None
        self._done = True
        components = self.reward.components(text, self._task)
        info = {
            "success": components[self.success_term] > 0,
            "reward_components": components,
            "answer": self._task.answer,
        }
        return StepResult([], self.reward.total(components), True, info)


# -- the suites -------------------------------------------------------------------------------


def _math_env_factory(
    format_weight: float, demonstrations: int = 0, compact_prompt: bool = False
) -> Callable[[], Env]:
    tool = calculator_tool()
    demos = tuple(calculator_demonstrations(demonstrations, tool))
    extra: dict[str, Any] = {"demonstrations": demos}
    if compact_prompt:
        extra.update(instructions=COMPACT_CALCULATOR_INSTRUCTIONS, describe_tools=False)
    return partial(MathToolEnv, tools=(tool,), reward=default_math_reward(format_weight), **extra)


@ENVS.register("calculator")
def calculator_suite(
    *,
    train_path: str | os.PathLike | None = None,
    eval_path: str | os.PathLike | None = None,
    num_train: int = 2000,
    num_eval: int = 200,
    seed: int = 0,
    min_ops: int = 2,
    max_ops: int = 4,
    limit: int | None = None,
    format_weight: float = 0.1,
    gamma: float = 1.0,
    demonstrations: int = 0,
    compact_prompt: bool = False,
    max_operand: int = 99,
    num_eval_hard: int = 0,
    hard_max_operand: int = 999,
) -> EnvSuite:
    """Multi-step arithmetic with the safe calculator tool.

    Splits are generated (train from `seed`, eval from `seed + 1`, operands up to
    `max_operand`) unless a GSM8K-format file is given for that split (`train_path` /
    `eval_path`, at most `limit` tasks). `num_eval_hard` more eval tasks (from `seed + 2`)
    have operands up to `hard_max_operand`, larger than any seen in training, so the eval
    number measures generalisation too; their `data["subset"]` is "larger_operands" (the
    others' "in_distribution"), and evaluation reports both subsets apart as well.
    `demonstrations` worked examples (0-4) precede each problem and `compact_prompt`
    replaces the JSON-schema tool prompt by a short shown format: what a small model
    needs to call the tool at all (see `calculator_demonstrations`).
    """
    if num_eval_hard < 0 or hard_max_operand < 2:
        raise ValueError(f"num_eval_hard={num_eval_hard} must be >= 0 and hard_max_operand="
                         f"{hard_max_operand} >= 2")
    subset = "in_distribution" if num_eval_hard else None

    def split(path, n, split_seed, prefix, subset=None):
        if path is not None:
            return load_gsm8k_jsonl(path, limit=limit)
        return generate_arithmetic_tasks(
            n, split_seed, min_ops=min_ops, max_ops=max_ops, max_operand=max_operand,
            id_prefix=prefix, subset=subset,
        )

    hard = generate_arithmetic_tasks(
        num_eval_hard, seed + 2, min_ops=min_ops, max_ops=max_ops,
        max_operand=hard_max_operand, id_prefix="arith-eval-hard", subset="larger_operands")
    tasks = TaskSet(
        {
            "train": split(train_path, num_train, seed, "arith-train"),
            "eval": [*split(eval_path, num_eval, seed + 1, "arith-eval", subset), *hard],
        }
    )
    factory = _math_env_factory(format_weight, demonstrations, compact_prompt)
    return EnvSuite("calculator", factory, tasks, gamma)


@ENVS.register("gsm8k")
def gsm8k_suite(
    *,
    data_dir: str | os.PathLike | None = None,
    train_file: str = "train.jsonl",
    eval_file: str = "test.jsonl",
    limit: int | None = None,
    format_weight: float = 0.1,
    gamma: float = 1.0,
) -> EnvSuite:
    """The real GSM8K problems with the calculator tool.

    Data directory: `data_dir`, else $AGENTIC_RL_GSM8K_DIR, else ../shared/data/gsm8k
    relative to the repository root.
    """
    root = resolve_gsm8k_dir(data_dir)
    train, test = root / train_file, root / eval_file
    missing = [str(p) for p in (train, test) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"GSM8K data not found: {', '.join(missing)}. Pass data_dir=... or set "
            f"${GSM8K_DIR_ENV} to the directory holding {train_file} and {eval_file}."
        )
    tasks = TaskSet(
        {
            "train": load_gsm8k_jsonl(train, limit=limit, id_prefix="gsm8k-train"),
            "eval": load_gsm8k_jsonl(test, limit=limit, id_prefix="gsm8k-test"),
        }
    )
    return EnvSuite("gsm8k", _math_env_factory(format_weight), tasks, gamma)
