"""Host-side convenience around the jitted prefill/decode: lists of token ids in,
per-sequence results out, with batch and length bucketing."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from agentic_rl.models.transformer import Transformer, init_cache
from agentic_rl.sampling.sampler import SamplingParams, bucket, decode, prefill


@dataclasses.dataclass
class Completion:
    tokens: list[int]
    logprobs: list[float]  # under the sampled (tempered/truncated) distribution
    logprobs_raw: list[float]  # under the untempered model
    finish_reason: str  # "stop" | "length"


def _pad_rows(rows: Sequence[Sequence[int]], batch: int, length: int):
    toks = np.zeros((batch, length), np.int32)
    mask = np.zeros((batch, length), bool)
    for i, r in enumerate(rows):
        toks[i, : len(r)] = r
        mask[i, : len(r)] = True
    return jnp.asarray(toks), jnp.asarray(mask)


def generate(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 128,
    params: SamplingParams | None = None,
    stop_token_ids: Sequence[int] = (),
    seed: int = 0,
) -> list[Completion]:
    """Sample a completion for every prompt (token-id lists of any lengths).

    Row i uses PRNG key fold_in(seed, i), so results reproduce from the seed and
    do not depend on batch padding.
    """
    params = params or SamplingParams()
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    n = len(prompts)
    B = bucket(n, minimum=1)
    P = bucket(max(len(p) for p in prompts))
    M = bucket(max_new_tokens)
    cache = init_cache(model.cfg, B, P + M)
    toks, mask = _pad_rows(prompts, B, P)
    logits, cache = prefill(model, toks, cache, mask)
    stops = np.full((B, max(1, len(stop_token_ids))), -1, np.int32)
    stops[:, : len(stop_token_ids)] = list(stop_token_ids)
    base = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(base, i)))(jnp.arange(B))
    keys = jax.random.wrap_key_data(keys)
    active = jnp.arange(B) < n
    out = decode(model, logits, cache, keys, jnp.asarray(stops), active,
                 jnp.full((B,), max_new_tokens, jnp.int32), params=params, max_new=M)
    toks, lps, raws = (np.asarray(out[k]) for k in ("tokens", "logprob", "logprob_raw"))
    lengths, stopped = np.asarray(out["length"]), np.asarray(out["stopped"])
    return [
        Completion(
            tokens=toks[i, : lengths[i]].tolist(),
            logprobs=lps[i, : lengths[i]].tolist(),
            logprobs_raw=raws[i, : lengths[i]].tolist(),
            finish_reason="stop" if stopped[i] else "length",
        )
        for i in range(n)
    ]
