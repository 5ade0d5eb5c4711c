"""Core types of the environment layer: tasks, actions, step results and the `Env` protocol.

An environment is a multi-turn POMDP over chat messages. The agent never sees the
environment's state, only the messages it returns (observations). The action space
is hybrid: every action is free text, which may contain structured tool calls; the
rollout parses the text once (`agentic_rl.envs.tools.parser.parse_action`) and hands
the environment an `Action` holding both, so environments never re-implement parsing
and the tool-call metrics are counted in one place.

This package is plain Python (no jax/flax): environments run in worker threads and
must be importable without an accelerator stack.

Imports: stdlib only (agentic_rl.envs.tools.base for type hints only); never jax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agentic_rl.envs.tools.base import Tool, ToolCall, ToolCallError

# One chat message in OpenAI format: {"role": "system"|"user"|"assistant"|"tool",
# "content": str, ...optional "name", "tool_call_id", "tool_calls"}.
Message = dict[str, Any]


@dataclass(frozen=True)
class Task:
    """One problem instance. Tasks are data, so any JSONL file or generator can supply them.

    `answer` is the reference used by verifiable rewards (None for tasks judged otherwise);
    `data` holds anything environment-specific (e.g. the secret of a guessing game).
    """

    id: str
    prompt: str
    answer: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    """What the agent did in one turn.

    `text` is the exact assistant text (tool-call markup included); `content` is the text
    outside tool-call blocks. `tool_calls` are the well-formed calls, `errors` the
    malformed ones. A turn *attempted* a tool call if either is non-empty; environments
    should execute nothing when `errors` is non-empty and answer with the errors instead.
    """

    text: str
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    errors: tuple[ToolCallError, ...] = ()

    @property
    def attempted_tool_call(self) -> bool:
        return bool(self.tool_calls or self.errors)


@dataclass(frozen=True)
class StepResult:
    """The environment's answer to one action.

    `observation` is the list of messages the agent sees next (tool results, user
    feedback); it must be non-empty unless `done`. `reward` is the reward for this turn
    (0 for sparse environments until the end). `info` carries host-side diagnostics;
    by convention the final step sets `info["success"]` (bool) for evaluation.
    """

    observation: list[Message]
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Env(Protocol):
    """A multi-turn partially observable environment; one instance runs one episode at a time.

    The rollout builds a fresh instance per episode (via a factory), calls `reset` once
    and `step` until `done`, from a worker thread. Implementations may block (tools,
    sandboxes); the rollout enforces per-step timeouts. Raising is allowed: the episode
    is dropped and the error recorded, but it counts against the run's error budget.
    """

    tools: Sequence[Tool]

    def reset(self, task: Task, seed: int) -> list[Message]:
        """Starts an episode; returns the initial messages (system prompt + user task)."""
        ...

    def step(self, action: Action) -> StepResult:
        """Applies one agent action."""
        ...


def message(role: str, content: str, **extra: Any) -> Message:
    """Builds an OpenAI-format message (small helper so environments stay terse)."""
    return {"role": role, "content": content, **extra}
