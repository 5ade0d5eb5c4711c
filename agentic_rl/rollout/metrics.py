"""Episode metrics, computed from per-episode metadata so results of several rollout calls
(e.g. an evaluation run in chunks) aggregate exactly by concatenating their episodes;
`EvalReport`, what an evaluation returns (`agents.env_rollout.evaluate_policy` runs one;
the report lives here, with the metrics, so the trainer can build one for agent programs
too).

Imports: the standard library only (rollout.types for type annotations).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentic_rl.rollout.types import EpisodeError


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def episode_summaries(records: Sequence[Any]) -> list[dict[str, Any]]:
    """One metadata dict per episode, for `episode_metrics`: an episode whose history was
    rewritten into several rows counts once, from its last row, with its turns and tokens
    summed over them (a row's own `num_turns`/`num_tokens` stay in its metadata)."""
    out = []
    for rec in records:
        meta = rec.metadata
        if meta.get("continued"):
            continue
        totals = meta.get("episode_totals")
        out.append({**meta, **{k: totals[k] for k in ("num_turns", "num_tokens",
                                                      "num_sampled_tokens")}}
                   if totals and totals["rows"] > 1 else meta)
    return out


def episode_metrics(episodes: Sequence[Mapping[str, Any]], num_errors: int = 0) -> dict[str, float]:
    """Summary metrics of finished episodes (their metadata dicts) and dropped ones.

    Rates over episodes are over *finished* episodes; `error_rate` reports the dropped.
    `tool_call_validity_rate` = turns whose tool-call attempt parsed and validated /
    turns that attempted a tool call (NaN when no turn attempted one).
    """
    n = len(episodes)
    attempts = sum(e["tool_call_attempts"] for e in episodes)
    valid = sum(e["tool_call_valid"] for e in episodes)
    finishes = [r for e in episodes for r in e["finish_reasons"]]
    metrics: dict[str, float] = {
        "num_episodes": float(n),
        "num_errors": float(num_errors),
        "error_rate": num_errors / (n + num_errors) if n + num_errors else math.nan,
        "success_rate": _mean([float(e["success"]) for e in episodes]),
        "mean_return": _mean([e["return"] for e in episodes]),
        "mean_turns": _mean([e["num_turns"] for e in episodes]),
        "mean_tokens": _mean([e["num_tokens"] for e in episodes]),
        "mean_sampled_tokens": _mean([e["num_sampled_tokens"] for e in episodes]),
        "truncated_rate": _mean([float(e["truncated"]) for e in episodes]),
        "length_finish_rate": _mean([float(r == "length") for r in finishes]),
        "tool_calls_per_episode": attempts / n if n else math.nan,
        "tool_call_validity_rate": valid / attempts if attempts else math.nan,
    }
    kinds = Counter(err["kind"] for e in episodes for err in e["tool_errors"])
    for kind, count in sorted(kinds.items()):
        metrics[f"tool_errors/{kind}"] = float(count)
    terminations = Counter(e["termination"] for e in episodes)
    for reason, count in sorted(terminations.items()):
        metrics[f"termination/{reason}"] = count / n
    return metrics


def subset_metrics(episodes: Sequence[Mapping[str, Any]], subset_of: Mapping[Any, str | None]
                   ) -> dict[str, float]:
    """`episode_metrics` of each task subset, keyed "<subset>/<metric>", when the tasks
    fall in two or more subsets (`subset_of`: task id -> its data["subset"], or None)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for e in episodes:
        name = subset_of.get(e.get("task_id"))
        if name:
            groups.setdefault(str(name), []).append(e)
    if len(set(filter(None, subset_of.values()))) < 2:
        return {}
    return {f"{name}/{k}": v for name, eps in sorted(groups.items())
            for k, v in episode_metrics(eps).items()
            if k in ("num_episodes", "success_rate", "mean_return", "tool_call_validity_rate",
                     "length_finish_rate", "mean_sampled_tokens")}


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


def eval_metrics(episodes: list[dict[str, Any]], errors: Sequence[EpisodeError], tasks
                 ) -> dict[str, float]:
    """`episode_metrics` of all episodes, plus per-subset ones when the tasks have
    `data["subset"]` in two or more values (e.g. in-distribution vs larger operands)."""
    metrics = episode_metrics(episodes, len(errors))
    metrics.update(subset_metrics(episodes, {t.id: t.data.get("subset") for t in tasks}))
    return metrics
