"""Our environments as agent programs: one rollout runtime serves both.

`EnvAgent(make_env)` is an ordinary agent program: it resets a fresh environment, sends
its messages to the LLM, parses each reply with the environment's tools, steps the
environment, posts that turn's reward for that call, and appends the observation.
Through the chat service the tokens are the environment loop's layout (prompt segment,
sampled turns, observation segments; see `rollout.types`), so `run_agents(EnvAgent(...))`
*is* the environment loop: `env_rollout.run_episodes` is a thin function over it.

Environment calls. Each episode's reset and steps run on the agent's own (daemon)
thread, each within `step_timeout_s` counted from when the call starts running (after
waiting, untimed, for one of the `max_workers` slots the agent's episodes share). The
limit is kept by the watchdog of `agents.threads`, not by handing the call to another
thread and waiting: for small environments that hand-off and back cost more than the
call. An environment that misses the limit has its episode dropped at once
(`llm.abandon`, stage "timeout": the rollout goes on without waiting, the slot is
freed, and the stuck thread is left behind; a daemon, it never hangs the caller nor
keeps the process alive). One that raises, or returns a malformed `StepResult`
(`rollout.types.check_step_result`), drops it at stage "reset" or "step" with the
traceback. `close` runs after the episode on another thread, never waited for (best
effort).

Long episodes: the messages sent each turn are those of the episode's `Context`
(`RolloutConfig.context`: full, window, memory or summarize; see `agents.context`). A
rewrite makes the chat service start a new row of the same episode; memory calls are
answered here (the environment is not stepped for a turn of memory calls alone); a
summary is one more sampled call, recorded in the trace as the request (an "environment"
message: the program added it) and the policy's reply.

Limits are the chat service's: a call past `max_turns` or past the context limit is
refused, and the episode ends truncated, with termination "max_turns" or "max_tokens"
(a prompt that leaves no room for a first turn drops the episode at stage "reset").

What the environment loop recorded per episode (the messages with the final
observation, which the policy never sees; tool calls and errors as the environment's
tools parsed them; each turn's finish reason; every step's info; time in the
environment; the termination) goes into the rows' metadata through
`AgentResult.metadata`.

With `transport="http"` the same program talks to the gateway with the `openai` SDK
(and posts rewards over HTTP), i.e. it is a third-party agent in every respect but its
source.

Imports: agentic_rl.envs, agentic_rl.rollout (the episode checks) and agentic_rl.agents;
openai/httpx only for the HTTP transport.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from agentic_rl.agents.context import Context, memory_only_step
from agentic_rl.agents.openai_format import APIError
from agentic_rl.agents.runtime import AGENTS, AgentLLM, AgentResult, EpisodeFailure
from agentic_rl.agents.threads import run_on_thread, watch
from agentic_rl.envs.base import Action, Env, Message, Task
from agentic_rl.envs.tools.parser import ParserLimits, parse_action
from agentic_rl.rollout.types import ContextConfig, assistant_message, check_step_result

# Refusals that end an episode the way the environment loop's limits do (truncated).
LIMIT_CODES = ("context_length_exceeded", "max_turns_exceeded")
_TERMINATION = {"max_turns_exceeded": "max_turns", "context_length_exceeded": "max_tokens"}


def _close_env(env: Env) -> None:
    close = getattr(env, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - closing is best effort; the episode is over
            pass


@dataclass
class _Trace:
    """What the environment loop records of an episode (see the module docstring)."""

    messages: list[Message] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)  # per message: prompt|policy|environment
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_errors: list[dict[str, Any]] = field(default_factory=list)
    tool_attempts: int = 0
    tool_valid: int = 0
    finish_reasons: list[str] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    env_s: float = 0.0

    def count_tool_use(self, action: Action, turn: int) -> None:
        if not action.attempted_tool_call:
            return
        self.tool_attempts += 1
        self.tool_valid += not action.errors
        for c in action.tool_calls:
            self.tool_calls.append(
                {"turn": turn, "id": c.id, "name": c.name, "arguments": dict(c.arguments)})
        for e in action.errors:
            self.tool_errors.append({"turn": turn, "kind": e.kind, "message": e.message})

    def result(self, termination: str) -> AgentResult:
        info = self.infos[-1] if self.infos else {}
        return AgentResult(
            reward=0.0,  # every turn's reward is posted for its call
            success=bool(info.get("success", False)), truncated=termination != "done",
            info=dict(info),
            metadata={
                "messages": self.messages, "origins": self.origins,
                "termination": termination, "finish_reasons": self.finish_reasons,
                "tool_calls": self.tool_calls, "tool_errors": self.tool_errors,
                "tool_call_attempts": self.tool_attempts, "tool_call_valid": self.tool_valid,
                "infos": self.infos, "timings": {"env_s": self.env_s},
            })


class EnvAgent:
    """The environment loop as an agent program (see the module docstring).

    step_timeout_s: limit of each env reset/step (None: no limit, run on the agent's
        own thread). max_workers: env calls running at once across this agent's episodes
        (None: unbounded).
    """

    def __init__(self, make_env: Callable[[], Env], *, transport: str = "inprocess",
                 parser: ParserLimits | None = None, step_timeout_s: float | None = None,
                 max_workers: int | None = None, context: ContextConfig | None = None):
        if transport not in ("inprocess", "http"):
            raise ValueError(f"transport must be 'inprocess' or 'http', got {transport!r}")
        self.make_env, self.transport = make_env, transport
        self.parser = parser or ParserLimits()
        self.context = context or ContextConfig()
        self.step_timeout_s = step_timeout_s
        self._slots = threading.Semaphore(max_workers) if max_workers else None
        self._lock = threading.Lock()
        self._shared = None

    def _clients(self, llm: AgentLLM):
        """One OpenAI client and one HTTP client for all episodes (each builds a TLS
        context and a connection pool: ~10 ms, too much per episode); thread-safe."""
        with self._lock:
            if self._shared is None:
                import httpx
                import openai

                self._shared = (openai.OpenAI(base_url=llm.base_url, api_key=llm.api_key,
                                              max_retries=0, timeout=600),
                                # Limits: every episode's thread may post at once. With
                                # httpx's defaults (100 connections, 20 kept alive) 128
                                # concurrent posts churned the pool, and 4 of 3840 posts
                                # in a 30-step run failed with "ReadError: [Errno 9] Bad
                                # file descriptor" (a connection closed while reused).
                                httpx.Client(timeout=60, limits=httpx.Limits(
                                    max_connections=1024, max_keepalive_connections=1024)))
            return self._shared

    def _caller(self, llm: AgentLLM) -> tuple[Callable[[list], tuple[str, str, str]], Callable]:
        """(chat(messages) -> (call id, text, finish reason), post_reward(value, call_id))."""
        if self.transport == "inprocess":
            def chat(messages):
                r = llm.chat(messages)
                choice = r["choices"][0]
                return r["id"], choice["message"]["content"] or "", choice["finish_reason"]

            return chat, llm.reward
        import openai

        client, http = self._clients(llm)
        client = client.with_options(base_url=llm.base_url)

        def chat(messages):
            try:
                r = client.chat.completions.create(model=llm.model, messages=messages)
            except openai.BadRequestError as e:
                body = e.body if isinstance(e.body, dict) else {}
                raise APIError(400, str(e), code=body.get("code")) from None
            choice = r.choices[0]
            return r.id, choice.message.content or "", choice.finish_reason

        def reward(value, call_id=None):
            http.post(f"{llm.rollout_url}/reward",
                      json={"reward": value, "call_id": call_id}).raise_for_status()

        return chat, reward

    def _env_call(self, stage: str, fn: Callable[[], Any], trace: _Trace,
                  llm: AgentLLM) -> Any:
        """`fn()` on this (the agent's) thread within the step timeout; its failures as
        `EpisodeFailure`s (see the module docstring). A call past the limit is reported by
        the watchdog (`llm.abandon`: the run drops the episode at once, stage "timeout")
        while this thread stays stuck in it; one that comes back late raises here."""
        if self._slots is not None:
            self._slots.acquire()  # queueing is never a timeout
        slot = {"held": self._slots is not None}
        slot_lock = threading.Lock()

        def free_slot():
            with slot_lock:
                held, slot["held"] = slot["held"], False
            if held:
                self._slots.release()

        limit = self.step_timeout_s
        message = f"env {stage} took longer than {limit} s"

        def timed_out():
            free_slot()  # a hung call must not hold a worker slot forever
            llm.abandon("timeout", message)

        deadline = watch(limit, timed_out) if limit is not None else None
        start = time.perf_counter()
        try:
            out = fn()
        except BaseException as e:
            if deadline is not None and not deadline.cancel():
                raise EpisodeFailure("timeout", message) from None
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            raise EpisodeFailure(stage, f"{type(e).__name__}: {e}", tb) from None
        finally:
            free_slot()
        if deadline is not None and not deadline.cancel():
            raise EpisodeFailure("timeout", message)
        trace.env_s += time.perf_counter() - start
        return out

    @staticmethod
    def _rewrite(ctx: Context, chat, trace: _Trace) -> None:
        """Rewrites the context; for `summarize`, after the policy wrote its summary (a
        sampled turn with no reward of its own, recorded in the trace)."""
        if ctx.cfg.strategy != "summarize":
            return ctx.rewrite()
        ask = ctx.summary_messages()
        _, summary, finish = chat(ask)
        trace.messages.extend([dict(ask[-1]), {"role": "assistant", "content": summary}])
        trace.origins.extend(["environment", "policy"])
        trace.finish_reasons.append(finish)
        ctx.rewrite(summary)

    def __call__(self, task: Task, llm: AgentLLM) -> AgentResult:
        chat, post_reward = self._caller(llm)
        trace, made = _Trace(), {}

        def reset():
            made["env"] = env = self.make_env()
            return list(env.reset(task, llm.seed))

        try:
            ctx = Context(self.context, self._env_call("reset", reset, trace, llm))
            trace.messages = [dict(m) for m in ctx.head]
            trace.origins = ["prompt"] * len(trace.messages)
            env = made["env"]
            tools = ctx.tools(env.tools)
            turn = 0
            while True:
                try:
                    if ctx.due():
                        self._rewrite(ctx, chat, trace)
                    call_id, text, finish = chat(ctx.messages())
                except APIError as e:
                    if e.code == "context_length_exceeded" and turn == 0:
                        raise EpisodeFailure("reset", e.message) from None
                    if e.code in LIMIT_CODES:
                        return trace.result(_TERMINATION[e.code])
                    raise
                action = parse_action(text, tools, self.parser, id_prefix=f"call_{turn}")
                trace.count_tool_use(action, turn)
                trace.messages.append(assistant_message(action))
                trace.origins.append("policy")
                trace.finish_reasons.append(finish)
                action, noted = ctx.split_memory(action)
                if noted and not action.attempted_tool_call:
                    result = memory_only_step(noted)  # the environment is not stepped
                else:
                    result = self._env_call(
                        "step", lambda a=action: check_step_result(env.step(a)), trace, llm)
                    if noted:
                        result = replace(result, observation=[*noted, *result.observation])
                post_reward(float(result.reward), call_id)
                trace.messages.extend(result.observation)
                trace.origins.extend(["environment"] * len(result.observation))
                trace.infos.append(dict(result.info))
                if result.done:
                    return trace.result("done")
                ctx.add_turn({"role": "assistant", "content": text}, result.observation)
                turn += 1
        finally:
            if "env" in made:
                env = made["env"]
                # on another thread, never waited for: the episode is over (and its rows
                # freed) as soon as this program returns
                run_on_thread(lambda: _close_env(env), "env-close")


@AGENTS.register("env")
def _env_program(*, suite, transport: str = "inprocess", rollout_config=None, **_) -> EnvAgent:
    """The configured environment, run as an agent program (`agent.program=env`), with the
    rollout config's parser limits, step timeout and env workers when given."""
    if suite is None:
        raise ValueError("the 'env' agent program needs an environment suite")
    if rollout_config is None:
        return EnvAgent(suite.make_env, transport=transport)
    r = rollout_config
    return EnvAgent(suite.make_env, transport=transport, parser=r.parser,
                    step_timeout_s=r.step_timeout_s, max_workers=r.max_workers,
                    context=r.context)
