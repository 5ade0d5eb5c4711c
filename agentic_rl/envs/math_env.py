"""Math word problems solved with tools: the `calculator` and `gsm8k` environments.

Episode: the system prompt explains the answer format and lists the tools; the user
message is the problem. Each turn the agent either calls a tool (the observation is
the tool's result, reward 0) or answers without a tool call, which ends the episode
with the verifiable reward (sparse, terminal). Malformed tool calls are answered with
an error observation so the agent can recover within the episode.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from agentic_rl.envs.base import Action, Message, StepResult, Task, message
from agentic_rl.envs.rewards import CompositeReward, format_reward, numeric_answer_reward
from agentic_rl.envs.tool_parser import format_errors
from agentic_rl.envs.tools import Tool, ToolCall, execute_tool, tool_system_prompt

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
            obs = message("tool", format_errors(action.errors), name="error")
            kinds = [e.kind for e in action.errors]
            return StepResult([obs], 0.0, False, {"tool_error_kinds": kinds})
        if action.tool_calls:
            return self._run_tools(action.tool_calls)
        return self._finish(action.text)

    def _run_tools(self, calls: Sequence[ToolCall]) -> StepResult:
        by_name = {t.name: t for t in self.tools}
        observations, exec_errors = [], []
        for call in calls:
            result = execute_tool(by_name[call.name], call.arguments)
            observations.append(
                message("tool", result.content, name=call.name, tool_call_id=call.id)
            )
            if not result.ok:
                exec_errors.append(result.error)
        return StepResult(observations, 0.0, False, {"tool_exec_errors": exec_errors})

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
