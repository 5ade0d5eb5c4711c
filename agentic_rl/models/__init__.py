"""Llama-family policy models (Flax NNX), checkpoint I/O and tokenizers."""

from agentic_rl.models.config import ModelConfig, UnsupportedModelError
from agentic_rl.models.hf_io import CheckpointError, load_hf_model, save_hf_model
from agentic_rl.models.loading import (
    EMBEDDED_MODELS,
    ModelNotFoundError,
    Policy,
    export_policy,
    load_critic,
    load_policy,
    resolve_model_dir,
)
from agentic_rl.models.transformer import (
    CriticModel,
    KVCache,
    LoRAParam,
    PolicyModel,
    Transformer,
    ValueHead,
    add_lora,
    chunked_logprobs,
    critic_from,
    init_cache,
    logical_axes,
    lora_state,
    merge_lora,
    token_logprobs,
    unmerge_lora,
)

__all__ = [
    "EMBEDDED_MODELS", "CheckpointError", "CriticModel", "KVCache", "LoRAParam",
    "ModelConfig", "ModelNotFoundError", "Policy", "PolicyModel", "Transformer",
    "UnsupportedModelError", "ValueHead", "add_lora", "chunked_logprobs", "critic_from",
    "export_policy",
    "init_cache", "load_critic", "load_hf_model", "load_policy", "logical_axes", "lora_state",
    "merge_lora", "resolve_model_dir", "save_hf_model", "token_logprobs", "unmerge_lora",
]
