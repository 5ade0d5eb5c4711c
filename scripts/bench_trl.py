"""End-to-end GRPO step benchmark: TRL `GRPOTrainer` (torch, CPU) vs our Trainer (JAX).

    python scripts/bench_trl.py                          # both sides, interleaved
    python scripts/bench_trl.py --steps 4 --profile --json /tmp/bench_trl.json
    python scripts/bench_trl.py --ours-only --model tiny --ours-warmup 1 --steps 1   # smoke

One process runs both sides on the same single-turn task: generated arithmetic problems
(`agentic_rl.envs.generate_arithmetic_tasks`, 1-2 operations), a system prompt asking for
`<answer>NUMBER</answer>`, rendered with the SmolLM2 chat template, reward = numeric
correctness of the final answer (`agentic_rl.envs.numeric_answer_reward`). Same model:
SmolLM2-135M-Instruct fp32 (TRL loads our converted HF directory). Same batch: 4 prompts x
8 generations per step, at most 64 new tokens, temperature 1, top-p 1, top-k 0. Both sides
do full fine-tuning, beta (KL) 0, PPO-clip loss with eps 0.2 aggregated as a token mean
(TRL's default `dapo`), AdamW (weight decay 0, grad-norm clip 1.0) at the same constant
learning rate, and exactly one optimizer update per step on all 32 completions at once
(TRL: per_device_train_batch_size=32, gradient_accumulation_steps=1, so
generation_batch_size=32 and steps_per_generation=1). Neither side runs a separate no-grad
scoring pass: TRL skips it when generation and updates are aligned (old log-probs =
detached current ones), ours reuses the sampler's log-probs (`train.reuse_sample_logprobs`,
valid for untempered sampling). TRL runs without gradient checkpointing (its default is
on, which costs an extra forward; `--trl-gradient-checkpointing` restores it).

Timing: a step is from its start to the optimizer update applied. TRL: the Trainer's
`on_step_begin` -> `on_step_end` callbacks (generation, reward, loss, backward, clipping,
AdamW). Ours: `Trainer.train_step()` (rollout, batch preparation, jitted update, metrics
fetched to host). Warm-up steps are excluded: ours runs `--ours-warmup` steps first (the
first compiles), TRL `--trl-warmup`. Then, with `--order interleave` (default), every
measured TRL step is followed by one measured step of ours inside TRL's `on_step_end`
callback (outside TRL's timed window), so load changes on a shared machine hit both sides
alike. Medians over `--steps` measured steps per side are reported.

FLOP floor of our step: 6 x params x trained tokens (forward + backward over every
position of the [rows, T] batch the update processes, padding included) + 2 x params x
generated tokens (one forward per sampled token), divided by the fp32 matmul peak
measured in this process (jitted jnp.dot of --peak-size square matrices). A variant
counting only non-pad trained tokens is printed too. Prefill and attention FLOPs are
left out of the floor.

Needs `pip install -e ".[bench]"` (TRL) for the TRL side; `--ours-only` runs without it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sampler import _median_time  # noqa: E402  (a sibling script, not a package)

SYSTEM = ("You are a careful math assistant. Solve the problem step by step, then give the "
          "final answer as <answer>NUMBER</answer>.")


# ------------------------------------------------------------------ the shared task


def make_tasks(n: int, seed: int):
    from agentic_rl.envs import generate_arithmetic_tasks

    return generate_arithmetic_tasks(n, seed, min_ops=1, max_ops=2, id_prefix="bench")


def task_messages(task) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task.prompt}]


def reward_fn():
    from agentic_rl.envs import numeric_answer_reward

    return numeric_answer_reward()


@dataclass
class SingleTurnMathEnv:
    """One assistant turn, then the numeric-correctness reward (tool calls are not run)."""

    tools: tuple = ()
    _task: Any = None
    _reward: Any = field(default_factory=reward_fn)

    def reset(self, task, seed):
        del seed
        self._task = task
        return task_messages(task)

    def step(self, action):
        from agentic_rl.envs import StepResult

        r = self._reward(action.text, self._task)
        return StepResult([], r, True, {"success": r > 0})


# ------------------------------------------------------------------ our side


def build_ours(args, tasks):
    from agentic_rl.envs import EnvSuite, TaskSet
    from agentic_rl.train.config import default_config
    from agentic_rl.train.loop import Trainer

    c = default_config()
    c.seed = args.seed
    c.model.name = args.model
    c.model.chat_format = "smollm2"
    c.model.lora_rank = 0  # full fine-tuning, like TRL's default
    c.env.name = "calculator"  # validated name only; the suite below replaces it
    c.rollout.tasks_per_step = args.prompts
    c.rollout.group_size = args.generations
    c.rollout.max_turns = 1
    c.rollout.max_new_tokens = args.max_new_tokens
    c.rollout.max_episode_tokens = args.max_episode_tokens
    c.rollout.length_bucket = args.length_bucket
    c.rollout.temperature = 1.0
    c.rl.algo = "grpo"
    c.rl.kl_coef = 0.0
    c.rl.loss.policy_loss = "ppo"
    c.rl.loss.aggregation = "token_mean"
    c.rl.loss.clip_eps = 0.2
    c.optim.learning_rate = args.lr
    c.optim.weight_decay = 0.0
    c.optim.max_grad_norm = 1.0
    c.train.max_steps = 10_000
    c.train.num_epochs = 1
    c.train.num_minibatches = 1
    c.train.micro_batch_size = args.micro_batch_size
    c.train.reuse_sample_logprobs = True
    c.eval.every = 0
    c.checkpoint.every = 10_000
    c.checkpoint.export_final = False
    c.log.tensorboard = False
    c.log.progress = False
    from agentic_rl.train.config_files import apply_overrides

    apply_overrides(c, args.config_overrides)  # --config.a.b=VALUE, the trainer's syntax
    suite = EnvSuite("bench_single_turn", SingleTurnMathEnv,
                     TaskSet({"train": tasks, "eval": tasks[:4]}))
    workdir = tempfile.mkdtemp(prefix="bench_trl_ours_")
    return Trainer(c, workdir, suite=suite)


def count_params(trainer) -> int:
    import jax

    return int(sum(np.size(x) for x in jax.tree.leaves(trainer.state.params)))


def instrument_sampler(trainer) -> list[tuple[int, float]]:
    """Records (requests, seconds) of every policy.generate call of our rollouts."""
    calls: list[tuple[int, float]] = []
    inner = trainer.sampler.generate

    def generate(requests):
        t = time.perf_counter()
        out = inner(requests)
        calls.append((len(requests), time.perf_counter() - t))
        return out

    trainer.sampler.generate = generate
    return calls


_COMPILE_S = [0.0]  # seconds XLA spent compiling (backend) so far in this process


def _watch_compiles() -> None:
    import jax

    def listen(name, secs, **kw):
        if name == "/jax/core/compile/backend_compile_duration":
            _COMPILE_S[0] += secs

    jax.monitoring.register_event_duration_secs_listener(listen)


def ours_step(trainer, calls: list[tuple[int, float]]) -> dict[str, Any]:
    gen0 = trainer.sampler.stats["generated_tokens"]
    n0 = len(calls)
    c0 = _COMPILE_S[0]
    t0 = time.perf_counter()
    m = trainer.train_step()
    dt = time.perf_counter() - t0
    b = trainer.last_batch
    mine = calls[n0:]
    return {
        "compile_s": _COMPILE_S[0] - c0,
        "generate_calls": [n for n, _ in mine],
        "generate_s": sum(t for _, t in mine),
        "step_s": dt,
        "rollout_s": m["time/rollout_s"],
        "update_s": m["time/update_s"],
        "generated_tokens": int(trainer.sampler.stats["generated_tokens"] - gen0),
        "rows": int(b.tokens.shape[0]),
        "T": int(b.tokens.shape[1]),
        "nonpad_tokens": int(b.attention_mask.sum()),
        "completion_tokens": int(b.loss_mask.sum()),
        "reward_mean": float(np.asarray(b.turn_rewards).sum(axis=1).mean()),
        "skipped": m.get("train/skipped", 0.0),
        # rows' common prefix, computed once per micro-batch by the update (0 = off)
        "prefix_len": int(m.get("perf/shared_prefix_len", 0)),
    }


def profile_ours(trainer, repeats: int) -> dict[str, float]:
    """Times the pieces of our step in isolation on the last rollout batch's shapes."""
    import jax
    import optax

    from agentic_rl.train.learner import score_and_advantages
    from agentic_rl.train.step import loss_sums, score

    out: dict[str, float] = {}
    host_batch = trainer.last_batch
    block = jax.block_until_ready

    # Rollout pieces: prefill all prompts, then decode the turn (same settings as a step).
    sp = trainer.sampler
    sp.update_model(trainer.state.model().lm)  # the update donated the weights it held
    s = sp.sampler
    fmt = trainer.policy.chat_format
    idx = range(trainer.cfg.rollout.tasks_per_step)
    prompts = [fmt.encode_prompt(task_messages(trainer.train_tasks[i])) for i in idx]
    prompts = [p for p in prompts for _ in range(trainer.cfg.rollout.group_size)]
    rows = list(range(len(prompts)))
    stop_ids = [fmt.end_of_turn_id]
    stop_strings = list(trainer.rollout_cfg.stop_strings)

    def prefill():
        s.reset(rows)
        s.extend({r: p for r, p in zip(rows, prompts)})
        block(s.next_logits)

    def decode():
        s.sample(rows, max_new_tokens=trainer.cfg.rollout.max_new_tokens, params=sp.params,
                 stop_token_ids=stop_ids, stop_strings=stop_strings)

    prefill()
    decode()  # warm (compiled already by the steps, but be sure)
    pre, dec, ntok = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        prefill()
        pre.append(time.perf_counter() - t)
        t = time.perf_counter()
        o = s.sample(rows, max_new_tokens=trainer.cfg.rollout.max_new_tokens, params=sp.params,
                     stop_token_ids=stop_ids, stop_strings=stop_strings)
        dec.append(time.perf_counter() - t)
        ntok.append(sum(len(c.tokens) for c in o.values()))
    s.reset(rows)
    out["rollout_prefill_s"] = statistics.median(pre)
    out["rollout_decode_s"] = statistics.median(dec)
    out["rollout_decode_generated_tokens"] = statistics.median(ntok)
    out["prompt_tokens"] = float(sum(len(p) for p in prompts))

    # Decode with no stop strings (one compiled call for the whole budget, no host checks).
    def decode_nostr():
        s.reset(rows)
        s.extend({r: p for r, p in zip(rows, prompts)})
        o = s.sample(rows, max_new_tokens=trainer.cfg.rollout.max_new_tokens, params=sp.params,
                     stop_token_ids=stop_ids)
        return sum(len(c.tokens) for c in o.values())

    decode_nostr()
    out["rollout_prefill+decode_no_stop_strings_s"] = _median_time(decode_nostr, repeats)
    s.reset(rows)

    # Update pieces, on one micro-batch (the update runs rows / micro of them, then AdamW).
    state = trainer.state
    hp = trainer.last_learner_config
    prepare = jax.jit(score_and_advantages)
    batch = block(prepare(state, host_batch, hp))
    out["prepare_batch_s"] = _median_time(lambda: block(prepare(state, host_batch, hp)), repeats)
    rows_total = batch.tokens.shape[0]
    step_hp = hp.step
    micro = step_hp.micro_batch_size or rows_total
    out["micro_batches"] = float(rows_total // micro)
    mb = jax.tree.map(lambda x: x[:micro], batch)

    fwd = lambda: block(score(state, mb.tokens, mb.attention_mask, chunk=micro,
                              with_values=False, with_ref=False))
    fwd()
    out["micro_forward_s"] = _median_time(fwd, repeats)

    grad_fn = jax.jit(jax.value_and_grad(loss_sums, has_aux=True))
    g = lambda: block(grad_fn(state.params, state, mb, step_hp))
    g()
    out["micro_forward_backward_s"] = _median_time(g, repeats)
    (_, _), grads = grad_fn(state.params, state, mb, step_hp)

    @jax.jit
    def opt(grads, opt_state, params):
        updates, new_opt = state.tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_opt

    o = lambda: block(opt(grads, state.opt_state, state.params))
    o()
    out["optimizer_s"] = _median_time(o, repeats)

    def full():  # the whole learner step: scoring, advantages and the update
        trainer.state, m = trainer.learner_fn(trainer.state, host_batch, hp)
        block(m)

    full()
    out["learner_step_s"] = _median_time(full, repeats)
    return out


# ------------------------------------------------------------------ TRL side


class _Timer:
    """Timestamps of TRL's steps plus the generation/scoring share and token counts."""

    def __init__(self):
        self.steps: list[dict[str, Any]] = []
        self._t0 = 0.0
        self._cur: dict[str, Any] = {}
        self.after_step = None  # callable run after each TRL step (interleaving)


def build_trl(args, tasks, hf_dir: str, timer: _Timer):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ds = Dataset.from_list([{"prompt": task_messages(t), "answer": t.answer} for t in tasks])
    reward = reward_fn()

    from agentic_rl.envs import Task

    def correctness(completions, answer, **kwargs):
        return [reward(c[-1]["content"] if isinstance(c, list) else c, Task("x", "", a))
                for c, a in zip(completions, answer)]

    rows = args.prompts * args.generations
    micro = args.micro_batch_size or rows
    total = args.trl_warmup + args.steps
    cfg = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench_trl_trl_"),
        use_cpu=True, bf16=False, fp16=False,
        per_device_train_batch_size=micro, gradient_accumulation_steps=rows // micro,
        generation_batch_size=rows,  # so steps_per_generation = gradient_accumulation_steps
        num_generations=args.generations, max_completion_length=args.max_new_tokens,
        temperature=1.0, top_p=1.0, top_k=0,
        beta=0.0, num_iterations=1, epsilon=0.2, loss_type="dapo",
        learning_rate=args.lr, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=1.0, warmup_steps=0,
        gradient_checkpointing=args.trl_gradient_checkpointing,
        max_steps=total, logging_steps=1, save_strategy="no", report_to=[],
        seed=args.seed, dataloader_num_workers=0, disable_tqdm=True,
    )

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            timer._cur = {}
            timer._t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            rec = {"step_s": time.perf_counter() - timer._t0, **timer._cur}
            timer.steps.append(rec)
            if timer.after_step is not None:
                timer.after_step(len(timer.steps))

        def on_log(self, a, state, control, logs=None, **kw):
            if timer.steps and logs and "reward" in logs:
                timer.steps[-1]["reward_mean"] = logs["reward"]

    trainer = GRPOTrainer(model=model, processing_class=tok, reward_funcs=[correctness],
                          args=cfg, train_dataset=ds, callbacks=[StepTimer()])
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)

    # Split TRL's step: generation + reward scoring vs the rest (loss, backward, AdamW).
    gen_and_score = trainer._generate_and_score_completions
    generate = trainer._generate

    def timed_gen_and_score(*a, **kw):
        t = time.perf_counter()
        out = gen_and_score(*a, **kw)
        timer._cur["generate_and_score_s"] = time.perf_counter() - t
        pm, cm = out["prompt_mask"], out["completion_mask"]
        timer._cur["rows"] = int(pm.shape[0])
        timer._cur["T"] = int(pm.shape[1] + cm.shape[1])
        timer._cur["nonpad_tokens"] = int(pm.sum() + cm.sum())
        timer._cur["generated_tokens"] = int(cm.sum())
        return out

    def timed_generate(*a, **kw):
        t = time.perf_counter()
        out = generate(*a, **kw)
        timer._cur["generate_s"] = time.perf_counter() - t
        return out

    trainer._generate_and_score_completions = timed_gen_and_score
    trainer._generate = timed_generate
    return trainer, model


# ------------------------------------------------------------------ matmul peak


def jax_matmul_peak(n: int, repeats: int) -> float:
    """GFLOP/s of a jitted fp32 n x n matmul (median over repeats)."""
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(k1, (n, n), jnp.float32)
    b = jax.random.normal(k2, (n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    t = _median_time(lambda: f(a, b).block_until_ready(), repeats)
    return 2 * n**3 / t / 1e9


def torch_matmul_peak(n: int, repeats: int) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t = _median_time(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / t / 1e9


# ------------------------------------------------------------------ driver


def _med(steps, key):
    vals = [s[key] for s in steps if key in s]
    return statistics.median(vals) if vals else float("nan")


def summarize(name: str, steps: list[dict[str, Any]], keys) -> dict[str, float]:
    return {k: _med(steps, k) for k in keys if any(k in s for s in steps)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="our model name (or 'tiny' with --ours-only)")
    ap.add_argument("--ours-warmup", type=int, default=2,
                    help="our unmeasured steps, run first (the first one compiles)")
    ap.add_argument("--trl-warmup", type=int, default=1, help="TRL's unmeasured steps")
    ap.add_argument("--steps", type=int, default=4, help="measured steps per side")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-episode-tokens", type=int, default=256)
    ap.add_argument("--length-bucket", type=int, default=64)
    ap.add_argument("--micro-batch-size", type=int, default=8,
                    help="rows per forward/backward slice on both sides (gradients accumulated "
                    "into one update; 0 = all rows at once, which needs > 13 GB here)")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-tasks", type=int, default=256)
    ap.add_argument("--order", choices=("interleave", "sequential"), default="interleave")
    ap.add_argument("--ours-only", action="store_true")
    ap.add_argument("--trl-gradient-checkpointing", action="store_true")
    ap.add_argument("--peak-size", type=int, default=2048)
    ap.add_argument("--peak-repeats", type=int, default=7)
    ap.add_argument("--profile", action="store_true",
                    help="also time our step's pieces (prefill, decode, fwd, fwd+bwd, optimizer)")
    ap.add_argument("--profile-repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", default=None, help="also write the results here")
    from agentic_rl.train.config_files import split_overrides

    # --config.a.b=VALUE overrides our trainer config (after the settings above)
    try:
        rest, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    except ValueError as e:
        ap.error(str(e))
    args = ap.parse_args(rest)
    args.config_overrides = overrides
    if args.model == "tiny" and not args.ours_only:
        ap.error("--model tiny needs --ours-only (TRL cannot load the tiny random model)")

    import jax

    tasks = make_tasks(args.num_tasks, args.seed)
    # the code measured: read now, before a long run gives time for the tree to change
    results: dict[str, Any] = {"args": vars(args), "load_before": os.getloadavg(),
                               "git": _git_state()}
    print(f"load average before: {os.getloadavg()}", flush=True)

    _watch_compiles()
    ours = build_ours(args, tasks)
    params = count_params(ours)
    results["params"] = params
    ours_steps: list[dict[str, Any]] = []
    total = args.ours_warmup + args.steps

    calls = instrument_sampler(ours)

    def floor_flop(rec, tokens_key):
        trained = rec["rows"] * rec["T"] if tokens_key == "padded" else rec["nonpad_tokens"]
        return 6 * params * trained + 2 * params * rec["generated_tokens"]

    def run_ours():
        rec = ours_step(ours, calls)
        ours_steps.append(rec)
        k = len(ours_steps)
        measured = k > args.ours_warmup
        if measured:  # the peak right after the step, so both see the same machine load
            rec["jax_peak_gflops"] = jax_matmul_peak(args.peak_size, 3)
            rec["efficiency_padded"] = (floor_flop(rec, "padded") / 1e9 / rec["jax_peak_gflops"]
                                        / rec["step_s"])
            rec["efficiency_nonpad"] = (floor_flop(rec, "nonpad") / 1e9 / rec["jax_peak_gflops"]
                                        / rec["step_s"])
        rec["load1"] = os.getloadavg()[0]
        print(f"ours step {k} ({'measured' if measured else 'warm-up'}): {rec['step_s']:.2f} s "
              f"(rollout {rec['rollout_s']:.2f}, of which generate {rec['generate_s']:.2f} in "
              f"calls of {rec['generate_calls']} rows; update {rec['update_s']:.2f}), "
              f"{rec['generated_tokens']} generated, [{rec['rows']}, {rec['T']}], reward "
              f"{rec['reward_mean']:.3f}, XLA compile {rec['compile_s']:.1f} s"
              + (f", peak {rec['jax_peak_gflops']:.1f} GFLOP/s, efficiency "
                 f"{100 * rec['efficiency_padded']:.1f}%" if measured else "")
              + f", load {rec['load1']:.1f}", flush=True)

    for _ in range(args.ours_warmup):
        run_ours()
    trl_timer = _Timer()
    versions = {"jax": jax.__version__}
    if not args.ours_only:
        import torch
        import transformers
        import trl

        torch.set_num_threads(args.threads)
        versions.update(torch=torch.__version__, transformers=transformers.__version__,
                        trl=trl.__version__)
        hf_dir = _hf_dir(args.model)
        trl_trainer, hf_model = build_trl(args, tasks, hf_dir, trl_timer)
        hf_params = sum(p.numel() for p in hf_model.parameters())
        results["hf_params"] = hf_params
        # Same prompt tokens on both sides?
        ids_ours = ours.policy.chat_format.encode_prompt(task_messages(tasks[0]))
        ids_hf = trl_trainer.processing_class.apply_chat_template(
            task_messages(tasks[0]), add_generation_prompt=True, tokenize=True,
            return_dict=True)["input_ids"]
        results["same_prompt_tokens"] = list(ids_ours) == list(ids_hf)
        print(f"params: ours {params:,}, HF {hf_params:,}; prompt tokens identical: "
              f"{results['same_prompt_tokens']} ({len(ids_ours)} tokens for task 0)", flush=True)

        def after_trl(k):
            rec = trl_timer.steps[-1]
            tag = "warm-up" if k <= args.trl_warmup else "measured"
            if k > args.trl_warmup:
                rec["torch_peak_gflops"] = torch_matmul_peak(args.peak_size, 3)
            rec["load1"] = os.getloadavg()[0]
            print(f"TRL  step {k} ({tag}): {rec['step_s']:.2f} s (generate+score "
                  f"{rec.get('generate_and_score_s', float('nan')):.2f}, of which generate "
                  f"{rec.get('generate_s', float('nan')):.2f}), "
                  f"{rec.get('generated_tokens')} generated, [{rec.get('rows')}, "
                  f"{rec.get('T')}], torch peak {rec.get('torch_peak_gflops', float('nan')):.1f}"
                  f" GFLOP/s, load {rec['load1']:.1f}", flush=True)
            if args.order == "interleave" and k > args.trl_warmup:
                run_ours()

        trl_timer.after_step = after_trl
        trl_trainer.train()
    if args.ours_only or args.order == "sequential":
        while len(ours_steps) < total:
            run_ours()

    keys = ("step_s", "rollout_s", "update_s", "generate_and_score_s", "generate_s",
            "generated_tokens", "rows", "T", "nonpad_tokens", "completion_tokens", "reward_mean",
            "jax_peak_gflops", "torch_peak_gflops", "efficiency_padded", "efficiency_nonpad")
    o = summarize("ours", ours_steps[args.ours_warmup:], keys)
    results["ours_steps"] = ours_steps
    results["ours"] = o
    results["ours_compile_step_s"] = ours_steps[0]["step_s"] if ours_steps else None
    if trl_timer.steps:
        measured = trl_timer.steps[args.trl_warmup:]
        tr = summarize("trl", measured, keys)
        tr["loss_and_update_s"] = _med(
            [{"x": s["step_s"] - s["generate_and_score_s"]} for s in measured
             if "generate_and_score_s" in s], "x")
        results["trl_steps"] = trl_timer.steps
        results["trl"] = tr
        results["ratio"] = tr["step_s"] / o["step_s"]

    # Matmul peak (also measured after every measured step) and the FLOP floor of our step.
    peak = jax_matmul_peak(args.peak_size, args.peak_repeats)
    results["jax_matmul_gflops_end"] = peak
    if not args.ours_only:
        results["torch_matmul_gflops_end"] = torch_matmul_peak(args.peak_size, args.peak_repeats)
    peak = o.get("jax_peak_gflops", peak)  # median of the per-step peaks
    results["jax_matmul_gflops"] = peak
    trained = int(ours_steps[-1]["rows"] * o["T"])
    flop = 6 * params * trained + 2 * params * o["generated_tokens"]
    flop_np = 6 * params * o["nonpad_tokens"] + 2 * params * o["generated_tokens"]
    # What the update actually runs: the rows' shared prefix once per micro-batch.
    rows = ours_steps[-1]["rows"]
    micro = args.micro_batch_size or rows
    plen = ours_steps[-1].get("prefix_len", 0)
    computed = rows // micro * (plen + micro * (int(o["T"]) - plen))
    flop_c = 6 * params * computed + 2 * params * o["generated_tokens"]
    results["floor_computed"] = {
        "prefix_len": plen, "trained_tokens": computed, "flop": flop_c,
        "floor_s": flop_c / (peak * 1e9), "efficiency": flop_c / (peak * 1e9) / o["step_s"]}
    results["floor"] = {
        "trained_tokens_padded": trained, "trained_tokens_nonpad": o["nonpad_tokens"],
        "generated_tokens": o["generated_tokens"],
        "flop_padded": flop, "flop_nonpad": flop_np,
        "floor_s_padded": flop / (peak * 1e9), "floor_s_nonpad": flop_np / (peak * 1e9),
        # medians of the per-step efficiencies (each against the peak measured right after)
        "efficiency_padded": o.get("efficiency_padded", flop / (peak * 1e9) / o["step_s"]),
        "efficiency_nonpad": o.get("efficiency_nonpad", flop_np / (peak * 1e9) / o["step_s"]),
    }
    if args.profile:
        results["profile"] = profile_ours(ours, args.profile_repeats)
    results["load_after"] = os.getloadavg()
    results["versions"] = versions
    _report(results, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=float)
    ours.close()
    return results


def _git_state() -> dict[str, Any]:
    """The commit and the locally modified files the run measured (read-only git calls)."""
    import subprocess

    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], capture_output=True, text=True,
                                  cwd=os.path.dirname(os.path.abspath(__file__))).stdout.rstrip()
        except OSError:
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            "modified": [ln[3:] for ln in git("status", "--porcelain").splitlines()]}


def _hf_dir(name: str) -> str:
    from agentic_rl.models.loading import resolve_model_dir

    return str(resolve_model_dir(name))


def _report(r: dict[str, Any], args) -> None:
    o, f = r["ours"], r["floor"]
    n_meas = args.steps
    print()
    print(f"SmolLM2-135M fp32 ({r['params']:,} params), {args.prompts} prompts x "
          f"{args.generations} generations, <= {args.max_new_tokens} new tokens, T=1; "
          f"median of {n_meas} steps per side (warm-up: ours {args.ours_warmup}, TRL "
          f"{args.trl_warmup})")
    print(f"  ours: {o['step_s']:.2f} s/step (rollout {o['rollout_s']:.2f} s, update "
          f"{o['update_s']:.2f} s); batch [{r['ours_steps'][-1]['rows']}, {o['T']:.0f}], "
          f"{o['generated_tokens']:.0f} generated tokens; compile step "
          f"{r['ours_compile_step_s']:.1f} s")
    if "trl" in r:
        t = r["trl"]
        print(f"  TRL:  {t['step_s']:.2f} s/step (generate+score {t['generate_and_score_s']:.2f} "
              f"s, of which generate {t.get('generate_s', float('nan')):.2f} s; loss+backward+"
              f"AdamW {t['loss_and_update_s']:.2f} s); batch [{t.get('rows', 0):.0f}, "
              f"{t.get('T', 0):.0f}], {t.get('generated_tokens', 0):.0f} generated tokens")
        print(f"  ratio TRL / ours: {r['ratio']:.2f}x (target >= 2.5x)")
    print(f"  matmul peak fp32 {args.peak_size}^2 (median over the measured steps): JAX "
          f"{r['jax_matmul_gflops']:.1f} GFLOP/s"
          + (f", torch {r['trl']['torch_peak_gflops']:.1f} GFLOP/s" if "trl" in r else "")
          + f"; at the end: JAX {r['jax_matmul_gflops_end']:.1f}"
          + (f", torch {r['torch_matmul_gflops_end']:.1f}" if "torch_matmul_gflops_end" in r
             else ""))
    print(f"  FLOP floor (padded, {f['trained_tokens_padded']} trained + "
          f"{f['generated_tokens']:.0f} generated tokens): {f['flop_padded'] / 1e12:.2f} TFLOP = "
          f"{f['floor_s_padded']:.2f} s at that peak; efficiency (median per step) "
          f"{100 * f['efficiency_padded']:.1f}% (target >= 50%)")
    print(f"  FLOP floor (non-pad, {f['trained_tokens_nonpad']:.0f} trained tokens): "
          f"{f['flop_nonpad'] / 1e12:.2f} TFLOP = {f['floor_s_nonpad']:.2f} s; efficiency "
          f"{100 * f['efficiency_nonpad']:.1f}%")
    c = r["floor_computed"]
    print(f"  tokens the update actually runs (shared prefix of {c['prefix_len']} once per "
          f"micro-batch): {c['trained_tokens']} -> {c['flop'] / 1e12:.2f} TFLOP = "
          f"{c['floor_s']:.2f} s; efficiency {100 * c['efficiency']:.1f}%")
    if "profile" in r:
        print("  our step's pieces (median, isolated):")
        for k, v in r["profile"].items():
            print(f"    {k}: {v:.3f}")
    print(f"  load average before {tuple(round(x, 2) for x in r['load_before'])}, after "
          f"{tuple(round(x, 2) for x in r['load_after'])}; versions {r['versions']}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
