"""Jitted batched sampling with a KV cache (prefill + compiled decode loop), continued
across the turns of multi-turn episodes."""

from agentic_rl.sampling.decode import decode, prefill
from agentic_rl.sampling.generate import generate
from agentic_rl.sampling.params import SamplingParams, choose
from agentic_rl.sampling.session import BatchSampler, Completion

__all__ = ["BatchSampler", "Completion", "SamplingParams", "choose", "decode",
           "generate", "prefill"]
