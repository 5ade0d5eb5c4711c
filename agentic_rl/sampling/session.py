"""A batch of sequences kept in one KV cache across turns (multi-turn continuation).

`BatchSampler` owns the cache of up to `max_rows` sequences. `extend` appends
tokens (a prompt, or an observation after a turn) to some rows, prefilling only
those new tokens; `sample` decodes the next turn for some rows. The cost of turn k
is therefore its own new tokens, never a re-prefill of the history.

Stop handling:
- stop token ids stop a row inside the compiled decode loop;
- stop strings (e.g. `</tool_call>`, which spans several tokens) need detokenising,
  so when any are given decoding runs in compiled chunks and the host checks the
  text after each chunk; a row is cut right after the token that completes the
  stop string and its cache is rolled back to that point (later tokens were
  sampled speculatively and are forgotten).

PRNG: every (row key, turn) pair gets its own key, so samples reproduce from the
seed and do not depend on which other rows share the batch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentic_rl.models.kv_cache import KVCache, cached_forward, init_cache
from agentic_rl.models.transformer import Transformer
from agentic_rl.sampling.sampler import SamplingParams, bucket, decode, prefill, split_model


@dataclasses.dataclass
class Completion:
    """One sampled turn. `tokens` includes the stop token when one was hit; when a stop
    string ended the turn, `tokens` ends with the token that completed it."""

    tokens: list[int]
    logprobs: list[float]  # under the distribution sampled from (tempered / truncated)
    logprobs_raw: list[float]  # under the untempered model
    finish_reason: str  # "stop" | "length"
    stop: str | int | None = None  # the stop string or token id that ended the turn


@functools.partial(jax.jit, donate_argnums=(0,))
def _truncate(cache: KVCache, new_length: jax.Array) -> KVCache:
    """Keep the first new_length[b] real tokens of each row (later slots become holes)."""
    keep = jnp.cumsum(cache.mask, axis=1) <= new_length[:, None]
    return cache.replace(mask=cache.mask & keep, length=new_length)


@functools.partial(jax.jit, donate_argnums=(0,))
def _compact(cache: KVCache) -> KVCache:
    """Move each row's real tokens to the front of the cache, in order, and reset the
    shared cursor to the longest row: reclaims the holes left by padding, finished
    rows and reset rows."""
    order = jnp.argsort(~cache.mask, axis=1, stable=True)  # [B, S] real slots first
    idx = order[:, None, :, None]
    k = tuple(jnp.take_along_axis(a, idx, axis=2) for a in cache.k)
    v = tuple(jnp.take_along_axis(a, idx, axis=2) for a in cache.v)
    mask = jnp.take_along_axis(cache.mask, order, axis=1)
    return KVCache(k=k, v=v, mask=mask, length=cache.length,
                   cursor=jnp.max(cache.mask.sum(axis=1)).astype(jnp.int32))


@jax.jit
def _row_keys(seed, key_ids: jax.Array, turns: jax.Array) -> jax.Array:
    """PRNG key of each row: fold_in(fold_in(key(seed), key_id), turn)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda k, t: jax.random.fold_in(jax.random.fold_in(base, k), t))(
        key_ids, turns)


def _grow(cache: KVCache, capacity: int) -> KVCache:
    extra = capacity - cache.capacity
    pad = ((0, 0), (0, 0), (0, extra), (0, 0))
    return cache.replace(k=tuple(jnp.pad(a, pad) for a in cache.k),
                         v=tuple(jnp.pad(a, pad) for a in cache.v),
                         mask=jnp.pad(cache.mask, ((0, 0), (0, extra))))


@functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(4,))
def _prefill_shared(graphdef, state, layers, prefix: jax.Array, cache: KVCache,
                    rows: jax.Array, adapter: jax.Array | None = None) -> KVCache:
    """Prefill `prefix` [P] once and write its keys/values into every row where `rows`
    [B] is true (fresh rows: length 0), at the shared cursor. The other rows get holes.
    `adapter` [1]: the LoRA adapter those rows share (models with several)."""
    model = nnx.merge(graphdef, state)
    P = prefix.shape[0]
    one = init_cache(model.cfg, 1, P, cache.k[0].dtype)
    _, one = cached_forward(model, layers, prefix[None], one, jnp.ones((1, P), bool), adapter)
    at = cache.cursor
    sel = rows[:, None, None, None]

    def put(buf, new):
        old = jax.lax.dynamic_slice_in_dim(buf, at, P, axis=2)
        return jax.lax.dynamic_update_slice_in_dim(buf, jnp.where(sel, new, old), at, axis=2)

    old_mask = jax.lax.dynamic_slice_in_dim(cache.mask, at, P, axis=1)
    mask = jax.lax.dynamic_update_slice_in_dim(cache.mask, old_mask | rows[:, None], at, axis=1)
    return KVCache(k=tuple(put(b, n) for b, n in zip(cache.k, one.k)),
                   v=tuple(put(b, n) for b, n in zip(cache.v, one.v)),
                   mask=mask, length=cache.length + rows.astype(jnp.int32) * P,
                   cursor=at + P)


def shared_prefix(seqs: Sequence[Sequence[int]], multiple: int = 32) -> int:
    """Length of the prefix all `seqs` share, rounded down to `multiple` (few distinct
    lengths, hence few compilations), leaving each at least one token of its own."""
    if len(seqs) < 2:
        return 0
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return n // multiple * multiple


def _find_stop(text: str, stops: Sequence[str]) -> str | None:
    hits = [(text.find(s), s) for s in stops if s and s in text]
    return min(hits)[1] if hits else None


class BatchSampler:
    """KV-cached sampling for a fixed set of row slots, continued across turns."""

    def __init__(
        self,
        model: Transformer,
        max_rows: int,
        *,
        capacity: int = 256,
        tokenizer=None,
        seed: int = 0,
        decode_chunk: int = 32,
        cache_dtype=None,
    ):
        self.model = model
        self.graphdef, self.state, self.layers = split_model(model)
        self.rows = bucket(max_rows, minimum=1)
        self.max_rows = max_rows
        self.tokenizer = tokenizer
        self.seed = seed
        self.decode_chunk = decode_chunk
        self.cache = init_cache(model.cfg, self.rows, bucket(capacity), cache_dtype)
        self.next_logits = jnp.zeros((self.rows, model.cfg.vocab_size), jnp.float32)
        self.history: list[list[int]] = [[] for _ in range(self.rows)]
        self._logits_valid = np.zeros(self.rows, bool)
        self._turn = np.zeros(self.rows, np.int64)
        # Each row's LoRA adapter, for a model with several (one per agent): the whole
        # row, prompt included, is computed with it. Set with `set_adapters` when the
        # row starts a sequence.
        self.adapters = np.zeros(self.rows, np.int32)

    def set_adapters(self, adapters: Mapping[int, int]) -> None:
        """Chooses the LoRA adapter of fresh rows (-1: the base model). A row that holds a
        sequence keeps the adapter its cache was computed with: reset it first."""
        n = self.model.num_adapters
        for r, k in adapters.items():
            self._check_rows([r])
            if not -1 <= int(k) < n:
                raise ValueError(f"adapter {k} out of range: the model has {n} (or -1, none)")
            if self.history[r] and self.adapters[r] != k:
                raise ValueError(f"row {r} holds a sequence computed with adapter "
                                 f"{self.adapters[r]}; reset it before switching to {k}")
            self.adapters[r] = int(k)

    def _adapter_ids(self, rows=None):
        if self.model.num_adapters <= 1:
            return None
        ids = self.adapters if rows is None else self.adapters[rows]
        return jnp.asarray(ids, jnp.int32)

    def update_model(self, model: Transformer) -> None:
        """Sample from new weights (after a policy update). Cached keys/values were
        computed by the old weights; callers normally reset rows between updates."""
        self.model = model
        self.graphdef, self.state, self.layers = split_model(model)

    # ------------------------------------------------------------------ bookkeeping
    def _check_rows(self, rows):
        for r in rows:
            if not 0 <= r < self.max_rows:
                raise IndexError(f"row {r} out of range [0, {self.max_rows})")

    def _ensure_capacity(self, new_slots: int):
        """Make room for `new_slots` more slots after the cursor: compact first (free),
        grow (recompiles for the new capacity bucket) only if still short."""
        cursor = int(self.cache.cursor)
        if cursor + new_slots + 1 <= self.cache.capacity:
            return
        self.cache = _compact(self.cache)
        cursor = int(self.cache.cursor)
        if cursor + new_slots + 1 > self.cache.capacity:
            self.cache = _grow(self.cache, bucket(cursor + new_slots + 1))

    def reset(self, rows: Sequence[int]) -> None:
        """Forget rows (their slots can start new sequences)."""
        self._check_rows(rows)
        new_len = np.asarray(self.cache.length).copy()
        for r in rows:
            new_len[r] = 0
            self.history[r] = []
            self._logits_valid[r] = False
            self._turn[r] = 0
        self.cache = _truncate(self.cache, jnp.asarray(new_len, jnp.int32))
        if not any(self.history):
            self.cache = self.cache.replace(cursor=jnp.zeros((), jnp.int32))

    def length(self, row: int) -> int:
        return len(self.history[row])

    # ------------------------------------------------------------------ extend
    def extend(self, new_tokens: Mapping[int, Sequence[int]], *,
               share_prefix: bool = True) -> None:
        """Append tokens to rows (prefilling only them). Rows not named are untouched.

        With `share_prefix`, the leading tokens that all fresh rows of this call have in
        common (a system prompt, tool list, few-shot examples, a GRPO group's question)
        are prefilled once and copied into each row's cache: the same cache, computed
        once instead of once per row.
        """
        items = {r: list(t) for r, t in new_tokens.items() if len(t)}
        if not items:
            return
        self._check_rows(items)
        fresh = [r for r in items if not self.history[r]]
        # rows computed with different adapters share no prefix computation
        share_prefix = share_prefix and len({int(self.adapters[r]) for r in fresh}) <= 1
        n = shared_prefix([items[r] for r in fresh]) if share_prefix else 0
        if n:
            self._ensure_capacity(n + bucket(max(len(v) for v in items.values()) - n))
            rows = np.zeros(self.rows, bool)
            rows[fresh] = True
            self.cache = _prefill_shared(self.graphdef, self.state, self.layers,
                                         jnp.asarray(items[fresh[0]][:n], jnp.int32),
                                         self.cache, jnp.asarray(rows),
                                         self._adapter_ids([fresh[0]]))
            for r in fresh:
                self.history[r].extend(items[r][:n])
                items[r] = items[r][n:]
        t = bucket(max(len(v) for v in items.values()))
        self._ensure_capacity(t)
        toks = np.zeros((self.rows, t), np.int32)
        mask = np.zeros((self.rows, t), bool)
        for r, v in items.items():
            toks[r, : len(v)] = v
            mask[r, : len(v)] = True
        logits, self.cache = prefill(self.graphdef, self.state, self.layers, jnp.asarray(toks),
                                     self.cache, jnp.asarray(mask), self._adapter_ids())
        has = jnp.asarray(mask.any(axis=1))
        self.next_logits = jnp.where(has[:, None], logits, self.next_logits)
        for r, v in items.items():
            self.history[r].extend(v)
            self._logits_valid[r] = True

    # ------------------------------------------------------------------ sample
    def _keys(self, rows: Sequence[int], key_ids: Mapping[int, int] | None):
        kid = np.arange(self.rows, dtype=np.int64)
        for r in rows:
            if key_ids and r in key_ids:
                kid[r] = key_ids[r]
        # one compiled call for all rows (rows not sampled get unused keys)
        return _row_keys(self.seed, jnp.asarray(kid.astype(np.uint32)),
                         jnp.asarray(self._turn.astype(np.uint32)))

    def sample(
        self,
        rows: Sequence[int],
        *,
        max_new_tokens: int | Mapping[int, int] = 128,
        params: SamplingParams | None = None,
        stop_token_ids: Sequence[int] | Mapping[int, Sequence[int]] = (),
        stop_strings: Sequence[str] | Mapping[int, Sequence[str]] = (),
        key_ids: Mapping[int, int] | None = None,
    ) -> dict[int, Completion]:
        """Sample the next turn for `rows`. Per-row settings may be given as mappings.

        `key_ids` names the PRNG stream of each row (default: the row index); the turn
        counter of the row is folded in, so turn k of stream s is always the same draw.
        """
        params = params or SamplingParams()
        rows = list(dict.fromkeys(rows))
        self._check_rows(rows)
        for r in rows:
            if not self._logits_valid[r]:
                raise ValueError(
                    f"row {r} has nothing to continue from: extend it with a prompt or an "
                    "observation first"
                )

        def per_row(x, r, default):
            return x.get(r, default) if isinstance(x, Mapping) else x

        limits = {r: int(per_row(max_new_tokens, r, 128)) for r in rows}
        stops = {r: list(per_row(stop_token_ids, r, ())) for r in rows}
        sstops = {r: [s for s in per_row(stop_strings, r, ()) if s] for r in rows}
        if any(sstops.values()) and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer: BatchSampler(..., tokenizer=tok)")
        n_stop = max(1, max(len(v) for v in stops.values()))
        stop_arr = np.full((self.rows, n_stop), -1, np.int32)
        for r in rows:
            stop_arr[r, : len(stops[r])] = stops[r]
        stop_arr = jnp.asarray(stop_arr)

        out = {r: Completion([], [], [], "length") for r in rows}
        remaining = np.zeros(self.rows, np.int32)
        for r in rows:
            remaining[r] = limits[r]
        keys = self._keys(rows, key_ids)
        start_len = {r: len(self.history[r]) for r in rows}
        live = {r for r in rows if remaining[r] > 0}
        use_chunks = any(sstops.values())
        while live:
            step = max(int(remaining[r]) for r in live)
            # With stop strings, always the same chunk program (one compile), else
            # the whole budget in one call.
            M = self.decode_chunk if use_chunks else bucket(step)
            step = min(step, M)
            self._ensure_capacity(M)
            active = np.zeros(self.rows, bool)
            active[list(live)] = True
            limit = np.minimum(remaining, step).astype(np.int32)
            res = decode(self.graphdef, self.state, self.layers, self.next_logits, self.cache,
                         keys, stop_arr, jnp.asarray(active), jnp.asarray(limit),
                         self._adapter_ids(), params=params, max_new=M)
            self.cache, keys, self.next_logits = res["cache"], res["keys"], res["next_logits"]
            toks = np.asarray(res["tokens"])
            lps, raws = np.asarray(res["logprob"]), np.asarray(res["logprob_raw"])
            n, stopped = np.asarray(res["length"]), np.asarray(res["stopped"])
            truncate = {}
            for r in list(live):
                k = int(n[r])
                c = out[r]
                c.tokens += toks[r, :k].tolist()
                c.logprobs += lps[r, :k].tolist()
                c.logprobs_raw += raws[r, :k].tolist()
                self.history[r].extend(toks[r, :k].tolist())
                remaining[r] -= k
                if stopped[r]:
                    c.finish_reason, c.stop = "stop", c.tokens[-1]
                    live.discard(r)
                    continue
                if sstops[r]:
                    cut = self._stop_string_cut(c.tokens, k, sstops[r])
                    if cut is not None:
                        keep, s = cut
                        dropped = len(c.tokens) - keep
                        del c.tokens[keep:], c.logprobs[keep:], c.logprobs_raw[keep:]
                        if dropped:
                            del self.history[r][len(self.history[r]) - dropped:]
                            truncate[r] = len(self.history[r])
                            self._logits_valid[r] = False
                        c.finish_reason, c.stop = "stop", s
                        live.discard(r)
                        continue
                if remaining[r] <= 0:
                    live.discard(r)
            if truncate:
                new_len = np.asarray(self.cache.length).copy()
                for r, L in truncate.items():
                    new_len[r] = L
                self.cache = _truncate(self.cache, jnp.asarray(new_len, jnp.int32))
        for r in rows:
            self._turn[r] += 1
            assert len(self.history[r]) == start_len[r] + len(out[r].tokens)
        return out

    def _stop_string_cut(self, tokens: list[int], n_new: int, stops: Sequence[str]):
        """(number of tokens to keep, stop string) if a stop string occurs in the text."""
        text = self.tokenizer.decode(tokens)
        if _find_stop(text, stops) is None:
            return None
        # The text before this chunk held no stop string, so the cut lies in the chunk.
        for keep in range(max(0, len(tokens) - n_new) + 1, len(tokens) + 1):
            s = _find_stop(self.tokenizer.decode(tokens[:keep]), stops)
            if s is not None:
                return keep, s
        return len(tokens), _find_stop(text, stops)
