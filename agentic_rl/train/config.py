"""Trainer configuration: the defaults (the schema) and the rules a full config must meet.

Every key a run can take is in `default_config()`; an experiment file starts from it and
changes values. The returned ConfigDict is locked, so a misspelled key in an experiment
file fails at once, and `validate` rejects unknown keys with the valid names (and the
closest match) and inconsistent combinations. `env.kwargs` is the one open mapping: its
keys are the environment factory's keyword arguments and are checked against its
signature. The derived questions the trainer asks of a config (`uses_critic`,
`num_adapters`, ...) live here too, so they are answered the same way everywhere.
Reading configs from files and the shell (`load_config_file`, `apply_overrides`, type
checks) is `train/config_files.py`.

The module is long because `default_config` is the whole schema, one block per section
with a comment per key; it is one thing and reads best in one place.

Imports: the standard library and ml_collections; the registries of `agentic_rl.rl`,
`agentic_rl.envs` and `agentic_rl.agents` only inside the functions that check names.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

ALGOS = ("grpo", "ppo", "dpo")
DEFAULT_ESTIMATOR = {"grpo": "grpo", "ppo": "gae", "dpo": "grpo"}  # dpo: unused
OPEN_KEYS = ("env.kwargs", "agent.kwargs")  # free-form mappings, validated elsewhere


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
    # Memory at length (models.ModelConfig): remat recomputes each layer in the backward
    # pass (less activation memory, about one more forward of compute); attention_chunk
    # takes full-sequence attention's queries in blocks of that many tokens, so scores
    # are [heads, block, T] and a step's memory grows linearly with the episode length
    # (0 = the plain [heads, T, T] kernel; episodes up to that length are unaffected).
    c.model.remat = False
    c.model.attention_chunk = 1024
    c.model.tiny = ml_collections.ConfigDict(
        {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4,
         "num_kv_heads": 2}
    )

    c.env = ml_collections.ConfigDict()
    c.env.name = "calculator"
    c.env.kwargs = ml_collections.ConfigDict()  # keyword arguments of the env factory
    c.env.train_split = "train"
    c.env.eval_split = "eval"
    # Every environment step first sleeps this long (x (1 +- jitter)): a slow tool or API,
    # for benchmarks of what overlaps with environment time (envs.suite.SlowEnv). 0: off.
    c.env.step_latency_s = 0.0
    c.env.step_latency_jitter = 0.0

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
    # How long a sampler batch waits for slow episodes (it goes at once when every live
    # episode's request is in). Shorter: fast episodes need not wait for slow ones; but
    # which requests share a call then depends on timing, and a call's shapes change the
    # float rounding of its log-probs (tokens stay the same, keyed by episode and turn,
    # until a near-tie flips): on a loaded machine two runs of one config drift apart.
    # Long enough that every turn's call holds every live episode = bit-reproducible runs
    # (experiments/tiny_learning.py: 60 s).
    c.rollout.straggler_wait_s = 0.2
    c.rollout.max_workers = 32  # threads stepping environments concurrently
    # Where environments run (agentic_rl/envs/ray_backend.py): "threads" (in this process)
    # or "ray" (in `ray_workers` Ray actors: a local Ray started here, or the cluster at
    # ray_address, e.g. "auto" or "ray://head:10001"). Generation stays batched here.
    c.rollout.backend = "threads"
    c.rollout.ray_address = ""
    c.rollout.ray_workers = 2
    c.rollout.max_error_fraction = 0.25  # episodes an env may fail before the step fails
    c.rollout.max_tool_calls = 1  # tool calls allowed per turn (more: an error, none run)
    c.rollout.max_tool_call_chars = 4096  # one call's JSON, bounded before parsing
    # Long episodes (agentic_rl.agents.context): full | window | memory | summarize. Not
    # full: a call sees keep_turns to keep_turns + rewrite_every - 1 earlier turns, and
    # each rewrite starts a new row of the episode (rows per step grow to match).
    c.rollout.context = ml_collections.ConfigDict()
    c.rollout.context.strategy = "full"
    c.rollout.context.keep_turns = 4
    c.rollout.context.rewrite_every = 4
    c.rollout.context.memory_chars = 600  # memory: the notes' cap
    c.rollout.context.summary_chars = 800  # summarize: the summary's cap

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
         "team_reward_weight": 1.0, "posted_reward_weight": 1.0, "credit": "team"})
    c.agent.kwargs = ml_collections.ConfigDict()  # a registered program's own options
    # team_reward_weight / posted_reward_weight: credit between agents, a row's reward is
    # posted x the rewards posted during the episode (per-agent ones: ctx.reward(v, agent=))
    # + team x the program's returned (team) reward.
    # credit: "team" (that reward as it is) or "counterfactual": each agent's team reward
    # minus the return of the program re-run with its first call and everything after
    # resampled, the calls before replayed (runtime.counterfactual_baselines; one more,
    # partial run per agent per training episode; in-process calls only).
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
    # Asynchronous training (train/async_rollout.py): S > 0 samples the next steps' batches
    # on a thread while the learner trains, batch j by the weights of version j - S (the
    # staleness is always S once warm; fixed, so runs reproduce). Pair it with an
    # off-policy correction (rl.loss.off_policy). 0 = the synchronous loop, exactly.
    c.train.max_off_policy_steps = 0
    # Episodes still running when the learner publishes newer weights (async only):
    # "finish" them on the version they started with (the default: a whole batch per
    # version, reproducible), or "resume" them on the newest one at their next turn
    # (re-prefilled with it; less stale, but which turn switches depends on timing, so
    # runs no longer reproduce exactly). Each row's metadata records the version of every
    # turn (`policy_versions`); async/resumed_fraction and async/staleness_min are logged.
    c.train.partial_rollouts = "finish"
    c.train.fsdp = False  # shard params on their 'embed' axis over the data mesh axis
    # Where the sampler runs on a machine with several devices: "colocated" (on the train
    # mesh, with the learner's own arrays) or "separate" (disaggregated: on the last local
    # device with its own copy of the weights, moved there device to device after each
    # update; the train mesh spans the other devices). Separate lets sampling and the
    # update run at the same time on different chips (async training) and keeps the
    # sampler's KV cache out of the learner's memory. Single process only.
    c.train.sampler_placement = "colocated"

    # A relative LLM judge (agentic_rl.agents.judge, RULER-shaped): each task's group of
    # training episodes is shown to a judge model at once with a rubric and gets one score
    # in [0, 1] per episode, added to the episode's final turn reward before the
    # advantages. Evaluation stays on the verifier's reward. source: "policy" (the policy
    # being trained, frozen at the step, in a greedy sampler of its own with
    # max_context_tokens of KV cache), a model name / HF directory / .gguf (loaded once,
    # chat_format its template), or an http(s):// OpenAI-compatible base URL (model: the
    # name sent). mode "weighted": reward = w_verifier * verifier + w_judge * judge
    # (w_verifier=0: judge reward only); "tiebreak": the judge adds at most eps and only
    # orders episodes whose verifier returns tie. rubric / prompt / system: "" = the
    # module's defaults; the prompt's placeholders are {n} {task} {trajectories} {rubric}.
    # Malformed replies are asked once more (retries), then get `neutral` (judge/malformed).
    c.judge = ml_collections.ConfigDict()
    c.judge.enabled = False
    c.judge.source = "policy"
    c.judge.chat_format = "smollm2"
    c.judge.model = "policy"
    c.judge.mode = "weighted"
    c.judge.w_verifier = 1.0
    c.judge.w_judge = 1.0
    c.judge.eps = 0.01
    c.judge.rubric = ""
    c.judge.prompt = ""
    c.judge.system = ""
    c.judge.max_new_tokens = 192
    c.judge.max_context_tokens = 2048
    c.judge.max_chars_per_trajectory = 2000
    c.judge.max_chars_per_message = 600
    c.judge.retries = 1
    c.judge.neutral = 0.5

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

    # Multi-process / multi-host JAX (train/distributed.py). Empty fields fall back to
    # JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, JAX_LOCAL_DEVICE_IDS;
    # none set: one process.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # host:port of process 0
    c.distributed.num_processes = 0
    c.distributed.process_id = -1
    c.distributed.local_device_ids = ""  # comma-separated, e.g. "0,1"
    c.distributed.auto = False  # let JAX detect the cluster (SLURM, Open MPI, k8s, TPU)
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


def frozen_adapters(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The adapter indices of the agents that `agent.train_agents` leaves frozen (per-agent
    adapters only; with one shared adapter a frozen agent has no weights of its own). The
    optimizer zeroes these adapters' updates: their rows leave the batch, but AdamW's
    weight decay would still shrink their slices every step."""
    if cfg.model.lora_adapters != "per_agent" or not cfg.agent.train_agents:
        return ()
    trainable = re.compile(cfg.agent.train_agents)
    return tuple(i for i, name in enumerate(agent_names(cfg)) if not trainable.fullmatch(name))


def uses_reference(cfg: ml_collections.ConfigDict) -> bool:
    """Reference log-probs are computed for DPO, a KL term or a loss that reads them."""
    return cfg.rl.algo == "dpo" or cfg.rl.kl_coef > 0 or "ref_logprobs" in loss_reads(cfg)


def judge_settings(cfg) -> tuple[Any, Any]:
    """(JudgeConfig, Combine) of `cfg.judge`; ConfigError for a bad setting."""
    from agentic_rl.agents.judge import Combine, JudgeConfig

    j = cfg.judge
    defaults = JudgeConfig()
    try:
        judge = JudgeConfig(rubric=j.rubric or defaults.rubric, prompt=j.prompt or
                            defaults.prompt, system=j.system or defaults.system,
                            max_prompt_tokens=j.max_context_tokens - j.max_new_tokens - 8,
                            max_chars_per_trajectory=j.max_chars_per_trajectory,
                            max_chars_per_message=j.max_chars_per_message, neutral=j.neutral,
                            retries=j.retries, model_key=j.source)
        combine = Combine(j.mode, w_verifier=j.w_verifier, w_judge=j.w_judge, eps=j.eps)
    except ValueError as e:
        raise ConfigError(f"judge: {e}") from None
    return judge, combine


def check_judge(cfg) -> None:
    j = cfg.judge
    _choice("judge.mode", j.mode, ("weighted", "tiebreak"))
    if j.max_new_tokens < 1 or j.max_context_tokens < j.max_new_tokens + 72:
        raise ConfigError(f"judge.max_context_tokens={j.max_context_tokens} must leave room "
                          f"for a prompt besides judge.max_new_tokens={j.max_new_tokens}")
    if cfg.rl.algo == "dpo" and cfg.rl.dpo.pairs_file:
        raise ConfigError("judge.enabled scores rollouts; offline DPO (rl.dpo.pairs_file) "
                          "has none")
    if cfg.rollout.group_size < 2:
        raise ConfigError("judge.enabled compares the episodes of a group: set "
                          "rollout.group_size >= 2")
    judge_settings(cfg)


def validate(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks keys, names and the consistency of a full config; returns it."""
    from agentic_rl.rl import (
        ADVANTAGES,
        AGGREGATIONS,
        KL_ESTIMATORS,
        OFF_POLICY,
        POLICY_LOSSES,
    )
    from agentic_rl.rollout.types import CONTEXT_STRATEGIES

    check_keys(cfg)
    _choice("rl.algo", cfg.rl.algo, ALGOS)
    ctx = cfg.rollout.context
    _choice("rollout.context.strategy", ctx.strategy, CONTEXT_STRATEGIES)
    if ctx.keep_turns < 0 or ctx.rewrite_every < 1:
        raise ConfigError("rollout.context: keep_turns must be >= 0 and rewrite_every >= 1, "
                          f"got {ctx.keep_turns} and {ctx.rewrite_every}")
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
    _choice("agent.credit", cfg.agent.credit, ("team", "counterfactual"))
    if cfg.agent.credit == "counterfactual" and cfg.agent.transport != "inprocess":
        raise ConfigError("agent.credit='counterfactual' replays a program's calls in "
                          "process: it needs agent.transport='inprocess' (HTTP calls "
                          "cannot be replayed)")
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
    _choice("rollout.backend", cfg.rollout.backend, ("threads", "ray"))
    if cfg.rollout.backend == "ray" and cfg.rollout.ray_workers < 1:
        raise ConfigError(f"rollout.ray_workers must be >= 1, got {cfg.rollout.ray_workers}")
    if not cfg.env.step_latency_s >= 0 or not 0 <= cfg.env.step_latency_jitter <= 1:
        raise ConfigError(f"env.step_latency_s must be >= 0 and env.step_latency_jitter in "
                          f"[0, 1], got {cfg.env.step_latency_s}, {cfg.env.step_latency_jitter}")
    lag = cfg.train.max_off_policy_steps
    if isinstance(lag, bool) or not isinstance(lag, int) or lag < 0:
        raise ConfigError(f"train.max_off_policy_steps must be an integer >= 0 (0: "
                          f"synchronous), got {lag!r}")
    if cfg.train.sampler_placement not in ("colocated", "separate"):
        raise ConfigError(f"train.sampler_placement must be 'colocated' or 'separate', got "
                          f"{cfg.train.sampler_placement!r}")
    if cfg.train.partial_rollouts not in ("finish", "resume"):
        raise ConfigError(f"train.partial_rollouts must be 'finish' or 'resume', got "
                          f"{cfg.train.partial_rollouts!r}")
    if cfg.train.partial_rollouts == "resume" and not lag:
        raise ConfigError("train.partial_rollouts='resume' switches running episodes to newer "
                          "weights, which only asynchronous training has; set "
                          "train.max_off_policy_steps > 0 (or partial_rollouts='finish')")
    if lag and cfg.rl.algo == "dpo" and cfg.rl.dpo.pairs_file:
        raise ConfigError("train.max_off_policy_steps > 0 overlaps sampling with training, "
                          "but offline DPO (rl.dpo.pairs_file) samples nothing; set it to 0")
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
    if cfg.judge.enabled:
        check_judge(cfg)
    from agentic_rl.train.builders import rollout_config

    try:  # the rollout's own range checks, reported as config errors
        rollout_config(cfg)
    except ValueError as e:
        raise ConfigError(f"rollout: {e}") from None
    check_env_kwargs(cfg)
    return cfg
