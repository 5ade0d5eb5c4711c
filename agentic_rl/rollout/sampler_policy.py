"""The real policy for rollouts: the KV-cached JAX sampler behind the `RolloutPolicy` protocol.

Each live episode owns one row of a `BatchSampler`. A request's new tokens (the
prompt on turn 0; afterwards the end-of-turn token the rollout may have appended plus
the observation) are prefilled into that row's cache, then all requested rows decode
their next turn together. History is never re-prefilled unless the request's history
disagrees with the row's cache (counted in `stats["reprefills"]`, which should stay 0).
A rewritten context (a new episode id that `continues` an old one: a sliding window or a
summary replaced old turns) takes over the old episode's row and keeps the cached tokens
the two share, the system prompt and task at least (`stats["reused_prefix_tokens"]`),
so only what changed is prefilled.

Weights can change under live episodes (`switch_model`, or a `weight_source` asked before
every batch of requests: asynchronous training's partial rollouts resumed on the newest
version). The rows' cached keys and values were computed by the old weights, so each
live row is re-prefilled in full with the new ones at its next request
(`stats["switch_reprefills"]` / `["switch_prefill_tokens"]`): its next turn is sampled
exactly as the new weights would sample it from that history. `turn_versions[episode_id]`
records the weights version of every turn sampled.

Imports: agentic_rl.models and agentic_rl.sampling (the one rollout module that touches
jax).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

from agentic_rl.models.transformer import Transformer
from agentic_rl.rollout.policy import Generation, GenerationRequest, OnTokens
from agentic_rl.sampling.params import SamplingParams
from agentic_rl.sampling.session import BatchSampler


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class SamplerPolicy:
    """`RolloutPolicy` implementation over `BatchSampler`.

    max_rows: most episodes alive at once (rows of the KV cache).
    params: sampling settings (temperature, top-k, top-p, greedy).
    seed: with the episode id and turn, fixes every draw, so a rollout reproduces.
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer,
        *,
        max_rows: int = 64,
        params: SamplingParams | None = None,
        seed: int = 0,
        capacity: int = 512,
        stream_chunk: int = 8,
    ):
        self.params = params or SamplingParams()
        self.tokenizer = tokenizer
        self.max_rows = max_rows
        self.stream_chunk = stream_chunk  # tokens per streamed piece (see `generate`)
        self.sampler = BatchSampler(model, max_rows, capacity=capacity, tokenizer=tokenizer,
                                    seed=seed)
        self.rows: dict[str, int] = {}
        self.stats = {"reprefills": 0, "prefill_tokens": 0, "generated_tokens": 0,
                      "reused_prefix_tokens": 0, "switch_reprefills": 0,
                      "switch_prefill_tokens": 0}
        # Weights versions (see the module docstring): the current one, the version of
        # every turn sampled per episode, and an optional source of newer weights,
        # weight_source(current) -> (version, model) or None, asked before each batch.
        self.version = 0
        self.turn_versions: dict[str, list[int]] = {}
        self.weight_source: Callable[[int], tuple[int, Transformer] | None] | None = None
        self._stale: set[str] = set()  # live episodes whose cache predates the weights

    def update_model(self, model: Transformer) -> None:
        """Sample from new weights (call between rollouts, with no live episodes)."""
        if self.rows:
            raise RuntimeError(f"{len(self.rows)} episodes still live; release them first")
        self.sampler.update_model(model)

    def switch_model(self, model: Transformer, version: int) -> None:
        """Sample from new weights now, live episodes included: each is re-prefilled with
        them at its next request (its cache holds the old weights' keys and values)."""
        self.sampler.update_model(model)
        self.version = version
        self._stale = set(self.rows)

    def _row_for(self, episode_id: str) -> int:
        if episode_id in self.rows:
            return self.rows[episode_id]
        used = set(self.rows.values())
        free = [r for r in range(self.max_rows) if r not in used]
        if not free:
            raise RuntimeError(
                f"more than max_rows={self.max_rows} live episodes; build SamplerPolicy with a "
                "larger max_rows (or run fewer episodes at once)"
            )
        self.rows[episode_id] = free[0]
        self.sampler.reset([free[0]])
        return free[0]

    def generate(self, requests: Sequence[GenerationRequest], on_tokens: OnTokens | None = None
                 ) -> list[Generation]:
        """One `Generation` per request. With `on_tokens`, the batch decodes in chunks of
        `stream_chunk` tokens and `on_tokens(i, ids, logprobs)` gets request i's new
        tokens after each (False: stop that request there); the samples are the same."""
        if self.weight_source is not None:
            newer = self.weight_source(self.version)
            if newer is not None:
                self.switch_model(newer[1], newer[0])
        new_tokens: dict[int, list[int]] = {}
        for req in requests:
            fresh = req.episode_id not in self.rows
            if fresh and req.continues in self.rows:  # a rewritten context: take its row
                self.rows[req.episode_id] = self.rows.pop(req.continues)
                if req.continues in self._stale:
                    self._stale.add(req.episode_id)
                fresh = False
            row = self._row_for(req.episode_id)
            tokens = list(req.tokens)
            adapter = req.adapter if self.sampler.model.num_adapters > 1 else 0
            if req.episode_id in self._stale:  # cached by older weights: all of it again
                self._stale.discard(req.episode_id)
                self.stats["switch_reprefills"] += 1
                self.stats["switch_prefill_tokens"] += len(tokens)
                self.sampler.reset([row])
                self.sampler.set_adapters({row: adapter})
                new_tokens[row] = tokens
                continue
            prefix = tokens[: len(tokens) - req.num_new_tokens]
            if not fresh and self.sampler.adapters[row] == adapter and \
                    self.sampler.history[row] != prefix:
                # keep the cached tokens the row shares with the request (at least one
                # token is left to prefill: the sampler needs fresh next-token logits)
                keep = _common_prefix(self.sampler.history[row], tokens[:-1])
                if keep:
                    self.stats["reused_prefix_tokens"] += keep
                    self.sampler.keep_prefix(row, keep)
                    new_tokens[row] = tokens[keep:]
                    continue
            if fresh or self.sampler.history[row] != prefix or \
                    self.sampler.adapters[row] != adapter:
                if not fresh:
                    self.stats["reprefills"] += 1
                self.sampler.reset([row])
                self.sampler.set_adapters({row: adapter})
                new_tokens[row] = tokens
            else:
                new_tokens[row] = list(req.new_tokens)
        self.stats["prefill_tokens"] += sum(len(v) for v in new_tokens.values())
        self.sampler.extend(new_tokens)
        rows = [self.rows[r.episode_id] for r in requests]
        on_chunk = None
        if on_tokens is not None:
            index = {row: i for i, row in enumerate(rows)}

            def on_chunk(row, ids, logprobs):
                return on_tokens(index[row], ids, logprobs)
        out = self.sampler.sample(
            rows,
            max_new_tokens={self.rows[r.episode_id]: r.max_new_tokens for r in requests},
            params=self.params,
            stop_token_ids={self.rows[r.episode_id]: r.stop_token_ids for r in requests},
            stop_strings={self.rows[r.episode_id]: r.stop_strings for r in requests},
            key_ids={self.rows[r.episode_id]: zlib.crc32(r.episode_id.encode()) & 0x7FFFFFFF
                     for r in requests},
            on_chunk=on_chunk, chunk=self.stream_chunk if on_tokens is not None else None,
        )
        gens = []
        for req in requests:
            self.turn_versions.setdefault(req.episode_id, []).append(self.version)
        for row in rows:
            c = out[row]
            self.stats["generated_tokens"] += len(c.tokens)
            gens.append(Generation(c.tokens, c.logprobs, c.finish_reason))
        return gens

    def release(self, episode_ids: Sequence[str]) -> None:
        self._stale.difference_update(episode_ids)
        rows = [self.rows.pop(e) for e in episode_ids if e in self.rows]
        if rows:
            self.sampler.reset(rows)
