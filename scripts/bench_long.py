"""Long episodes: update time and peak memory vs episode length, and the sampler's decode
speed vs context length.

    python scripts/bench_long.py                                   # smollm2, 2k..16k
    python scripts/bench_long.py --model tiny --lengths 2048 4096 8192 16384
    python scripts/bench_long.py --variants plain chunk chunk+remat --compile-only
    python scripts/bench_long.py --lengths 2048 4096 --no-decode --json /tmp/long.json

Update: for each length L and memory variant, a fresh subprocess builds `--rows` episode
rows of exactly L tokens (a 256-token prompt, then alternating sampled turns of 200-300
tokens, loss-masked, and observations of 100-400 tokens, a reward at each turn end; the
rows form one GRPO group with different rewards, so the gradient is not zero), and runs
the trainer's own jitted `learner_step` (scoring pass, advantages, then the update in
micro-batches of `--micro` rows; LoRA rank 8 as the trainer's default; AdamW) on it:

  compile_s   lowering + XLA compilation, timed apart from the steps
  step_s      median of `--repeats` steps
  xla_gib     XLA's compiled memory analysis: temporaries + arguments + outputs - aliased
              (donated) bytes. Deterministic: the number for "memory grows linearly"
  temp_gib    of which temporaries (activations, scores, gradients)
  rss_gib     growth of the process's peak RSS (VmHWM) over its RSS before compiling:
              what the run really took, compilation included; noisy

A variant whose XLA estimate exceeds `--max-gib` is compiled but not run (so its memory
is still reported). Variants: `plain` (no memory option, `attention_chunk=0`: the
triangle-skipping kernel at every length, quadratic memory),
`remat` (per-layer rematerialisation only), `chunk` (query-blocked attention,
`ModelConfig.attention_chunk=--chunk`, the default), `chunk+remat` (both).

Decode: a fresh subprocess per context length C fills one KV-cache row with C tokens
(prefilled in pieces of `--prefill-chunk`, as multi-turn observations are), then decodes
`--new-tokens` tokens (temperature 1, no stop); tok/s is the median of `--repeats`
decodes after one that compiles.

Prints the tables and the ratios from each length to the next (2L / L); figures in
docs/benchmarks.md ("Long episodes"). `--model smollm2` is the embedded SmolLM2-135M-
Instruct (fp32); `--model tiny` a 2-layer random model, for a quick run.

Imports: any layer (a script).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

GIB = 2**30
VARIANTS = {"plain": (0, False), "remat": (0, True), "chunk": (None, False),
            "chunk+remat": (None, True)}
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
            num_heads=4, num_kv_heads=2)


# ------------------------------------------------------------------ memory probes


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _xla_memory(compiled) -> dict[str, float]:
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        m = None
    if m is None:
        return {}
    temp, args = m.temp_size_in_bytes, m.argument_size_in_bytes
    out, alias = m.output_size_in_bytes, m.alias_size_in_bytes
    return {"temp_gib": temp / GIB, "arg_gib": args / GIB, "out_gib": out / GIB,
            "xla_gib": (temp + args + out - alias) / GIB}


# ------------------------------------------------------------------ building blocks


def _load(model: str, *, chunk: int | None, remat: bool, lora_rank: int):
    from flax import nnx

    from agentic_rl.models import ModelConfig, PolicyModel, add_lora

    if model == "tiny":
        kw = {} if chunk is None else {"attention_chunk": chunk}
        cfg = ModelConfig(**TINY, remat=remat, **kw)
        policy = PolicyModel(cfg, rngs=nnx.Rngs(0))
        if lora_rank:
            add_lora(policy, rank=lora_rank, alpha=2.0 * lora_rank, rngs=nnx.Rngs(1))
        return policy
    from agentic_rl import load_policy

    return load_policy("smollm2-135m-instruct", lora_rank=lora_rank, remat=remat,
                       attention_chunk=chunk).model


def episode_rows(length: int, rows: int, vocab: int, seed: int = 0):
    """`rows` episodes of exactly `length` tokens: prompt, then alternating sampled turns
    (loss mask, behaviour log-probs, a reward at the turn's end) and observations."""
    import numpy as np

    from agentic_rl.rollout import EpisodeRecord, collate

    rng = np.random.default_rng(seed)
    records, turns = [], 0
    prompt = rng.integers(0, vocab, 256).tolist()
    for i in range(rows):
        r = EpisodeRecord(group_id=0, metadata={"episode": str(i)})
        r.append(prompt, sampled=False, turn=-1, agent=-1)
        k = 0
        while len(r) < length:
            n = min(int(rng.integers(200, 301)), length - len(r))
            r.append(rng.integers(0, vocab, n).tolist(), sampled=True, turn=k, agent=0,
                     logprobs=(-rng.exponential(1.0, n)).tolist())
            r.turn_ends.append(len(r) - 1)
            r.turn_rewards.append(float(rng.integers(0, 2)) + 0.1 * i)
            n = min(int(rng.integers(100, 401)), length - len(r))
            if n:
                r.append(rng.integers(0, vocab, n).tolist(), sampled=False, turn=k, agent=-1)
            k += 1
        turns = max(turns, k)
        records.append(r)
    return collate(records, length=length, num_turns=turns)


def update_worker(a) -> dict:
    import jax
    import numpy as np

    from agentic_rl import rl
    from agentic_rl.train.config import default_config
    from agentic_rl.train.learner import LearnerBatch, LearnerConfig, make_learner_step
    from agentic_rl.train.state import init_train_state, make_optimizer
    from agentic_rl.train.step import StepConfig

    chunk, remat = VARIANTS[a.variant]
    chunk = a.chunk if chunk is None else chunk
    model = _load(a.model, chunk=chunk, remat=remat, lora_rank=a.lora_rank)
    state = init_train_state(model, make_optimizer(default_config().optim, 100), seed=0,
                             need_ref_copy=False)
    batch = jax.device_put(LearnerBatch.from_episodes(
        episode_rows(a.length, a.rows, model.cfg.vocab_size)))
    hp = LearnerConfig(step=StepConfig(loss=rl.LossConfig(), micro_batch_size=a.micro),
                       advantage=rl.AdvantageConfig(estimator="grpo"), score_chunk=a.micro)
    fn = make_learner_step()  # what the trainer calls (here without a mesh)
    jax.block_until_ready(state)
    rss0 = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    t = time.perf_counter()
    compiled = fn.lower(state, batch, hp).compile()
    out = {"length": a.length, "variant": a.variant, "chunk": chunk, "remat": remat,
           "compile_s": time.perf_counter() - t, **_xla_memory(compiled),
           "loss_tokens": int(np.asarray(batch.loss_mask).sum())}
    if a.compile_only or out.get("xla_gib", 0) > a.max_gib:
        out["skipped"] = "compile only" if a.compile_only else f"XLA estimate > {a.max_gib} GiB"
    else:
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            state, m = compiled(state, batch, hp)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t)
        out.update(step_s=statistics.median(times), step_times=times,
                   grad_norm=float(m["grad_norm"]), loss=float(m["loss"]))
    if reset:
        out["rss_gib"] = (_status_kib("VmHWM") - rss0) / 2**20
    return out


def decode_worker(a) -> dict:
    import numpy as np

    from agentic_rl.sampling import BatchSampler, SamplingParams

    lm = _load(a.model, chunk=None, remat=False, lora_rank=0).lm
    rng = np.random.default_rng(0)
    ctx = rng.integers(0, lm.cfg.vocab_size, a.length).tolist()
    s = BatchSampler(lm, 1, capacity=a.length + a.new_tokens * (a.repeats + 2) + 16, seed=0)
    t = time.perf_counter()
    for i in range(0, a.length, a.prefill_chunk):
        s.extend({0: ctx[i:i + a.prefill_chunk]})
    prefill_s = time.perf_counter() - t
    params = SamplingParams(temperature=1.0)
    times = []
    for _ in range(a.repeats + 1):
        t = time.perf_counter()
        o = s.sample([0], max_new_tokens=a.new_tokens, params=params)[0]
        assert len(o.tokens) == a.new_tokens
        times.append(time.perf_counter() - t)
    dec = statistics.median(times[1:])
    return {"context": a.length, "decode_tok_s": a.new_tokens / dec, "decode_s": dec,
            "first_decode_s": times[0], "prefill_s": prefill_s,
            "prefill_tok_s": a.length / prefill_s}


# ------------------------------------------------------------------ driver


def _spawn(kind: str, length: int, a, variant: str = "") -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--length", str(length),
           "--model", a.model, "--repeats", str(a.repeats), "--rows", str(a.rows),
           "--micro", str(a.micro), "--chunk", str(a.chunk), "--max-gib", str(a.max_gib),
           "--lora-rank", str(a.lora_rank), "--new-tokens", str(a.new_tokens),
           "--prefill-chunk", str(a.prefill_chunk)]
    if variant:
        cmd += ["--variant", variant]
    if a.compile_only:
        cmd.append("--compile-only")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if p.returncode or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"length": length, "context": length, "variant": variant,
                "error": f"rc {p.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def _ratio(rows, key, i):
    a, b = rows[i - 1].get(key), rows[i].get(key)
    return f"{b / a:.2f}x" if a and b else "-"


def _fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    ap.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    ap.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=["chunk"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rows", type=int, default=2, help="episode rows (one GRPO group)")
    ap.add_argument("--micro", type=int, default=1, help="rows per micro-batch")
    ap.add_argument("--chunk", type=int, default=1024, help="attention query block")
    ap.add_argument("--lora-rank", type=int, default=8, help="0 = full fine-tuning")
    ap.add_argument("--max-gib", type=float, default=16.0,
                    help="compile but do not run a variant XLA says needs more")
    ap.add_argument("--compile-only", action="store_true", help="memory analysis only")
    ap.add_argument("--no-update", action="store_true")
    ap.add_argument("--no-decode", action="store_true")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prefill-chunk", type=int, default=1024)
    ap.add_argument("--timeout", type=float, default=3600.0, help="per subprocess, seconds")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--worker", choices=("update", "decode"), help=argparse.SUPPRESS)
    ap.add_argument("--length", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="chunk", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        res = update_worker(a) if a.worker == "update" else decode_worker(a)
        print(json.dumps(res), flush=True)
        return

    results = {"model": a.model, "rows": a.rows, "micro": a.micro, "chunk": a.chunk,
               "lora_rank": a.lora_rank, "update": {}, "decode": []}
    if not a.no_update:
        print(f"update: {a.model}, {a.rows} rows x L tokens, micro-batch {a.micro}, "
              f"LoRA rank {a.lora_rank}, median of {a.repeats} steps", flush=True)
        for v in a.variants:
            rows = []
            print(f"\n[{v}]\n{'L':>6} {'compile s':>9} {'step s':>8} {'xla GiB':>8} "
                  f"{'temp GiB':>8} {'rss GiB':>8} {'mem 2L/L':>8} {'time 2L/L':>8}", flush=True)
            for length in a.lengths:
                r = _spawn("update", length, a, v)
                rows.append(r)
                i = len(rows) - 1
                note = r.get("error") or r.get("skipped") or ""
                print(f"{length:>6} {_fmt(r.get('compile_s'), '9.1f')} "
                      f"{_fmt(r.get('step_s'), '8.2f')} {_fmt(r.get('xla_gib'), '8.3f')} "
                      f"{_fmt(r.get('temp_gib'), '8.3f')} {_fmt(r.get('rss_gib'), '8.2f')} "
                      f"{_ratio(rows, 'xla_gib', i) if i else '-':>8} "
                      f"{_ratio(rows, 'step_s', i) if i else '-':>8} {note}", flush=True)
            results["update"][v] = rows
    if not a.no_decode and not a.compile_only:
        print(f"\ndecode: {a.model}, batch 1, {a.new_tokens} new tokens after C context "
              f"tokens, median of {a.repeats}\n{'C':>6} {'tok/s':>8} {'prefill tok/s':>13} "
              f"{'tok/s 2C/C':>10}", flush=True)
        rows = results["decode"]
        for length in a.lengths:
            r = _spawn("decode", length, a)
            rows.append(r)
            i = len(rows) - 1
            print(f"{length:>6} {_fmt(r.get('decode_tok_s'), '8.1f')} "
                  f"{_fmt(r.get('prefill_tok_s'), '13.1f')} "
                  f"{_ratio(rows, 'decode_tok_s', i) if i else '-':>10} {r.get('error', '')}",
                  flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
