"""Llama-family policy models (Flax NNX), checkpoint I/O and tokenizers.

Imports: the models subpackage only (re-exports its public API).
"""

from agentic_rl.models.config import ModelConfig, UnsupportedModelError
from agentic_rl.models.heads import (
    CriticModel,
    PolicyModel,
    ValueHead,
    chunked_logprobs,
    critic_from,
    token_logprobs,
)
from agentic_rl.models.io.hf import CheckpointError, load_hf_model, save_hf_model
from agentic_rl.models.kv_cache import KVCache, cached_forward, init_cache
from agentic_rl.models.loading import (
    EMBEDDED_MODELS,
    LoadedPolicy,
    ModelNotFoundError,
    export_policy,
    load_critic,
    load_policy,
    resolve_model_dir,
)
from agentic_rl.models.lora import (
    LoRAWeight,
    add_lora,
    attach_lora,
    lora_state,
    merge_lora,
    unmerge_lora,
)
from agentic_rl.models.transformer import Transformer, logical_axes

__all__ = [
    "EMBEDDED_MODELS", "CheckpointError", "CriticModel", "KVCache", "LoRAWeight",
    "LoadedPolicy", "ModelConfig", "ModelNotFoundError", "PolicyModel", "Transformer",
    "UnsupportedModelError", "ValueHead", "add_lora", "attach_lora", "cached_forward",
    "chunked_logprobs", "critic_from", "export_policy",
    "init_cache", "load_critic", "load_hf_model", "load_policy", "logical_axes", "lora_state",
    "merge_lora", "resolve_model_dir", "save_hf_model", "token_logprobs", "unmerge_lora",
]
