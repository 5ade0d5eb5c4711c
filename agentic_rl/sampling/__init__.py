"""Jitted batched sampling with a KV cache (prefill + compiled decode loop)."""

from agentic_rl.sampling.generate import Completion, generate
from agentic_rl.sampling.sampler import SamplingParams, bucket, choose, decode, prefill

__all__ = ["Completion", "SamplingParams", "bucket", "choose", "decode", "generate", "prefill"]
