"""Evaluation: run N episodes of an environment split and summarise them.

This is the function an `evaluate` CLI wraps: build a policy and a chat format, then
`evaluate_policy(policy, fmt, "calculator", num_episodes=N, env_kwargs={"eval_path": F})`
and print `report.summary()` as JSON.

Imports: agentic_rl.envs and the rollout loop; no jax.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agentic_rl.envs.suite import EnvSuite, make_env_suite
from agentic_rl.rollout.chat_format import ChatMLFormat
from agentic_rl.rollout.loop import EpisodeError, RolloutConfig, run_episodes
from agentic_rl.rollout.metrics import episode_metrics, subset_metrics
from agentic_rl.rollout.policy import RolloutPolicy


@dataclass
class EvalReport:
    """Metrics (success_rate, tool_call_validity_rate, mean_turns, ...), per-episode
    metadata (messages, rewards, tool calls) and the episodes dropped by env errors."""

    metrics: dict[str, float]
    episodes: list[dict[str, Any]]
    errors: list[EpisodeError]

    def summary(self) -> dict[str, float | None]:
        """JSON-safe metrics (NaN, e.g. validity with no tool calls, becomes None)."""
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in self.metrics.items()
        }


def evaluate_policy(
    policy: RolloutPolicy,
    chat_format: ChatMLFormat,
    env: str | EnvSuite,
    *,
    num_episodes: int | None = None,
    split: str = "eval",
    batch_size: int = 64,
    config: RolloutConfig | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    on_episode: Callable[[dict[str, Any] | None], None] | None = None,
) -> EvalReport:
    """Runs one episode on each of the first `num_episodes` tasks of `split` (all if None),
    `batch_size` episodes at a time, and returns an `EvalReport`. `on_episode` is called as
    each episode ends (see `run_episodes`)."""
    if env_kwargs and not isinstance(env, str):
        raise ValueError("env_kwargs only apply when env is given by name")
    suite = make_env_suite(env, **dict(env_kwargs or {})) if isinstance(env, str) else env
    tasks = list(suite.tasks.split(split))
    if num_episodes is not None:
        if not 1 <= num_episodes <= len(tasks):
            raise ValueError(
                f"num_episodes={num_episodes}, but split {split!r} of {suite.name!r} has "
                f"{len(tasks)} tasks"
            )
        tasks = tasks[:num_episodes]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    episodes: list[dict[str, Any]] = []
    errors: list[EpisodeError] = []
    for i, start in enumerate(range(0, len(tasks), batch_size)):
        result = run_episodes(
            policy,
            chat_format,
            suite.make_env,
            tasks[start : start + batch_size],
            config=config,
            seed=seed + i,
            collate_batch=False,
            on_episode=on_episode,
        )
        episodes.extend(r.metadata for r in result.records)
        errors.extend(result.errors)
    return EvalReport(eval_metrics(episodes, errors, tasks), episodes, errors)


def eval_metrics(episodes: list[dict[str, Any]], errors: list[EpisodeError], tasks
                 ) -> dict[str, float]:
    """`episode_metrics` of all episodes, plus per-subset ones when the tasks have
    `data["subset"]` in two or more values (e.g. in-distribution vs larger operands)."""
    metrics = episode_metrics(episodes, len(errors))
    metrics.update(subset_metrics(episodes, {t.id: t.data.get("subset") for t in tasks}))
    return metrics
