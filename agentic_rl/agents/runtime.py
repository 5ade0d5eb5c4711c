"""Agent programs: plain Python functions trained from what they did.

An agent is `agent(task, llm) -> float | AgentResult | str | None`, sync or async. It
may call the LLM any number of times, run its own tools, spawn sub-agents (threads or
tasks that use the same `llm`), and report its reward by returning it, by returning an
answer that a reward function scores, or by posting rewards (`llm.reward(value,
call_id=...)`, or `POST {llm.rollout_url}/reward` from anywhere).

`llm` is an `AgentLLM`: an in-process client (`llm.chat(messages, tools=...)`, no HTTP)
and, when the gateway runs, the coordinates for any OpenAI client (`llm.base_url`,
`llm.api_key`, `llm.model`; `llm.openai()` builds one). Every call, in-process or over
HTTP, goes through the same `ChatService`, which keeps the tokens exactly; a finished
rollout's chains of calls become `EpisodeRecord`s, collated into an `EpisodeBatch`.

`run_agents` runs `group_size` copies of the agent per task concurrently (one thread
each, from the cached daemon threads of `agents.threads`; an async agent runs in its
own event loop on that thread), with a time limit per
rollout and the error budget. It is the project's one rollout runtime: our environments
run in it as agent programs too (`env_agent.EnvAgent`; `env_rollout.run_episodes` is
the environment loop's entry point).

Imports: agentic_rl.envs, agentic_rl.rollout, agentic_rl.registry and agentic_rl.agents;
openai only for the HTTP client.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib
import inspect
import json
import math
import queue
import re
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentic_rl.agents.openai_format import APIError
from agentic_rl.agents.service import ChatService
from agentic_rl.agents.threads import run_on_thread
from agentic_rl.envs.base import Task
from agentic_rl.registry import Registry
from agentic_rl.rollout.batch import EpisodeRecord, collate
from agentic_rl.rollout.metrics import episode_metrics, episode_summaries
from agentic_rl.rollout.types import (
    EpisodeError,
    ErrorBudgetExceeded,
    RolloutResult,
    episode_seed,
)

AGENTS = Registry("agent program")


@dataclass
class AgentResult:
    """What an agent program returns.

    reward: the episode's reward (added to the last turn of each of its rows); None =
        score `answer` with the reward function, or rely on posted rewards.
    answer: the agent's final answer (for a reward function, and the metadata).
    success: for evaluation metrics (default: reward > 0).
    truncated: the agent stopped because of a limit, not because it finished.
    info: anything else, kept in the rows' metadata (under "info").
    metadata: keys merged into each of its rows' metadata, over the runtime's own (e.g.
        `EnvAgent`'s messages with the final observation, tool calls, termination);
        "timings" is merged into the runtime's timings.
    """

    reward: float | None = None
    answer: str | None = None
    success: bool | None = None
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


class AgentLLM:
    """The LLM handle an agent program gets (see the module docstring).

    rollout_id: this episode's id; seed: a per-episode seed for the agent's own
    randomness (distinct across tasks and group samples, reproducible from the run seed).
    """

    api_key = "agentic-rl"

    def __init__(self, service: ChatService, rollout_id: str, seed: int, *,
                 gateway_url: str | None = None, model: str = "policy",
                 on_abandon: Callable[[str, str], None] | None = None):
        self.service, self.rollout_id, self.seed, self.model = service, rollout_id, seed, model
        self._gateway = gateway_url.rstrip("/") if gateway_url else None
        self._on_abandon = on_abandon

    def abandon(self, stage: str, message: str) -> None:
        """Drops this episode now (an `EpisodeError` with this stage and message) without
        waiting for the agent's thread: e.g. from a watchdog while that thread is stuck
        in a call that will not return. The thread is left behind (a daemon); its later
        LLM calls are refused (unknown rollout)."""
        if self._on_abandon is None:
            raise RuntimeError("this episode is not run by run_agents: nothing to abandon")
        self._on_abandon(stage, message)

    @property
    def rollout_url(self) -> str:
        if self._gateway is None:
            raise RuntimeError("no gateway is running: use llm.chat(...) (in-process) or "
                               "train with agent.transport='http'")
        return f"{self._gateway}/rollouts/{self.rollout_id}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of this episode (`.../rollouts/{id}/v1`)."""
        return f"{self.rollout_url}/v1"

    def agent_url(self, agent: str) -> str:
        """The base URL for the named agent of a multi-agent program."""
        return f"{self.rollout_url}/agents/{agent}/v1"

    def openai(self, agent: str | None = None, **kwargs):
        """An `openai.OpenAI` client for this episode (or one named agent of it)."""
        import openai

        url = self.agent_url(agent) if agent else self.base_url
        return openai.OpenAI(base_url=url, api_key=self.api_key, **kwargs)

    def chat(self, messages: Sequence[Mapping[str, Any]], *, agent: str | None = None,
             **params: Any) -> dict[str, Any]:
        """An in-process chat completion: the same request fields and response body as
        `/v1/chat/completions` (as dicts). Raises `APIError` for a refused call."""
        body = {"model": self.model, "messages": list(messages), **params}
        response, _, _ = self.service.chat(body, rollout_id=self.rollout_id, agent=agent)
        return response

    async def achat(self, messages: Sequence[Mapping[str, Any]], **params: Any):
        return await asyncio.to_thread(self.chat, messages, **params)

    def reward(self, value: float, call_id: str | None = None) -> None:
        """Posts a reward: for one call (its response `id`) or for the whole episode."""
        self.service.post_reward(self.rollout_id, value, call_id)


def load_agent(spec: str | Callable, options: Mapping[str, Any] | None = None,
               **context: Any) -> Callable:
    """An agent program from a callable, a registered name, or `module:function`.

    A registered name maps to a factory called with `context` (the trainer passes
    `suite=` and `transport=`): e.g. "env" builds the environment's own agent program.
    `options` (the config's agent.kwargs) are the factory's own keywords: each must be
    a named parameter of it (a typo is an error, not silently swallowed by `**_`)."""
    options = dict(options or {})
    if options and not (isinstance(spec, str) and spec in AGENTS):
        raise ValueError(f"agent options {sorted(options)} are for a registered agent "
                         f"program's factory; {spec!r} is not one")
    if callable(spec):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"agent program must be a callable, a registered name or "
                         f"'module:function', got {spec!r}")
    if spec in AGENTS:
        factory = AGENTS.get(spec)
        named = {n for n, p in inspect.signature(factory).parameters.items()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = sorted(set(options) - named)
        if unknown:
            raise ValueError(f"agent program {spec!r} has no option {unknown}; its options: "
                             f"{sorted(named - set(context)) or 'none'}")
        return factory(**{**context, **options})
    if ":" not in spec:
        raise ValueError(f"unknown agent program {spec!r}: not registered (known: "
                         f"{', '.join(AGENTS.names()) or 'none'}) and not 'module:function'")
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load agent program {spec!r}: {e}") from None
    if not callable(fn):
        raise ValueError(f"agent program {spec!r} is a {type(fn).__name__}, not a function")
    return fn


def _call_agent(agent: Callable, task: Task, llm: AgentLLM) -> Any:
    out = agent(task, llm)
    if inspect.isawaitable(out):
        async def _await():
            return await out

        return asyncio.run(_await())
    return out


def _as_result(out: Any) -> AgentResult:
    if isinstance(out, AgentResult):
        return out
    if out is None:
        return AgentResult()
    if isinstance(out, bool) or not isinstance(out, (int, float, str)):
        raise TypeError(f"an agent program returns a float, an AgentResult, a str (its "
                        f"answer) or None; got {type(out).__name__}")
    if isinstance(out, str):
        return AgentResult(answer=out)
    return AgentResult(reward=float(out))


@dataclass
class _Call:
    agent: str
    digest: str  # of the request's messages and parameters
    response: dict[str, Any]


def _request_digest(messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> str:
    blob = json.dumps([list(messages), dict(params)], sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()


class _LoggedLLM(AgentLLM):
    """An `AgentLLM` that logs each in-process call (agent, request digest, response) and,
    for a counterfactual run, answers the first `upto` calls from an earlier run's log
    instead of sampling them (the same agent and the same request, else it samples from
    there on and counts a `mismatch`: the program is not deterministic given its replies).
    A counterfactual run's posted rewards are dropped: only its team reward is used."""

    def __init__(self, base: AgentLLM, *, rollout_id: str | None = None,
                 replay: Sequence[_Call] = (), upto: int = 0):
        super().__init__(base.service, rollout_id or base.rollout_id, base.seed,
                         gateway_url=base._gateway, model=base.model,
                         on_abandon=base._on_abandon)
        self.counterfactual = rollout_id is not None
        self.log: list[_Call] = []
        self._replay = list(replay[:upto])
        self.mismatch = False

    def chat(self, messages, *, agent=None, **params):
        name = agent or params.get("model") or self.model
        digest = _request_digest(messages, params)
        j = len(self.log)
        if j < len(self._replay) and not self.mismatch:
            old = self._replay[j]
            if (old.agent, old.digest) == (name, digest):
                self.log.append(old)
                return copy.deepcopy(old.response)
            self.mismatch = True
        response = super().chat(messages, agent=agent, **params)
        self.log.append(_Call(name, digest, copy.deepcopy(response)))
        return response

    def reward(self, value: float, call_id: str | None = None) -> None:
        if not self.counterfactual:
            super().reward(value, call_id)


def counterfactual_baselines(agent: Callable, task: Task, llm: _LoggedLLM, group: int,
                             reward_fn: Callable | None, stats: dict[str, int]
                             ) -> dict[str, float]:
    """Counterfactual credit: for each agent of a finished episode (its calls in
    `llm.log`), the return of the program run again on the same task with every call
    before that agent's first one replayed exactly and everything from it on sampled
    afresh from the current policy, in a scratch rollout whose rows are discarded.

    Why it is a baseline for that agent: it depends on the state where the agent first
    acts (the task and the other agents' earlier replies) and on fresh samples, never on
    the agent's own sampled tokens, so R - b is an unbiased estimate of Q(s, a) - V(s)
    for the agent's first action; unlike a group mean, it holds the earlier agents' part
    fixed, so a later agent is not credited or blamed for what came before it. Agents
    whose replay or run failed are left out (they keep the team reward); `stats` counts
    runs, failures and replay mismatches."""
    firsts: dict[str, int] = {}
    for j, call in enumerate(llm.log):
        firsts.setdefault(call.agent, j)
    service, out = llm.service, {}
    for k, (name, upto) in enumerate(firsts.items()):
        cf_id = f"{llm.rollout_id}~cf{k}"
        service.start_rollout(cf_id, group)
        cf = _LoggedLLM(llm, rollout_id=cf_id, replay=llm.log, upto=upto)
        stats["runs"] += 1
        try:
            res = _as_result(_call_agent(agent, task, cf))
            value = res.reward
            if value is None and reward_fn is not None:
                value = float(reward_fn(task, res.answer))
            if value is None or not math.isfinite(value):
                raise ValueError(f"the counterfactual run returned no finite reward: {value!r}")
            out[name] = float(value)
        except Exception:  # noqa: BLE001 - this agent keeps the team reward, counted
            stats["failed"] += 1
        finally:
            stats["mismatches"] += int(cf.mismatch)
            if cf_id in service.scopes:
                service.finish_rollout(cf_id)
    return out


class EpisodeFailure(Exception):
    """Raised by an agent program to drop its episode with a stage and message of its own
    (e.g. `EnvAgent`: an environment's reset or step failed, or timed out); any other
    exception drops it at stage "agent"."""

    def __init__(self, stage: str, message: str, traceback: str = ""):
        super().__init__(message)
        self.stage, self.message, self.traceback = stage, message, traceback


@dataclass
class _Episode:
    index: int
    rollout_id: str
    task: Task
    group: int
    sample: int
    seed: int
    started: float = 0.0
    result: AgentResult | None = None
    error: tuple[str, str, str] | None = None  # (stage, message, traceback)
    baselines: dict[str, float] | None = None  # counterfactual credit, per agent
    cf_counts: dict[str, int] = field(default_factory=lambda: {"runs": 0, "failed": 0,
                                                               "mismatches": 0})
    ended: bool = False  # no longer counted live (returned, raised or abandoned)
    settled: bool = False  # its rollout finished (rows taken or dropped)


def _episode_totals(rows: Sequence[EpisodeRecord]) -> dict[Any, dict[str, Any]]:
    """Per episode of one rollout's rows (rows that rewrote an earlier row's history share
    its episode, see `ChatService`): its return, turns, tokens and rows, summed."""
    totals: dict[Any, dict[str, Any]] = {}
    for rec in rows:
        t = totals.setdefault(rec.metadata.get("episode"), {
            "return": 0.0, "num_turns": 0, "num_tokens": 0, "num_sampled_tokens": 0,
            "rows": 0})
        t["return"] += float(sum(rec.turn_rewards))
        t["rows"] += 1
        for k in ("num_turns", "num_tokens", "num_sampled_tokens"):
            t[k] += rec.metadata[k]
    return totals


def run_agents(
    agent: Callable,
    tasks: Sequence[Task],
    service: ChatService,
    *,
    group_size: int = 1,
    seed: int = 0,
    reward_fn: Callable[[Task, str | None], float] | None = None,
    timeout_s: float | None = 600.0,
    max_error_fraction: float = 0.25,
    gateway_url: str | None = None,
    num_turns: int | None = None,
    length_bucket: int | str = 64,
    collate_batch: bool = True,
    on_live: Callable[[int], None] | None = None,
    on_episode: Callable[[dict[str, Any] | None], None] | None = None,
    max_rows_per_episode: int | None = None,
    train_agents: str | None = None,
    team_reward_weight: float = 1.0,
    posted_reward_weight: float = 1.0,
    row_metadata: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    budget_label: tuple[str, str] = ("agent episodes", "max_error_fraction"),
    credit: str = "team",
) -> RolloutResult:
    """Runs `group_size` copies of `agent` on every task concurrently; their calls become
    the rows of an `EpisodeBatch` (ordered by task, sample, then chain).

    Episode ids are `g{task}s{sample}` (the sampler keys its random numbers by them and
    the turn, so which episodes share a batch never changes what is sampled). An agent
    that raises, returns a bad value or runs past `timeout_s` (None: no limit) is dropped
    (listed in `errors`, at stage "agent", "timeout", or an `EpisodeFailure`'s own; a
    late agent's further calls get 404). Each episode is settled on this thread as soon
    as it ends: its rows are taken and their sampler rows freed, and `on_episode` is
    called with its last row's metadata (None when it was dropped); once more than
    `max_error_fraction` of the episodes have failed, `ErrorBudgetExceeded` is raised at
    once (`budget_label`: the nouns its message uses). An error of the policy itself
    (it raised, or broke the generation contract; see `BatchingEngine.watch_errors`) is a
    bug, not a dropped episode: it is re-raised here as soon as it happens. Whenever the
    call raises, the rows of the episodes still running are freed.

    `on_live(n)` is told how many episodes still run. `max_rows_per_episode` keeps an
    episode's last rows (the chains with its latest context and final reward) when its
    history broke into more; the metric `dropped_rows` counts the others.
    `row_metadata(meta) -> meta` transforms each row's finished metadata.

    Multi-agent programs (calls attributed to several agents): a row's group is its
    (task, agent) pair, `agent_id * len(tasks) + task index`, so group baselines compare an
    agent's rows with that agent's rows (for a single agent, id 0, it is the task index);
    `train_agents` (a regex over agent names) keeps only those agents' rows in the batch:
    the others still act, but nothing trains on their tokens (`frozen_rows` counts
    them). Per-agent metrics: `agent/{name}/{return,success,rows,sampled_tokens}`.

    Credit: a row's rewards are `posted_reward_weight` x the rewards posted during the
    episode (per-agent ones such as a checker's, at their calls) plus
    `team_reward_weight` x the program's returned (team) reward on its last turn.
    `credit="counterfactual"`: each agent's team reward is the episode's minus that
    agent's `counterfactual_baselines` (one extra, partly replayed run of the program per
    agent, in-process calls only); the rows' metadata keep the episode's own `return`
    and `success`, plus `credit_baseline`; metrics `credit/*` count the extra runs.
    """
    if credit not in ("team", "counterfactual"):
        raise ValueError(f"credit must be 'team' or 'counterfactual', got {credit!r}")
    trainable = re.compile(train_agents) if train_agents else None
    if not tasks:
        raise ValueError("run_agents needs at least one task")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    episodes = [_Episode(i, f"g{g}s{s}", task, g, s, episode_seed(seed, g, s))
                for i, (g, task, s) in enumerate((g, task, s) for g, task in enumerate(tasks)
                                                 for s in range(group_size))]
    budget = math.floor(max_error_fraction * len(episodes))
    live = {"n": len(episodes)}
    lock = threading.Lock()
    # ("done", episode) | ("abandoned", (episode, stage, message)) | ("policy", error)
    events: queue.SimpleQueue = queue.SimpleQueue()

    def end_live(ep: _Episode) -> None:
        with lock:
            if ep.ended:
                return
            ep.ended = True
            live["n"] -= 1
            if on_live is not None:
                on_live(live["n"])

    def body(ep: _Episode) -> None:
        def abandon(stage: str, message: str) -> None:
            end_live(ep)
            events.put(("abandoned", (ep, stage, message)))

        llm = AgentLLM(service, ep.rollout_id, ep.seed, gateway_url=gateway_url,
                       model=service.cfg.model_name, on_abandon=abandon)
        if credit == "counterfactual":
            llm = _LoggedLLM(llm)
        try:
            ep.result = _as_result(_call_agent(agent, ep.task, llm))
            if credit == "counterfactual":
                ep.baselines = counterfactual_baselines(agent, ep.task, llm, ep.group,
                                                        reward_fn, ep.cf_counts)
        except EpisodeFailure as e:
            ep.error = (e.stage, e.message, e.traceback)
        except BaseException as e:  # noqa: BLE001 - one agent failing drops one episode
            ep.error = ("agent", f"{type(e).__name__}: {e}",
                        "".join(traceback.format_exception(type(e), e, e.__traceback__)))
        finally:
            end_live(ep)
            events.put(("done", ep))

    rows_of: dict[int, list] = {}
    errors: list[EpisodeError] = []
    per_agent: dict[str, list[dict]] = {}
    counts = {"dropped": 0, "frozen": 0}
    cf_stats = {"runs": 0, "failed": 0, "mismatches": 0}  # summed as episodes settle

    def fail(ep: _Episode, stage: str, message: str, tb: str = "") -> None:
        errors.append(EpisodeError(ep.rollout_id, ep.task.id, ep.group, stage, message, tb))
        if on_episode is not None:
            on_episode(None)
        if len(errors) > budget:
            noun, knob = budget_label
            shown = "\n".join(f"  - episode {e.episode_id} (task {e.task_id}) at {e.stage}: "
                              f"{e.message}" for e in errors[:5])
            raise ErrorBudgetExceeded(
                f"{len(errors)} of {len(episodes)} {noun} failed, over the budget of "
                f"{budget} ({knob}={max_error_fraction}). First errors:\n{shown}")

    def settle(ep: _Episode) -> None:
        """Takes a finished (or timed-out) episode's rows, or drops it."""
        ep.settled = True
        rows, _ = service.finish_rollout(ep.rollout_id)
        if max_rows_per_episode is not None and len(rows) > max_rows_per_episode:
            counts["dropped"] += len(rows) - max_rows_per_episode
            rows = rows[len(rows) - max_rows_per_episode:]
        if ep.error is None and not rows:
            ep.error = ("agent", "the agent made no LLM call", "")
        if ep.error is not None:
            return fail(ep, *ep.error)
        res = ep.result
        reward = res.reward
        if reward is None and reward_fn is not None:
            reward = float(reward_fn(ep.task, res.answer))
        if reward is not None and not math.isfinite(reward):
            return fail(ep, "agent", f"non-finite reward {reward!r}")
        extra = dict(res.metadata)
        timings = {"total_s": time.monotonic() - ep.started, **extra.pop("timings", {})}
        kept = []
        for rec in rows:
            if posted_reward_weight != 1.0:
                rec.turn_rewards = [posted_reward_weight * r for r in rec.turn_rewards]
            if not rec.metadata.get("continued"):  # an episode's last row (see ChatService)
                rec.turn_rewards[-1] += team_reward_weight * (reward or 0.0)
                rec.truncated = rec.truncated or res.truncated
        for k, v in ep.cf_counts.items():
            cf_stats[k] += v
        totals = _episode_totals(rows)  # the episode's own returns, before credit
        for rec in rows:
            name = rec.metadata["agent"]
            baseline = (ep.baselines or {}).get(name)
            if baseline is not None and not rec.metadata.get("continued"):
                rec.turn_rewards[-1] -= team_reward_weight * baseline
            rec.group_id = service.agent_ids[name] * len(tasks) + ep.group
            total = totals[rec.metadata.get("episode")]["return"]
            rec.metadata.update({
                "task_id": ep.task.id, "task_subset": (ep.task.data or {}).get("subset"),
                "sample_index": ep.sample, "seed": ep.seed, "return": total,
                "turn_rewards": list(rec.turn_rewards),
                "success": bool(res.success if res.success is not None else total > 0),
                "answer": res.answer, "info": dict(res.info), "infos": [dict(res.info)],
                "truncated": rec.truncated,
                "termination": "truncated" if rec.truncated else "done",
                "rows_in_episode": len(rows), "timings": dict(timings), **extra,
                **({"credit_baseline": baseline} if ep.baselines is not None else {}),
                "episode_totals": totals[rec.metadata.get("episode")],
            })
            if row_metadata is not None:
                rec.metadata = row_metadata(rec.metadata)
            if not rec.metadata.get("continued"):
                per_agent.setdefault(name, []).append(rec.metadata)
            if trainable is not None and not trainable.fullmatch(name):
                counts["frozen"] += 1
                continue
            kept.append(rec)
        rows_of[ep.index] = kept
        if on_episode is not None:
            on_episode(rows[-1].metadata)

    unwatch = service.engine.watch_errors(lambda e: events.put(("policy", e)))
    try:
        for ep in episodes:
            service.start_rollout(ep.rollout_id, ep.group)
        if on_live is not None:
            on_live(live["n"])
        for ep in episodes:
            ep.started = time.monotonic()
            run_on_thread(lambda ep=ep: body(ep), "agent")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        running = len(episodes)
        while running:
            try:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                kind, what = events.get(timeout=wait) if wait != 0.0 else events.get_nowait()
            except queue.Empty:
                break  # the deadline passed (and what ended by then is settled)
            if kind == "policy":
                raise what
            if kind == "abandoned":
                what, *error = what
                if what.settled:
                    continue
                what.error = (*error, "")
            elif what.settled:  # the thread of an abandoned episode came back
                continue
            running -= 1
            settle(what)
        for ep in episodes:
            if not ep.settled:
                ep.error = ("timeout", f"the agent ran longer than {timeout_s} s", "")
                settle(ep)
    finally:
        unwatch()
        for ep in episodes:  # raised: free what the episodes still running hold
            if not ep.settled and ep.rollout_id in service.scopes:
                ep.settled = True
                service.finish_rollout(ep.rollout_id)
    order = {ep.rollout_id: ep.index for ep in episodes}
    errors.sort(key=lambda e: order[e.episode_id])
    records = [rec for i in sorted(rows_of) for rec in rows_of[i]]
    batch = None
    if collate_batch and records:
        batch = collate(records, length_bucket=length_bucket, num_turns=num_turns)
    metrics = episode_metrics(episode_summaries(records), len(errors))
    metrics["dropped_rows"] = float(counts["dropped"])
    metrics["frozen_rows"] = float(counts["frozen"])
    metrics["rows_per_episode"] = len(records) / max(len(rows_of), 1)
    if credit == "counterfactual":
        metrics.update({f"credit/counterfactual_{k}": float(v) for k, v in cf_stats.items()})
    if len(per_agent) > 1:
        for name, metas in sorted(per_agent.items()):
            n = len(metas)
            metrics[f"agent/{name}/rows"] = float(n)
            metrics[f"agent/{name}/return"] = sum(m["return"] for m in metas) / n
            metrics[f"agent/{name}/success"] = sum(bool(m["success"]) for m in metas) / n
            metrics[f"agent/{name}/sampled_tokens"] = sum(
                m["num_sampled_tokens"] for m in metas) / n
    return RolloutResult(batch, records, errors, metrics)


__all__ = ["AGENTS", "AgentLLM", "AgentResult", "APIError", "EpisodeFailure",
           "counterfactual_baselines", "load_agent", "run_agents"]
