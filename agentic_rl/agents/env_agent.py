"""Our environments as agent programs: one rollout runtime serves both.

`EnvAgent(make_env)` is an ordinary agent program: it resets a fresh environment, sends
its messages to the LLM, parses each reply with the environment's tools exactly as the
environment loop does, steps the environment, posts that turn's reward for that call,
and appends the observation. Through the chat service the tokens are the environment
loop's tokens (same prompt and observation segments, same sampled turns), so training an
environment through `run_agents` trains on the same batch as `run_episodes`.

With `transport="http"` the same program talks to the gateway with the `openai` SDK
(and posts rewards over HTTP), i.e. it is a third-party agent in every respect but its
source.

Imports: agentic_rl.envs and agentic_rl.agents; openai/httpx only for the HTTP
transport.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from agentic_rl.agents.openai_format import APIError
from agentic_rl.agents.runtime import AGENTS, AgentLLM, AgentResult
from agentic_rl.envs.base import Env, Task
from agentic_rl.envs.tools.parser import ParserLimits, parse_action

# Refusals that end an episode the way the environment loop's limits do (truncated).
LIMIT_CODES = ("context_length_exceeded", "max_turns_exceeded")


class EnvAgent:
    """The environment loop as an agent program (see the module docstring)."""

    def __init__(self, make_env: Callable[[], Env], *, transport: str = "inprocess",
                 parser: ParserLimits | None = None):
        if transport not in ("inprocess", "http"):
            raise ValueError(f"transport must be 'inprocess' or 'http', got {transport!r}")
        self.make_env, self.transport = make_env, transport
        self.parser = parser or ParserLimits()
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
                                httpx.Client(timeout=60))
            return self._shared

    def _caller(self, llm: AgentLLM) -> tuple[Callable[[list], tuple[str, str]], Callable]:
        if self.transport == "inprocess":
            def chat(messages):
                r = llm.chat(messages)
                return r["id"], r["choices"][0]["message"]["content"] or ""

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
            return r.id, r.choices[0].message.content or ""

        def reward(value, call_id=None):
            http.post(f"{llm.rollout_url}/reward",
                      json={"reward": value, "call_id": call_id}).raise_for_status()

        return chat, reward

    def __call__(self, task: Task, llm: AgentLLM) -> AgentResult:
        chat, post_reward = self._caller(llm)
        env = self.make_env()
        try:
            messages: list[dict[str, Any]] = [dict(m) for m in env.reset(task, llm.seed)]
            info: dict[str, Any] = {}
            turn = 0
            while True:
                try:
                    call_id, text = chat(messages)
                except APIError as e:
                    if e.code in LIMIT_CODES:
                        return AgentResult(reward=0.0, success=bool(info.get("success")),
                                           truncated=True, info=info)
                    raise
                action = parse_action(text, env.tools, self.parser, id_prefix=f"call_{turn}")
                result = env.step(action)
                post_reward(float(result.reward), call_id)
                info = dict(result.info)
                messages.append({"role": "assistant", "content": text})
                if result.done:
                    return AgentResult(reward=0.0, success=bool(info.get("success", False)),
                                       info=info)
                messages.extend(dict(m) for m in result.observation)
                turn += 1
        finally:
            close = getattr(env, "close", None)
            if callable(close):
                close()


@AGENTS.register("env")
def _env_program(*, suite, transport: str = "inprocess", **_) -> EnvAgent:
    """The configured environment, run as an agent program (`agent.program=env`)."""
    if suite is None:
        raise ValueError("the 'env' agent program needs an environment suite")
    return EnvAgent(suite.make_env, transport=transport)
