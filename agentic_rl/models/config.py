"""Model configuration for the Llama family, and its mapping to/from HF `config.json`.

One frozen dataclass describes every supported architecture (Llama 2/3, SmolLM2,
Qwen2/2.5, Qwen3): they differ only in a handful of switches (q/k/v bias, q/k
RMSNorm, tied embeddings, RoPE scaling), so one decoder implementation serves all.

Imports: jax.numpy and the standard library only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")

_DTYPES = {
    "float32": jnp.float32,
    "fp32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "bf16": jnp.bfloat16,
    "float16": jnp.float16,
    "fp16": jnp.float16,
}


class UnsupportedModelError(ValueError):
    """The checkpoint describes an architecture this decoder cannot run."""


def as_dtype(d: Any) -> Any:
    """Accept 'bf16'/'float32'/jnp dtypes alike, so configs can use plain strings."""
    if isinstance(d, str):
        try:
            return _DTYPES[d.lower()]
        except KeyError:
            raise ValueError(f"unknown dtype {d!r}; valid: {sorted(_DTYPES)}") from None
    return jnp.dtype(d).type if d is not None else jnp.float32


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a Llama-family decoder.

    `dtype` is the compute dtype (activations, matmul inputs); `param_dtype` is the
    storage dtype of the weights. Softmax, RMSNorm statistics and log-probs are always
    computed in float32 whatever `dtype` is, because those are where bf16 loses the
    precision that importance ratios in RL depend on.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = None  # hashable dict items
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2/2.5: bias on q/k/v projections
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on q and k before RoPE
    max_position_embeddings: int = 2048
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False  # recompute each layer in the backward pass (saves activation memory)
    # Full-sequence attention (training, scoring) takes its queries in blocks of this many
    # (`attention.causal_attention`): scores are [heads, block, T], not [heads, T, T], and
    # each block is recomputed in the backward pass, so a training step's memory grows
    # linearly with the sequence length. 0: never (quadratic memory) at any length.
    # Sequences of at most `attention_chunk` tokens run `attention.triangular_attention`
    # (static query blocks that skip the masked upper triangle: 2-4x faster than a full
    # [T, T] score, about half its memory, still quadratic).
    attention_chunk: int = 1024

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads}) for grouped-query attention"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError(
                    "hidden_size must be divisible by num_heads when head_dim is unset"
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
        as_dtype(self.dtype)
        as_dtype(self.param_dtype)

    @property
    def compute_dtype(self):
        return as_dtype(self.dtype)

    @property
    def weight_dtype(self):
        return as_dtype(self.param_dtype)

    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return dict(self.rope_scaling) if self.rope_scaling else None

    def replace(self, **kw) -> ModelConfig:
        return dataclasses.replace(self, **kw)

    def num_params(self) -> int:
        d, f, v, h = self.hidden_size, self.intermediate_size, self.vocab_size, self.head_dim
        attn = d * h * (self.num_heads * 2 + self.num_kv_heads * 2)
        if self.attention_bias:
            attn += h * (self.num_heads + 2 * self.num_kv_heads)
        per_layer = attn + 3 * d * f + 2 * d + (2 * h if self.qk_norm else 0)
        emb = v * d * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + emb + d

    # ----------------------------------------------------------------- HF mapping
    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], **overrides) -> ModelConfig:
        """Build from a HF `config.json` dict (transformers 4.x and 5.x spellings)."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"unsupported model_type {model_type!r} (architectures={hf.get('architectures')}); "
                f"agentic_rl runs the Llama family: {', '.join(SUPPORTED_MODEL_TYPES)}. "
                "Convert the checkpoint to one of these or add the architecture to "
                "agentic_rl/models/config.py"
            )
        if model_type == "mistral" and hf.get("sliding_window"):
            raise UnsupportedModelError("sliding-window attention (Mistral) is not supported")
        # transformers 5 nests RoPE settings in `rope_parameters`; 4.x uses rope_theta/rope_scaling.
        rope = dict(hf.get("rope_parameters") or {})
        theta = rope.pop("rope_theta", None) or hf.get("rope_theta", 10000.0)
        scaling = hf.get("rope_scaling") or (rope if rope else None)
        if scaling:
            scaling = dict(scaling)
            kind = scaling.get("rope_type", scaling.get("type", "default"))
            if kind not in ("default", "linear", "llama3"):
                raise UnsupportedModelError(
                    f"unsupported RoPE scaling {kind!r}; supported: default, linear, llama3"
                )
            scaling["rope_type"] = kind
            scaling.pop("type", None)
            scaling.pop("rope_theta", None)
            if kind == "default":
                scaling = None
        num_heads = hf["num_attention_heads"]
        cfg = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
            rope_theta=float(theta),
            rope_scaling=tuple(sorted(scaling.items())) if scaling else None,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attention_bias=bool(hf.get("attention_bias", model_type == "qwen2")),
            qk_norm=model_type == "qwen3",
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            model_type=model_type,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=_tuple_or_int(hf.get("eos_token_id")),
        )
        cfg.update(overrides)
        return cls(**cfg)

    def to_hf_dict(self, torch_dtype: str = "float32") -> dict[str, Any]:
        """A `config.json` dict that transformers loads with the matching model class."""
        arch = {
            "llama": "LlamaForCausalLM",
            "qwen2": "Qwen2ForCausalLM",
            "qwen3": "Qwen3ForCausalLM",
            "mistral": "MistralForCausalLM",
        }[self.model_type]
        d: dict[str, Any] = {
            "architectures": [arch],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": torch_dtype,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id)
            if isinstance(self.eos_token_id, tuple)
            else self.eos_token_id,
        }
        if self.rope_scaling:
            d["rope_scaling"] = dict(self.rope_scaling)
        if self.model_type == "llama":
            d["attention_bias"] = self.attention_bias
            d["mlp_bias"] = False
        if self.model_type == "qwen3":
            d["attention_bias"] = self.attention_bias
        if self.model_type in ("qwen2", "qwen3"):
            d["use_sliding_window"] = False
        return d


def _tuple_or_int(x):
    if isinstance(x, list):
        return tuple(x)
    return x


def rope_inv_freq(cfg: ModelConfig):
    """Inverse RoPE frequencies [head_dim/2], with linear or Llama-3 scaling applied.

    Llama-3 scaling leaves high frequencies alone, divides low frequencies by
    `factor`, and interpolates smoothly in between (as in Meta's reference code).
    """
    import numpy as np

    dim = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    sc = cfg.rope_scaling_dict
    if not sc:
        return inv.astype(np.float32)
    kind = sc.get("rope_type", "default")
    if kind == "linear":
        return (inv / sc["factor"]).astype(np.float32)
    if kind == "llama3":
        factor = sc["factor"]
        low, high = sc.get("low_freq_factor", 1.0), sc.get("high_freq_factor", 4.0)
        old_ctx = sc.get("original_max_position_embeddings", 8192)
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    raise UnsupportedModelError(f"unsupported RoPE scaling {kind!r}")
