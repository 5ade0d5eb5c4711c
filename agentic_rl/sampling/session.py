"""A batch of sequences kept in one KV cache across turns (multi-turn continuation).

`BatchSampler` owns the cache of up to `max_rows` sequences. `extend` appends
tokens (a prompt, or an observation after a turn) to some rows, prefilling only
those new tokens; `sample` decodes the next turn for some rows. The cost of turn k
is therefore its own new tokens, never a re-prefill of the history.

Stop handling (rules in `agentic_rl.sampling.stop`):
- stop token ids stop a row inside the compiled decode loop;
- with stop strings, decoding runs in compiled chunks and the host checks the text
  after each chunk; a row is cut right after the token that completes the stop
  string and its cache is rolled back to that point (later tokens were sampled
  speculatively and are forgotten).

PRNG: every (row key, turn) pair gets its own key, so samples reproduce from the
seed and do not depend on which other rows share the batch.

Imports: jax, numpy, agentic_rl.models.transformer, agentic_rl.shapes and the other
agentic_rl.sampling modules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from agentic_rl.models.kv_cache import init_cache
from agentic_rl.models.transformer import Transformer
from agentic_rl.sampling.cache import compact, grow, prefill_shared, truncate
from agentic_rl.sampling.decode import decode, prefill, split_model
from agentic_rl.sampling.params import SamplingParams
from agentic_rl.sampling.stop import stop_id_array, stop_string_cut
from agentic_rl.shapes import bucket, shared_prefix


@dataclasses.dataclass
class Completion:
    """One sampled turn. `tokens` includes the stop token when one was hit; when a stop
    string ended the turn, `tokens` ends with the token that completed it."""

    tokens: list[int]
    logprobs: list[float]  # under the distribution sampled from (tempered / truncated)
    logprobs_raw: list[float]  # under the untempered model
    finish_reason: str  # "stop" | "length"
    stop: str | int | None = None  # the stop string or token id that ended the turn


@jax.jit
def _row_keys(seed, key_ids: jax.Array, turns: jax.Array) -> jax.Array:
    """PRNG key of each row: fold_in(fold_in(key(seed), key_id), turn)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda k, t: jax.random.fold_in(jax.random.fold_in(base, k), t))(
        key_ids, turns)


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
        self.rows = bucket(max_rows)
        self.max_rows = max_rows
        self.tokenizer = tokenizer
        self.seed = seed
        self.decode_chunk = decode_chunk
        self.cache = init_cache(model.cfg, self.rows, bucket(capacity, minimum=16), cache_dtype)
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
        self.cache = compact(self.cache)
        cursor = int(self.cache.cursor)
        if cursor + new_slots + 1 > self.cache.capacity:
            self.cache = grow(self.cache, bucket(cursor + new_slots + 1, minimum=16))

    def reset(self, rows: Sequence[int]) -> None:
        """Forget rows (their slots can start new sequences)."""
        self._check_rows(rows)
        new_len = np.asarray(self.cache.length).copy()
        for r in rows:
            new_len[r] = 0
            self.history[r] = []
            self._logits_valid[r] = False
            self._turn[r] = 0
        self.cache = truncate(self.cache, jnp.asarray(new_len, jnp.int32))
        if not any(self.history):
            self.cache = self.cache.replace(cursor=jnp.zeros((), jnp.int32))

    def keep_prefix(self, row: int, n: int) -> None:
        """Keep the first `n` cached tokens of `row` and forget the rest (a rewritten
        context that kept its start: the system prompt and task are not prefilled again).
        The row's next-token logits are then stale: `extend` it before sampling."""
        self._check_rows([row])
        if not 0 <= n <= len(self.history[row]):
            raise ValueError(f"row {row} holds {len(self.history[row])} tokens; cannot keep {n}")
        if n == 0:
            return self.reset([row])
        self._roll_back({row: n})
        del self.history[row][n:]
        self._logits_valid[row] = False

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
            self._ensure_capacity(n + bucket(max(len(v) for v in items.values()) - n, minimum=16))
            rows = np.zeros(self.rows, bool)
            rows[fresh] = True
            self.cache = prefill_shared(self.graphdef, self.state, self.layers,
                                        jnp.asarray(items[fresh[0]][:n], jnp.int32),
                                        self.cache, jnp.asarray(rows),
                                        self._adapter_ids([fresh[0]]))
            for r in fresh:
                self.history[r].extend(items[r][:n])
                items[r] = items[r][n:]
        t = bucket(max(len(v) for v in items.values()), minimum=16)
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
        on_chunk: Callable[[int, list[int], list[float]], bool | None] | None = None,
        chunk: int | None = None,
    ) -> dict[int, Completion]:
        """Sample the next turn for `rows`. Per-row settings may be given as mappings.

        `key_ids` names the PRNG stream of each row (default: the row index); the turn
        counter of the row is folded in, so turn k of stream s is always the same draw.

        Streaming: with `on_chunk`, decoding runs in compiled chunks of `chunk` tokens
        (default `decode_chunk`) and after each one `on_chunk(row, new_ids, new_logprobs)`
        is told each row's kept new tokens (a stop string is cut before they are
        reported, so the pieces add up to the completion). It returning False stops that
        row there (finish "length": its client went away). Chunking never changes what is
        sampled: a row's draws depend only on its key and step.
        """
        params = params or SamplingParams()
        rows = list(dict.fromkeys(rows))
        self._check_can_continue(rows)
        limits, stop_ids, sstops = self._turn_settings(rows, max_new_tokens, stop_token_ids,
                                                       stop_strings)
        out = {r: Completion([], [], [], "length") for r in rows}
        remaining = np.zeros(self.rows, np.int32)
        for r in rows:
            remaining[r] = limits[r]
        keys = self._keys(rows, key_ids)
        start_len = {r: len(self.history[r]) for r in rows}
        live = {r for r in rows if remaining[r] > 0}
        use_chunks = any(sstops.values()) or on_chunk is not None
        size = chunk or self.decode_chunk
        if size < 1:
            raise ValueError(f"chunk must be >= 1, got {size}")
        while live:
            res, keys = self._decode_chunk(live, remaining, keys, stop_ids, params, use_chunks,
                                           size)
            rollback = {}
            for r in list(live):
                before = len(out[r].tokens)
                finished, kept = self._take(r, res, out[r], remaining, sstops[r])
                if kept is not None:
                    rollback[r] = kept
                if on_chunk is not None and len(out[r].tokens) > before:
                    c = out[r]
                    if on_chunk(r, c.tokens[before:], c.logprobs[before:]) is False:
                        finished = True  # as after a length limit: the cache is consistent
                if finished:
                    live.discard(r)
            if rollback:
                self._roll_back(rollback)
        for r in rows:
            self._turn[r] += 1
            assert len(self.history[r]) == start_len[r] + len(out[r].tokens)
        return out

    def _check_can_continue(self, rows: Sequence[int]) -> None:
        self._check_rows(rows)
        for r in rows:
            if not self._logits_valid[r]:
                raise ValueError(
                    f"row {r} has nothing to continue from: extend it with a prompt or an "
                    "observation first"
                )

    def _turn_settings(self, rows, max_new_tokens, stop_token_ids, stop_strings):
        """Per-row (token limits, stop id array [rows, S] on device, stop strings)."""

        def per_row(x, r, default):
            return x.get(r, default) if isinstance(x, Mapping) else x

        limits = {r: int(per_row(max_new_tokens, r, 128)) for r in rows}
        stops = {r: list(per_row(stop_token_ids, r, ())) for r in rows}
        sstops = {r: [s for s in per_row(stop_strings, r, ()) if s] for r in rows}
        if any(sstops.values()) and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer: BatchSampler(..., tokenizer=tok)")
        return limits, jnp.asarray(stop_id_array(stops, self.rows)), sstops

    def _decode_chunk(self, live, remaining, keys, stop_ids, params, use_chunks, size):
        """One compiled decode call for the `live` rows -> (host results, next keys)."""
        step = max(int(remaining[r]) for r in live)
        # With stop strings or streaming, always the same chunk program (one compile per
        # chunk size), else the whole budget in one call.
        M = size if use_chunks else bucket(step, minimum=16)
        step = min(step, M)
        self._ensure_capacity(M)
        active = np.zeros(self.rows, bool)
        active[list(live)] = True
        limit = np.minimum(remaining, step).astype(np.int32)
        res = decode(self.graphdef, self.state, self.layers, self.next_logits, self.cache,
                     keys, stop_ids, jnp.asarray(active), jnp.asarray(limit),
                     self._adapter_ids(), params=params, max_new=M)
        self.cache, self.next_logits = res["cache"], res["next_logits"]
        host = {name: np.asarray(res[name])
                for name in ("tokens", "logprob", "logprob_raw", "length", "stopped")}
        return host, res["keys"]

    def _take(self, r: int, res, c: Completion, remaining: np.ndarray, sstops: Sequence[str]):
        """Append row r's new tokens of a chunk to its completion and history ->
        (row finished, new history length to roll its cache back to, or None)."""
        k = int(res["length"][r])
        c.tokens += res["tokens"][r, :k].tolist()
        c.logprobs += res["logprob"][r, :k].tolist()
        c.logprobs_raw += res["logprob_raw"][r, :k].tolist()
        self.history[r].extend(res["tokens"][r, :k].tolist())
        remaining[r] -= k
        if res["stopped"][r]:
            c.finish_reason, c.stop = "stop", c.tokens[-1]
            return True, None
        if sstops:
            cut = stop_string_cut(self.tokenizer.decode, c.tokens, k, sstops)
            if cut is not None:
                keep, s = cut
                dropped = len(c.tokens) - keep
                del c.tokens[keep:], c.logprobs[keep:], c.logprobs_raw[keep:]
                kept = None
                if dropped:
                    del self.history[r][len(self.history[r]) - dropped:]
                    kept = len(self.history[r])
                    self._logits_valid[r] = False
                c.finish_reason, c.stop = "stop", s
                return True, kept
        return remaining[r] <= 0, None

    def _roll_back(self, lengths: Mapping[int, int]) -> None:
        """Forget the cached tokens of rows past their new lengths (speculative tokens
        sampled after a stop string)."""
        new_len = np.asarray(self.cache.length).copy()
        for r, L in lengths.items():
            new_len[r] = L
        self.cache = truncate(self.cache, jnp.asarray(new_len, jnp.int32))
