"""The outer RL loop: sample tasks, roll out, score, compute advantages, update, log, save.

One training step:
  1. the next `tasks_per_step` training tasks (a pure function of the data position);
  2. `group_size` episodes of each with the current policy (`SamplerPolicy`, KV cache);
  3. host-side transforms of the EpisodeBatch (padding to a fixed row count, the shared
     prefix; `agentic_rl.rollout.batch`), then its `LearnerBatch`;
  4. `learner_step` (train/learner.py), one jitted, donated function: the scoring pass
     (old log-probs, values, reference log-probs at the sampling temperature), the
     advantages and epochs x minibatches of guarded updates;
  5. metrics (JSONL / TensorBoard / progress bar), evaluation every `eval.every` steps
     with sample trajectories, and a checkpoint.

Everything random is derived from `seed`, the step number and the checkpointed PRNG key,
and the data position is checkpointed, so a run restarted with the same workdir resumes
exactly: its metrics equal those of an uninterrupted run (timing fields aside).

Asynchronous training (`train.max_off_policy_steps = S > 0`, train/async_rollout.py):
step 2's rollout runs on a producer thread while step 1 trains; batch j is sampled by
the weights of version j - S (fixed lag, so runs reproduce). A resumed run is consistent,
not bit-exact: the checkpoint holds the position of the batches *trained*, so batches
sampled but not trained when it stopped are sampled again, by the restored weights (no
task is trained twice or skipped; the first S batches after a resume are on-policy).
`train.partial_rollouts="resume"` switches episodes still running when newer weights
arrive to them at their next turn (timing-dependent; each row records every turn's
version in `policy_versions`).

Imports: agentic_rl.rl, rollout, agents, models and the train modules.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentic_rl.agents import evaluate_policy, run_episodes
from agentic_rl.models import merge_lora, save_hf_model
from agentic_rl.rl import DPOConfig
from agentic_rl.rollout import (
    EvalReport,
    RolloutResult,
    episode_summaries,
    eval_metrics,
    pad_rows,
    share_prefix,
)
from agentic_rl.rollout.preferences import load_preference_pairs, preference_batch
from agentic_rl.rollout.sampler_policy import SamplerPolicy
from agentic_rl.shapes import leading_rows, shared_prefix
from agentic_rl.train import builders, distributed, viewer
from agentic_rl.train.async_rollout import AsyncRollouts
from agentic_rl.train.checkpoint import Checkpointer, write_json
from agentic_rl.train.config import (
    ConfigError,
    agent_estimators,
    agent_names,
    critic_chain,
    num_adapters,
    uses_critic,
    uses_reference,
    validate,
)
from agentic_rl.train.config_files import to_json
from agentic_rl.train.learner import (
    LearnerBatch,
    LearnerConfig,
    make_learner_step,
    needs_cut_column,
)
from agentic_rl.train.metrics import MetricsWriter
from agentic_rl.train.progress import Progress
from agentic_rl.train.state import (
    batch_sharding,
    has_lora,
    init_train_state,
    make_mesh,
    make_schedule,
    place_state,
    tree_shardings,
)
from agentic_rl.train.step import StepConfig


class NonFiniteError(RuntimeError):
    """Updates kept producing non-finite losses or gradients; the run stopped."""


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _rewind_jsonl(path: Path, last_step: int) -> None:
    """Keeps the metrics lines of steps <= `last_step` (rewritten atomically). A line that
    does not parse (the tail of a write cut short by a kill) is dropped with a warning."""
    if not path.exists():
        return
    keep = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            step = int(row.get("step", 0))
        except (ValueError, TypeError, AttributeError):
            print(f"warning: {path}: dropping unreadable line {i + 1} (a write cut short?)",
                  file=sys.stderr)
            continue
        if step <= last_step:
            keep.append(line + "\n")
    _write_atomic(path, "".join(keep))


def _drop_trajectories(directory: Path, after: int) -> None:
    """Deletes the trajectory files of steps > `after` (they are rewritten when the run
    gets there again)."""
    if not directory.is_dir():
        return
    for p in directory.glob("step_*.*"):
        digits = p.stem.removeprefix("step_")
        if digits.isdigit() and int(digits) > after:
            p.unlink(missing_ok=True)


def _eval_line(step: int, metrics: dict[str, Any]) -> str:
    """'eval @ step 0: success 11.5% · valid tool calls 10.7% · mean return 0.126 ·
    in_distribution 14.1% · larger_operands 6.2% · 182 s' (the main job's first)."""
    bits = [f"eval @ step {step}:"]
    for label, key in (("success", "eval/success_rate"),
                       ("valid tool calls", "eval/tool_call_validity_rate"),
                       ("mean return", "eval/mean_return")):
        v = metrics.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            bits.append(f"{label} {v:.1%}" if "rate" in key else f"{label} {v:.3f}")
    for key, v in sorted(metrics.items()):  # per task subset, when the split has them
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == "success_rate" and isinstance(v, float):
            bits.append(f"{parts[1]} {v:.1%}")
    bits.append(f"{metrics.get('time/eval_s', 0.0):.0f} s")
    return bits[0] + " " + " · ".join(bits[1:])


class _NoWriter:
    """The metrics writer of processes other than 0 (only process 0 writes files)."""

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _split_local(module):
    """(graphdef, state) of a module with its arrays copied to this process's first
    device (distributed.local_copy): for process-local sampling and export."""
    graphdef, state = nnx.split(module)
    return graphdef, distributed.local_copy(state)


class Trainer:
    """Runs (or resumes) one experiment in `workdir` from a config.

    `policy` / `suite` may be passed pre-built (the AgentTrainer facade does so); by
    default they are built from `cfg.model` and `cfg.env`. `agent` / `reward` are an agent
    program and its reward function given as Python callables (else `cfg.agent.*`).
    """

    def __init__(self, cfg, workdir: str | Path, *, policy: builders.PolicyBundle | None = None,
                 suite=None, agent=None, reward=None, progress: Progress | None = None):
        self.cfg = validate(cfg)
        # before any device is used (a no-op when the CLI did it, or for one process)
        distributed.initialize(cfg.distributed)
        self.primary = distributed.is_primary()
        self.progress = progress or Progress(enabled=bool(cfg.log.progress))
        self.workdir = Path(workdir)
        if self.primary:
            self.workdir.mkdir(parents=True, exist_ok=True)
        distributed.barrier("agentic_rl:workdir")
        self.suite = suite or builders.build_suite(cfg)
        # rollout.backend="ray": the environments run in Ray actors (envs/ray_backend.py)
        self.env_pool = None
        if cfg.rollout.backend == "ray":
            self.env_pool, self.suite = builders.ray_env_pool(cfg, self.suite,
                                                              from_config=suite is None)
        self._name_agents(agent)
        self.num_adapters = num_adapters(cfg)
        self.policy = policy or builders.build_policy(cfg)
        self.train_tasks = list(self.suite.tasks.split(cfg.env.train_split))
        # Rows per step: one per episode; an agent program may make several (a rewritten
        # history starts a new row), up to agent.rows_per_episode; the environment loop
        # with a context strategy, one per rewrite more (`builders.rows_per_episode`).
        per_episode = builders.rows_per_episode(cfg, program=bool(cfg.agent.program or agent))
        self.rows = cfg.rollout.tasks_per_step * cfg.rollout.group_size * per_episode
        self.mesh, self.sampler_device = self._placement()
        self._sampler_frozen, self.frozen_moves = None, 0  # see _sampler_copy
        self._check_divisibility()

        c = cfg.rl
        self.critic = uses_critic(cfg)
        self.need_ref = uses_reference(cfg)
        self._set_schedules()
        state = init_train_state(self.policy.model, builders.optimizer(cfg), seed=cfg.seed,
                                 need_ref_copy=self.need_ref)
        self.lora = has_lora(state.params)
        self.shardings = tree_shardings(state, self.mesh, cfg.train.fsdp)
        self.state = place_state(state, self.mesh, cfg.train.fsdp)
        self.batch_sharding = batch_sharding(self.mesh)
        self.learner_fn = make_learner_step(self.shardings, self.batch_sharding)
        step = StepConfig(
            loss=builders.loss_config(cfg), kl_coef=c.kl_coef, entropy_coef=c.entropy_coef,
            vf_coef=c.vf_coef, num_epochs=cfg.train.num_epochs,
            num_minibatches=cfg.train.num_minibatches,
            micro_batch_size=cfg.train.micro_batch_size,
            kl_in_loss=c.kl_coef > 0 and c.kl_mode == "loss",
            use_entropy=c.entropy_coef > 0, use_critic=self.critic, mesh=self.mesh,
            temperature=float(cfg.rollout.temperature))
        # The learner's hyperparameters; prefix_len and with_cut_values are set per batch.
        self.learner_config = LearnerConfig(
            step=step, advantage=builders.advantage_config(cfg, self.suite.gamma),
            need_ref=self.need_ref, kl_reward=c.kl_coef > 0 and c.kl_mode == "reward",
            score_chunk=cfg.train.score_batch_size or self.rows,
            reuse_sample_logprobs=bool(cfg.train.reuse_sample_logprobs),
            agent_advantages=self._agent_advantages(),
            algo="dpo" if c.algo == "dpo" else "pg",
            dpo=DPOConfig(beta=c.dpo.beta, label_smoothing=c.dpo.label_smoothing),
            dpo_min_margin=c.dpo.min_margin)
        # Offline DPO: ranked pairs from a file take the place of rollouts.
        self.preference_pairs = (load_preference_pairs(c.dpo.pairs_file)
                                 if c.algo == "dpo" and c.dpo.pairs_file else None)
        self.rollout_cfg = builders.rollout_config(cfg)
        # Evaluation runs in batches of the training rows: the sampler's batch (and so
        # the cost of every decode step of every rollout) is sized by the training batch,
        # not by the larger of the two.
        eval_rows = (min(cfg.eval.num_episodes, self.rows)
                     if cfg.eval.every or cfg.eval.at_start else 1)
        self.sampler = SamplerPolicy(
            self.policy.model.lm, self.policy.tokenizer, max_rows=max(self.rows, eval_rows),
            params=builders.sampling_params(cfg), seed=cfg.seed,
            capacity=cfg.rollout.max_episode_tokens)
        self.eval_rows = eval_rows
        # Agent programs (agent.program): their LLM calls reach the sampler through the
        # batching engine and the chat service (and the gateway for transport "http").
        self.programs = None
        if cfg.agent.credit != "team" and not (cfg.agent.program or agent is not None):
            raise ConfigError(f"agent.credit={cfg.agent.credit!r} is credit between the "
                              "agents of an agent program: set agent.program (or pass one)")
        if cfg.agent.program or agent is not None:
            from agentic_rl.train.programs import ProgramRollouts

            self.programs = ProgramRollouts(cfg, self.sampler, self.policy.chat_format,
                                            self.suite, builders.sampling_params(cfg),
                                            agent=agent, reward_fn=reward)

        # The LLM judge (judge.enabled): scores each group of training episodes; its part
        # of the reward is added between the rollout and the advantages.
        self.judge = None
        if cfg.judge.enabled:
            from agentic_rl.train.judging import TrainJudge

            self.judge = TrainJudge(cfg, self.policy, self.policy.model.lm)

        # Asynchronous rollouts (train.max_off_policy_steps > 0): a producer thread,
        # started by `train()`; it and `evaluate` take turns on the sampler under the lock.
        self.producer: AsyncRollouts | None = None
        self._sampler_lock = threading.Lock()
        if cfg.train.max_off_policy_steps and distributed.is_multiprocess():
            raise ConfigError(
                "train.max_off_policy_steps > 0 is single-process for now: every process "
                "samples the same batch locally, and a producer thread per process would "
                "need the processes' updates and rollouts kept in lockstep")
        self.ckpt = Checkpointer(self.workdir / "checkpoints", keep=cfg.checkpoint.keep,
                                 best_mode=cfg.checkpoint.best_mode)
        self.step = 0  # training steps completed
        self.position = 0  # training tasks consumed
        self.best: dict[str, Any] | None = None
        self.nonfinite_streak = 0
        self.resumed_from: int | None = None
        self._restore_or_start()
        # The last training batch (host arrays, after padding), the learner config it was
        # trained with, its advantages and the episodes' metadata: for the trajectory
        # viewer and the benchmarks.
        self.last_batch: LearnerBatch | None = None
        self.last_learner_config: LearnerConfig | None = None  # with the batch's prefix
        self.last_advantages: np.ndarray | None = None
        self.last_metadata: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ setup

    def _set_schedules(self) -> None:
        """The policy's learning-rate schedule over the run's horizon, and the critic's
        when it has a chain of its own (else None), for logging."""
        o, total = self.cfg.optim, builders.total_updates(self.cfg)
        self.schedule = make_schedule(o, total)
        self.critic_schedule = (make_schedule(o, total, o.critic_learning_rate or o.learning_rate)
                                if critic_chain(self.cfg) else None)

    def _name_agents(self, agent) -> None:
        """Per-agent adapters and estimators need the agents' names (hence ids) up front
        (adapter i = agent i): from agent.names, else from the program when it is an
        AgentSystem."""
        cfg = self.cfg
        if cfg.agent.names or (cfg.model.lora_adapters != "per_agent"
                               and not agent_estimators(cfg)):
            return
        if agent is None and cfg.agent.program:
            from agentic_rl.agents import load_agent

            agent = load_agent(cfg.agent.program, cfg.agent.kwargs.to_dict(),
                               suite=self.suite, transport=cfg.agent.transport)
        names = tuple(getattr(agent, "names", ()) or ())
        if names:
            with cfg.unlocked():
                cfg.agent.names = ",".join(names)

    def _agent_advantages(self):
        """rl.advantage.per_agent as (agent id, AdvantageConfig) pairs (ids: agent.names)."""
        chosen = agent_estimators(self.cfg)
        if not chosen:
            return ()
        names = agent_names(self.cfg)
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ConfigError(f"rl.advantage.per_agent names {unknown}, not agents of this "
                              f"program ({', '.join(names) or 'agent.names is empty'})")
        base = builders.advantage_config(self.cfg, self.suite.gamma)
        return tuple((names.index(n), base.replace(estimator=est)) for n, est in chosen.items())

    def set_max_steps(self, max_steps: int) -> None:
        """Changes the run's horizon, and the learning-rate schedule with it (a linear or
        cosine decay ends at the new last step; warm-up is unchanged). The optimizer's
        moments and step count are kept: the schedule is a function of that count."""
        if max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1, got {max_steps}")
        if max_steps == self.cfg.train.max_steps:
            return
        with self.cfg.unlocked():
            self.cfg.train.max_steps = int(max_steps)
        self._set_schedules()
        self.state = self.state.replace(tx=builders.optimizer(self.cfg))
        # the optimizer is static in the state's tree: new shardings, a new compiled step
        self.shardings = tree_shardings(self.state, self.mesh, self.cfg.train.fsdp)
        self.learner_fn = make_learner_step(self.shardings, self.batch_sharding)
        if self.primary:
            _write_atomic(self.workdir / "config.json", to_json(self.cfg))

    def _placement(self):
        """(train mesh, the sampler's own device or None): train.sampler_placement."""
        if self.cfg.train.sampler_placement == "colocated":
            return make_mesh(), None
        devices = jax.devices()
        if distributed.is_multiprocess() or len(devices) < 2:
            raise ConfigError(
                f"train.sampler_placement='separate' puts the sampler on a device of its own "
                f"and trains on the others: it needs one process with >= 2 devices, found "
                f"{len(devices)} device(s) in {jax.process_count()} process(es); use "
                "'colocated'")
        return make_mesh(devices[:-1]), devices[-1]

    def _check_divisibility(self) -> None:
        n = self.mesh.shape["data"]
        t = self.cfg.train
        micro = t.micro_batch_size or self.rows // t.num_minibatches
        score_rows = t.score_batch_size or self.rows
        if micro % n or self.rows % score_rows:
            raise ConfigError(
                f"with {n} devices the micro-batch ({micro} rows) must be a multiple of {n}, "
                f"and train.score_batch_size ({score_rows}) must divide the {self.rows} rows"
            )

    def _restore_or_start(self) -> None:
        """Resumes from the newest intact checkpoint (a corrupt or incomplete newer one is
        reported and moved out of the way), or starts afresh when none was ever committed.
        Everything written after the restored step (metrics lines, trajectory files) is
        dropped, so the run continues as if it had stopped right after that step."""
        found = self.ckpt.restore_latest(self.state)
        config_path = self.workdir / "config.json"
        if found is None:
            if self.primary:
                _write_atomic(config_path, to_json(self.cfg))
                (self.workdir / "metrics.jsonl").unlink(missing_ok=True)
                _drop_trajectories(self.workdir / "trajectories", after=-1)
            return
        latest, self.state, host = found
        self.step = int(host["step"])
        self.position = int(host["position"])
        self.best = host.get("best")
        self.nonfinite_streak = int(host.get("nonfinite_streak", 0))
        self.resumed_from = self.step
        if not self.primary:
            return
        _rewind_jsonl(self.workdir / "metrics.jsonl", self.step)
        _drop_trajectories(self.workdir / "trajectories", after=self.step)
        _write_atomic(config_path, to_json(self.cfg))
        print(f"resumed from {self.ckpt.directory / str(latest)} at step {self.step}",
              file=sys.stderr)

    def host_state(self) -> dict[str, Any]:
        """What a checkpoint stores besides the arrays: the step, the data position, the
        best evaluation so far and the non-finite streak."""
        return {"step": self.step, "position": self.position, "best": self.best,
                "nonfinite_streak": self.nonfinite_streak}

    # ------------------------------------------------------------------ one step

    def _sync_sampler(self, *, greedy: bool, seed: int, model=None, version=None,
                      source=None) -> None:
        """Point the sampler at the current weights (or `model`: an async batch's
        `version`; `source`: where newer weights come from when partial rollouts resume
        on them), sampling settings and a fresh seed.

        The per-call seed matters: the sampler derives each draw from (seed, episode id,
        turn), and episode ids repeat every step, so a fixed seed would replay the same
        random numbers at every step.
        """
        params = builders.sampling_params(self.cfg, greedy=greedy)
        if model is None:  # (a separate sampler: its own copy, on its own device)
            model = (self._sampler_copy() if self.sampler_device is not None
                     else self.state.model().lm)
        if self.sampler_device is None and distributed.is_multiprocess():
            # Sampling is process-local: a copy of the weights on this process's first
            # device (decoding over the global mesh would cross hosts at every token).
            model = nnx.merge(*_split_local(model))

        def sync(sampler: SamplerPolicy) -> None:
            # an agent that outlived its episode's timeout may still hold a row
            sampler.release(list(sampler.rows))
            sampler.update_model(model)
            if self.sampler_device is not None:  # its KV cache on its device too
                b = sampler.sampler
                b.cache, b.next_logits = jax.device_put((b.cache, b.next_logits),
                                                        self.sampler_device)
            sampler.version = self.step if version is None else version
            sampler.turn_versions = {}
            sampler.weight_source = source
            sampler.params = params
            sampler.sampler.seed = seed

        if self.programs is None:
            sync(self.sampler)
        else:  # the engine's thread is the sampler's only user
            self.programs.sync(sync)

    def rollout(self):
        """The rollout of the next step (synchronous: the current weights)."""
        if self.preference_pairs is not None:
            return self._preference_rollout()
        result, metrics, self.position = self._rollout_at(self.step, self.position)
        return result, metrics

    def _rollout_at(self, step: int, position: int, model=None, version=None):
        """The rollout of step `step + 1` from data position `position`, sampled by
        `model` (default: the current weights; else the weights of `version`) ->
        (result, metrics, next position). A function of its arguments (and, with
        partial rollouts resumed on newer weights, of when they arrive): the producer
        thread of async training calls it too."""
        cfg = self.cfg
        idx = builders.task_indices(len(self.train_tasks), position,
                                    cfg.rollout.tasks_per_step, cfg.seed)
        tasks = [self.train_tasks[i] for i in idx]
        seed = _seed(cfg.seed, step, 1)
        with self._sampler_lock:
            return self._sample(tasks, step, seed, model, version) + (position + len(tasks),)

    def _sample(self, tasks, step: int, seed: int, model, version=None):
        cfg = self.cfg
        source = None
        if version is not None and cfg.train.partial_rollouts == "resume":
            source = self._newest_weights
        self._sync_sampler(greedy=False, seed=seed, model=model, version=version,
                           source=source)
        generated = self.sampler.stats["generated_tokens"]
        t0 = time.perf_counter()
        if self.programs is not None:
            result = self.programs.run(tasks, group_size=cfg.rollout.group_size, seed=seed,
                                       sampling=builders.sampling_params(cfg),
                                       credit=cfg.agent.credit)
        else:
            with self.progress.episodes(len(tasks) * cfg.rollout.group_size,
                                        f"rollout step {step + 1}") as on_episode:
                result = run_episodes(self.sampler, self.policy.chat_format,
                                      self.suite.make_env, tasks,
                                      group_size=cfg.rollout.group_size,
                                      config=self.rollout_cfg, seed=seed, on_episode=on_episode)
        dt = time.perf_counter() - t0
        new_tokens = self.sampler.stats["generated_tokens"] - generated
        if version is not None:  # an async batch: which weights sampled each turn
            turns = self.sampler.turn_versions
            for rec in result.records:
                rec.metadata["policy_versions"] = list(turns.get(rec.metadata["episode_id"],
                                                                 ()))
        return result, {"time/rollout_s": dt, "perf/tokens_per_s": new_tokens / max(dt, 1e-9)}

    def _newest_weights(self, after: int):
        """Weights published after version `after` (partial rollouts resumed on them)."""
        producer = self.producer
        return producer.newest(after) if producer is not None else None

    def _next_rollout(self):
        """The step's batch: sampled now (synchronous), or taken from the producer."""
        if self.producer is None:
            return self.rollout()
        waited = self.producer.waited_s
        ahead = self.producer.ready()
        produced = self.producer.next()
        result, metrics, self.position = produced.value
        metrics = dict(metrics)
        metrics["async/staleness"] = float(self.step - produced.version)
        metrics["perf/batches_ready"] = float(ahead)  # timing-dependent
        metrics["time/wait_s"] = self.producer.waited_s - waited
        per_turn = {}
        for rec in result.records:
            rec.metadata["policy_version"] = produced.version
            per_turn[rec.metadata["episode_id"]] = rec.metadata.get("policy_versions") or \
                [produced.version]
        if result.batch is not None:
            for meta in result.batch.metadata:
                meta["policy_version"] = produced.version
                meta["policy_versions"] = per_turn.get(meta.get("episode_id"),
                                                       [produced.version])
        if per_turn:
            newest = max(max(v) for v in per_turn.values())
            metrics["async/staleness_min"] = float(self.step - newest)
            metrics["async/resumed_fraction"] = sum(
                len(set(v)) > 1 for v in per_turn.values()) / len(per_turn)
        return result, metrics

    def _sampler_copy(self):
        """The LM in arrays the learner will not donate (it donates its own to the next
        update; an async batch's sampler keeps using these): the trained params copied (with
        train.sampler_placement="separate", moved device to device to the sampler's
        device: the copy is the move); the frozen ones (a LoRA base) never change, so they
        are copied once and shared by every version (LoRA: only the adapters move)."""
        st = self.state
        dev = self.sampler_device
        copy = (lambda t: jax.device_put(t, dev)) if dev is not None else (
            lambda t: jax.tree.map(jnp.copy, t))
        if self._sampler_frozen is None:
            self._sampler_frozen = copy(st.frozen)
            self.frozen_moves += 1
        return nnx.merge(st.graphdef, copy(st.params), self._sampler_frozen).lm

    def _start_producer(self) -> None:
        lag = int(self.cfg.train.max_off_policy_steps)
        if not lag or self.preference_pairs is not None or self.producer is not None:
            return
        start, position = self.step, self.position
        per_step = self.cfg.rollout.tasks_per_step

        def produce(step: int, model):  # model: the weights of version max(start, step - lag)
            return self._rollout_at(step, position + (step - start) * per_step, model,
                                    max(start, step - lag))

        self.producer = AsyncRollouts(produce, start=start, weights=self._sampler_copy(),
                                      lag=lag, limit=lambda: self.cfg.train.max_steps)

    def _stop_producer(self) -> None:
        if self.producer is not None:
            self.producer.close()
            self.producer = None

    def _preference_rollout(self):
        """The next tasks_per_step pairs of the preference file, as the step's batch."""
        cfg = self.cfg
        pairs = self.preference_pairs
        idx = builders.task_indices(len(pairs), self.position, cfg.rollout.tasks_per_step,
                                    cfg.seed)
        t0 = time.perf_counter()
        batch = preference_batch([pairs[i] for i in idx], self.policy.chat_format,
                                 length_bucket=cfg.rollout.length_bucket,
                                 max_tokens=cfg.rollout.max_episode_tokens)
        self.position += len(idx)
        metrics = {"num_episodes": float(batch.batch_size),
                   "truncated_rate": float(np.mean(batch.truncated))}
        return (RolloutResult(batch=batch, records=[], errors=[], metrics=metrics),
                {"time/rollout_s": time.perf_counter() - t0})

    def prefix_len(self, tokens: np.ndarray, attention_mask: np.ndarray) -> int:
        """The rows' shared prefix length for the update (0 = off). Off on a multi-device
        mesh: the shared forward flattens the rows, which the data sharding would split."""
        if not self.cfg.train.shared_prefix or self.mesh.devices.size > 1 or \
                self.num_adapters > 1:  # rows of different agents differ from token 0 on
            return 0
        return shared_prefix(leading_rows(tokens, attention_mask), min_rows=1,
                             width=np.shape(tokens)[1])

    def learner_batch(self, episodes) -> tuple[LearnerBatch, LearnerConfig]:
        """An EpisodeBatch of this step -> (host LearnerBatch, learner config for it):
        padded to the step's rows, padding rows given the shared prefix."""
        episodes = pad_rows(episodes, self.rows)
        prefix_len = self.prefix_len(episodes.tokens, episodes.attention_mask)
        episodes = share_prefix(episodes, prefix_len)
        batch = LearnerBatch.from_episodes(
            episodes, train_on_observations=bool(self.cfg.rl.train_on_observations),
            num_adapters=self.num_adapters,
            row_agents=bool(self.learner_config.agent_advantages))
        hp = self.learner_config
        hp = hp.replace(step=hp.step.replace(prefix_len=prefix_len),
                        with_cut_values=needs_cut_column(batch, hp))
        return batch, hp

    def train_step(self) -> dict[str, Any]:
        """One rollout + update. Returns the step's metrics (without evaluation)."""
        t0 = time.perf_counter()
        result, metrics = self._next_rollout()
        if result.batch is None and not result.errors:
            raise RuntimeError(
                f"step {self.step}: no row to train on: every row was dropped (an episode "
                "keeps its last agent.rows_per_episode rows; a multi-agent program makes one "
                "per agent) or frozen (agent.train_agents)")
        self._log_errors(result.errors)
        if result.batch is None:
            raise RuntimeError(f"step {self.step}: every episode failed: {result.errors[:3]}")
        if self.judge is not None:
            t_judge = time.perf_counter()
            result.batch, judge_metrics, _ = self.judge.apply(result.batch,
                                                              self.state.model().lm)
            metrics.update(judge_metrics)
            metrics["time/judge_s"] = time.perf_counter() - t_judge
        batch, hp = self.learner_batch(result.batch)
        t = self.cfg.train
        # the learning rate of this step's first optimizer update
        update = self.step * t.num_epochs * t.num_minibatches
        metrics["train/learning_rate"] = float(self.schedule(update))
        if self.critic_schedule is not None:
            metrics["train/critic_learning_rate"] = float(self.critic_schedule(update))
        t1 = time.perf_counter()
        # Every process holds this same host batch (distributed.py); device_put makes it
        # one global array, each process placing the rows of its own devices.
        distributed.assert_same_on_all(f"the batch of step {self.step + 1}", batch.tokens,
                                       batch.loss_mask, batch.turn_rewards)
        self.state, train_metrics = self.learner_fn(
            self.state, jax.device_put(batch, self.batch_sharding), hp)
        train_metrics = distributed.to_host(train_metrics)
        advantages = np.asarray(train_metrics.pop("advantages"))
        train_metrics = {k: float(v) for k, v in train_metrics.items()}
        self.step += 1
        metrics["time/update_s"] = time.perf_counter() - t1
        if self.producer is not None and (self.producer.wants(self.step) or (
                self.cfg.train.partial_rollouts == "resume"
                and self.step < self.cfg.train.max_steps)):
            # (resume: the batches still being sampled switch to it, even the last)
            self.producer.publish(self.step, self._sampler_copy())
        metrics["perf/shared_prefix_len"] = hp.step.prefix_len
        metrics["time/step_s"] = time.perf_counter() - t0
        # which data the step trained: the position after it, and a checksum of its rows'
        # task ids (audits of a resumed run: no task trained twice or skipped)
        metrics["data/position"] = float(self.position)
        metrics["data/tasks_crc32"] = float(zlib.crc32("\n".join(
            str(m.get("task_id", "")) for m in result.batch.metadata).encode()))
        metrics.update({f"rollout/{k}": v for k, v in result.metrics.items()})
        metrics.update({f"train/{k}": v for k, v in train_metrics.items()})
        self.last_batch, self.last_learner_config = batch, hp
        self.last_advantages = advantages
        self.last_metadata = list(result.batch.metadata)
        self._check_finite(int(train_metrics["skipped"]))
        return metrics

    def _log_errors(self, errors) -> None:
        """Dropped episodes, one JSON line each, in `errors.jsonl` (the metrics count them;
        this keeps why: stage, message and traceback) for step `self.step + 1`."""
        if not errors or not self.primary:
            return
        with open(self.workdir / "errors.jsonl", "a") as f:
            for e in errors:
                f.write(json.dumps({"step": self.step + 1, **dataclasses.asdict(e)}) + "\n")

    def _check_finite(self, skipped: int) -> None:
        if not skipped:
            self.nonfinite_streak = 0
            return
        self.nonfinite_streak += skipped
        print(f"step {self.step}: skipped {skipped} update(s) with a non-finite loss or "
              f"gradient ({self.nonfinite_streak} in a row)", file=sys.stderr)
        limit = self.cfg.train.max_nonfinite
        if self.nonfinite_streak >= limit:
            raise NonFiniteError(
                f"stopping at step {self.step}: {self.nonfinite_streak} consecutive updates had a "
                f"non-finite loss or gradient (train.max_nonfinite={limit}). Params are those "
                "of the last good update; lower optim.learning_rate, check the rewards for "
                "NaN/inf, or raise optim.max_grad_norm clipping."
            )

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> dict[str, Any]:
        """Greedy (by default) episodes on the held-out split; saves sample trajectories."""
        with self._sampler_lock:  # an async producer's rollout ends first
            return self._evaluate()

    def _evaluate(self) -> dict[str, Any]:
        cfg = self.cfg
        self._sync_sampler(greedy=cfg.eval.greedy, seed=_seed(cfg.seed, 2))
        t0 = time.perf_counter()
        num = min(cfg.eval.num_episodes, len(self.suite.tasks.split(cfg.env.eval_split)))
        how = "greedy" if cfg.eval.greedy else "sampled"
        self.progress.say(f"evaluating step {self.step} on {num} {cfg.env.eval_split!r} "
                          f"tasks ({how})")
        with self.progress.episodes(num, f"eval @ step {self.step}") as on_episode:
            if self.programs is not None:
                report = self._evaluate_programs(num, on_episode)
            else:
                report = evaluate_policy(self.sampler, self.policy.chat_format, self.suite,
                                         num_episodes=num, split=cfg.env.eval_split,
                                         batch_size=self.eval_rows, config=self.rollout_cfg,
                                         seed=cfg.seed, on_episode=on_episode)
        metrics = {f"eval/{k}": v for k, v in report.metrics.items()}
        metrics["time/eval_s"] = time.perf_counter() - t0
        self.progress.say(_eval_line(self.step, metrics))
        self._save_trajectories(report.episodes)
        return metrics

    def _evaluate_programs(self, num: int, on_episode=None) -> EvalReport:
        """`evaluate_policy` for agent programs: one episode per eval task, in batches of
        the eval rows, with the eval sampling settings (`on_episode` hears of each batch's
        episodes when the batch ends)."""
        cfg = self.cfg
        tasks = list(self.suite.tasks.split(cfg.env.eval_split))[:num]
        sampling = builders.sampling_params(cfg, greedy=cfg.eval.greedy)
        episodes, errors = [], []
        for i, start in enumerate(range(0, len(tasks), self.eval_rows)):
            result = self.programs.run(tasks[start:start + self.eval_rows], group_size=1,
                                       seed=cfg.seed + i, sampling=sampling,
                                       collate_batch=False)
            done = episode_summaries(result.records)  # an episode split into rows: once
            episodes.extend(done)
            errors.extend(result.errors)
            if on_episode is not None:
                for meta in [*done, *[None] * len(result.errors)]:
                    on_episode(meta)
        return EvalReport(eval_metrics(episodes, errors, tasks), episodes, errors)

    def _save_trajectories(self, eval_episodes) -> None:
        n = self.cfg.eval.num_trajectories
        if n <= 0:
            return
        records = []
        if self.last_batch is not None:
            b = self.last_batch
            records += viewer.records_from_batch(
                self.last_metadata, b.turn_rewards, self.last_advantages, b.turn_index,
                b.loss_mask, step=self.step, limit=n)
        records += [viewer.trajectory_record(e, step=self.step, kind="eval")
                    for e in viewer.spread(eval_episodes, n)]
        if self.primary:
            viewer.save_trajectories(self.workdir / "trajectories", self.step, records)

    def _update_best(self, metrics: dict[str, Any]) -> bool:
        key = self.cfg.checkpoint.best_metric
        value = metrics.get(key)
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.ckpt.is_better(value, self.best):
            self.best = {"step": self.step, "value": float(value), "metric": key}
            return True
        return False

    # ------------------------------------------------------------------ driver

    def train(self) -> list[dict[str, Any]]:
        """Runs until train.max_steps; returns the metrics of the steps run in this call."""
        cfg = self.cfg
        history: list[dict[str, Any]] = []
        writer = (MetricsWriter(self.workdir, total_steps=cfg.train.max_steps,
                                start_step=self.step, tensorboard=cfg.log.tensorboard,
                                progress=cfg.log.progress)
                  if self.primary else _NoWriter())
        try:
            with self.progress.watch_compiles():
                self._train_steps(writer, history)
        finally:
            self._stop_producer()
            writer.close()
        if cfg.checkpoint.export_final and self.step >= cfg.train.max_steps:
            out = self.workdir / "export"
            with self.progress.phase(f"exported the policy to {out}",
                                     start="exporting the policy (LoRA merged, HF format)"):
                self.export(out)
        return history

    def _train_steps(self, writer: MetricsWriter, history: list[dict[str, Any]]) -> None:
        cfg = self.cfg
        if cfg.eval.at_start and self.step == 0:
            writer.write(0, self.evaluate())
        self._start_producer()
        while self.step < cfg.train.max_steps:
            metrics = self.train_step()
            every = cfg.eval.every
            evaluated = bool(every) and (self.step % every == 0
                                         or self.step == cfg.train.max_steps)
            if evaluated:
                metrics.update(self.evaluate())
            is_best = evaluated and self._update_best(metrics)
            writer.write(self.step, metrics)
            history.append({"step": self.step, **metrics})
            if (self.step % cfg.checkpoint.every == 0 or is_best
                    or self.step == cfg.train.max_steps):
                with self.progress.phase(f"saved the checkpoint of step {self.step}"):
                    self.ckpt.save(self.step, self.state, self.host_state())

    def export(self, out_dir: str | Path) -> Path:
        """Writes the current policy (LoRA merged) as a HF model directory; with one
        adapter per agent, one directory per agent (`out_dir/<agent>`, that agent's adapter
        merged)."""
        if self.num_adapters > 1:
            for k, name in enumerate(agent_names(self.cfg)):
                self._export_one(Path(out_dir) / name, adapter=k)
            return Path(out_dir)
        return self._export_one(Path(out_dir))

    def _export_one(self, out_dir: Path, adapter: int | None = None) -> Path:
        model = self.state.model()
        if distributed.is_multiprocess():  # every process gathers; process 0 writes
            model = nnx.merge(*_split_local(model))
            if not self.primary:
                return Path(out_dir)
        if self.lora:
            merge_lora(model, adapter=adapter)
        path = save_hf_model(model.lm, out_dir, tokenizer=self.policy.hf_tokenizer)
        write_json(Path(out_dir) / "agentic_rl_train.json",
                   {"step": self.step, "workdir": str(self.workdir.absolute())})
        return path

    def close(self) -> None:
        self._stop_producer()
        if self.judge is not None:
            self.judge.close()
        if self.programs is not None:
            self.programs.close()
        if self.env_pool is not None:
            self.env_pool.close()
            self.env_pool = None
        self.ckpt.close()
