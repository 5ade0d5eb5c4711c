"""One-shot batched generation: lists of prompt token ids in, completions out.

Imports: agentic_rl.models.transformer, agentic_rl.shapes and agentic_rl.sampling.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentic_rl.models.transformer import Transformer
from agentic_rl.sampling.params import SamplingParams
from agentic_rl.sampling.session import BatchSampler, Completion
from agentic_rl.shapes import bucket


def generate(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 128,
    params: SamplingParams | None = None,
    stop_token_ids: Sequence[int] = (),
    stop_strings: Sequence[str] = (),
    tokenizer=None,
    seed: int = 0,
) -> list[Completion]:
    """Sample a completion for every prompt (token-id lists of any lengths).

    Row i draws from PRNG stream (seed, i), so results reproduce from the seed and do
    not depend on batch padding. Stop strings need `tokenizer`.
    """
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    n = len(prompts)
    # (a negative budget samples nothing; its bucket is the smallest, as for 0)
    capacity = (bucket(max(len(p) for p in prompts), minimum=16)
                + bucket(max(max_new_tokens, 0), minimum=16) + 1)
    sampler = BatchSampler(model, n, capacity=capacity, tokenizer=tokenizer, seed=seed)
    sampler.extend(dict(enumerate(prompts)))
    out = sampler.sample(range(n), max_new_tokens=max_new_tokens, params=params,
                         stop_token_ids=stop_token_ids, stop_strings=stop_strings)
    return [out[i] for i in range(n)]
