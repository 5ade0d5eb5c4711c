"""From a validated config to the objects a run needs: policy, env suite, rollout and
loss settings, and the task order (a pure function of the data position, for exact resume).

Imports: every layer below train (models, sampling, envs, rollout, rl) and the train
modules: this is where they meet.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from flax import nnx

from agentic_rl.envs import ParserLimits, make_env_suite
from agentic_rl.envs.suite import EnvSuite, with_latency
from agentic_rl.models import ModelConfig, PolicyModel, attach_lora, critic_from
from agentic_rl.rl import AdvantageConfig, LossConfig
from agentic_rl.rollout import CharTokenizer, ContextConfig, RolloutConfig, make_chat_format
from agentic_rl.sampling import SamplingParams
from agentic_rl.train.config import (
    critic_chain,
    estimator,
    frozen_adapters,
    num_adapters,
    separate_critic,
    uses_critic,
)
from agentic_rl.train.state import make_optimizer

TINY = "tiny"


@dataclass
class PolicyBundle:
    """The policy module, its tokenizer (HF or CharTokenizer) and chat format."""

    model: PolicyModel
    tokenizer: Any
    chat_format: Any
    hf_tokenizer: Any = None  # saved with an export; None for the character tokenizer


def tiny_model_config(cfg) -> ModelConfig:
    """A random model whose vocabulary covers CharTokenizer's ids for ASCII text."""
    vocab = len(CharTokenizer().special_tokens) + 128
    return ModelConfig(vocab_size=vocab, **dict(cfg.model.tiny),
                       dtype=cfg.model.dtype, param_dtype=cfg.model.param_dtype,
                       remat=cfg.model.remat, attention_chunk=cfg.model.attention_chunk)


def build_policy(cfg) -> PolicyBundle:
    """Loads (or, for model.name='tiny', initialises) the policy, with LoRA adapters when
    model.lora_rank > 0 and, for critic-based algorithms, a critic: a value head on the
    trunk (rl.critic='shared') or a separate critic starting as a copy of the policy,
    adapters included (rl.critic='separate')."""
    m = cfg.model
    shared = uses_critic(cfg) and not separate_critic(cfg)
    n = num_adapters(cfg)
    if m.name == TINY:
        rngs = nnx.Rngs(cfg.seed)
        model = PolicyModel(tiny_model_config(cfg), rngs=rngs, value_head=shared)
        attach_lora(model, m.lora_rank, m.lora_alpha, m.lora_targets, n, rngs=rngs)
        tok = CharTokenizer()
        built = PolicyBundle(model, tok, make_chat_format(m.chat_format, tok))
    else:
        from agentic_rl.models import load_policy

        policy = load_policy(m.name, dtype=m.dtype, param_dtype=m.param_dtype,
                             value_head=shared, lora_rank=m.lora_rank, lora_alpha=m.lora_alpha,
                             lora_targets=m.lora_targets or None, remat=m.remat, seed=cfg.seed,
                             lora_adapters=n, attention_chunk=m.attention_chunk)
        fmt = make_chat_format(m.chat_format, policy.tokenizer)
        built = PolicyBundle(policy.model, policy.tokenizer, fmt, hf_tokenizer=policy.tokenizer)
    if separate_critic(cfg):
        built.model.critic = critic_from(built.model.lm, seed=cfg.seed)
    return built


def total_updates(cfg) -> int:
    """Optimizer updates over the whole run (the horizon of the learning-rate schedule)."""
    t = cfg.train
    return t.max_steps * t.num_epochs * t.num_minibatches


def optimizer(cfg):
    """The run's optimizer: `make_optimizer` over its horizon, with a chain of its own for
    the critic when rl.critic='separate' or optim.critic_learning_rate > 0, and the
    adapters of the agents left out of agent.train_agents held exactly still."""
    return make_optimizer(cfg.optim, total_updates(cfg), critic_chain=critic_chain(cfg),
                          frozen_adapters=frozen_adapters(cfg), num_adapters=num_adapters(cfg))


def build_suite(cfg) -> EnvSuite:
    """The configured environment suite (with env.step_latency_s, if set)."""
    return with_latency(make_env_suite(cfg.env.name, dict(cfg.env.kwargs)),
                        cfg.env.step_latency_s, cfg.env.step_latency_jitter)


def ray_env_pool(cfg, suite: EnvSuite, *, from_config: bool):
    """rollout.backend="ray": a pool of Ray actors for the environments, and `suite` with
    its `make_env` placing each episode's environment in one of them. A suite built from
    the config is rebuilt by name in each worker; one passed in from Python is shipped to
    them (pickled by Ray)."""
    import functools

    from agentic_rl.envs.ray_backend import RayEnvPool, suite_in_worker

    if from_config:
        make = functools.partial(suite_in_worker, cfg.env.name, cfg.env.kwargs.to_dict(),
                                 cfg.env.step_latency_s, cfg.env.step_latency_jitter)
    else:
        def make(suite=suite):
            return suite
    pool = RayEnvPool(make, num_workers=cfg.rollout.ray_workers,
                      address=cfg.rollout.ray_address or None)
    return pool, dataclasses.replace(suite, make_env=pool.make_env)


def rollout_config(cfg) -> RolloutConfig:
    r = cfg.rollout
    return RolloutConfig(max_turns=r.max_turns, max_new_tokens=r.max_new_tokens,
                         max_episode_tokens=r.max_episode_tokens, length_bucket=r.length_bucket,
                         step_timeout_s=r.step_timeout_s, stop_strings=tuple(r.stop_strings),
                         straggler_wait_s=r.straggler_wait_s, max_workers=r.max_workers,
                         max_error_fraction=r.max_error_fraction,
                         parser=ParserLimits(max_calls=r.max_tool_calls,
                                             max_call_chars=r.max_tool_call_chars),
                         context=context_config(cfg))


def context_config(cfg) -> ContextConfig:
    c = cfg.rollout.context
    return ContextConfig(c.strategy, keep_turns=c.keep_turns, rewrite_every=c.rewrite_every,
                         memory_chars=c.memory_chars, summary_chars=c.summary_chars)


def rows_per_episode(cfg, *, program: bool = False) -> int:
    """Training rows one episode may make (the step's rows are tasks x group x this).

    The environment loop: 1 with the full context; with a rewriting strategy, one more
    per rewrite (before turns keep + every, keep + 2 every, ... of at most max_turns), so
    no row of an episode is ever dropped. An agent program (`program`): at least
    `agent.rows_per_episode` (its last rows are kept beyond that)."""
    c = context_config(cfg)
    rows = 1
    if c.strategy != "full":
        rows += max(0, (cfg.rollout.max_turns - 1 - c.keep_turns) // c.rewrite_every)
    return max(rows, int(cfg.agent.rows_per_episode)) if program else rows


def sampling_params(cfg, *, greedy: bool = False) -> SamplingParams:
    if greedy:
        return SamplingParams(temperature=0.0, greedy=True)
    r = cfg.rollout
    return SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k)


def advantage_config(cfg, env_gamma: float) -> AdvantageConfig:
    """The advantage settings; turn_gamma < 0 means the environment's own discount."""
    a = cfg.rl.advantage
    turn_gamma = a.turn_gamma if a.turn_gamma >= 0 else env_gamma
    return AdvantageConfig(estimator=estimator(cfg), level=a.level, whiten=a.whiten,
                           whiten_weighting=a.whiten_weighting, gamma=a.gamma, lam=a.lam,
                           turn_gamma=turn_gamma, turn_lam=a.turn_lam)


def loss_config(cfg) -> LossConfig:
    return LossConfig(**dict(cfg.rl.loss))


def task_indices(num_tasks: int, position: int, n: int, seed: int) -> list[int]:
    """The `n` tasks after `position` in an endless stream of seeded shuffles of the split.

    A pure function of (position, seed): resuming from a saved position continues the
    exact same task order, with no sampler state to checkpoint but one integer.
    """
    if num_tasks < 1:
        raise ValueError("the training split has no tasks")
    out: list[int] = []
    while len(out) < n:
        epoch, offset = divmod(position, num_tasks)
        perm = np.random.default_rng([seed, epoch]).permutation(num_tasks)
        take = min(n - len(out), num_tasks - offset)
        out.extend(int(i) for i in perm[offset:offset + take])
        position += take
    return out
