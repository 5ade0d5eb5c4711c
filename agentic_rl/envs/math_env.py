"""Math word problems solved with tools: the `calculator` and `gsm8k` environments.

Episode: the system prompt explains the answer format and lists the tools; the user
message is the problem. Each turn the agent either calls a tool (the observation is
the tool's result, reward 0) or answers without a tool call, which ends the episode
with the verifiable reward (sparse, terminal). Malformed tool calls are answered with
an error observation so the agent can recover within the episode.
"""

from __future__ import annotations

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


def default_math_reward(format_weight: float = 0.1) -> CompositeReward:
    """Correctness (1.0) plus a small bonus for the `<answer>` format; "correct" decides success."""
    return CompositeReward(
        {"correct": (numeric_answer_reward(), 1.0), "format": (format_reward(), format_weight)}
    )


@dataclass
class MathToolEnv:
    """A tool-using math environment (one episode per instance; see `Env`).

    `success_term` names the reward component that decides `info["success"]`.
    """

    tools: Sequence[Tool]
    reward: CompositeReward = field(default_factory=default_math_reward)
    instructions: str = MATH_INSTRUCTIONS
    success_term: str = "correct"
    max_calls_per_turn: int = 1
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
        if self.tools:
            system += "\n\n" + tool_system_prompt(self.tools, self.max_calls_per_turn)
        return [message("system", system), message("user", task.prompt)]

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
