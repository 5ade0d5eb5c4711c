"""Jitted batched sampling with a KV cache: prefill, then a compiled decode loop.

Design:
- `prefill` appends a right-padded chunk of tokens per row to the cache (rows of
  different lengths in one call) and returns the logits after each row's last
  real token. The same function continues a conversation: append observation
  tokens to an existing cache and only they are processed.
- `decode` runs `lax.while_loop` for up to `max_new` steps inside one XLA program,
  with the cache donated so it is updated in place; rows stop independently on
  their own stop-token ids.
  The loop carry is a `DecodeState`.
- Shapes are bucketed by the caller (`agentic_rl.shapes.bucket`) so a run compiles
  a few times.

Log-probs: `logprob` is the log-prob of the sampled token under the distribution
it was actually drawn from (after temperature / top-k / top-p), which is what an
importance ratio against the sampling policy needs; `logprob_raw` is under the
untempered model (temperature 1, no truncation), which is what the trainer's
full-sequence forward recomputes (see `agentic_rl.sampling.params.choose`).

Imports: jax, flax, agentic_rl.models.transformer and agentic_rl.sampling.params.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from agentic_rl.models.kv_cache import KVCache, cached_forward
from agentic_rl.models.layers import unstack_layers
from agentic_rl.models.transformer import Transformer
from agentic_rl.sampling.params import SamplingParams, choose

Array = jax.Array


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
    h, cache = cached_forward(model, layers, tokens, cache, input_mask, adapter_ids)
    n = input_mask.sum(axis=1).astype(jnp.int32)
    last = jnp.take_along_axis(h, jnp.maximum(n - 1, 0)[:, None, None], axis=1)[:, 0]
    return model.logits(last[:, None])[:, 0], cache


class DecodeState(NamedTuple):
    """The carry of `decode`'s while-loop (B rows, M = max_new)."""

    step: Array  # int32 []: loop step, the column written next
    logits: Array  # f32 [B, V]: next-token logits of each row
    cache: KVCache
    done: Array  # bool [B]: row finished (stopped, at its limit, or inactive)
    keys: Array  # [B] per-row PRNG keys, split once per step
    n: Array  # int32 [B]: tokens sampled so far
    stopped: Array  # bool [B]: hit a stop id
    out_tok: Array  # int32 [B, M]
    out_lp: Array  # f32 [B, M]: log-prob under the sampled distribution
    out_raw: Array  # f32 [B, M]: log-prob under the untempered model

    @classmethod
    def start(cls, logits, cache, keys, active, limit, max_new: int) -> DecodeState:
        B = logits.shape[0]
        return cls(step=jnp.int32(0), logits=logits, cache=cache,
                   done=~active | (limit <= 0), keys=keys, n=jnp.zeros((B,), jnp.int32),
                   stopped=jnp.zeros((B,), bool),
                   out_tok=jnp.zeros((B, max_new), jnp.int32),
                   out_lp=jnp.zeros((B, max_new), jnp.float32),
                   out_raw=jnp.zeros((B, max_new), jnp.float32))


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

    `layers` are the per-layer weights (`unstack_layers`), see `kv_cache.cached_forward`.

    Returns dict(tokens [B, max_new], logprob, logprob_raw, length [B],
    stopped [B] (hit a stop id), cache, keys). Every sampled token, including a
    stop token, is written to the cache, so a later `prefill` continues after it.
    """
    model: Transformer = nnx.merge(graphdef, state)

    def cond(s: DecodeState):
        return (s.step < max_new) & ~jnp.all(s.done)

    def body(s: DecodeState):
        split = jax.vmap(jax.random.split)(s.keys)
        keys, sub = split[:, 0], split[:, 1]
        tok, lp, raw = choose(s.logits, sub, params)
        live = ~s.done
        out_tok = s.out_tok.at[:, s.step].set(jnp.where(live, tok, 0))
        out_lp = s.out_lp.at[:, s.step].set(jnp.where(live, lp, 0.0))
        out_raw = s.out_raw.at[:, s.step].set(jnp.where(live, raw, 0.0))
        n = s.n + live.astype(jnp.int32)
        hit = jnp.any(tok[:, None] == stop_ids, axis=-1) & live
        stopped = s.stopped | hit
        h, cache = cached_forward(model, layers, tok[:, None], s.cache, live[:, None],
                                  adapter_ids)
        # rows already finished keep the logits after their last real token
        logits = jnp.where(live[:, None], model.logits(h)[:, 0], s.logits)
        done = s.done | hit | (n >= limit)
        return DecodeState(step=s.step + 1, logits=logits, cache=cache, done=done, keys=keys,
                           n=n, stopped=stopped, out_tok=out_tok, out_lp=out_lp,
                           out_raw=out_raw)

    s = jax.lax.while_loop(cond, body, DecodeState.start(logits, cache, keys, active, limit,
                                                         max_new))
    return dict(tokens=s.out_tok, logprob=s.out_lp, logprob_raw=s.out_raw, length=s.n,
                stopped=s.stopped, cache=s.cache, keys=s.keys, next_logits=s.logits)
