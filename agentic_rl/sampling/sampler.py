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

from agentic_rl.models.transformer import KVCache, Transformer

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


def process_logits(logits: Array, params: SamplingParams) -> Array:
    """Float32 logits -> the log-distribution actually sampled from.

    Temperature scales; top-k keeps the k largest; top-p keeps the smallest set of
    tokens whose probability reaches p (always at least the top token).
    """
    logits = logits.astype(jnp.float32)
    if params.is_greedy:
        return jax.nn.log_softmax(logits, axis=-1)
    logits = logits / params.temperature
    neg = jnp.finfo(jnp.float32).min
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, params.top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if params.top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        cum_before = jnp.cumsum(probs, axis=-1) - probs
        keep_sorted = cum_before < params.top_p
        # threshold: the smallest logit still kept
        thresh = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < thresh, neg, logits)
    return jax.nn.log_softmax(logits, axis=-1)


def choose(logits: Array, keys: Array, params: SamplingParams):
    """Pick one token per row. logits [B, V] float32; keys [B] PRNG keys (one per row,
    so a row's samples do not depend on what else is in the batch).
    Returns (token, logprob under the sampled distribution, logprob untempered)."""
    logp = process_logits(logits, params)
    if params.is_greedy:
        tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
        tok = jax.vmap(jax.random.categorical)(keys, logp).astype(jnp.int32)
    lp = jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]
    raw = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), tok[:, None], axis=-1)[:, 0]
    return tok, lp, raw


@nnx.jit(donate_argnums=(2,))
def prefill(model: Transformer, tokens: Array, cache: KVCache, input_mask: Array):
    """Append right-padded `tokens` [B, t] (real where `input_mask`) to `cache`.

    Returns (float32 logits [B, V] after each row's last real new token, cache).
    Rows with no real new tokens return garbage logits; the caller ignores them.
    """
    h, cache = model.forward_cached(tokens, cache, input_mask)
    n = input_mask.sum(axis=1).astype(jnp.int32)
    last = jnp.take_along_axis(h, jnp.maximum(n - 1, 0)[:, None, None], axis=1)[:, 0]
    return model.logits(last[:, None])[:, 0], cache


@functools.partial(nnx.jit, static_argnames=("params", "max_new"), donate_argnames=("cache",))
def decode(
    model: Transformer,
    logits: Array,
    cache: KVCache,
    keys: Array,
    stop_ids: Array,
    active: Array,
    limit: Array,
    *,
    params: SamplingParams,
    max_new: int,
):
    """Sample up to `max_new` tokens per row inside one compiled while-loop.

    logits [B, V]: next-token logits (from prefill); keys [B, 2]: per-row PRNG keys;
    stop_ids int32 [B, S] (-1 padded): a row stops after emitting one of them;
    active bool [B]: rows to sample for (padding rows of a bucket are inactive);
    limit int32 [B]: per-row max new tokens (<= max_new).

    Returns dict(tokens [B, max_new], logprob, logprob_raw, length [B],
    stopped [B] (hit a stop id), cache, keys). Every sampled token, including a
    stop token, is written to the cache, so a later `prefill` continues after it.
    """
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
        h, cache = model.forward_cached(tok[:, None], cache, live[:, None])
        logits = model.logits(h)[:, 0]
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
