"""Jitted batched sampling with a KV cache (prefill + compiled decode loop), continued
across the turns of multi-turn episodes."""

from agentic_rl.sampling.generate import generate
from agentic_rl.sampling.sampler import SamplingParams, bucket, choose, decode, prefill
from agentic_rl.sampling.session import BatchSampler, Completion

__all__ = ["BatchSampler", "Completion", "SamplingParams", "bucket", "choose", "decode",
           "generate", "prefill"]
