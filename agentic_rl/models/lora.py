"""LoRA: the adapter weight class, adding / attaching, merging, unmerging and saving
adapters, and which adapter each token uses.

What lives here: `LoRAWeight` (named so as not to shadow Flax's own `nnx.LoRAWeight`;
checkpoints and optimizer masks filter on it), `DEFAULT_LORA_TARGETS`, `add_lora`,
`attach_lora` (the one helper the loaders and builders use; a no-op for rank 0),
`merge_lora`, `unmerge_lora`, `lora_state`, `adapter_select` and `per_token` (per-row
adapter ids broadcast to per-token). The LoRA matmul itself is in `layers._linear`.

Imports: jax, numpy, flax.nnx and agentic_rl.models.layers only.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentic_rl.models.layers import PROJ_AXES, DecoderLayers, _param

Array = jax.Array


class LoRAWeight(nnx.Param):
    """Low-rank adapter weights. A distinct Variable type so that filters can train,
    differentiate and checkpoint adapters apart from the frozen base weights."""


def per_token(adapter_ids: Array | None, T: int) -> Array | None:
    """Per-row ids [B] broadcast to [B, T]; per-token ids [B, T] unchanged."""
    if adapter_ids is None:
        return None
    adapter_ids = jnp.asarray(adapter_ids, jnp.int32)
    return jnp.broadcast_to(adapter_ids[:, None], (adapter_ids.shape[0], T)) \
        if adapter_ids.ndim == 1 else adapter_ids


def adapter_select(adapter_ids: Array | None, num_adapters: int) -> Array | None:
    """One-hot [..., n] of each token's adapter (-1: none, the base model). None when the
    model has a single adapter (or none): every token then uses it, as before."""
    if num_adapters <= 1:
        return None
    if adapter_ids is None:
        raise ValueError(f"this model has {num_adapters} LoRA adapters: pass adapter_ids "
                         "(which adapter each row or token uses; -1 for the base model)")
    return jax.nn.one_hot(adapter_ids, num_adapters, dtype=jnp.float32)


DEFAULT_LORA_TARGETS = r"(q|k|v|o|gate|up|down)_proj"


def add_lora(
    model: nnx.Module,
    *,
    rank: int,
    alpha: float,
    targets: str = DEFAULT_LORA_TARGETS,
    rngs: nnx.Rngs,
    num_adapters: int = 1,
) -> list[str]:
    """Add LoRA adapters to every projection whose name fully matches `targets`.

    A is initialised like a Kaiming-uniform kernel, B to zero, so the adapted model
    starts exactly equal to the base model. Returns the adapted projection names.
    `num_adapters` > 1: that many independent rank-`rank` adapters per projection, side
    by side along the rank axis (A [L, in, n*r], B [L, n*r, out]); a forward pass picks
    each token's (`adapter_ids`), e.g. one adapter per agent of a multi-agent system.
    Train only `LoRAWeight`s (e.g. `nnx.Optimizer(model, tx, wrt=LoRAWeight)`): the
    optimizer then holds state only for the adapters.
    """
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    if num_adapters < 1:
        raise ValueError(f"num_adapters must be >= 1, got {num_adapters}")
    pat = re.compile(targets)
    adapted = []
    for layers in _decoder_layer_modules(model):
        cfg_shapes = {name: arr.shape for name, arr in layers.layer_params().items()}
        for name in PROJ_AXES:
            if not pat.fullmatch(name) or name not in cfg_shapes:
                continue
            L, fan_in, fan_out = cfg_shapes[name]
            dtype = getattr(layers, name).value.dtype
            bound = 1.0 / np.sqrt(fan_in)
            width = rank * num_adapters
            a = jax.random.uniform(rngs.params(), (L, fan_in, width), jnp.float32, -bound, bound)
            ax_in, ax_out = PROJ_AXES[name]
            setattr(layers, f"{name}_lora_a",
                    _param(a.astype(dtype), ("layers", ax_in, "lora_rank"), LoRAWeight))
            setattr(layers, f"{name}_lora_b",
                    _param(jnp.zeros((L, width, fan_out), dtype), ("layers", "lora_rank", ax_out),
                           LoRAWeight))
            layers.lora_adapters = num_adapters
            layers.lora_scale = tuple(
                sorted({**dict(layers.lora_scale), name: float(alpha) / rank}.items())
            )
            adapted.append(name)
    if not adapted:
        raise ValueError(
            f"LoRA target pattern {targets!r} matched no projection; valid names: "
            f"{', '.join(PROJ_AXES)}"
        )
    return sorted(set(adapted))



def attach_lora(
    model: nnx.Module,
    rank: int,
    alpha: float,
    targets: str | None = None,
    num_adapters: int = 1,
    *,
    rngs: nnx.Rngs,
) -> list[str]:
    """`add_lora` with config-style arguments: rank 0 means no LoRA (a no-op, returns []),
    `targets` None or empty means `DEFAULT_LORA_TARGETS`. Draws from `rngs` exactly as
    `add_lora` does."""
    if not rank:
        return []
    return add_lora(model, rank=rank, alpha=alpha, targets=targets or DEFAULT_LORA_TARGETS,
                    rngs=rngs, num_adapters=num_adapters)


def _decoder_layer_modules(model: nnx.Module) -> list[DecoderLayers]:
    return [m for _, m in nnx.iter_graph(model) if isinstance(m, DecoderLayers)]


def merge_lora(model: nnx.Module, adapter: int | None = None) -> None:
    """Fold adapters into the base kernels (W += A @ B * scale) and remove them,
    leaving a plain model (for export or adapter-free sampling). A model with several
    adapters per projection folds in the one numbered `adapter` (say, one agent's)."""
    for layers in _decoder_layer_modules(model):
        n = int(getattr(layers, "lora_adapters", 1))
        if n > 1 and adapter is None:
            raise ValueError(f"the model has {n} LoRA adapters per projection: name the one "
                             "to merge (merge_lora(model, adapter=k))")
        if adapter is not None and not 0 <= adapter < n:
            raise ValueError(f"adapter {adapter} out of range [0, {n})")
        for name, scale in dict(layers.lora_scale).items():
            a = getattr(layers, f"{name}_lora_a").value.astype(jnp.float32)
            b = getattr(layers, f"{name}_lora_b").value.astype(jnp.float32)
            if n > 1:
                r = a.shape[-1] // n
                a, b = a[..., adapter * r:(adapter + 1) * r], b[:, adapter * r:(adapter + 1) * r]
            w = getattr(layers, name)
            w.value = (w.value.astype(jnp.float32) + jnp.einsum("lir,lro->lio", a, b) * scale
                       ).astype(w.value.dtype)
            delattr(layers, f"{name}_lora_a")
            delattr(layers, f"{name}_lora_b")
        layers.lora_scale = ()
        layers.lora_adapters = 1


def unmerge_lora(model: nnx.Module, adapters: dict[str, Any]) -> None:
    """Inverse of `merge_lora`: subtract adapters from the kernels and re-attach them.

    `adapters` is `lora_state(model)` taken before merging.
    """
    for layers, (scales, arrays) in zip(_decoder_layer_modules(model), adapters["layers"]):
        for name, scale in scales.items():
            a, b = arrays[f"{name}_lora_a"], arrays[f"{name}_lora_b"]
            w = getattr(layers, name)
            delta = jnp.einsum("lir,lro->lio", a.astype(jnp.float32), b.astype(jnp.float32))
            w.value = (w.value.astype(jnp.float32) - delta * scale).astype(w.value.dtype)
            ax = w.get_metadata().get("out_sharding")
            ax_in, ax_out = ax[1], ax[2]
            setattr(layers, f"{name}_lora_a",
                    _param(a, ("layers", ax_in, "lora_rank"), LoRAWeight))
            setattr(layers, f"{name}_lora_b",
                    _param(b, ("layers", "lora_rank", ax_out), LoRAWeight))
        layers.lora_scale = tuple(sorted(scales.items()))


def lora_state(model: nnx.Module) -> dict[str, Any]:
    """Adapter arrays and scales per DecoderLayers, for `unmerge_lora`."""
    out = []
    for layers in _decoder_layer_modules(model):
        if int(getattr(layers, "lora_adapters", 1)) > 1:
            raise ValueError(
                f"the model has {layers.lora_adapters} LoRA adapters per projection; "
                "lora_state, unmerge_lora and HF export need one: fold one agent's into "
                "the weights first (merge_lora(model, adapter=k))")
        arrays = {
            k: v.value for k, v in vars(layers).items() if isinstance(v, LoRAWeight)
        }
        out.append((dict(layers.lora_scale), arrays))
    return {"layers": out}
