"""How fast can this machine run the decode step's matmuls? (the ceiling behind issue #3)

    python scripts/bench_matmul.py                      # SmolLM2-135M shapes, batch 1/16/32/64
    python scripts/bench_matmul.py --batches 16 64 --hf-tok-s 81 135 --json /tmp/mm.json

Decoding one token for B rows runs, per layer, the projections of a [B, D] activation
(q, k, v, o, gate, up, down) and, once per step, the [B, D] x [D, V] LM head. Their
FLOPs per generated token are fixed by the model (2 x params); so tokens/s is bounded by
the GFLOP/s that XLA's CPU backend reaches on matmuls with only B rows. This script
times jitted fp32 `jnp.dot` on exactly those shapes (median of --repeats), reports the
GFLOP/s of each (as 30 independent dots in one program), then times one decode step's
matmuls chained with the step's real data dependencies (and nothing else), which gives the
tokens/s ceiling. With `--hf-tok-s` (HF `generate` tokens/s at the same batches, from
scripts/bench_sampler.py) it also prints the GFLOP/s a 3x speed-up would need.
A large square matmul is timed too, for the machine's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sampler import _median_time  # noqa: E402  (a sibling script, not a package)

# SmolLM2-135M: hidden 576, MLP 1536, 9 query / 3 key-value heads of 64, 30 layers,
# vocabulary 49152 (tied embeddings, but the LM head is still a [D, V] matmul)
D, F, HD, KV, LAYERS, V = 576, 1536, 64, 3, 30, 49152
LAYER_SHAPES = {  # name -> (K, N) of x[B, K] @ W[K, N]
    "q_proj": (D, 9 * HD), "k_proj": (D, KV * HD), "v_proj": (D, KV * HD), "o_proj": (D, D),
    "gate_proj": (D, F), "up_proj": (D, F), "down_proj": (F, D),
}


def time_dot(m: int, k: int, n: int, repeats: int, count: int = 1) -> float:
    """Seconds per fp32 [m, k] x [k, n] dot (median), timed as `count` dots with distinct
    weights inside one jitted program, as in the decode step (one per layer): a separate
    call per dot would add the dispatch overhead a compiled decode loop does not pay."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(0), count + 1)
    a = jax.random.normal(keys[0], (m, k), jnp.float32)
    ws = [jax.random.normal(kk, (k, n), jnp.float32) for kk in keys[1:]]
    f = jax.jit(lambda a, ws: [a @ w for w in ws])
    jax.block_until_ready(f(a, ws))  # compile
    return _median_time(lambda: jax.block_until_ready(f(a, ws)), repeats) / count


def time_skeleton(batch: int, repeats: int) -> float:
    """Seconds for one decode step's matmuls with the step's data dependencies: per layer
    q, k, v from the input, o after q, gate and up from the result, down after them; then
    the LM head. No attention, norms or sampling: what is left is the matmul ceiling.
    (Independent dots can overlap on the two cores; a decode step's mostly cannot.)"""
    import jax
    import jax.numpy as jnp

    keys = iter(jax.random.split(jax.random.PRNGKey(0), len(LAYER_SHAPES) * LAYERS + 2))
    layers = [{n: 0.02 * jax.random.normal(next(keys), s, jnp.float32)
               for n, s in LAYER_SHAPES.items()} for _ in range(LAYERS)]
    head = 0.02 * jax.random.normal(next(keys), (D, V), jnp.float32)
    x = jax.random.normal(next(keys), (batch, D), jnp.float32)

    def step(x, layers, head):
        for p in layers:
            q, k, v = x @ p["q_proj"], x @ p["k_proj"], x @ p["v_proj"]
            # k and v feed the cache; keep them live without changing x's value much
            x = x + (q + (k.sum(-1, keepdims=True) + v.sum(-1, keepdims=True)) * 1e-9) @ p[
                "o_proj"]
            x = x + ((x @ p["gate_proj"]) * (x @ p["up_proj"])) @ p["down_proj"]
        return x @ head

    f = jax.jit(step)
    jax.block_until_ready(f(x, layers, head))  # compile
    return _median_time(lambda: jax.block_until_ready(f(x, layers, head)), repeats)


def decode_matmuls(batch: int, repeats: int) -> dict:
    """Per-shape timings (independent dots) and the step's dependent matmul chain."""
    shapes = {**LAYER_SHAPES, "lm_head": (D, V)}
    out, step_flop = {}, 0.0
    for name, (k, n) in shapes.items():
        count = 1 if name == "lm_head" else LAYERS
        t = time_dot(batch, k, n, repeats, count)
        flop = 2 * batch * k * n
        out[name] = {"ms": 1e3 * t, "gflops": flop / t / 1e9}
        step_flop += count * flop
    step_s = time_skeleton(batch, repeats)
    return {"shapes": out, "step_matmul_s": step_s, "step_gflops": step_flop / step_s / 1e9,
            "tok_s_ceiling": batch / step_s, "flop_per_token": step_flop / batch}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 32, 64])
    ap.add_argument("--hf-tok-s", type=float, nargs="*", default=[],
                    help="HF generate tokens/s at the same batches (one per --batches)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--peak-size", type=int, default=2048)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.hf_tok_s and len(args.hf_tok_s) != len(args.batches):
        ap.error(f"--hf-tok-s needs one value per batch ({len(args.batches)}), "
                 f"got {len(args.hf_tok_s)}")

    n = args.peak_size
    peak = 2 * n**3 / time_dot(n, n, n, max(3, args.repeats // 3)) / 1e9
    res = {"peak_gflops": peak, "batches": {}}
    print(f"fp32 matmul peak ({n}^2): {peak:.1f} GFLOP/s")
    for i, b in enumerate(args.batches):
        r = decode_matmuls(b, args.repeats)
        res["batches"][b] = r
        per = ", ".join(f"{k} {v['gflops']:.0f}" for k, v in r["shapes"].items())
        print(f"batch {b}: decode-step matmul chain {1e3 * r['step_matmul_s']:.1f} ms = "
              f"{r['step_gflops']:.1f} GFLOP/s -> at most {r['tok_s_ceiling']:.0f} tok/s "
              f"(GFLOP/s by shape, independent dots: {per})")
        if args.hf_tok_s:
            need = 3 * args.hf_tok_s[i] * r["flop_per_token"] / 1e9
            r["gflops_for_3x_hf"] = need
            print(f"  3x HF's {args.hf_tok_s[i]:.0f} tok/s needs {need:.1f} GFLOP/s sustained "
                  f"on these shapes ({need / r['step_gflops']:.2f}x what they reach here, "
                  f"{need / peak:.2f}x the large-matmul peak), before attention and sampling")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
