"""What a rollout is configured with and what it returns: the data types every runtime
shares, with no runtime in them.

The one rollout runtime is `agentic_rl.agents.run_agents`; our environments run in it as
agent programs (`agents.env_agent.EnvAgent`), and `agents.env_rollout.run_episodes` is
the environment loop's entry point over it. The types live here, below the agents
layer, because they are the rollout's contract, not the runtime's: the trainer builds a
`RolloutResult` from offline (DPO) pairs without running anything, evaluation reports
and metrics (`rollout.metrics`) read `EpisodeError`s, and the environment checks
(`check_step_result`, `assistant_message`) are about the `Env` protocol.

Token layout of an episode (see `chat_format` for the segment texts): prompt, then per
turn the sampled tokens (loss_mask 1, with their log-probs), the end-of-turn token if
the policy did not sample it (loss_mask 0), and the observation segment (loss_mask 0).
The final observation, which the policy never conditions on, is kept only in the
metadata.

Imports: agentic_rl.envs and the rollout modules; no jax.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from agentic_rl.envs.base import Action, Message, StepResult
from agentic_rl.envs.tools.parser import ParserLimits
from agentic_rl.rollout.batch import EpisodeBatch, EpisodeRecord

CONTEXT_STRATEGIES = ("full", "window", "memory", "summarize")


@dataclass(frozen=True)
class ContextConfig:
    """How an episode's context is managed over long horizons (`agents.context`, which
    documents the strategies).

    strategy: full | window | memory | summarize.
    keep_turns: turns kept after a rewrite (window, memory, summarize).
    rewrite_every: turns added between rewrites; the context holds keep_turns to
        keep_turns + rewrite_every turns.
    memory_chars / summary_chars: caps on the notes and on the summary.
    summary_request: the user message asking the policy for its summary.
    """

    strategy: str = "full"
    keep_turns: int = 4
    rewrite_every: int = 4
    memory_chars: int = 600
    summary_chars: int = 800
    summary_request: str = (
        "Old turns will now be dropped from your context. Summarize everything you will "
        "still need: what you have found, where you are, what is left to do. Write only the "
        "summary, no tool call.")

    def __post_init__(self):
        if self.strategy not in CONTEXT_STRATEGIES:
            raise ValueError(f"unknown context strategy {self.strategy!r}; valid names: "
                             f"{', '.join(CONTEXT_STRATEGIES)}")
        if self.keep_turns < 0 or self.rewrite_every < 1:
            raise ValueError("ContextConfig: keep_turns must be >= 0 and rewrite_every >= 1, "
                             f"got {self.keep_turns} and {self.rewrite_every}")
        if self.memory_chars < 1 or self.summary_chars < 1:
            raise ValueError("ContextConfig: memory_chars and summary_chars must be >= 1")


@dataclass(frozen=True)
class RolloutConfig:
    """Limits and knobs of one rollout call (`agents.env_rollout.run_episodes`).

    `max_episode_tokens` bounds the whole sequence (prompt + turns + observations);
    an episode whose next observation would not leave room for a turn ends as
    truncated ("max_tokens"). `length_bucket` pads T to a multiple (or "pow2");
    K is padded to `max_turns` so batch shapes stay static across calls.
    `step_timeout_s` limits each env reset/step from when it starts running;
    `max_workers` bounds the env calls running at once (the rest queue, untimed);
    `straggler_wait_s` is how long a policy call waits, after its first request, for
    the other live episodes' requests; `max_error_fraction` is the error budget.
    `context` manages long episodes' contexts (`ContextConfig`; `max_turns` then counts
    the episode's calls over all its rows, `max_episode_tokens` bounds each row).
    """

    max_turns: int = 8
    max_new_tokens: int = 256
    max_episode_tokens: int = 4096
    stop_strings: tuple[str, ...] = ("</tool_call>",)
    extra_stop_token_ids: tuple[int, ...] = ()
    step_timeout_s: float = 60.0
    straggler_wait_s: float = 0.2
    max_workers: int = 32
    max_error_fraction: float = 0.25
    length_bucket: int | str = 64
    agent_id: int = 0
    parser: ParserLimits = field(default_factory=ParserLimits)
    context: ContextConfig = field(default_factory=ContextConfig)

    def __post_init__(self):
        positive = ("max_turns", "max_new_tokens", "max_episode_tokens", "max_workers")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"RolloutConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.step_timeout_s > 0 or self.straggler_wait_s < 0:
            raise ValueError("RolloutConfig: step_timeout_s must be > 0, straggler_wait_s >= 0")
        if not 0 <= self.max_error_fraction <= 1:
            raise ValueError(f"RolloutConfig.max_error_fraction must be in [0, 1]: {self}")
        if isinstance(self.stop_strings, str):
            raise ValueError("RolloutConfig.stop_strings must be a tuple of strings, not a str")


@dataclass(frozen=True)
class EpisodeError:
    """An episode dropped because its environment failed. `stage`: reset, step or timeout."""

    episode_id: str
    task_id: str
    group_id: int
    stage: str
    message: str
    traceback: str = ""


class ErrorBudgetExceeded(RuntimeError):
    """Too many environments failed in one rollout call: something is systematically wrong."""


@dataclass
class RolloutResult:
    """Finished episodes (as records and, unless empty, a collated batch), errors, metrics."""

    batch: EpisodeBatch | None
    records: list[EpisodeRecord]
    errors: list[EpisodeError]
    metrics: dict[str, float]


def episode_seed(seed: int, group: int, sample: int) -> int:
    """A per-episode environment seed, distinct across tasks and group samples."""
    return random.Random(f"{seed}:{group}:{sample}").getrandbits(31)


def check_step_result(result: Any) -> StepResult:
    """`result` if it is a well-formed `StepResult` (finite numeric reward, a list of
    messages, non-empty unless done), else TypeError / ValueError naming the problem."""
    if not isinstance(result, StepResult):
        raise TypeError(f"env.step must return StepResult, got {type(result).__name__}")
    if not isinstance(result.reward, (int, float)) or not math.isfinite(result.reward):
        raise ValueError(f"env.step returned a non-finite or non-numeric reward {result.reward!r}")
    if not isinstance(result.observation, list):
        raise TypeError("env.step observation must be a list of messages")
    if not result.done and not result.observation:
        raise ValueError("env.step returned an empty observation for an unfinished episode")
    return result


def assistant_message(action: Action) -> Message:
    """A parsed action as the OpenAI-format assistant message of an episode's metadata."""
    msg: Message = {"role": "assistant", "content": action.text}
    if action.tool_calls:
        msg["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in action.tool_calls
        ]
    return msg
