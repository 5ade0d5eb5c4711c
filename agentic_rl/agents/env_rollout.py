"""Rollouts and evaluation of our environments, on the one rollout runtime.

`run_episodes(policy, chat_format, make_env, tasks, ...)` is the environment loop's
entry point (the trainer's default rollouts, its evaluation, `python -m
agentic_rl.evaluate`, the benchmarks and tests). It is not a loop of its own: it puts a
`BatchingEngine` and a `ChatService` in front of the given policy, configured from the
`RolloutConfig`, runs `run_agents(EnvAgent(make_env))`, and closes the engine. Agent
programs and environments therefore share one runtime (issue #14): one place for
batching, timeouts, the error budget, row release and trace capture.

How the `RolloutConfig` maps onto the runtime:
- max_turns / max_new_tokens / max_episode_tokens / stop strings / extra stop ids: the
  service's limits (a refused call ends the episode truncated: "max_turns" or
  "max_tokens"); the policy keeps its own sampling settings (`ServiceConfig.sampling`
  None), as its caller set them.
- straggler_wait_s: the engine's wait. A policy call takes the first waiting request,
  then waits at most `straggler_wait_s` (one window, `max_wait_windows=1`) for the
  others, and goes as soon as every live episode's request is in (`expected()` = the
  episodes still running, told to the engine the moment one ends). That is the old
  loop's rule, "the first environment to answer plus at most straggler_wait_s for the
  rest", since an episode asks for its next turn as soon as its environment answered;
  counting live episodes rather than those with a request in flight is what makes a
  round of fast environments one full batch, never a batch per arrival.
- step_timeout_s / max_workers / parser: `EnvAgent`'s (each env call on the episode's
  daemon thread, timed from when it starts).
- max_error_fraction: `run_agents`' budget, raised as soon as it is exceeded.
Episodes are `g{task}s{sample}` with the environment seed `episode_seed(seed, task,
sample)`; the sampler keys its random numbers by episode id and turn, so the episodes
do not depend on which of them share a policy call. Rows are ordered by (task,
sample), `group_id` is the task index, and each row's metadata has exactly the keys
listed in `EPISODE_KEYS`.

Speed (`scripts/bench_rollout.py`: one rollout of `experiments/tiny_learning.py:grpo`,
16 tasks x 8 episodes of two one-character turns, median of 5 on the shared 2-core CPU;
docs/benchmarks.md): the old single-threaded `_Runner` loop 0.143-0.148 s, this runtime
0.177-0.197 s; with a scripted policy 0.021-0.027 s vs 0.052-0.055 s. The difference,
~0.25 ms per episode, is the thread per episode (three thread hand-offs per turn);
negligible next to a real model's sampling.

`evaluate_policy` runs one episode per task of a split in chunks of `batch_size` and
summarises them (`rollout.metrics.EvalReport`).

Imports: agentic_rl.envs, agentic_rl.rollout and agentic_rl.agents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agentic_rl.agents.engine import BatchingEngine
from agentic_rl.agents.env_agent import EnvAgent
from agentic_rl.agents.runtime import run_agents
from agentic_rl.agents.service import ChatService, ServiceConfig
from agentic_rl.envs.base import Env, Task
from agentic_rl.envs.suite import EnvSuite, make_env_suite
from agentic_rl.rollout.batch import collate
from agentic_rl.rollout.chat_format import ChatMLFormat
from agentic_rl.rollout.metrics import EvalReport, episode_metrics, episode_summaries, eval_metrics
from agentic_rl.rollout.policy import RolloutPolicy
from agentic_rl.rollout.types import EpisodeError, RolloutConfig, RolloutResult

# An episode row's metadata, in this order.
EPISODE_KEYS = (
    "episode_id", "task_id", "task_subset", "group_id", "sample_index", "seed", "messages",
    "origins", "num_turns", "num_tokens", "num_sampled_tokens", "return", "turn_rewards",
    "success", "termination", "truncated", "finish_reasons", "tool_calls", "tool_errors",
    "tool_call_attempts", "tool_call_valid", "infos", "timings",
    # context management (`ContextConfig`): rows that rewrote an earlier row's history
    "turn_offset", "continued", "episode_totals",
)


def _episode_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in EPISODE_KEYS}


def run_episodes(
    policy: RolloutPolicy,
    chat_format: ChatMLFormat,
    make_env: Callable[[], Env],
    tasks: Sequence[Task],
    *,
    group_size: int = 1,
    config: RolloutConfig | None = None,
    seed: int = 0,
    collate_batch: bool = True,
    on_episode: Callable[[dict[str, Any] | None], None] | None = None,
) -> RolloutResult:
    """Runs `group_size` episodes of every task concurrently and returns their EpisodeBatch.

    Rows are ordered by (task, sample) whatever the completion order; `group_id` is the
    task's index in `tasks` (GRPO/RLOO groups). Dropped episodes are absent from the batch
    and listed in `errors`: an environment that raised ("reset" / "step", with the
    traceback), returned a malformed result, or missed `step_timeout_s` ("timeout").
    More failures than `max_error_fraction` of the episodes raise `ErrorBudgetExceeded`
    as soon as they happen; an error of the policy (it raised, or broke the contract of
    `rollout.policy.check_generation`) propagates at once. `make_env` must return a
    fresh `Env` per call. `on_episode` (e.g. a progress display) is called on this
    thread as each episode ends, with its metadata, or None when it was dropped.
    See the module docstring for how this maps onto `run_agents`.
    """
    cfg = config or RolloutConfig()
    if not tasks:
        raise ValueError("run_episodes needs at least one task")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    num_episodes = len(tasks) * group_size
    live = {"n": num_episodes}
    engine = BatchingEngine(
        policy, max_batch=None if getattr(policy, "max_rows", None) else num_episodes,
        window_s=cfg.straggler_wait_s, max_wait_windows=1.0, expected=lambda: live["n"])

    def set_live(n: int) -> None:
        live["n"] = n
        engine.notify()

    service = ChatService(engine, chat_format, ServiceConfig(
        sampling=None, max_new_tokens=cfg.max_new_tokens,
        max_context_tokens=cfg.max_episode_tokens, max_turns=cfg.max_turns,
        stop_strings=tuple(cfg.stop_strings), stop_token_ids=tuple(cfg.extra_stop_token_ids),
        render_tools=False))
    agent = EnvAgent(make_env, parser=cfg.parser, step_timeout_s=cfg.step_timeout_s,
                     max_workers=cfg.max_workers, context=cfg.context)
    try:
        result = run_agents(
            agent, tasks, service, group_size=group_size, seed=seed, timeout_s=None,
            max_error_fraction=cfg.max_error_fraction, collate_batch=False, on_live=set_live,
            on_episode=on_episode, row_metadata=_episode_metadata,
            budget_label=("episodes", "RolloutConfig.max_error_fraction"))
    finally:
        engine.close()  # after the rows' releases: they are queued before it
    records = result.records
    if cfg.agent_id:
        for rec in records:
            rec.agent_id = [cfg.agent_id if a == 0 else a for a in rec.agent_id]
    batch = None
    if collate_batch and records:
        batch = collate(records, length_bucket=cfg.length_bucket, num_turns=cfg.max_turns)
    metrics = episode_metrics(episode_summaries(records), len(result.errors))
    return RolloutResult(batch, records, result.errors, metrics)


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
    each episode ends (see `run_episodes`).

    This is the function an `evaluate` CLI wraps: build a policy and a chat format, then
    `evaluate_policy(policy, fmt, "calculator", num_episodes=N, env_kwargs={"eval_path": F})`
    and print `report.summary()` as JSON."""
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
        episodes.extend(episode_summaries(result.records))
        errors.extend(result.errors)
    return EvalReport(eval_metrics(episodes, errors, tasks), episodes, errors)
