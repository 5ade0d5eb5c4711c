"""Jitted batched sampling with a KV cache: prefill, then a compiled decode loop.

Design:
- `prefill` appends a right-padded chunk of tokens per row to the cache (rows of
  different lengths in one call) and returns the logits after each row's last
  real token. The same function continues a conversation: append observation
  tokens to an existing cache and only they are processed.
- `decode` runs `lax.while_loop` for up to `max_new` steps inside one XLA program,
  with the cache donated so it is updated in place; rows stop independently on
  their own stop-token ids.
- Shapes are bucketed by the caller (`bucket`) so a run compiles a few times.

Log-probs: `logprob` is the log-prob of the sampled token under the distribution
it was actually drawn from (after temperature / top-k / top-p), which is what an
importance ratio against the sampling policy needs; `logprob_raw` is under the
untempered model (temperature 1, no truncation), which is what the trainer's
full-sequence forward recomputes.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from agentic_rl.models.transformer import KVCache, Transformer, unstack_layers

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token. temperature 0 or greedy=True means argmax."""

    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    greedy: bool = False

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0.0


def bucket(n: int, minimum: int = 16) -> int:
    """Round up to a power of two (at least `minimum`), to bound recompilations."""
    b = minimum
    while b < n:
        b *= 2
    return b


def _bisect_threshold(values: Array, enough, iters: int = 32) -> Array:
    """Per row, the largest threshold tau with enough(values >= tau) true, by bisection.

    Why bisection: on CPU, XLA's sort and top_k over a 49k vocabulary cost hundreds
    of ms per decode step at batch 64; 32 masked reductions cost a few ms.
    """
    lo = jnp.min(values, axis=-1)
    hi = jnp.max(values, axis=-1)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        ok = enough(values >= mid[:, None])
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, iters, body, (lo, hi))
    return lo


def process_logits(logits: Array, params: SamplingParams) -> Array:
    """Float32 logits [B, V] -> the log-distribution actually sampled from.

    Temperature scales; top-k keeps the k largest logits (all of them on exact ties
    at the k-th value); top-p then keeps the smallest set of tokens whose probability
    reaches p (always at least the top token). Order as in HF: temperature, k, p.
    """
    logits = logits.astype(jnp.float32)
    if params.is_greedy:
        return jax.nn.log_softmax(logits, axis=-1)
    logits = logits / params.temperature
    neg = jnp.finfo(jnp.float32).min
    if params.top_k and params.top_k < logits.shape[-1]:
        k = params.top_k
        tau = _bisect_threshold(logits, lambda keep: keep.sum(-1) >= k, iters=40)
        logits = jnp.where(logits >= tau[:, None], logits, neg)
    if params.top_p < 1.0:
        probs = jax.nn.softmax(logits, axis=-1)
        top_p = params.top_p
        tau = _bisect_threshold(
            probs, lambda keep: jnp.sum(jnp.where(keep, probs, 0.0), -1) >= top_p, iters=40
        )
        logits = jnp.where(probs >= tau[:, None], logits, neg)
    return jax.nn.log_softmax(logits, axis=-1)


def sample_categorical(logp: Array, u: Array, block: int = 256) -> Array:
    """Inverse-CDF sampling: one uniform per row instead of a Gumbel per vocab entry.

    Exact sampling from exp(logp). A two-level search (block sums, then within the
    chosen block) avoids a full-vocabulary cumsum, which XLA's CPU backend runs slowly.
    logp [B, V], u [B] in [0, 1) -> int32 [B].
    """
    B, V = logp.shape
    pad = (-V) % block
    p = jnp.exp(logp)
    if pad:
        p = jnp.pad(p, ((0, 0), (0, pad)))
    nb = p.shape[-1] // block
    pb = p.reshape(B, nb, block)
    sums = pb.sum(-1)
    cum = jnp.cumsum(sums, -1)
    target = u * cum[:, -1]
    bi = jnp.minimum(jnp.sum(cum <= target[:, None], -1), nb - 1)
    before = jnp.take_along_axis(cum - sums, bi[:, None], -1)[:, 0]
    inner = jnp.take_along_axis(pb, bi[:, None, None], 1)[:, 0]
    cin = jnp.cumsum(inner, -1) + before[:, None]
    ii = jnp.minimum(jnp.sum(cin <= target[:, None], -1), block - 1)
    tok = (bi * block + ii).astype(jnp.int32)
    # guard against landing on a zero-probability entry through rounding
    ok = jnp.take_along_axis(logp, jnp.minimum(tok, V - 1)[:, None], -1)[:, 0] > -1e30
    return jnp.where(ok & (tok < V), tok, jnp.argmax(logp, -1).astype(jnp.int32))


def choose(logits: Array, keys: Array, params: SamplingParams):
    """Pick one token per row. logits [B, V] float32; keys [B] PRNG keys (one per row,
    so a row's samples do not depend on what else is in the batch).
    Returns (token, logprob under the sampled distribution, logprob untempered)."""
    logp = process_logits(logits, params)
    if params.is_greedy:
        tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
        u = jax.vmap(lambda k: jax.random.uniform(k, ()))(keys)
        tok = sample_categorical(logp, u)
    lp = jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]
    raw = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), tok[:, None], axis=-1)[:, 0]
    return tok, lp, raw


def split_model(model: Transformer) -> tuple[nnx.GraphDef, nnx.State, tuple]:
    """(graphdef, state, per-layer weights) for the pure jitted functions below.

    The hot paths are `jax.jit` over (static graphdef, state pytree) rather than
    `nnx.jit` over a live module: a module call through `nnx.jit` pays graph
    traversal on every call, which dominates a decode step of a small model.
    """
    graphdef, state = nnx.split(model)
    return graphdef, state, unstack_layers(model.layers.layer_params())


@functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(4,))
def prefill(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    layers,
    tokens: Array,
    cache: KVCache,
    input_mask: Array,
    adapter_ids: Array | None = None,
):
    """Append right-padded `tokens` [B, t] (real where `input_mask`) to `cache`.

    Returns (float32 logits [B, V] after each row's last real new token, cache).
    Rows with no real new tokens return garbage logits; the caller ignores them.
    `adapter_ids` [B]: each row's LoRA adapter (models with several).
    """
    model = nnx.merge(graphdef, state)
    h, cache = model.forward_cached(tokens, cache, input_mask, layers, adapter_ids)
    n = input_mask.sum(axis=1).astype(jnp.int32)
    last = jnp.take_along_axis(h, jnp.maximum(n - 1, 0)[:, None, None], axis=1)[:, 0]
    return model.logits(last[:, None])[:, 0], cache


@functools.partial(
    jax.jit, static_argnums=(0,), static_argnames=("params", "max_new"), donate_argnames=("cache",)
)
def decode(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    layers,
    logits: Array,
    cache: KVCache,
    keys: Array,
    stop_ids: Array,
    active: Array,
    limit: Array,
    adapter_ids: Array | None = None,
    *,
    params: SamplingParams,
    max_new: int,
):
    """Sample up to `max_new` tokens per row inside one compiled while-loop.

    logits [B, V]: next-token logits (from prefill); keys [B, 2]: per-row PRNG keys;
    stop_ids int32 [B, S] (-1 padded): a row stops after emitting one of them;
    active bool [B]: rows to sample for (padding rows of a bucket are inactive);
    limit int32 [B]: per-row max new tokens (<= max_new); adapter_ids int32 [B]: each
    row's LoRA adapter (models with several; None otherwise).

    `layers` are the per-layer weights (`unstack_layers`), see `Transformer.forward_cached`.

    Returns dict(tokens [B, max_new], logprob, logprob_raw, length [B],
    stopped [B] (hit a stop id), cache, keys). Every sampled token, including a
    stop token, is written to the cache, so a later `prefill` continues after it.
    """
    model: Transformer = nnx.merge(graphdef, state)
    B = logits.shape[0]
    out_tok = jnp.zeros((B, max_new), jnp.int32)
    out_lp = jnp.zeros((B, max_new), jnp.float32)
    out_raw = jnp.zeros((B, max_new), jnp.float32)

    def cond(state):
        step, _, _, done, *_ = state
        return (step < max_new) & ~jnp.all(done)

    def body(state):
        step, logits, cache, done, keys, n, stopped, out_tok, out_lp, out_raw = state
        split = jax.vmap(jax.random.split)(keys)
        keys, sub = split[:, 0], split[:, 1]
        tok, lp, raw = choose(logits, sub, params)
        live = ~done
        out_tok = out_tok.at[:, step].set(jnp.where(live, tok, 0))
        out_lp = out_lp.at[:, step].set(jnp.where(live, lp, 0.0))
        out_raw = out_raw.at[:, step].set(jnp.where(live, raw, 0.0))
        n = n + live.astype(jnp.int32)
        hit = jnp.any(tok[:, None] == stop_ids, axis=-1) & live
        stopped = stopped | hit
        h, cache = model.forward_cached(tok[:, None], cache, live[:, None], layers,
                                        adapter_ids)
        # rows already finished keep the logits after their last real token
        logits = jnp.where(live[:, None], model.logits(h)[:, 0], logits)
        done = done | hit | (n >= limit)
        return step + 1, logits, cache, done, keys, n, stopped, out_tok, out_lp, out_raw

    done0 = ~active | (limit <= 0)
    zeros = jnp.zeros((B,), jnp.int32)
    state = (jnp.int32(0), logits, cache, done0, keys, zeros, jnp.zeros((B,), bool),
             out_tok, out_lp, out_raw)
    _, logits, cache, _, keys, n, stopped, out_tok, out_lp, out_raw = jax.lax.while_loop(
        cond, body, state
    )
    return dict(tokens=out_tok, logprob=out_lp, logprob_raw=out_raw, length=n,
                stopped=stopped, cache=cache, keys=keys, next_logits=logits)
