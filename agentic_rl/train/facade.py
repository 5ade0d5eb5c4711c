"""`AgentTrainer`: the one-object entry point, for notebooks and scripts.

    trainer = AgentTrainer(model="smollm2-135m-instruct", environment="calculator",
                           algo="grpo", learning_rate=2e-4)
    history = trainer.train(episodes=500)
    print(trainer.evaluate(num_episodes=32))
    trainer.export("my_policy/")

It fills a full trainer config (the same one the CLI takes), so anything the shell can
set is reachable through `overrides={"rl.kl_coef": 0.01, ...}`; the common knobs have
keyword shortcuts. A `LoadedPolicy` or a built `EnvSuite` can be passed in place of names.

Imports: agentic_rl.models, envs, rollout, agents and the train modules.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flax import nnx

from agentic_rl.agents.system import AgentSystem
from agentic_rl.envs.base import Task
from agentic_rl.envs.suite import EnvSuite
from agentic_rl.envs.tasks import TaskSet
from agentic_rl.models import LoadedPolicy, LoRAWeight, ValueHead, attach_lora, critic_from
from agentic_rl.rollout import make_chat_format
from agentic_rl.train import builders
from agentic_rl.train.config import (
    default_config,
    num_adapters,
    separate_critic,
    uses_critic,
    validate,
)
from agentic_rl.train.config_files import apply_overrides
from agentic_rl.train.loop import Trainer

# AgentTrainer(method=...) -> rl.algo ("rlvr": GRPO on a verifiable reward)
METHODS = {"rlvr": "grpo", "grpo": "grpo", "ppo": "ppo", "dpo": "dpo"}

# keyword shortcut -> config key
SHORTCUTS = {
    "learning_rate": "optim.learning_rate",
    "lora_rank": "model.lora_rank",
    "group_size": "rollout.group_size",
    "tasks_per_step": "rollout.tasks_per_step",
    "max_turns": "rollout.max_turns",
    "max_new_tokens": "rollout.max_new_tokens",
    "kl_coef": "rl.kl_coef",
    "num_epochs": "train.num_epochs",
    "eval_every": "eval.every",
    "seed": "seed",
    "chat_format": "model.chat_format",
}


def _adopt_policy(policy: LoadedPolicy, cfg) -> builders.PolicyBundle:
    """Adds what the config asks for and a loaded policy lacks (critic, LoRA), in the
    order `builders.build_policy` does (a separate critic copies the adapters)."""
    model = policy.model
    separate = separate_critic(cfg)
    if uses_critic(cfg) and not separate and model.value_head is None:
        model.value_head = ValueHead(model.cfg.hidden_size, rngs=nnx.Rngs(cfg.seed))
    has_lora = any(isinstance(v, LoRAWeight) for _, v in nnx.iter_graph(model.lm))
    if cfg.model.lora_rank and not has_lora:
        attach_lora(model.lm, cfg.model.lora_rank, cfg.model.lora_alpha,
                    cfg.model.lora_targets, num_adapters(cfg), rngs=nnx.Rngs(cfg.seed))
    if separate and model.critic is None:
        model.critic = critic_from(model.lm, seed=cfg.seed)
    fmt = make_chat_format(cfg.model.chat_format, policy.tokenizer)
    return builders.PolicyBundle(model, policy.tokenizer, fmt, hf_tokenizer=policy.tokenizer)


class AgentTrainer:
    """Train an LLM agent on an environment with GRPO or PPO in a few lines.

    model: embedded model name, HF directory, "tiny", or a `LoadedPolicy`.
    environment: a name in `agentic_rl.envs.ENVS` or an `EnvSuite`.
    algo: "grpo", "ppo" or "dpo".
    workdir: where checkpoints/metrics go (default runs/<env>-<algo>-<time>).
    env_kwargs: the environment's keyword arguments. Other keywords: see SHORTCUTS.

    Agent programs: `agent=` a function `agent(task, llm)` (or "module:function", or
    "env"), `tasks=` its tasks (a list, used for training and evaluation, or
    `{"train": [...], "eval": [...]}`; default: the environment's), `reward=` an optional
    `reward(task, answer) -> float`; `transport="http"` gives it the gateway's URL:

        trainer = AgentTrainer(model="tiny", agent=my_agent, tasks=tasks, transport="http")

    Multi-agent systems: the system first, `method=` the algorithm ("rlvr" is GRPO on the
    verifiable reward), `policy=` the model, `adapters="per_agent"` for one LoRA adapter
    per agent (else one shared), `train_agents=` a regex or a list of names:

        trainer = AgentTrainer(system, method="rlvr", environment="calculator")
        trainer.run(episodes=200)
    """

    def __init__(self, model: str | LoadedPolicy | AgentSystem = "smollm2-135m-instruct",
                 environment: str | EnvSuite = "calculator", algo: str = "grpo", *,
                 workdir: str | Path | None = None, env_kwargs: dict[str, Any] | None = None,
                 overrides: dict[str, Any] | None = None, config=None,
                 agent: Callable | str | None = None, tasks=None,
                 reward: Callable | None = None, transport: str | None = None,
                 method: str | None = None, policy: str | LoadedPolicy | None = None,
                 adapters: str | None = None, train_agents: str | Sequence[str] | None = None,
                 **shortcuts: Any):
        unknown = sorted(set(shortcuts) - set(SHORTCUTS))
        if unknown:
            raise TypeError(f"AgentTrainer got unknown keyword(s) {unknown}; valid: "
                            f"{', '.join(SHORTCUTS)} (or overrides={{'a.b': value}})")
        if isinstance(model, AgentSystem):
            if agent is not None:
                raise TypeError("pass the system first or as agent=, not both")
            model, agent = (policy if policy is not None else "smollm2-135m-instruct"), model
        elif policy is not None:
            raise TypeError("policy= names the model of a system given first; else use model=")
        if method is not None:
            if method not in METHODS:
                raise ValueError(f"method={method!r} is not valid; choose one of "
                                 f"{', '.join(METHODS)}")
            algo = METHODS[method]
        cfg = config if config is not None else default_config()
        flat: dict[str, Any] = {"rl.algo": algo}
        if isinstance(model, str):
            flat["model.name"] = model
        if isinstance(environment, str):
            flat["env.name"] = environment
        else:
            flat["env.name"] = environment.name if environment.name in _env_names() else \
                cfg.env.name
        flat.update({SHORTCUTS[k]: v for k, v in shortcuts.items()})
        flat.update({f"env.kwargs.{k}": v for k, v in (env_kwargs or {}).items()})
        self._agent, self._reward = None, reward
        if agent is not None:
            self._agent = agent if callable(agent) else None
            flat["agent.program"] = agent if isinstance(agent, str) else \
                f"{agent.__module__}:{getattr(agent, '__qualname__', type(agent).__name__)}"
        if transport is not None:
            flat["agent.transport"] = transport
        if adapters is not None:
            flat["model.lora_adapters"] = adapters
        if train_agents is not None:
            flat["agent.train_agents"] = (train_agents if isinstance(train_agents, str) else
                                          "|".join(re.escape(n) for n in train_agents))
        if isinstance(agent, AgentSystem):
            # each agent's calls are one row: an episode makes one row per agent
            flat["agent.names"] = ",".join(agent.names)
            flat["agent.rows_per_episode"] = len(agent.names)
        flat.update(overrides or {})
        self.cfg = apply_overrides(cfg, flat)
        self._model = model
        self._suite = environment if isinstance(environment, EnvSuite) else None
        if tasks is not None:
            self._suite = _task_suite(tasks, self._suite)
        name = environment if isinstance(environment, str) else environment.name
        self.workdir = Path(workdir) if workdir else Path(
            "runs", f"{name}-{algo}-{time.strftime('%Y%m%d-%H%M%S')}")
        self.trainer: Trainer | None = None

    def _build(self) -> Trainer:
        if self.trainer is None:
            validate(self.cfg)
            policy = (_adopt_policy(self._model, self.cfg) if isinstance(self._model, LoadedPolicy)
                      else None)
            self.trainer = Trainer(self.cfg, self.workdir, policy=policy, suite=self._suite,
                                   agent=self._agent, reward=self._reward)
        return self.trainer

    def train(self, episodes: int | None = None, *, steps: int | None = None):
        """Trains for `episodes` episodes (rounded up to whole steps) or `steps` steps, in
        total for this workdir (a second call continues). Returns this call's metrics."""
        rows = self.cfg.rollout.tasks_per_step * self.cfg.rollout.group_size
        if (episodes is None) == (steps is None):
            raise ValueError("pass exactly one of episodes= or steps=")
        total = steps if steps is not None else math.ceil(episodes / rows)
        trainer = self._build()
        # The horizon, and the LR schedule with it, is the one this call trains to (an
        # evaluate() before, or a second train(), built or kept another one).
        trainer.set_max_steps(int(total))
        return trainer.train()

    def run(self, episodes: int | None = None, *, steps: int | None = None):
        """`train`, under the name the multi-agent API uses."""
        return self.train(episodes, steps=steps)

    def evaluate(self, num_episodes: int | None = None) -> dict[str, Any]:
        """Evaluation metrics of the current policy on the held-out split."""
        trainer = self._build()
        if num_episodes is not None:
            with self.cfg.unlocked():
                self.cfg.eval.num_episodes = int(num_episodes)
        return trainer.evaluate()

    def export(self, out_dir: str | Path) -> Path:
        """Writes the current policy as a HF directory (LoRA merged)."""
        return self._build().export(out_dir)


def _no_env() -> Any:
    raise RuntimeError("these tasks were given without an environment: train them with an "
                       "agent program (agent=...)")


def _task_suite(tasks, suite: EnvSuite | None) -> EnvSuite:
    """An `EnvSuite` over the given tasks (a list for both splits, or a split mapping)."""
    splits = dict(tasks) if isinstance(tasks, Mapping) else {"train": list(tasks),
                                                              "eval": list(tasks)}
    if not all(isinstance(t, Task) for split in splits.values() for t in split):
        raise TypeError("tasks must be agentic_rl.envs.Task objects (a list, or a mapping "
                        "of split name to list)")
    return EnvSuite(suite.name if suite else "tasks", suite.make_env if suite else _no_env,
                    TaskSet(splits), suite.gamma if suite else 1.0)


def _env_names() -> tuple[str, ...]:
    from agentic_rl.envs import ENVS

    return ENVS.names()
