"""Rollouts of agent programs for the trainer (`agent.program` set in the config).

`ProgramRollouts` owns the pieces between the trainer's sampler and the user's agent:
the batching engine (which from then on is the only caller of the sampler), the chat
service (token-exact traces; the rollout's sampling settings and limits, clients'
temperature ignored), and, for `agent.transport="http"`, the gateway on its own thread.
A rollout is `run_agents` over the step's tasks; the batch it returns is an ordinary
`EpisodeBatch`, so everything after the rollout is the environment path's. (The
default path, `agent.program=""`, runs on the same runtime: `agents.run_episodes`,
i.e. `run_agents(EnvAgent(...))` with an engine of its own per call, whose rows keep
the environment loop's metadata.)

Imports: agentic_rl.agents, agentic_rl.rollout and the train modules.
"""

from __future__ import annotations

import importlib

from agentic_rl.agents import (
    BatchingEngine,
    ChatService,
    Gateway,
    ServiceConfig,
    load_agent,
    run_agents,
)
from agentic_rl.rollout.types import RolloutResult
from agentic_rl.train import builders
from agentic_rl.train.config import ConfigError, agent_names


def _load_reward(spec: str):
    if not spec:
        return None
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"agent.reward={spec!r} cannot be loaded ('module:function'): {e}"
                          ) from None
    if not callable(fn):
        raise ConfigError(f"agent.reward={spec!r} is not a function")
    return fn


class ProgramRollouts:
    """Agent-program rollouts over `sampler` (a `SamplerPolicy`); see the module docstring."""

    def __init__(self, cfg, sampler, chat_format, suite, sampling, *, agent=None,
                 reward_fn=None):
        a, r = cfg.agent, cfg.rollout
        try:
            self.agent = load_agent(agent if agent is not None else a.program,
                                    None if agent is not None else a.kwargs.to_dict(),
                                    suite=suite, transport=a.transport,
                                    rollout_config=builders.rollout_config(cfg))
        except ValueError as e:
            raise ConfigError(f"agent.program: {e}") from None
        self.reward_fn = reward_fn if reward_fn is not None else _load_reward(a.reward)
        self.cfg = cfg
        self._live = 0
        self.engine = BatchingEngine(sampler, window_s=float(a.batch_window_s),
                                     expected=lambda: self._live)
        self.service = ChatService(self.engine, chat_format, ServiceConfig(
            sampling=sampling, fixed_sampling=True, max_new_tokens=r.max_new_tokens,
            max_context_tokens=r.max_episode_tokens, max_turns=r.max_turns,
            stop_strings=tuple(r.stop_strings), render_tools=bool(a.render_tools),
            agents=agent_names(cfg),
            adapter_per_agent=cfg.model.lora_adapters == "per_agent"))
        self.gateway = None
        if a.transport == "http":
            self.gateway = Gateway(self.service, host=a.gateway_host,
                                   port=int(a.gateway_port)).start()

    def _set_live(self, n: int) -> None:
        self._live = n
        self.engine.notify()  # a batch waiting for the live episodes re-checks at once

    def sync(self, fn) -> None:
        """Runs `fn(sampler)` on the engine's thread (weights, settings, seed)."""
        self.engine.call(fn)

    def run(self, tasks, *, group_size: int, seed: int, sampling,
            collate_batch: bool = True, credit: str = "team") -> RolloutResult:
        """One rollout of the program over `tasks`; `credit` "counterfactual" (training
        rollouts, agent.credit) adds each agent's counterfactual baseline."""
        self.service.sampling = sampling
        r = self.cfg.rollout
        before = dict(self.service.metrics)
        result = run_agents(self.agent, tasks, self.service, group_size=group_size, seed=seed,
                          reward_fn=self.reward_fn, timeout_s=float(self.cfg.agent.timeout_s),
                          max_error_fraction=r.max_error_fraction,
                          gateway_url=self.gateway.url if self.gateway else None,
                          num_turns=r.max_turns, length_bucket=r.length_bucket,
                          collate_batch=collate_batch, on_live=self._set_live,
                          max_rows_per_episode=builders.rows_per_episode(self.cfg,
                                                                         program=True),
                          train_agents=self.cfg.agent.train_agents or None,
                          team_reward_weight=float(self.cfg.agent.team_reward_weight),
                          posted_reward_weight=float(self.cfg.agent.posted_reward_weight),
                          credit=credit)
        for key in ("prefix_breaks", "malformed_tool_calls", "context_overflows",
                    "max_turns_refusals", "ignored_sampling_params", "bad_requests"):
            result.metrics[f"gateway/{key}"] = self.service.metrics[key] - before.get(key, 0)
        return result

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        self.engine.close()
