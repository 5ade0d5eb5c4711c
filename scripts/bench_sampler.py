"""Sampler benchmark: our jitted KV-cache sampler vs HF transformers + torch `generate`.

    python scripts/bench_sampler.py                 # batch 1, 16, 64; multi-turn; fp32
    python scripts/bench_sampler.py --batches 1 16 --repeats 3 --turns 30

Both sides run in this one process on the same weights (the embedded SmolLM2-135M-
Instruct, converted once to a HF directory), fp32, sampling at temperature 1 with
exactly `--new-tokens` new tokens per sequence (no early stop), so the work is equal.
Reports the median over `--repeats` timed runs (ours after one warm-up run that
compiles; compile time is reported separately) and the ratio ours / HF.

The multi-turn part runs `--turns` turns of `--gen` generated + `--obs` observation
tokens per turn, either continuing from the KV cache (prefill only the new
observation tokens) or re-prefilling the whole history every turn, and prints the
time of the last turn and the total for both.

Needs the `test` extra (torch) for the HF side; `--no-hf` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_ours(policy, prompt: list[int], batch: int, new_tokens: int, repeats: int):
    from agentic_rl.sampling import SamplingParams, generate

    params = SamplingParams(temperature=1.0)

    def run(seed=[0]):  # noqa: B006 - a counter, so every run draws fresh samples
        seed[0] += 1
        outs = generate(policy.model.lm, [prompt] * batch, max_new_tokens=new_tokens,
                        params=params, seed=seed[0])
        assert all(len(o.tokens) == new_tokens for o in outs)

    t = time.perf_counter()
    run()
    compile_s = time.perf_counter() - t
    return _median_time(run, repeats), compile_s


def bench_hf(model, prompt: list[int], batch: int, new_tokens: int, repeats: int):
    import torch

    ids = torch.tensor([prompt] * batch)

    def run(n=new_tokens):
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=n, min_new_tokens=n, pad_token_id=2)
        assert out.shape[1] == len(prompt) + n

    run(4)  # warm-up: first-call allocations and lazy initialisation
    return _median_time(run, repeats)


def bench_multiturn(policy, prompt: list[int], turns: int, gen: int, obs: int):
    """Seconds per turn: continuing from the cache vs re-prefilling the whole history."""
    from agentic_rl.sampling import BatchSampler, SamplingParams

    params = SamplingParams(temperature=1.0)
    lm = policy.model.lm
    rng = np.random.RandomState(0)
    observations = [rng.randint(100, 40000, obs).tolist() for _ in range(turns)]
    capacity = len(prompt) + turns * (gen + obs) + 64

    def continuation():
        s = BatchSampler(lm, 1, capacity=capacity, seed=0)
        times = []
        new = list(prompt)
        for k in range(turns):
            t = time.perf_counter()
            s.extend({0: new})
            s.sample([0], max_new_tokens=gen, params=params)
            times.append(time.perf_counter() - t)
            new = observations[k]
        return times

    def reprefill():
        times = []
        history = list(prompt)
        s = BatchSampler(lm, 1, capacity=capacity, seed=0)
        for k in range(turns):
            t = time.perf_counter()
            s.reset([0])
            s.extend({0: history})
            out = s.sample([0], max_new_tokens=gen, params=params)[0]
            times.append(time.perf_counter() - t)
            history = history + out.tokens + observations[k]
        return times

    continuation()  # compile every shape bucket once
    reprefill()
    return continuation(), reprefill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--turns", type=int, default=30)
    ap.add_argument("--gen", type=int, default=20)
    ap.add_argument("--obs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--no-multiturn", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    from agentic_rl import load_policy

    policy = load_policy("smollm2-135m-instruct")
    tok = policy.tokenizer
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Write a short story about a dragon who learns to code."}],
        add_generation_prompt=True, return_dict=True)["input_ids"]
    hf = None
    if not args.no_hf:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(args.threads)
        hf = AutoModelForCausalLM.from_pretrained(str(policy.path), dtype=torch.float32).eval()
    results = {"prompt_tokens": len(prompt), "new_tokens": args.new_tokens, "batches": {}}
    print(f"SmolLM2-135M-Instruct fp32, prompt {len(prompt)} tokens, {args.new_tokens} new "
          f"tokens, sampling T=1, median of {args.repeats}")
    print(f"{'batch':>5} {'ours tok/s':>11} {'HF tok/s':>9} {'ratio':>6} {'compile s':>9}")
    for b in args.batches:
        ours_s, compile_s = bench_ours(policy, prompt, b, args.new_tokens, args.repeats)
        ours_tps = b * args.new_tokens / ours_s
        row = {"ours_tok_s": ours_tps, "ours_s": ours_s, "compile_s": compile_s}
        line = f"{b:>5} {ours_tps:>11.1f}"
        if hf is not None:
            hf_s = bench_hf(hf, prompt, b, args.new_tokens, args.repeats)
            hf_tps = b * args.new_tokens / hf_s
            row.update(hf_tok_s=hf_tps, hf_s=hf_s, ratio=ours_tps / hf_tps)
            line += f" {hf_tps:>9.1f} {ours_tps / hf_tps:>5.2f}x"
        else:
            line += f" {'-':>9} {'-':>6}"
        print(line + f" {compile_s:>9.1f}", flush=True)
        results["batches"][b] = row
    if not args.no_multiturn:
        cont, re = bench_multiturn(policy, prompt, args.turns, args.gen, args.obs)
        results["multiturn"] = {"turns": args.turns, "gen": args.gen, "obs": args.obs,
                                "continuation_s": cont, "reprefill_s": re}
        print(f"multi-turn: {args.turns} turns x ({args.gen} generated + {args.obs} observation)"
              f" tokens, batch 1")
        print(f"  last turn: continuation {cont[-1] * 1e3:.0f} ms, re-prefill "
              f"{re[-1] * 1e3:.0f} ms, ratio {re[-1] / cont[-1]:.2f}x")
        print(f"  total:     continuation {sum(cont):.2f} s, re-prefill {sum(re):.2f} s, "
              f"ratio {sum(re) / sum(cont):.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
