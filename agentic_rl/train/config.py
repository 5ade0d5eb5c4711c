"""Trainer configuration: the defaults (the schema), validation, and shell overrides.

Every key a run can take is in `default_config()`; an experiment file starts from it and
changes values. The returned ConfigDict is locked, so a misspelled key in an experiment
file fails at once, and `apply_overrides` / `validate` reject unknown keys with the
valid names (and the closest match). `env.kwargs` is the one open mapping: its keys are
the environment factory's keyword arguments and are checked against its signature.
"""

from __future__ import annotations

import ast
import difflib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

ALGOS = ("grpo", "ppo", "dpo")
DEFAULT_ESTIMATOR = {"grpo": "grpo", "ppo": "gae", "dpo": "grpo"}  # dpo: unused
OPEN_KEYS = ("env.kwargs",)  # free-form mappings, validated elsewhere


class ConfigError(ValueError):
    """An invalid config: unknown key, bad value or inconsistent combination."""


def default_config() -> ml_collections.ConfigDict:
    """All trainer settings with their defaults. See each block's comment for meaning."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    # The policy: an embedded model name, a HF directory, or "tiny" (a random model with
    # a character tokenizer, for tests and smoke runs; its shape is model.tiny).
    c.model = ml_collections.ConfigDict()
    c.model.name = "smollm2-135m-instruct"
    c.model.chat_format = "smollm2"
    c.model.lora_rank = 8  # 0 = full fine-tuning
    c.model.lora_alpha = 16.0
    c.model.lora_targets = ""  # regex over projection names; "" = all projections
    # Multi-agent programs: "shared" (one adapter for every agent) or "per_agent" (one
    # LoRA adapter per agent of agent.names over the shared frozen base, all trained in
    # the same jitted update; each token's agent selects its adapter).
    c.model.lora_adapters = "shared"
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"
    c.model.remat = False
    c.model.tiny = ml_collections.ConfigDict(
        {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4,
         "num_kv_heads": 2}
    )

    c.env = ml_collections.ConfigDict()
    c.env.name = "calculator"
    c.env.kwargs = ml_collections.ConfigDict()  # keyword arguments of the env factory
    c.env.train_split = "train"
    c.env.eval_split = "eval"

    # One training step rolls out tasks_per_step tasks x group_size episodes.
    c.rollout = ml_collections.ConfigDict()
    c.rollout.tasks_per_step = 8
    c.rollout.group_size = 4
    c.rollout.max_turns = 4
    c.rollout.max_new_tokens = 64
    c.rollout.max_episode_tokens = 512
    # Sampling temperature (> 0); the trainer scores and trains softmax(logits / T), the
    # distribution the tokens were drawn from. top_p < 1 / top_k > 0 are rejected for
    # training rollouts: the trainer's distribution is the full-vocabulary one.
    c.rollout.temperature = 1.0
    c.rollout.top_p = 1.0
    c.rollout.top_k = 0
    c.rollout.length_bucket = 64
    c.rollout.step_timeout_s = 60.0  # one environment step; longer drops the episode
    # Strings that end a turn (a tool call's close tag), as a tuple literal from the shell:
    # --config.rollout.stop_strings='("</tool_call>", "</answer>")'
    c.rollout.stop_strings = ("</tool_call>",)
    c.rollout.straggler_wait_s = 0.2  # how long a sampler batch waits for slow episodes
    c.rollout.max_workers = 32  # threads stepping environments concurrently
    c.rollout.max_error_fraction = 0.25  # episodes an env may fail before the step fails
    c.rollout.max_tool_calls = 1  # tool calls allowed per turn (more: an error, none run)
    c.rollout.max_tool_call_chars = 4096  # one call's JSON, bounded before parsing

    # Agent programs (agentic_rl.agents): program "" runs the environment loop; otherwise
    # a registered name ("env": the environment as an agent program) or "module:function"
    # (`agent(task, llm) -> float | AgentResult | str | None`), run group_size times per
    # task, its LLM calls captured token-exactly by the chat service. transport "http"
    # starts the OpenAI-compatible gateway on gateway_host:gateway_port (0 = a free port)
    # and gives each episode its base URL; "inprocess" skips HTTP. reward: an optional
    # "module:function" `reward(task, answer) -> float` for agents that return an answer.
    # timeout_s bounds one episode; batch_window_s is how long the sampler waits for more
    # concurrent calls (it fires as soon as every live episode is waiting on the LLM).
    # render_tools False: requests' `tools` are parsed but not put in the prompt (for an
    # agent whose own prompt shows the tool-call format). rows_per_episode: training rows
    # an episode may fill (its chains of calls: a rewritten history starts a new one);
    # the batch has tasks_per_step x group_size x rows_per_episode rows, an episode's
    # extra chains beyond it are dropped (its last ones kept, rollout/dropped_rows).
    # train_agents: a regex over a multi-agent program's agent names; only their rows
    # train ("" = every agent), the others act with the same weights.
    c.agent = ml_collections.ConfigDict(
        {"program": "", "transport": "inprocess", "reward": "", "timeout_s": 600.0,
         "gateway_host": "127.0.0.1", "gateway_port": 0, "batch_window_s": 0.05,
         "render_tools": True, "rows_per_episode": 1, "train_agents": "", "names": "",
         "team_reward_weight": 1.0, "posted_reward_weight": 1.0})
    # team_reward_weight / posted_reward_weight: credit between agents, a row's reward is
    # posted x the rewards posted during the episode (per-agent ones: ctx.reward(v, agent=))
    # + team x the program's returned (team) reward.
    # names: the agents of a multi-agent program, comma-separated, in a fixed order (their
    # agent ids; adapter i under model.lora_adapters="per_agent"); "" = an AgentSystem's
    # own names, else ids by first call.

    c.rl = ml_collections.ConfigDict()
    # grpo (group baseline, no critic), ppo (value head + GAE) or dpo (each group's best
    # vs worst episode as a preference pair; reference = LoRA off or the initial weights)
    c.rl.algo = "grpo"
    c.rl.kl_coef = 0.0  # KL to the reference policy (LoRA off, or the initial weights)
    c.rl.kl_mode = "loss"  # "loss" (GRPO style) or "reward" (per-token penalty, PPO-RLHF)
    c.rl.entropy_coef = 0.0
    c.rl.vf_coef = 0.5  # ppo only
    # ppo only: "shared" (a value head on the policy's trunk) or "separate" (its own trunk,
    # a copy of the policy's initial weights, LoRA adapters included when the policy has
    # them, plus a value head; its own optimizer chain, see optim.critic_learning_rate).
    # Separate costs a second trunk pass and its parameters, and keeps value learning
    # from reshaping the policy's features.
    c.rl.critic = "shared"
    # Also put the loss on the environment's tokens between turns (observations, tool
    # results), for the ablation. Off by default: the policy did not choose those tokens,
    # so a policy gradient on them is no gradient of the return; it only teaches the
    # policy to predict (or, with a negative advantage, to avoid predicting) the
    # environment's text, which adds variance and can make it imitate tool output.
    # The prompt is never trained on.
    c.rl.train_on_observations = False
    # rl.algo="dpo": beta (implicit KL strength), label_smoothing (conservative DPO),
    # min_margin (a group is a pair only if best - worst return > it). pairs_file: offline
    # DPO from a JSONL of ranked pairs instead of rollouts, one per line:
    # {"messages": [...prompt...], "chosen": "reply", "rejected": "reply"} (or "prompt":
    # "text" for one user message); tasks_per_step pairs per step, group_size must be 2.
    c.rl.dpo = ml_collections.ConfigDict(
        {"beta": 0.1, "label_smoothing": 0.0, "min_margin": 0.0, "pairs_file": ""})
    c.rl.advantage = ml_collections.ConfigDict(
        {"estimator": "", "level": "outcome", "whiten": False, "whiten_weighting": "token",
         "gamma": 1.0, "lam": 1.0, "turn_gamma": -1.0, "turn_lam": 0.95, "per_agent": ""}
    )  # estimator "" = the algo's default (grpo -> grpo, ppo -> gae); turn_gamma -1 = env's
    # per_agent: an estimator per agent of a multi-agent program, "writer:grpo,checker:rloo"
    # (each computed over its agent's rows only; other agents get `estimator`).
    c.rl.loss = ml_collections.ConfigDict(
        {"policy_loss": "ppo", "aggregation": "token_mean", "kl_estimator": "k3",
         "clip_eps": 0.2, "clip_eps_low": 0.2, "clip_eps_high": 0.28, "dual_clip_c": 3.0,
         "gspo_eps_low": 3e-4, "gspo_eps_high": 4e-4, "cispo_eps_low": 1.0,
         "cispo_eps_high": 1.0, "tis_cap": 2.0, "value_clip_eps": 0.2, "loss_norm_const": 1.0,
         "off_policy": "none", "off_policy_tis_cap": 2.0, "off_policy_mis_low": 0.5,
         "off_policy_mis_high": 2.0, "gspo_level": "sequence"}
    )  # gspo needs aggregation "seq_mean_token_mean" (its objective is per sequence);
    # gspo_level "sequence" (one ratio per episode) or "turn" (one per turn).
    # off_policy corrects for sampling from another policy than the proximal one the ratio
    # is taken against (async workers, external engines), from rho = pi_old / pi_behaviour:
    # "none" (1), "tis" (token-level truncated IS, min(rho, off_policy_tis_cap >= 1)),
    # "mis" (sequence-level masked IS: the sequence's rho, or 0 outside the band
    # [off_policy_mis_low, off_policy_mis_high], which must contain 1), "decoupled"
    # (decoupled PPO: weight rho). All equal "none" when the sampler is the proximal policy.

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 1e-5
    c.optim.schedule = "constant"  # constant, linear (decay to 0) or cosine
    c.optim.warmup_steps = 0  # in optimizer updates
    c.optim.weight_decay = 0.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.max_grad_norm = 1.0
    # The critic's own peak learning rate (same schedule and warm-up): the critic's
    # parameters (the shared value head, or the whole separate critic) then get their own
    # chain (clipping, AdamW). 0: the policy's rate; with a shared critic one chain for all.
    c.optim.critic_learning_rate = 0.0

    c.train = ml_collections.ConfigDict()
    c.train.max_steps = 100
    c.train.num_epochs = 1  # passes over each rollout batch
    c.train.num_minibatches = 1  # optimizer updates per epoch
    c.train.micro_batch_size = 0  # rows per gradient-accumulation slice; 0 = whole minibatch
    c.train.score_batch_size = 0  # rows per no-grad scoring pass; 0 = whole batch
    # Use the sampler's log-probs as the pre-update policy instead of a scoring pass (saves
    # a forward pass; skipped when a critic or a KL reference needs the pass anyway). They
    # are the tempered log-probs the trainer would compute, up to the sampler's numerics.
    c.train.reuse_sample_logprobs = False
    # Compute the prefix every row shares (system prompt, tool list, few-shot examples)
    # once per micro-batch in the update and scoring passes, not once per row. Exact.
    c.train.shared_prefix = True
    c.train.max_nonfinite = 3  # consecutive skipped (non-finite) updates that stop the run
    c.train.fsdp = False  # shard params on their 'embed' axis over the data mesh axis

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 10  # steps; 0 = never
    c.eval.num_episodes = 32
    c.eval.greedy = True
    c.eval.at_start = False
    c.eval.num_trajectories = 8  # training + eval episodes saved per evaluation

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 1  # steps
    c.checkpoint.keep = 3  # most recent checkpoints kept (besides the best)
    c.checkpoint.best_metric = "eval/success_rate"
    c.checkpoint.best_mode = "max"
    c.checkpoint.export_final = True  # HF directory of the final policy in workdir/export

    c.log = ml_collections.ConfigDict()
    c.log.tensorboard = True
    c.log.progress = True
    c.lock()
    return c


# ------------------------------------------------------------------ validation


def _is_map(x: Any) -> bool:
    return isinstance(x, (Mapping, ml_collections.ConfigDict))


def _keys(cfg: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        if _is_map(v) and name not in OPEN_KEYS:
            out.extend(_keys(v, name + "."))
        else:
            out.append(name)
    return out


def _unknown_key_error(key: str, valid: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(
        f"unknown config key {key!r} in {where}.{hint} Valid keys: {', '.join(valid)}"
    )


def check_keys(cfg: Mapping[str, Any], where: str = "config") -> None:
    """Raises ConfigError naming the valid keys if cfg has a key the schema lacks."""
    valid = _keys(default_config())
    valid_set = set(valid)
    for key in _keys(cfg):
        if key not in valid_set:
            prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
            siblings = [k for k in valid if k.startswith(prefix)] or valid
            raise _unknown_key_error(key, siblings, where)


def _choice(name: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of {', '.join(valid)}")


def check_env_kwargs(cfg: ml_collections.ConfigDict) -> None:
    from agentic_rl.envs import ENVS

    _choice("env.name", cfg.env.name, ENVS.names())
    params = inspect.signature(ENVS.get(cfg.env.name)).parameters
    valid = [p for p in params if params[p].kind == inspect.Parameter.KEYWORD_ONLY]
    for key in cfg.env.kwargs:
        if key not in valid:
            raise _unknown_key_error(key, valid, f"env.kwargs of env {cfg.env.name!r}")


def estimator(cfg: ml_collections.ConfigDict) -> str:
    """The advantage estimator a run uses (the algo's default when none is named)."""
    return cfg.rl.advantage.estimator or DEFAULT_ESTIMATOR[cfg.rl.algo]


def critic_estimators() -> tuple[str, ...]:
    """The advantage estimators that read a critic's values (registry metadata)."""
    from agentic_rl.rl import ADVANTAGES

    return ADVANTAGES.where(needs_values=True)


def loss_reads(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The optional inputs the configured policy loss reads (registry metadata)."""
    from agentic_rl.rl import POLICY_LOSSES

    return tuple(POLICY_LOSSES.meta(cfg.rl.loss.policy_loss)["reads"])


def uses_critic(cfg: ml_collections.ConfigDict) -> bool:
    """A critic is trained when the estimator or the policy loss reads values."""
    from agentic_rl.rl import ADVANTAGES

    return bool(ADVANTAGES.meta(estimator(cfg))["needs_values"]) or "values" in loss_reads(cfg)


def separate_critic(cfg: ml_collections.ConfigDict) -> bool:
    """The run trains a critic with its own trunk (rl.critic='separate')."""
    return uses_critic(cfg) and cfg.rl.critic == "separate"


def critic_chain(cfg: ml_collections.ConfigDict) -> bool:
    """The critic's parameters get their own optimizer chain."""
    return uses_critic(cfg) and (cfg.rl.critic == "separate"
                                 or cfg.optim.critic_learning_rate > 0)


def agent_estimators(cfg: ml_collections.ConfigDict) -> dict[str, str]:
    """rl.advantage.per_agent as {agent name: estimator name}."""
    out: dict[str, str] = {}
    for item in (x.strip() for x in str(cfg.rl.advantage.per_agent).split(",")):
        if not item:
            continue
        name, sep, est = (s.strip() for s in item.partition(":"))
        if not sep or not name or not est or name in out:
            raise ConfigError(f"rl.advantage.per_agent={cfg.rl.advantage.per_agent!r}: write "
                              "'agent:estimator' pairs separated by commas, each agent once")
        out[name] = est
    return out


def agent_names(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
    """agent.names as a tuple (the multi-agent program's agents, in id order)."""
    return tuple(n.strip() for n in str(cfg.agent.names).split(",") if n.strip())


def num_adapters(cfg: ml_collections.ConfigDict) -> int:
    """LoRA adapters per projection: one per agent under model.lora_adapters='per_agent'."""
    if cfg.model.lora_adapters != "per_agent":
        return 1
    names = agent_names(cfg)
    if not names:
        raise ConfigError("model.lora_adapters='per_agent' needs the agents' names: set "
                          "agent.names='a,b' or train an AgentSystem (its names are used)")
    return len(names)


def uses_reference(cfg: ml_collections.ConfigDict) -> bool:
    """Reference log-probs are computed for DPO, a KL term or a loss that reads them."""
    return cfg.rl.algo == "dpo" or cfg.rl.kl_coef > 0 or "ref_logprobs" in loss_reads(cfg)


def validate(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks keys, names and the consistency of a full config; returns it."""
    from agentic_rl.rl import (
        ADVANTAGES,
        AGGREGATIONS,
        KL_ESTIMATORS,
        OFF_POLICY,
        POLICY_LOSSES,
    )

    check_keys(cfg)
    _choice("rl.algo", cfg.rl.algo, ALGOS)
    _choice("rl.kl_mode", cfg.rl.kl_mode, ("loss", "reward"))
    _choice("rl.advantage.estimator", estimator(cfg), ADVANTAGES.names())
    _choice("rl.loss.policy_loss", cfg.rl.loss.policy_loss, POLICY_LOSSES.names())
    _choice("rl.loss.aggregation", cfg.rl.loss.aggregation, AGGREGATIONS.names())
    _choice("rl.loss.kl_estimator", cfg.rl.loss.kl_estimator, KL_ESTIMATORS.names())
    _choice("rl.loss.off_policy", cfg.rl.loss.off_policy, OFF_POLICY.names())
    _choice("rl.loss.gspo_level", cfg.rl.loss.gspo_level, ("sequence", "turn"))
    loss = cfg.rl.loss
    need = POLICY_LOSSES.meta(loss.policy_loss)["aggregation"]
    if need is not None and loss.aggregation != need:
        raise ConfigError(
            f"rl.loss.policy_loss={loss.policy_loss!r} is a sequence-level objective and needs "
            f"rl.loss.aggregation={need!r} (got {loss.aggregation!r}); under another "
            "aggregation it optimises a different objective"
        )
    if loss.off_policy == "tis" and not loss.off_policy_tis_cap >= 1:
        raise ConfigError(
            f"rl.loss.off_policy_tis_cap must be >= 1, got {loss.off_policy_tis_cap}: a cap "
            "below 1 would down-weight on-policy tokens (rho = 1)"
        )
    if loss.off_policy == "mis" and not (
            0 <= loss.off_policy_mis_low <= 1 <= loss.off_policy_mis_high):
        raise ConfigError(
            "rl.loss: the MIS band [off_policy_mis_low, off_policy_mis_high] must contain 1 "
            f"(got [{loss.off_policy_mis_low}, {loss.off_policy_mis_high}]), or on-policy "
            "sequences (ratio 1) would be dropped"
        )
    _choice("optim.schedule", cfg.optim.schedule, ("constant", "linear", "cosine"))
    _choice("checkpoint.best_mode", cfg.checkpoint.best_mode, ("max", "min"))
    if cfg.rl.algo == "ppo" and not uses_critic(cfg):
        raise ConfigError(
            f"rl.algo='ppo' trains a critic, so rl.advantage.estimator must be one of "
            f"{', '.join(critic_estimators())} (got {estimator(cfg)!r}); use rl.algo='grpo' for "
            "critic-free estimators"
        )
    if cfg.rl.algo == "dpo":
        d, t = cfg.rl.dpo, cfg.train
        if not d.beta > 0 or not 0 <= d.label_smoothing < 0.5:
            raise ConfigError(f"rl.dpo: beta must be > 0 and label_smoothing in [0, 0.5), "
                              f"got beta={d.beta}, label_smoothing={d.label_smoothing}")
        if t.num_minibatches != 1 or t.micro_batch_size:
            raise ConfigError("rl.algo='dpo' updates on the whole batch of pairs: set "
                              "train.num_minibatches=1 and train.micro_batch_size=0")
        if cfg.rollout.group_size < 2:
            raise ConfigError("rl.algo='dpo' pairs episodes of one group: rollout.group_size "
                              f"must be >= 2, got {cfg.rollout.group_size}")
        if d.pairs_file and cfg.rollout.group_size != 2:
            raise ConfigError("offline DPO (rl.dpo.pairs_file) reads one pair per task: set "
                              f"rollout.group_size=2, got {cfg.rollout.group_size}")
        if d.pairs_file and not Path(d.pairs_file).is_file():
            raise ConfigError(f"rl.dpo.pairs_file={d.pairs_file!r} is not a file")
    elif cfg.rl.dpo.pairs_file:
        raise ConfigError("rl.dpo.pairs_file is for rl.algo='dpo'")
    _choice("rl.critic", cfg.rl.critic, ("shared", "separate"))
    if not cfg.optim.critic_learning_rate >= 0:
        raise ConfigError(f"optim.critic_learning_rate must be >= 0 (0: the policy's rate), "
                          f"got {cfg.optim.critic_learning_rate}")
    if not uses_critic(cfg) and (cfg.rl.critic != "shared" or cfg.optim.critic_learning_rate):
        raise ConfigError("rl.critic and optim.critic_learning_rate configure the critic, "
                          "which this run does not train (rl.algo='ppo' with a critic-based "
                          "estimator trains one)")
    if cfg.rl.algo != "ppo" and uses_critic(cfg):
        who = (f"rl.loss.policy_loss={cfg.rl.loss.policy_loss!r} reads values"
               if "values" in loss_reads(cfg) else
               f"rl.advantage.estimator={estimator(cfg)!r}")
        raise ConfigError(f"{who} needs a critic; set rl.algo='ppo'")
    _choice("agent.transport", cfg.agent.transport, ("inprocess", "http"))
    if cfg.agent.program and cfg.rl.algo == "dpo" and cfg.rl.dpo.pairs_file:
        raise ConfigError("agent.program and rl.dpo.pairs_file both replace the rollout; "
                          "set one")
    if not cfg.agent.timeout_s > 0 or cfg.agent.batch_window_s < 0:
        raise ConfigError("agent.timeout_s must be > 0 and agent.batch_window_s >= 0")
    for agent, est in agent_estimators(cfg).items():
        _choice(f"rl.advantage.per_agent[{agent}]", est, ADVANTAGES.names())
        if ADVANTAGES.meta(est)["needs_values"] and not uses_critic(cfg):
            raise ConfigError(f"rl.advantage.per_agent: {agent}'s estimator {est!r} reads a "
                              "critic's values; this run trains none (use rl.algo='ppo')")
    _choice("model.lora_adapters", cfg.model.lora_adapters, ("shared", "per_agent"))
    if cfg.model.lora_adapters == "per_agent" and not cfg.model.lora_rank:
        raise ConfigError("model.lora_adapters='per_agent' gives each agent a LoRA adapter: "
                          "set model.lora_rank > 0")
    if cfg.agent.train_agents:
        try:
            re.compile(cfg.agent.train_agents)
        except re.error as e:
            raise ConfigError(f"agent.train_agents={cfg.agent.train_agents!r} is not a "
                              f"regular expression: {e}") from None
    if cfg.agent.rows_per_episode < 1:
        raise ConfigError(f"agent.rows_per_episode must be >= 1, got "
                          f"{cfg.agent.rows_per_episode}")
    rows = cfg.rollout.tasks_per_step * cfg.rollout.group_size
    positive = {"rollout.tasks_per_step": cfg.rollout.tasks_per_step,
                "rollout.group_size": cfg.rollout.group_size,
                "train.max_steps": cfg.train.max_steps, "train.num_epochs": cfg.train.num_epochs,
                "train.num_minibatches": cfg.train.num_minibatches,
                "train.max_nonfinite": cfg.train.max_nonfinite,
                "checkpoint.every": cfg.checkpoint.every, "checkpoint.keep": cfg.checkpoint.keep}
    for name, value in positive.items():
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if rows % cfg.train.num_minibatches:
        raise ConfigError(
            f"rollout.tasks_per_step x group_size = {rows} rows must divide into "
            f"train.num_minibatches={cfg.train.num_minibatches} minibatches"
        )
    mb = rows // cfg.train.num_minibatches
    if cfg.train.micro_batch_size and mb % cfg.train.micro_batch_size:
        raise ConfigError(
            f"train.micro_batch_size={cfg.train.micro_batch_size} must divide the minibatch "
            f"of {mb} rows"
        )
    r = cfg.rollout
    if not r.temperature > 0:
        raise ConfigError(
            f"rollout.temperature must be > 0 for training rollouts, got {r.temperature} "
            "(0 is greedy decoding, whose log-probs are not a distribution to train)"
        )
    for key, off in (("rollout.top_p", r.top_p < 1.0), ("rollout.top_k", r.top_k > 0)):
        if off:
            raise ConfigError(
                f"{key}={r[key.split('.')[1]]} truncates the sampling distribution, but the "
                "trainer scores softmax(logits / temperature) over the full vocabulary: "
                "the PPO ratio and the gradient would be for another policy than the one "
                "that sampled (tokens outside the kept set have probability 0 under the "
                "sampler). Use rollout.top_p=1 and rollout.top_k=0 for training"
            )
    if cfg.train.reuse_sample_logprobs and loss.off_policy != "none":
        raise ConfigError(
            f"rl.loss.off_policy={loss.off_policy!r} weighs by pi_old / pi_behaviour, which "
            "needs the scoring pass: train.reuse_sample_logprobs makes the sampler's "
            "log-probs the old ones, a ratio of 1; set train.reuse_sample_logprobs=False"
        )
    if cfg.train.reuse_sample_logprobs and cfg.rl.train_on_observations:
        raise ConfigError(
            "rl.train_on_observations needs the scoring pass: the sampler has no log-probs "
            "for observation tokens; set train.reuse_sample_logprobs=False"
        )
    from agentic_rl.train.builders import rollout_config

    try:  # the rollout's own range checks, reported as config errors
        rollout_config(cfg)
    except ValueError as e:
        raise ConfigError(f"rollout: {e}") from None
    check_env_kwargs(cfg)
    return cfg


# ------------------------------------------------------------------ loading and overrides


def _literal(text: str) -> Any:
    """A Python literal, or raises ValueError (also for pathological input)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(text) from None


def _type_name(current: Any) -> str:
    if isinstance(current, bool):
        return "a bool (true/false)"
    if isinstance(current, int):
        return "an int"
    if isinstance(current, float):
        return "a number"
    return "a string" if isinstance(current, str) else type(current).__name__


def _parse_value(text: str, current: Any, key: str) -> Any:
    """A shell string as the type of the current value (bools accept true/false/1/0)."""
    if isinstance(current, bool):
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key} expects a bool (true/false), got {text!r}")
    if isinstance(current, (int, float)):
        bad = ConfigError(f"--config.{key} expects {_type_name(current)} (like {current!r}), "
                          f"got {text!r}")
        try:
            value = _literal(text)
        except ValueError:
            if not isinstance(current, float):
                raise bad from None
            try:  # inf, nan, -inf
                value = float(text)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if isinstance(current, int) and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"--config.{key} expects an int, got {text!r}")
        try:
            return type(current)(value)
        except (OverflowError, ValueError):
            raise bad from None
    if isinstance(current, str):
        return text
    if isinstance(current, tuple):
        try:
            value = _literal(text)
        except ValueError:  # not a literal: the text itself is the one string
            value = text
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"--config.{key} expects a tuple of strings like {current!r}, "
                              f"got {text!r}")
        return tuple(value)
    try:  # new keys (env.kwargs) take Python literals; anything else stays a string
        return _literal(text)
    except ValueError:
        return text


def _env_param_default(cfg: ml_collections.ConfigDict, name: str) -> Any:
    """The default of env factory keyword `name` for cfg's env (None if unknown)."""
    from agentic_rl.envs import ENVS

    try:
        factory = ENVS.get(cfg.env.name)
        p = inspect.signature(factory).parameters.get(name)
    except Exception:  # noqa: BLE001 - an unknown env is reported by validate
        return None
    return None if p is None or p.default is inspect.Parameter.empty else p.default


OVERRIDE_PREFIX = "--config."


def split_overrides(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Separates `--config.a.b=value` / `--config.a.b value` pairs from other arguments.

    The one override syntax of every entry point (train, evaluate, ablate, the
    benchmarks, kill/resume); `AgentTrainer(overrides={"a.b": value})` takes the same keys.
    """
    rest: list[str] = []
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(OVERRIDE_PREFIX):
            key, eq, value = arg[len(OVERRIDE_PREFIX):].partition("=")
            if not key:
                raise ConfigError(f"{arg}: a config key is missing (--config.a.b=VALUE)")
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{arg} needs a value ({arg}=VALUE or {arg} VALUE)")
                value = argv[i + 1]
                i += 1
            overrides[key] = value
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any]):
    """Sets dotted keys ("rl.kl_coef" -> value); string values are parsed to the key's type.

    Unknown keys raise ConfigError listing the valid ones; keys under env.kwargs are
    free-form here and checked against the env factory by `validate`. String values for
    env.kwargs are parsed to the type of the factory's default for that keyword (a
    string parameter keeps the text), otherwise as Python literals.
    """
    valid = _keys(default_config())
    # env.name first, so env.kwargs values are parsed for the env they configure
    ordered = sorted(overrides.items(), key=lambda kv: kv[0] != "env.name")
    for key, value in ordered:
        open_parent = next((p for p in OPEN_KEYS if key.startswith(p + ".")), None)
        if open_parent is None and key not in valid:
            check_keys(_nest({key: None}), where="overrides")
            raise _unknown_key_error(key, valid, "overrides")  # a group name, not a leaf
        *parents, leaf = key.split(".")
        node = cfg
        for i, p in enumerate(parents):
            try:
                node = node[p]
            except (KeyError, TypeError, AttributeError):
                node = None
            if not _is_map(node):
                raise ConfigError(f"cannot set {key}: {'.'.join(parents[:i + 1])} is not a "
                                  "mapping")
        if isinstance(value, str):
            current = node[leaf] if leaf in node else None
            if current is None and open_parent == "env.kwargs" and len(parents) == 2:
                current = _env_param_default(cfg, leaf)
            value = _parse_value(value, current, key)
        try:
            with node.unlocked():
                node[leaf] = value
        except (TypeError, ValueError) as e:
            current = node[leaf] if leaf in node else None
            raise ConfigError(f"{key} expects {_type_name(current)}, got {value!r} "
                              f"({_one_line(e)})") from None
    return cfg


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(e).__name__)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _split_spec(spec: str) -> tuple[Path, str]:
    path_str, _, variant = str(spec).partition(":")
    return Path(path_str), variant


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/file.py[:variant]` by calling its `get_config(variant)`.

    Errors raised by the file's own code propagate unchanged (`load_cli_config` turns
    them into one-line ConfigErrors for the command line)."""
    path, variant = _split_spec(spec)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; pass an experiment file, "
                          "e.g. experiments/tiny_learning.py")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    name = f"_agentic_rl_config_{path.stem}"
    loader = importlib.machinery.SourceFileLoader(name, str(path))  # any file name
    module_spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"{path} defines no get_config(variant) function")
    variants = getattr(module, "VARIANTS", None)
    if (variant and isinstance(variants, (tuple, list))
            and all(isinstance(v, str) for v in variants) and variant not in variants):
        raise ConfigError(f"unknown variant {variant!r} of {path}; valid variants: "
                          f"{', '.join(variants)} (FILE.py:VARIANT)")
    params = inspect.signature(get_config).parameters
    if variant and not params:
        raise ConfigError(f"{path} has no variants (its get_config takes no argument); "
                          f"drop ':{variant}'")
    cfg = get_config(variant or None) if params else get_config()
    return cfg


def _raised_at(e: BaseException, path: Path) -> str:
    """' at line N' of the innermost traceback frame in `path` ('' if none)."""
    line = None
    tb = e.__traceback__
    target = str(path.resolve())
    while tb is not None:
        try:
            same = str(Path(tb.tb_frame.f_code.co_filename).resolve()) == target
        except OSError:
            same = False
        if same:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" at line {line}" if line else ""


def check_types(cfg: ml_collections.ConfigDict, where: str = "config") -> None:
    """Raises ConfigError when a key holds a value of another type than its default
    (ints are accepted for float keys), or when the schema's keys are missing."""
    defaults = default_config()
    have = set(_keys(cfg))
    missing = [k for k in _keys(defaults) if k not in have]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ConfigError(
            f"{where} is missing keys {', '.join(missing[:5])}{more}; start it from "
            "agentic_rl.train.config.default_config() and change values")
    for key in _keys(defaults):
        if key in OPEN_KEYS:
            value = _get(cfg, key)
            if not _is_map(value):
                raise ConfigError(f"{key} in {where} must be a mapping of keyword arguments, "
                                  f"got {value!r}")
            continue
        want, value = _get(defaults, key), _get(cfg, key)
        if isinstance(want, bool):
            ok = isinstance(value, bool)
        elif isinstance(want, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(want, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(want, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise ConfigError(f"{key} in {where} must be {_type_name(want)} (like {want!r}), "
                              f"got {value!r}")


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _runtime_types(hint: Any) -> tuple[type, ...] | None:
    """The classes a value of type hint `hint` may have (None: do not check)."""
    import types
    import typing

    if hint is Any:
        return None
    if hint is type(None) or hint is None:
        return (type(None),)
    if hint is float:
        return (int, float)
    if hint in (bool, int, str):
        return (hint,)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        out: list[type] = []
        for arg in typing.get_args(hint):
            sub = _runtime_types(arg)
            if sub is None:
                return None
            out.extend(sub)
        return tuple(out)
    if origin in (tuple, list):
        return (tuple, list)
    if origin is dict or hint is dict:
        return (dict, Mapping, ml_collections.ConfigDict)
    if isinstance(hint, type) and hint.__module__ == "os" and hint.__name__ == "PathLike":
        return (os.PathLike,)
    return None


def check_env_kwarg_types(cfg: ml_collections.ConfigDict) -> None:
    """Raises ConfigError when an env.kwargs value does not fit the factory's annotation
    (or, without one, the type of its default)."""
    import typing

    from agentic_rl.envs import ENVS

    factory = ENVS.get(cfg.env.name)
    params = inspect.signature(factory).parameters
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # noqa: BLE001 - unresolvable annotations: use the defaults only
        hints = {}
    for key, value in cfg.env.kwargs.items():
        p = params.get(key)
        if p is None:
            continue
        allowed = _runtime_types(hints[key]) if key in hints else None
        if allowed is None and p.default is not inspect.Parameter.empty:
            d = p.default
            allowed = ({bool: (bool,), int: (int,), float: (int, float), str: (str,)}
                       .get(type(d)))
        if allowed is None:
            continue
        is_bool = isinstance(value, bool)
        ok = isinstance(value, allowed) and not (is_bool and bool not in allowed)
        if not ok:
            want = hints.get(key, type(p.default).__name__)
            want = getattr(want, "__name__", None) or str(want).replace("typing.", "")
            raise ConfigError(f"env.kwargs.{key} of env {cfg.env.name!r} must be {want}, got "
                              f"{value!r}")


def check_model_name(cfg: ml_collections.ConfigDict) -> None:
    """Raises ConfigError unless model.name is 'tiny', an embedded model or an existing path,
    and model.dtype / param_dtype are known dtype names."""
    from agentic_rl.models.config import _DTYPES
    from agentic_rl.models.loading import EMBEDDED_MODELS

    for key in ("dtype", "param_dtype"):
        _choice(f"model.{key}", cfg.model[key], sorted(_DTYPES))
    name = cfg.model.name
    known = ["tiny", *EMBEDDED_MODELS]
    if name == "tiny" or name.lower() in EMBEDDED_MODELS:
        return
    if not Path(name).expanduser().exists():
        raise ConfigError(
            f"model.name={name!r} is neither a known model name ({', '.join(known)}) nor an "
            "existing path; pass one of those names, a local Hugging Face model directory "
            "(config.json + *.safetensors + tokenizer files) or a .gguf file")


def load_cli_config(spec: str, overrides: Mapping[str, Any] | None = None
                    ) -> ml_collections.ConfigDict:
    """The validated config of `FILE.py[:variant]` plus shell overrides, for command-line
    entry points: every problem with the file, a value or a name is a one-line
    ConfigError (the file's own exceptions included, with the line they came from)."""
    path, variant = _split_spec(spec)
    try:
        cfg = load_config_file(spec)
    except ConfigError:
        raise
    except SyntaxError as e:
        where = f" (line {e.lineno})" if e.lineno else ""
        raise ConfigError(f"config file {path} is not valid Python{where}: {e.msg}; a config "
                          "is a Python file defining get_config(variant)") from None
    except (UnicodeDecodeError, ValueError) as e:
        if isinstance(e, UnicodeDecodeError) or "null bytes" in str(e):
            raise ConfigError(f"config file {path} is not valid Python (it looks binary); a "
                              "config is a Python file defining get_config(variant)") from None
        raise _file_raised(e, path, variant) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the file's own code failed
        raise _file_raised(e, path, variant) from None
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(
            f"get_config() of {path} returned {type(cfg).__name__ if cfg is not None else 'None'}"
            ", not an ml_collections.ConfigDict; return "
            "agentic_rl.train.config.default_config() with your changes")
    check_keys(cfg, where=str(path))
    check_types(cfg, where=str(path))
    cfg = apply_overrides(cfg, dict(overrides or {}))
    check_types(cfg, where="the overridden config")
    cfg = validate(cfg)
    check_env_kwarg_types(cfg)
    check_model_name(cfg)
    return cfg


def _file_raised(e: BaseException, path: Path, variant: str) -> ConfigError:
    at = _raised_at(e, path)
    tb = e.__traceback__
    in_get_config = False
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "get_config":
            in_get_config = True
        tb = tb.tb_next
    who = f"get_config({variant or None!r})" if in_get_config else "loading it"
    locked = re.search(r'Key "([^"]+)" does not exist and cannot be added', str(e))
    if locked:  # a typo against the locked schema
        leaves = sorted({k.rsplit(".", 1)[-1] for k in _keys(default_config())})
        close = difflib.get_close_matches(locked.group(1), leaves, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"config file {path}: {who} sets the unknown key "
                           f"{locked.group(1)!r}{at} (the config schema is locked){hint}")
    return ConfigError(f"config file {path}: {who} raised {type(e).__name__}{at}: "
                       f"{_one_line(e)}")


def to_json(cfg: ml_collections.ConfigDict) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)


def from_dict(d: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A full config from a (possibly partial) nested dict over the defaults."""
    cfg = default_config()
    flat: dict[str, Any] = {}

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}{k}"
            if _is_map(v) and name not in OPEN_KEYS:
                walk(v, name + ".")
            elif _is_map(v):
                for kk, vv in v.items():
                    flat[f"{name}.{kk}"] = vv
            else:
                flat[name] = v

    walk(d, "")
    return apply_overrides(cfg, {k: v for k, v in flat.items()})
