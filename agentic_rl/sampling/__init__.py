"""Jitted batched sampling with a KV cache (prefill + compiled decode loop), continued
across the turns of multi-turn episodes.

    params.py    SamplingParams, logits processing (temperature, top-p, top-k), sampling
    decode.py    the jitted prefill and the compiled decode loop over a named DecodeState
    cache.py     KV-cache maintenance: truncate, compact, grow, shared-prefix prefill
    stop.py      stop tokens and stop strings
    session.py   BatchSampler: rows that persist across turns, continued in the cache
    generate.py  one-call generation for scripts and the chat CLI

Imports: jax, flax, numpy, agentic_rl.models and agentic_rl.shapes.
"""

from agentic_rl.sampling.decode import decode, prefill
from agentic_rl.sampling.generate import generate
from agentic_rl.sampling.params import SamplingParams, choose
from agentic_rl.sampling.session import BatchSampler, Completion

__all__ = ["BatchSampler", "Completion", "SamplingParams", "choose", "decode",
           "generate", "prefill"]
