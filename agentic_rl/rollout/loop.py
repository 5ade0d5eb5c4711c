"""The rollout loop: many episodes at once, policy turns batched, environments stepped concurrently.

Each round, every live episode that awaits an action goes into one `policy.generate`
call; each resulting action is handed to its environment in a thread pool. The loop
then waits for the first environment to answer plus at most `straggler_wait_s` for the
rest, so one slow tool delays the others by a bounded amount; an environment that
misses `step_timeout_s` is dropped. Finished episodes retire (and their policy state is
released) while the others continue.

Token layout (see `chat_format` for the segment texts): prompt, then per turn the
sampled tokens (loss_mask 1, with their log-probs), the end-of-turn token if the policy
did not sample it (loss_mask 0), and the observation segment (loss_mask 0). The final
observation, which the policy never conditions on, is kept only in the metadata.

Failures: an environment that raises, returns a malformed result or times out has its
episode dropped and recorded in `errors`; once more than `max_error_fraction` of the
episodes have failed the loop raises `ErrorBudgetExceeded`. Policy errors are bugs and
propagate immediately.

Imports: agentic_rl.envs and the rollout modules; no jax (the policy is a protocol).
"""

from __future__ import annotations

import json
import math
import queue
import random
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from agentic_rl.envs.base import Action, Env, Message, StepResult, Task
from agentic_rl.envs.tools.parser import ParserLimits, parse_action
from agentic_rl.rollout.batch import EpisodeBatch, EpisodeRecord, collate
from agentic_rl.rollout.chat_format import ChatMLFormat
from agentic_rl.rollout.metrics import episode_metrics
from agentic_rl.rollout.policy import (
    Generation,
    GenerationRequest,
    PolicyContractError,
    RolloutPolicy,
    check_generation,
)


@dataclass(frozen=True)
class RolloutConfig:
    """Limits and knobs of one rollout call.

    `max_episode_tokens` bounds the whole sequence (prompt + turns + observations);
    an episode whose next observation would not leave room for a turn ends as
    truncated ("max_tokens"). `length_bucket` pads T to a multiple (or "pow2");
    K is padded to `max_turns` so batch shapes stay static across calls.
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


@dataclass
class _Episode:
    id: str
    task: Task
    group_id: int
    sample_index: int
    seed: int
    env: Env | None = None
    record: EpisodeRecord = field(default_factory=EpisodeRecord)
    messages: list[Message] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)  # per message: prompt|policy|environment
    sent: int = 0  # tokens the policy has seen or produced (the cache prefix)
    turn: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_errors: list[dict[str, Any]] = field(default_factory=list)
    tool_attempts: int = 0
    tool_valid: int = 0
    finish_reasons: list[str] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    env_time_s: float = 0.0
    start_time: float = field(default_factory=time.perf_counter)


def episode_seed(seed: int, group: int, sample: int) -> int:
    """A per-episode environment seed, distinct across tasks and group samples."""
    return random.Random(f"{seed}:{group}:{sample}").getrandbits(31)


def _timed(fn: Callable[[], Any], started: dict[str, float]) -> Callable[[], tuple[Any, float]]:
    """Wraps `fn` to report its duration and note in `started` when a worker picked it up
    (timeouts count from then, not from submission, so queueing is never a timeout)."""

    def run():
        started["at"] = time.monotonic()
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    return run


def _reset_env(make_env: Callable[[], Env], task: Task, seed: int) -> tuple[Env, list[Message]]:
    env = make_env()
    return env, list(env.reset(task, seed))


def _close_env(env: Env) -> None:
    close = getattr(env, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - closing is best effort; the episode is over
            pass


def _check_step_result(result: Any) -> StepResult:
    if not isinstance(result, StepResult):
        raise TypeError(f"env.step must return StepResult, got {type(result).__name__}")
    if not isinstance(result.reward, (int, float)) or not math.isfinite(result.reward):
        raise ValueError(f"env.step returned a non-finite or non-numeric reward {result.reward!r}")
    if not isinstance(result.observation, list):
        raise TypeError("env.step observation must be a list of messages")
    if not result.done and not result.observation:
        raise ValueError("env.step returned an empty observation for an unfinished episode")
    return result


def _assistant_message(action: Action) -> Message:
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


class _DaemonPool:
    """A minimal executor on daemon threads.

    Unlike `ThreadPoolExecutor`, whose workers the interpreter joins at exit, a hung
    environment step cannot keep the process alive after its episode timed out.
    """

    def __init__(self, num_workers: int):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"rollout-env-{i}", daemon=True)
            for i in range(num_workers)
        ]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - delivered to the waiting loop
                future.set_exception(e)

    def submit(self, fn: Callable[[], Any]) -> Future:
        future: Future = Future()
        self._queue.put((future, fn))
        return future

    def shutdown(self) -> None:
        """Lets queued work (e.g. env.close calls) finish, then stops idle workers; never waits."""
        for _ in self._threads:
            self._queue.put(None)


class _Runner:
    """The state of one `run_episodes` call (kept in one object so each step is a small method)."""

    def __init__(
        self,
        policy: RolloutPolicy,
        fmt: ChatMLFormat,
        make_env: Callable[[], Env],
        cfg: RolloutConfig,
        pool: _DaemonPool,
        num_episodes: int,
        on_episode: Callable[[dict[str, Any] | None], None] | None = None,
    ):
        self.policy, self.fmt, self.make_env, self.cfg, self.pool = policy, fmt, make_env, cfg, pool
        self.on_episode = on_episode
        self.stop_ids = (fmt.end_of_turn_id, *cfg.extra_stop_token_ids)
        self.budget = math.floor(cfg.max_error_fraction * num_episodes)
        self.num_episodes = num_episodes
        self.ready: list[_Episode] = []
        self.inflight: dict[Future, tuple[_Episode, str, dict[str, float]]] = {}
        self.finished: list[_Episode] = []
        self.errors: list[EpisodeError] = []
        self.to_release: list[str] = []
        self.live: dict[str, _Episode] = {}

    # -- driving -------------------------------------------------------------------------------

    def run(self, episodes: list[_Episode]) -> None:
        try:
            for ep in episodes:
                self.live[ep.id] = ep
                self._submit(ep, "reset", lambda ep=ep: _reset_env(self.make_env, ep.task, ep.seed))
            while self.ready or self.inflight:
                self._release()
                if self.ready:
                    self._generate()
                self._collect()
        finally:  # on success nothing is live; on an exception, free the sampler's state
            for future in self.inflight:
                future.cancel()
            self.to_release.extend(self.live)
            self._release()

    def _submit(self, ep: _Episode, stage: str, fn: Callable[[], Any]) -> None:
        started: dict[str, float] = {}
        self.inflight[self.pool.submit(_timed(fn, started))] = (ep, stage, started)

    def _deadline(self, started: dict[str, float], now: float) -> float:
        return started.get("at", now) + self.cfg.step_timeout_s

    def _release(self) -> None:
        if self.to_release:
            ids, self.to_release = self.to_release, []
            self.policy.release(ids)

    # -- policy side ---------------------------------------------------------------------------

    def _request(self, ep: _Episode) -> GenerationRequest:
        n = len(ep.record)
        return GenerationRequest(
            episode_id=ep.id,
            tokens=tuple(ep.record.tokens),
            num_new_tokens=n - ep.sent,
            max_new_tokens=min(self.cfg.max_new_tokens, self.cfg.max_episode_tokens - n - 1),
            stop_token_ids=self.stop_ids,
            stop_strings=self.cfg.stop_strings,
            turn=ep.turn,
        )

    def _generate(self) -> None:
        batch, self.ready = self.ready, []
        requests = [self._request(ep) for ep in batch]
        generations = self.policy.generate(requests)
        if len(generations) != len(requests):
            raise PolicyContractError(
                f"policy returned {len(generations)} generations for {len(requests)} requests"
            )
        for ep, req, gen in zip(batch, requests, generations):
            check_generation(req, gen)
            self._apply_generation(ep, gen)

    def _apply_generation(self, ep: _Episode, gen: Generation) -> None:
        cfg, rec, k = self.cfg, ep.record, ep.turn
        ids = [int(i) for i in gen.token_ids]
        rec.append(ids, sampled=True, turn=k, agent=cfg.agent_id, logprobs=list(gen.logprobs))
        rec.turn_ends.append(len(rec) - 1)
        ep.sent = len(rec)
        if ids[-1] != self.fmt.end_of_turn_id:  # stop string or length: close the turn ourselves
            rec.append([self.fmt.end_of_turn_id], sampled=False, turn=k, agent=cfg.agent_id)
        text = self.fmt.decode(ids[:-1] if ids[-1] in self.stop_ids else ids)
        action = parse_action(text, ep.env.tools, cfg.parser, id_prefix=f"call_{k}")
        self._count_tool_use(ep, action)
        ep.messages.append(_assistant_message(action))
        ep.origins.append("policy")
        ep.finish_reasons.append(gen.finish_reason)
        env = ep.env
        self._submit(ep, "step", lambda: env.step(action))

    def _count_tool_use(self, ep: _Episode, action: Action) -> None:
        if not action.attempted_tool_call:
            return
        ep.tool_attempts += 1
        ep.tool_valid += not action.errors
        for c in action.tool_calls:
            ep.tool_calls.append(
                {"turn": ep.turn, "id": c.id, "name": c.name, "arguments": dict(c.arguments)}
            )
        for e in action.errors:
            ep.tool_errors.append({"turn": ep.turn, "kind": e.kind, "message": e.message})

    # -- environment side ----------------------------------------------------------------------

    def _collect(self) -> None:
        if not self.inflight:
            return
        now = time.monotonic()
        deadline = min(self._deadline(st, now) for _, _, st in self.inflight.values())
        wait(self.inflight, timeout=max(0.0, deadline - now), return_when=FIRST_COMPLETED)
        # Give the rest a short grace period so the next policy batch is not a single episode.
        grace = min(self.cfg.straggler_wait_s, max(0.0, deadline - time.monotonic()))
        done, _ = wait(self.inflight, timeout=grace)
        for future in done:
            ep, stage, _ = self.inflight.pop(future)
            self._handle(ep, stage, future)
        now = time.monotonic()
        for future, (ep, stage, started) in list(self.inflight.items()):
            running_too_long = "at" in started and now >= self._deadline(started, now)
            if running_too_long and not future.done():
                del self.inflight[future]
                limit = self.cfg.step_timeout_s
                self._drop(ep, "timeout", f"env {stage} took longer than {limit} s")

    def _handle(self, ep: _Episode, stage: str, future: Future) -> None:
        try:
            result, elapsed = future.result()
            ep.env_time_s += elapsed
            if stage == "reset":
                self._start(ep, *result)
            else:
                self._advance(ep, _check_step_result(result))
        except Exception as e:  # noqa: BLE001 - an env failure drops one episode, not the run
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            self._drop(ep, stage, f"{type(e).__name__}: {e}", tb)

    def _start(self, ep: _Episode, env: Env, messages: list[Message]) -> None:
        ep.env, ep.messages = env, messages
        ep.origins = ["prompt"] * len(messages)
        prompt = self.fmt.encode_prompt(messages)
        if len(prompt) + 2 > self.cfg.max_episode_tokens:
            raise ValueError(
                f"prompt has {len(prompt)} tokens; max_episode_tokens="
                f"{self.cfg.max_episode_tokens} leaves no room for a turn"
            )
        ep.record.append(prompt, sampled=False, turn=-1, agent=-1)
        self.ready.append(ep)

    def _advance(self, ep: _Episode, result: StepResult) -> None:
        ep.record.turn_rewards.append(float(result.reward))
        ep.messages.extend(result.observation)
        ep.origins.extend(["environment"] * len(result.observation))
        ep.infos.append(dict(result.info))
        ep.turn += 1
        if result.done:
            return self._finish(ep, "done")
        if ep.turn >= self.cfg.max_turns:
            return self._finish(ep, "max_turns")
        obs = self.fmt.encode_observation(result.observation)
        if len(ep.record) + len(obs) + 2 > self.cfg.max_episode_tokens:
            return self._finish(ep, "max_tokens")
        ep.record.append(obs, sampled=False, turn=ep.turn - 1, agent=-1)
        self.ready.append(ep)

    # -- retiring ------------------------------------------------------------------------------

    def _retire(self, ep: _Episode) -> None:
        del self.live[ep.id]
        if ep.sent:  # the policy has seen this episode
            self.to_release.append(ep.id)
        if ep.env is not None:
            env = ep.env
            self.pool.submit(lambda: _close_env(env))

    def _finish(self, ep: _Episode, termination: str) -> None:
        rec = ep.record
        rec.group_id = ep.group_id
        rec.truncated = termination != "done"  # max_turns / max_tokens: the env went on
        rec.metadata = {
            "episode_id": ep.id,
            "task_id": ep.task.id,
            "task_subset": (ep.task.data or {}).get("subset"),  # e.g. "larger_operands"
            "group_id": ep.group_id,
            "sample_index": ep.sample_index,
            "seed": ep.seed,
            "messages": ep.messages,
            "origins": ep.origins,
            "num_turns": len(rec.turn_ends),
            "num_tokens": len(rec),
            "num_sampled_tokens": sum(rec.loss_mask),
            "return": float(sum(rec.turn_rewards)),
            "turn_rewards": list(rec.turn_rewards),
            "success": bool(ep.infos[-1].get("success", False)) if ep.infos else False,
            "termination": termination,
            "truncated": termination != "done",
            "finish_reasons": ep.finish_reasons,
            "tool_calls": ep.tool_calls,
            "tool_errors": ep.tool_errors,
            "tool_call_attempts": ep.tool_attempts,
            "tool_call_valid": ep.tool_valid,
            "infos": ep.infos,
            "timings": {"total_s": time.perf_counter() - ep.start_time, "env_s": ep.env_time_s},
        }
        self.finished.append(ep)
        self._retire(ep)
        if self.on_episode is not None:
            self.on_episode(rec.metadata)

    def _drop(self, ep: _Episode, stage: str, message: str, tb: str = "") -> None:
        self.errors.append(EpisodeError(ep.id, ep.task.id, ep.group_id, stage, message, tb))
        self._retire(ep)
        if self.on_episode is not None:
            self.on_episode(None)
        if len(self.errors) > self.budget:
            shown = "\n".join(
                f"  - episode {e.episode_id} (task {e.task_id}) at {e.stage}: {e.message}"
                for e in self.errors[:5]
            )
            raise ErrorBudgetExceeded(
                f"{len(self.errors)} of {self.num_episodes} episodes failed, over the budget of "
                f"{self.budget} (RolloutConfig.max_error_fraction={self.cfg.max_error_fraction}). "
                f"First errors:\n{shown}"
            )


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
    and listed in `errors`. `make_env` must return a fresh `Env` per call. `on_episode`
    (e.g. a progress display) is called on this thread as each episode ends, with its
    metadata, or None when it was dropped.
    """
    cfg = config or RolloutConfig()
    if not tasks:
        raise ValueError("run_episodes needs at least one task")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    episodes = [
        _Episode(f"g{g}s{s}", task, g, s, episode_seed(seed, g, s))
        for g, task in enumerate(tasks)
        for s in range(group_size)
    ]
    pool = _DaemonPool(min(cfg.max_workers, len(episodes)))
    runner = _Runner(policy, chat_format, make_env, cfg, pool, len(episodes), on_episode)
    try:
        runner.run(episodes)
    finally:
        pool.shutdown()  # never waits: a hung environment must not hang the caller
    order = {ep.id: i for i, ep in enumerate(episodes)}
    finished = sorted(runner.finished, key=lambda ep: order[ep.id])
    records = [ep.record for ep in finished]
    batch = None
    if collate_batch and records:
        batch = collate(records, length_bucket=cfg.length_bucket, num_turns=cfg.max_turns)
    metrics = episode_metrics([r.metadata for r in records], len(runner.errors))
    return RolloutResult(batch, records, runner.errors, metrics)
