"""Full-sequence causal attention kernels side by side: the plain [T, T] kernel, the
triangle-skipping kernel the model uses up to `attention_chunk` tokens, and the
linear-memory `lax.map` of query blocks it uses beyond.

    python scripts/bench_attention.py                       # tiny and smollm2 shapes
    python scripts/bench_attention.py --shapes smollm2 --lengths 512 1024 --repeats 5

For each head shape and length: the median wall time of `--repeats` jitted
forward+backward passes (gradient of a sum of squares w.r.t. q, k, v) and of forwards
alone, after one call that compiles; XLA's temporary memory of the backward; and the
plain / kernel time ratio. One layer, float32, no padding. Figures in
docs/benchmarks.md ("Attention kernels").

Imports: any layer (a script).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from agentic_rl.models.attention import attention, causal_attention, triangular_attention

# (heads, kv heads, head dim): the tiny model of the long-horizon experiments, SmolLM2-135M
SHAPES = {"tiny": (4, 2, 16), "smollm2": (9, 3, 64)}


def kernels(mask, block):
    T = mask.shape[1]
    allowed = jnp.tril(jnp.ones((T, T), bool))[None] & mask[:, None, :]
    return {
        "plain": lambda q, k, v: attention(q, k, v, allowed),
        "triangular": lambda q, k, v: triangular_attention(q, k, v, mask),
        f"lax.map{block}": lambda q, k, v: causal_attention(q, k, v, mask, block),
    }


def median_s(fn, args, repeats):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--lengths", nargs="+", type=int, default=[256, 512, 1024, 2048])
    ap.add_argument("--tokens", type=int, default=16384, help="rows x length per call")
    ap.add_argument("--block", type=int, default=256, help="query block of the lax.map kernel")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(f"{'shape':8} {'B':>3} {'T':>5} {'kernel':12} {'fwd+bwd s':>9} {'fwd s':>7} "
          f"{'temp MiB':>8} {'plain/this':>10}")
    for shape in a.shapes:
        H, KV, Dh = SHAPES[shape]
        for T in a.lengths:
            B = max(1, a.tokens // T)
            key = jax.random.split(jax.random.PRNGKey(0), 3)
            q = jax.random.normal(key[0], (B, T, H, Dh))
            k, v = (jax.random.normal(kk, (B, T, KV, Dh)) for kk in key[1:])
            mask = jnp.ones((B, T), bool)
            plain_s = None
            for name, fn in kernels(mask, a.block).items():
                grad = jax.jit(jax.grad(lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v) ** 2),
                                        argnums=(0, 1, 2)))
                temp = grad.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes
                g_s = median_s(grad, (q, k, v), a.repeats)
                f_s = median_s(jax.jit(fn), (q, k, v), a.repeats)
                plain_s = g_s if plain_s is None else plain_s
                print(f"{shape:8} {B:3d} {T:5d} {name:12} {g_s:9.3f} {f_s:7.3f} "
                      f"{temp / 2**20:8.0f} {plain_s / g_s:10.2f}", flush=True)


if __name__ == "__main__":
    main()
