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
import importlib.util
import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

ALGOS = ("grpo", "ppo")
# Advantage estimators that read a critic's values (see agentic_rl.rl.advantages).
CRITIC_ESTIMATORS = ("gae", "turn_gae", "bilevel_gae")
DEFAULT_ESTIMATOR = {"grpo": "grpo", "ppo": "gae"}
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
    c.rollout.temperature = 1.0
    c.rollout.top_p = 1.0
    c.rollout.top_k = 0
    c.rollout.length_bucket = 64
    c.rollout.step_timeout_s = 60.0

    c.rl = ml_collections.ConfigDict()
    c.rl.algo = "grpo"  # grpo (group baseline, no critic) or ppo (value head + GAE)
    c.rl.kl_coef = 0.0  # KL to the reference policy (LoRA off, or the initial weights)
    c.rl.kl_mode = "loss"  # "loss" (GRPO style) or "reward" (per-token penalty, PPO-RLHF)
    c.rl.entropy_coef = 0.0
    c.rl.vf_coef = 0.5  # ppo only
    # Also put the loss on the environment's tokens between turns (observations, tool
    # results), for the ablation. Off by default: the policy did not choose those tokens,
    # so a policy gradient on them is no gradient of the return; it only teaches the
    # policy to predict (or, with a negative advantage, to avoid predicting) the
    # environment's text, which adds variance and can make it imitate tool output.
    # The prompt is never trained on.
    c.rl.train_on_observations = False
    c.rl.advantage = ml_collections.ConfigDict(
        {"estimator": "", "level": "outcome", "whiten": False, "whiten_weighting": "token",
         "gamma": 1.0, "lam": 1.0, "turn_gamma": -1.0, "turn_lam": 0.95}
    )  # estimator "" = the algo's default (grpo -> grpo, ppo -> gae); turn_gamma -1 = env's
    c.rl.loss = ml_collections.ConfigDict(
        {"policy_loss": "ppo", "aggregation": "token_mean", "kl_estimator": "k3",
         "clip_eps": 0.2, "clip_eps_low": 0.2, "clip_eps_high": 0.28, "dual_clip_c": 3.0,
         "gspo_eps_low": 3e-4, "gspo_eps_high": 4e-4, "cispo_eps_low": 1.0,
         "cispo_eps_high": 1.0, "tis_cap": 2.0, "value_clip_eps": 0.2, "loss_norm_const": 1.0}
    )

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 1e-5
    c.optim.schedule = "constant"  # constant, linear (decay to 0) or cosine
    c.optim.warmup_steps = 0  # in optimizer updates
    c.optim.weight_decay = 0.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.max_grad_norm = 1.0

    c.train = ml_collections.ConfigDict()
    c.train.max_steps = 100
    c.train.num_epochs = 1  # passes over each rollout batch
    c.train.num_minibatches = 1  # optimizer updates per epoch
    c.train.micro_batch_size = 0  # rows per gradient-accumulation slice; 0 = whole minibatch
    c.train.score_batch_size = 0  # rows per no-grad scoring pass; 0 = whole batch
    # Use the sampler's log-probs as the pre-update policy instead of a scoring pass (saves
    # a forward pass; only valid for untempered sampling, and skipped when a critic or a
    # KL reference needs the pass anyway).
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


def uses_critic(cfg: ml_collections.ConfigDict) -> bool:
    return estimator(cfg) in CRITIC_ESTIMATORS


def validate(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks keys, names and the consistency of a full config; returns it."""
    from agentic_rl.rl import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES

    check_keys(cfg)
    _choice("rl.algo", cfg.rl.algo, ALGOS)
    _choice("rl.kl_mode", cfg.rl.kl_mode, ("loss", "reward"))
    _choice("rl.advantage.estimator", estimator(cfg), ADVANTAGES.names())
    _choice("rl.loss.policy_loss", cfg.rl.loss.policy_loss, POLICY_LOSSES.names())
    _choice("rl.loss.aggregation", cfg.rl.loss.aggregation, AGGREGATIONS.names())
    _choice("rl.loss.kl_estimator", cfg.rl.loss.kl_estimator, KL_ESTIMATORS.names())
    _choice("optim.schedule", cfg.optim.schedule, ("constant", "linear", "cosine"))
    _choice("checkpoint.best_mode", cfg.checkpoint.best_mode, ("max", "min"))
    if cfg.rl.algo == "ppo" and not uses_critic(cfg):
        raise ConfigError(
            f"rl.algo='ppo' trains a critic, so rl.advantage.estimator must be one of "
            f"{', '.join(CRITIC_ESTIMATORS)} (got {estimator(cfg)!r}); use rl.algo='grpo' for "
            "critic-free estimators"
        )
    if cfg.rl.algo == "grpo" and uses_critic(cfg):
        raise ConfigError(
            f"rl.advantage.estimator={estimator(cfg)!r} needs a critic; set rl.algo='ppo'"
        )
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
    if cfg.train.reuse_sample_logprobs and (r.temperature != 1.0 or r.top_p < 1.0 or r.top_k):
        raise ConfigError(
            "train.reuse_sample_logprobs needs untempered sampling (rollout.temperature=1, "
            "top_p=1, top_k=0): otherwise the sampler's log-probs are not the policy's"
        )
    if cfg.train.reuse_sample_logprobs and cfg.rl.train_on_observations:
        raise ConfigError(
            "rl.train_on_observations needs the scoring pass: the sampler has no log-probs "
            "for observation tokens; set train.reuse_sample_logprobs=False"
        )
    check_env_kwargs(cfg)
    return cfg


# ------------------------------------------------------------------ loading and overrides


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
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ConfigError(f"--config.{key} expects a number, got {text!r}") from None
        if isinstance(current, int) and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"--config.{key} expects an int, got {text!r}")
        return type(current)(value)
    if isinstance(current, str):
        return text
    try:  # new keys (env.kwargs) take Python literals; anything else stays a string
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any]):
    """Sets dotted keys ("rl.kl_coef" -> value); string values are parsed to the key's type.

    Unknown keys raise ConfigError listing the valid ones; keys under env.kwargs are
    free-form here and checked against the env factory by `validate`.
    """
    valid = _keys(default_config())
    for key, value in overrides.items():
        open_parent = next((p for p in OPEN_KEYS if key.startswith(p + ".")), None)
        if open_parent is None and key not in valid:
            check_keys(_nest({key: None}), where="overrides")
            raise _unknown_key_error(key, valid, "overrides")  # a group name, not a leaf
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        if isinstance(value, str):
            current = node[leaf] if leaf in node else None
            value = _parse_value(value, current, key)
        with node.unlocked():
            node[leaf] = value
    return cfg


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/file.py[:variant]` by calling its `get_config(variant)`."""
    path_str, _, variant = spec.partition(":")
    path = Path(path_str)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    name = f"_agentic_rl_config_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} defines no get_config(variant) function")
    params = inspect.signature(module.get_config).parameters
    cfg = module.get_config(variant or None) if params else module.get_config()
    return cfg


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
