"""Context management for long episodes: what an agent sends the LLM each turn.

A 30-100 turn episode does not fit a small model's context, and a long context is slow
and dilutes the task. `Context` keeps an episode's conversation and renders, per turn,
the messages to send under one of four strategies (`ContextConfig.strategy`):

- `full`: everything, continued in the KV cache; bounded by the context limit, where
  the episode ends truncated ("max_tokens", bootstrapped by the critic).
- `window`: the prompt (system + task) and the latest turns. Old turns are dropped in
  blocks: a call sees from `keep_turns` to `keep_turns + rewrite_every - 1` earlier
  turns; once `keep_turns + rewrite_every` have piled up, the oldest `rewrite_every` go.
  Dropping one turn per turn would rewrite the context every turn (a new row each time,
  the whole window prefilled again); in blocks, an episode of T turns becomes about
  T / rewrite_every rows of fewer than keep_turns + rewrite_every turns: the tokens
  trained grow linearly in T, not as T^2.
- `memory`: `window`, plus a `memory` tool the agent writes notes with (each call
  replaces its notes, at most `memory_chars`). The notes are shown in a fixed slot after
  the task, refreshed at each rewrite (between rewrites the agent's own memory calls are
  in its history), so what it chose to keep survives the dropped turns.
- `summarize`: `window`, but at each rewrite the policy itself first writes a summary of
  the episode so far (one more sampled turn, asked by `summary_request`; trained like any
  other turn, credited by the later rewards), which replaces the dropped turns in a slot
  after the task.

A rewrite changes the history, so the chat service starts a new row that continues the
episode (`agents.service`, "Rewritten histories"): each sampled token is trained once
with the context it was sampled under, and the learner stitches the rows' turns back
into one episode for credit (`rl.episodes`). The prompt's tokens are shared between the
rows, and the sampler reuses their cached keys/values (`SamplerPolicy`).

`EnvAgent` uses this for our environments (`RolloutConfig.context`); an agent program
can use `Context` directly around its own LLM calls.

Imports: the standard library, agentic_rl.envs and agentic_rl.rollout.types (the config).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agentic_rl.envs.base import Action, Message, StepResult, message
from agentic_rl.envs.tools.base import Tool
from agentic_rl.rollout.types import CONTEXT_STRATEGIES, ContextConfig

MEMORY_TOOL = "memory"

__all__ = ["CONTEXT_STRATEGIES", "Context", "ContextConfig", "MEMORY_TOOL", "memory_tool"]


def memory_tool(max_chars: int) -> Tool:
    """The `memory` tool's schema (its calls are handled by `Context`, never executed)."""

    def _unused(**_: Any) -> str:  # pragma: no cover - Context answers memory calls
        raise RuntimeError("memory calls are answered by agents.context.Context")

    return Tool(
        name=MEMORY_TOOL,
        description=(f"Replace your notes (at most {max_chars} characters). Old turns are "
                     "dropped from your context; your notes are shown after the task."),
        parameters={"type": "object", "properties": {"notes": {"type": "string"}},
                    "required": ["notes"]},
        fn=_unused)


def _memory_prompt(max_chars: int) -> str:
    call = json.dumps({"name": MEMORY_TOOL, "arguments": {"notes": "..."}})
    return (f"Memory: your oldest turns are dropped from view as you go. To keep what you "
            f"need, call <tool_call>{call}</tool_call>: it replaces your notes (at most "
            f"{max_chars} characters), which stay shown after the task.")


class Context:
    """One episode's conversation and the messages to send for its next turn.

    `head` is the prompt (system + task messages, as the environment's reset gave them).
    Per turn: `messages()` to send, then `add_turn(assistant, observation)`; when
    `due()`, call `rewrite(summary)` (for `summarize`, with the text of one extra LLM
    call on `summary_messages()`). Memory calls: `split_memory(action)` before stepping
    the environment.
    """

    def __init__(self, cfg: ContextConfig, head: Sequence[Message]):
        if not head:
            raise ValueError("Context needs the prompt messages (system + task)")
        self.cfg = cfg
        self.head = [dict(m) for m in head]
        if cfg.strategy == "memory":
            self._add_to_system(_memory_prompt(cfg.memory_chars))
        self.turns: list[list[Message]] = []  # in context: [assistant, *observation]
        self.dropped = 0  # turns dropped so far
        self.rewrites = 0
        self.notes = ""  # memory: the latest notes
        self.shown_notes = ""  # memory: the notes in the slot (as of the last rewrite)
        self.summary = ""

    def _add_to_system(self, text: str) -> None:
        if self.head[0].get("role") == "system":
            self.head[0] = {**self.head[0], "content": f"{self.head[0]['content']}\n\n{text}"}
        else:
            self.head.insert(0, message("system", text))

    # -- what is sent ----------------------------------------------------------------------

    def slot(self) -> list[Message]:
        """The fixed message after the task: the notes or the summary, once there are any."""
        if self.cfg.strategy == "memory" and self.rewrites:
            return [message("user", "Your notes:\n" + (self.shown_notes or "(none)"))]
        if self.cfg.strategy == "summarize" and self.summary:
            return [message("user", f"Summary of your first {self.dropped} turns:\n"
                                    f"{self.summary}")]
        return []

    def messages(self) -> list[Message]:
        """The messages to send for the next turn."""
        return [*self.head, *self.slot(), *(m for turn in self.turns for m in turn)]

    def summary_messages(self) -> list[Message]:
        """The request for the summary written before a `summarize` rewrite: the current
        context and the question (it continues the current row)."""
        return [*self.messages(), message("user", self.cfg.summary_request)]

    # -- updates ---------------------------------------------------------------------------

    def add_turn(self, assistant: Message, observation: Sequence[Message]) -> None:
        self.turns.append([dict(assistant), *(dict(m) for m in observation)])

    def due(self) -> bool:
        """Whether the next turn needs a rewritten context (never for `full`)."""
        cfg = self.cfg
        return cfg.strategy != "full" and len(self.turns) >= cfg.keep_turns + cfg.rewrite_every

    def rewrite(self, summary: str | None = None) -> None:
        """Drops all but the latest `keep_turns` turns; refreshes the slot."""
        if self.cfg.strategy == "summarize":
            if summary is None:
                raise ValueError("a summarize rewrite needs the summary text")
            self.summary = summary.strip()[: self.cfg.summary_chars]
        drop = len(self.turns) - self.cfg.keep_turns
        if drop > 0:
            self.turns = self.turns[drop:]
            self.dropped += drop
        self.shown_notes = self.notes
        self.rewrites += 1

    # -- memory ----------------------------------------------------------------------------

    def tools(self, env_tools: Sequence[Tool]) -> list[Tool]:
        """The tools to parse replies with: the environment's, plus `memory`."""
        if self.cfg.strategy != "memory":
            return list(env_tools)
        return [*env_tools, memory_tool(self.cfg.memory_chars)]

    def split_memory(self, action: Action) -> tuple[Action, list[Message]]:
        """Takes the memory calls out of `action`: (the action for the environment, the
        memory calls' observations). The last call's notes win."""
        if self.cfg.strategy != "memory":  # an environment's own "memory" tool is its own
            return action, []
        mine = [c for c in action.tool_calls if c.name == MEMORY_TOOL]
        if not mine:
            return action, []
        obs = []
        for c in mine:
            self.notes = str(c.arguments.get("notes", ""))[: self.cfg.memory_chars]
            obs.append(message("tool", f"Notes saved ({len(self.notes)} characters).",
                               name=MEMORY_TOOL, tool_call_id=c.id))
        rest = tuple(c for c in action.tool_calls if c.name != MEMORY_TOOL)
        return Action(text=action.text, content=action.content, tool_calls=rest,
                      errors=action.errors), obs


def memory_only_step(observation: list[Message]) -> StepResult:
    """The step of a turn whose only tool calls were memory calls: the environment is not
    stepped (no reward, not done); the agent sees that its notes were saved."""
    return StepResult(observation=observation, reward=0.0, done=False,
                      info={"memory_only": True})
