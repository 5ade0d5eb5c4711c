"""A Llama-family decoder in Flax NNX, with layer weights stacked for `lax.scan`.

Why stacked layers: a 30-layer model unrolled into one XLA program compiles
slowly and its compile time grows with depth; scanning one layer body over a
leading `layers` axis compiles once per program whatever the depth. The stacked
layout is also what checkpoint loaders produce naturally (one array per weight
name) and what FSDP shards along.

Every parameter carries logical axis names (`out_sharding` metadata, not applied
eagerly) so a `jax.sharding.Mesh` can map them to devices later:
`vocab`, `embed`, `q_heads`, `kv_heads`, `mlp`, `head_dim`, `layers`, `lora_rank`.

Weight names follow HF (`q_proj`, `gate_proj`, ...); kernels are stored [in, out].
"""

from __future__ import annotations

import functools
import re
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentic_rl.models.config import ModelConfig, rope_inv_freq

Array = jax.Array
NEG_INF = float(np.finfo(np.float32).min)


class LoRAParam(nnx.Param):
    """Low-rank adapter weights. A distinct Variable type so that filters can train,
    differentiate and checkpoint adapters apart from the frozen base weights."""


def _param(value, axes, cls=nnx.Param):
    return cls(value, out_sharding=tuple(axes), eager_sharding=False)


# Projections in a layer: name -> (input axis name, output axis name).
PROJ_AXES = {
    "q_proj": ("embed", "q_heads"),
    "k_proj": ("embed", "kv_heads"),
    "v_proj": ("embed", "kv_heads"),
    "o_proj": ("q_heads", "embed"),
    "gate_proj": ("embed", "mlp"),
    "up_proj": ("embed", "mlp"),
    "down_proj": ("mlp", "embed"),
}


def _proj_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    d, h = cfg.hidden_size, cfg.head_dim
    return {
        "q_proj": (d, cfg.num_heads * h),
        "k_proj": (d, cfg.num_kv_heads * h),
        "v_proj": (d, cfg.num_kv_heads * h),
        "o_proj": (cfg.num_heads * h, d),
        "gate_proj": (d, cfg.intermediate_size),
        "up_proj": (d, cfg.intermediate_size),
        "down_proj": (cfg.intermediate_size, d),
    }


class DecoderLayers(nnx.Module):
    """All decoder layers, each weight stacked along a leading `layers` axis."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        L, pd = cfg.num_layers, cfg.weight_dtype
        init = nnx.initializers.normal(0.02)
        for name, (fan_in, fan_out) in _proj_shapes(cfg).items():
            ax_in, ax_out = PROJ_AXES[name]
            w = init(rngs.params(), (L, fan_in, fan_out), jnp.float32).astype(pd)
            setattr(self, name, _param(w, ("layers", ax_in, ax_out)))
        if cfg.attention_bias:
            for name in ("q_proj", "k_proj", "v_proj"):
                n_out = _proj_shapes(cfg)[name][1]
                setattr(
                    self,
                    f"{name}_bias",
                    _param(jnp.zeros((L, n_out), pd), ("layers", PROJ_AXES[name][1])),
                )
        self.input_layernorm = _param(jnp.ones((L, cfg.hidden_size), pd), ("layers", "embed"))
        self.post_attention_layernorm = _param(
            jnp.ones((L, cfg.hidden_size), pd), ("layers", "embed")
        )
        if cfg.qk_norm:
            self.q_norm = _param(jnp.ones((L, cfg.head_dim), pd), ("layers", "head_dim"))
            self.k_norm = _param(jnp.ones((L, cfg.head_dim), pd), ("layers", "head_dim"))
        # (name, alpha / rank) pairs: a hashable static attribute, so the graphdef
        # can be a static argument of jax.jit.
        self.lora_scale: tuple[tuple[str, float], ...] = ()
        # Adapters per projection (`add_lora(num_adapters=n)`): each LoRA factor holds n
        # rank-r adapters side by side along its rank axis; a forward pass is told which
        # adapter each token uses (`adapter_ids`).
        self.lora_adapters: int = 1

    def layer_params(self) -> dict[str, Array]:
        """The stacked arrays, by name, ready to be scanned over."""
        return {
            k: v.value
            for k, v in vars(self).items()
            if isinstance(v, nnx.Variable) and not k.startswith("_")
        }


def unstack_layers(stacked: dict[str, Array]) -> tuple[dict[str, Array], ...]:
    """Per-layer weight dicts, each array its own buffer.

    Why: XLA's CPU backend copies a weight slice out of a stacked array on every
    use (in `scan` and in static slices alike), which triples the memory traffic
    of a decode step. The sampler unstacks once per policy version and runs an
    unrolled layer loop over separate buffers instead.
    """
    n = next(iter(stacked.values())).shape[0]
    return tuple({k: jnp.array(v[i]) for k, v in stacked.items()} for i in range(n))


@flax.struct.dataclass
class KVCache:
    """Keys/values of every layer, which slots hold real tokens, and positions.

    k, v: L-tuples of [B, KV, S, Dh] (one buffer per layer, head-major, so a layer
    reads its cache without slicing a stacked array and attention is a plain
    batched contraction);
    mask: bool [B, S] (slot holds a real token of that row);
    length: int32 [B] (real tokens of each row = RoPE position of its next token);
    cursor: int32 scalar, the first free slot, shared by all rows.

    All rows write a chunk at the same slots [cursor, cursor + t): one in-place
    `dynamic_update_slice` instead of a per-row scatter (which XLA's CPU backend
    runs ~1000x slower). Rows with fewer real tokens than t leave holes (mask 0);
    attention ignores holes and RoPE uses each row's own `length`, so holes cost
    capacity, never correctness. Truncating a row (a stop string found after the
    fact) just clears its mask and lowers its length.
    """

    k: Array
    v: Array
    mask: Array
    length: Array
    cursor: Array

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]


def init_cache(cfg: ModelConfig, batch: int, capacity: int, dtype=None) -> KVCache:
    dtype = dtype or cfg.compute_dtype
    shape = (batch, cfg.num_kv_heads, capacity, cfg.head_dim)
    return KVCache(
        k=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
        v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
        mask=jnp.zeros((batch, capacity), bool),
        length=jnp.zeros((batch,), jnp.int32),
        cursor=jnp.zeros((), jnp.int32),
    )


# ------------------------------------------------------------------ pure pieces
def _per_token(adapter_ids: Array | None, T: int) -> Array | None:
    """Per-row ids [B] broadcast to [B, T]; per-token ids [B, T] unchanged."""
    if adapter_ids is None:
        return None
    adapter_ids = jnp.asarray(adapter_ids, jnp.int32)
    return jnp.broadcast_to(adapter_ids[:, None], (adapter_ids.shape[0], T)) \
        if adapter_ids.ndim == 1 else adapter_ids


def rms_norm(x: Array, weight: Array, eps: float) -> Array:
    """RMSNorm with float32 statistics, cast back to the input dtype before scaling (as HF)."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * y.astype(x.dtype)


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
    """Rotate-half RoPE (HF layout). x: [B, T, N, Dh]; positions: int [B, T]."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, Dh/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    xf = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos + rotated * sin).astype(x.dtype)


def _linear(p: dict[str, Array], name: str, x: Array, scales: dict[str, float],
            select: Array | None = None) -> Array:
    """x @ W (+ bias) (+ LoRA). `select` [B, T, n] (one-hot, or 0 for no adapter) picks
    each token's adapter among the n stacked along the rank axis: its rank-r slice of
    x @ A is kept, the others are zeroed before @ B. So a token's output, and the
    gradient into each adapter, come from its own adapter only; the cost is n adapters'
    worth of (cheap) low-rank matmuls, in one call."""
    y = x @ p[name].astype(x.dtype)
    if f"{name}_bias" in p:
        y = y + p[f"{name}_bias"].astype(x.dtype)
    if f"{name}_lora_a" in p:
        a = p[f"{name}_lora_a"].astype(x.dtype)
        b = p[f"{name}_lora_b"].astype(x.dtype)
        h = x @ a
        if select is not None:
            n = select.shape[-1]
            h = (h.reshape(*h.shape[:-1], n, h.shape[-1] // n)
                 * select[..., None].astype(h.dtype)).reshape(h.shape)
        y = y + h @ b * scales[name]
    return y


def adapter_select(adapter_ids: Array | None, num_adapters: int) -> Array | None:
    """One-hot [..., n] of each token's adapter (-1: none, the base model). None when the
    model has a single adapter (or none): every token then uses it, as before."""
    if num_adapters <= 1:
        return None
    if adapter_ids is None:
        raise ValueError(f"this model has {num_adapters} LoRA adapters: pass adapter_ids "
                         "(which adapter each row or token uses; -1 for the base model)")
    return jax.nn.one_hot(adapter_ids, num_adapters, dtype=jnp.float32)


def _grouped(q: Array, num_kv: int) -> Array:
    B, T, H, Dh = q.shape
    return q.reshape(B, T, num_kv, H // num_kv, Dh)


def attention(q: Array, k: Array, v: Array, allowed: Array) -> Array:
    """Grouped-query attention without materialising repeated K/V heads.

    q: [B, T, H, Dh]; k, v: [B, S, KV, Dh]; allowed: bool [B, T, S].
    Scores and softmax in float32.
    """
    B, T, H, Dh = q.shape
    qg = _grouped(q, k.shape[2])
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = jnp.where(allowed[:, None, None], scores * (Dh**-0.5), NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(B, T, H * Dh)


def prefixed_attention(
    q: Array, kp: Array, vp: Array, k: Array, v: Array, allowed: Array
) -> Array:
    """Attention of rows that share a prefix: each row's queries see the one shared
    prefix (all of it) and their own keys (as `allowed` says), without copying the
    prefix's keys into every row.

    q: [B, S, H, Dh]; kp, vp: [P, KV, Dh] (the shared prefix); k, v: [B, S, KV, Dh];
    allowed: bool [B, S, S] over the row's own keys. Scores and softmax in float32.
    """
    B, S, H, Dh = q.shape
    P = kp.shape[0]
    qg = _grouped(q, k.shape[2])
    scale = Dh**-0.5
    sp = jnp.einsum("btkgd,skd->bkgts", qg, kp, preferred_element_type=jnp.float32) * scale
    ss = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    ss = jnp.where(allowed[:, None, None], ss * scale, NEG_INF)
    probs = jax.nn.softmax(jnp.concatenate([sp, ss], axis=-1), axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,skd->btkgd", probs[..., :P], vp) + jnp.einsum(
        "bkgts,bskd->btkgd", probs[..., P:], v
    )
    return out.reshape(B, S, H * Dh)


def cached_attention(q: Array, ck: Array, cv: Array, allowed: Array) -> Array:
    """Attention of a chunk of queries over the cache (which already holds the chunk).

    q: [B, t, H, Dh]; ck, cv: [B, KV, S, Dh]; allowed: bool [B, t, S].
    The chunk's keys are written into the cache *before* attending, so each layer
    reads its cache buffer only after its last write: XLA then updates the cache in
    place inside the decode loop instead of copying it every step.
    """
    B, T, H, Dh = q.shape
    KV = ck.shape[1]
    G = H // KV
    qh = q.reshape(B, T, KV, G, Dh).transpose(0, 2, 3, 1, 4)  # [B, KV, G, T, Dh]
    ck, cv = ck.astype(q.dtype), cv.astype(q.dtype)
    ok = allowed[:, None, None]  # [B, 1, 1, T, S]
    if T == 1:
        # One query per row: a fused multiply-reduce streams the cache once, which
        # beats XLA CPU's small batched matmuls for decode.
        s = jnp.sum(qh.astype(jnp.float32) * ck[:, :, None].astype(jnp.float32), -1)
        s = s[..., None, :]
        probs = jax.nn.softmax(jnp.where(ok, s * Dh**-0.5, NEG_INF), axis=-1)
        out = jnp.sum(probs[:, :, :, 0, :, None] * cv[:, :, None].astype(jnp.float32), -2)
        out = out[:, :, :, None].astype(q.dtype)  # [B, KV, G, 1, Dh]
    else:
        s = jnp.einsum("bkgtd,bksd->bkgts", qh, ck, preferred_element_type=jnp.float32)
        probs = jax.nn.softmax(jnp.where(ok, s * Dh**-0.5, NEG_INF), axis=-1)
        out = jnp.einsum("bkgts,bksd->bkgtd", probs.astype(cv.dtype), cv)
    return out.transpose(0, 3, 1, 2, 4).reshape(B, T, H * Dh)


def decoder_layer(
    p: dict[str, Array],
    x: Array,
    positions: Array,
    inv_freq: Array,
    attend,
    layer_in,
    cfg: ModelConfig,
    scales: dict[str, float],
    select: Array | None = None,
):
    """One pre-norm decoder layer. `attend(q, k, v, layer_in) -> (out, layer_out)`
    decides which keys each query sees (plain causal, or cache + chunk) and what the
    layer hands back to the caller (nothing, or its new keys/values). `select`: each
    token's LoRA adapter (`adapter_select`), None for a single adapter."""
    B, T, _ = x.shape
    H, KV, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    lin = functools.partial(_linear, scales=scales, select=select)
    h = rms_norm(x, p["input_layernorm"], cfg.rms_norm_eps)
    q = lin(p, "q_proj", h).reshape(B, T, H, Dh)
    k = lin(p, "k_proj", h).reshape(B, T, KV, Dh)
    v = lin(p, "v_proj", h).reshape(B, T, KV, Dh)
    if cfg.qk_norm:
        q = rms_norm(q, p["q_norm"], cfg.rms_norm_eps)
        k = rms_norm(k, p["k_norm"], cfg.rms_norm_eps)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    attn, layer_out = attend(q, k, v, layer_in)
    x = x + lin(p, "o_proj", attn)
    h = rms_norm(x, p["post_attention_layernorm"], cfg.rms_norm_eps)
    gate = jax.nn.silu(lin(p, "gate_proj", h))
    x = x + lin(p, "down_proj", gate * lin(p, "up_proj", h))
    return x, layer_out


class Transformer(nnx.Module):
    """Decoder-only LM: embeddings, stacked layers, final norm, (untied) LM head."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        pd = cfg.weight_dtype
        emb = nnx.initializers.normal(0.02)(rngs.params(), (cfg.vocab_size, cfg.hidden_size))
        self.embed_tokens = _param(emb.astype(pd), ("vocab", "embed"))
        self.layers = DecoderLayers(cfg, rngs=rngs)
        self.norm = _param(jnp.ones((cfg.hidden_size,), pd), ("embed",))
        if not cfg.tie_word_embeddings:
            head = nnx.initializers.normal(0.02)(rngs.params(), (cfg.vocab_size, cfg.hidden_size))
            self.lm_head = _param(head.astype(pd), ("vocab", "embed"))

    # -- the unembedding used by logits and by chunked log-probs
    def unembed_matrix(self) -> Array:
        """[V, D] output projection (the embedding itself when tied). Kept in [V, D]
        layout so tied models never materialise a transposed copy of the embedding."""
        if self.cfg.tie_word_embeddings:
            return self.embed_tokens.value
        return self.lm_head.value

    def logits(self, hidden: Array) -> Array:
        w = self.unembed_matrix().astype(hidden.dtype)
        return jnp.einsum("btd,vd->btv", hidden, w, preferred_element_type=jnp.float32)

    def embed(self, tokens: Array) -> Array:
        return jnp.take(self.embed_tokens.value, tokens, axis=0).astype(self.cfg.compute_dtype)

    @property
    def num_adapters(self) -> int:
        """LoRA adapters per projection (1 with one adapter or none)."""
        return int(getattr(self.layers, "lora_adapters", 1))

    def _run_layers(self, x, positions, attend, layer_inputs, select=None):
        """Scan the layer body over the stacked weights (and per-layer inputs)."""
        cfg = self.cfg
        inv_freq = jnp.asarray(rope_inv_freq(cfg))
        scales = dict(self.layers.lora_scale)

        def body(x, inputs):
            p, layer_in = inputs
            return decoder_layer(p, x, positions, inv_freq, attend, layer_in, cfg, scales,
                                 select)

        if cfg.remat:
            body = jax.checkpoint(body, prevent_cse=False)
        x, layer_outs = jax.lax.scan(body, x, (self.layers.layer_params(), layer_inputs))
        return rms_norm(x, self.norm.value, cfg.rms_norm_eps), layer_outs

    def hidden_states(self, tokens: Array, attention_mask: Array | None = None,
                      adapter_ids: Array | None = None) -> Array:
        """Full-sequence forward (training / scoring). tokens, attention_mask: [B, T].

        Positions count real tokens only (cumsum of the mask), so left and right
        padding both give the positions an unpadded sequence would have.
        `adapter_ids` int [B, T] (or [B]): each token's LoRA adapter when the model has
        several (-1: none); ignored with one.
        """
        B, T = tokens.shape
        if attention_mask is None:
            attention_mask = jnp.ones((B, T), bool)
        attention_mask = attention_mask.astype(bool)
        positions = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0).astype(jnp.int32)
        allowed = jnp.tril(jnp.ones((T, T), bool))[None] & attention_mask[:, None, :]

        def attend(q, k, v, _):
            return attention(q, k, v, allowed), None

        select = adapter_select(_per_token(adapter_ids, T), self.num_adapters)
        h, _ = self._run_layers(self.embed(tokens), positions, attend, None, select)
        return h

    def prefixed_hidden_states(
        self, tokens: Array, attention_mask: Array, prefix_len: int
    ) -> tuple[Array, Array]:
        """`hidden_states` for rows whose first `prefix_len` tokens are the same real
        tokens (a shared system prompt, few-shot examples, a GRPO group's question):
        the prefix is computed once instead of once per row. Exact, gradients included
        (the prefix's keys and values receive every row's contribution).

        Precondition (the caller's, not checked under jit): tokens[:, :P] are equal in
        every row and attention_mask[:, :P] is all true. Returns (prefix hidden [P, D],
        suffix hidden [B, T - P, D]).
        """
        B, T = tokens.shape
        P, S = prefix_len, T - prefix_len
        if not 1 <= P < T:
            raise ValueError(f"prefix_len must be in [1, {T}), got {P}")
        if self.num_adapters > 1:
            raise ValueError("prefix sharing computes the prefix once for every row; with "
                             "several LoRA adapters rows may differ there: use prefix_len=0")
        mask_s = attention_mask[:, P:].astype(bool)
        pos_s = P + jnp.maximum(jnp.cumsum(mask_s, axis=1) - 1, 0)
        positions = jnp.concatenate([jnp.arange(P), pos_s.reshape(-1)]).astype(jnp.int32)
        # One flat token stream [1, P + B*S]: every per-token op (projections, MLP, norms,
        # RoPE) runs on it unchanged; only attention knows which stream a token is in.
        x = self.embed(jnp.concatenate([tokens[0, :P], tokens[:, P:].reshape(-1)]))[None]
        causal_p = jnp.tril(jnp.ones((P, P), bool))[None]
        allowed_s = jnp.tril(jnp.ones((S, S), bool))[None] & mask_s[:, None, :]

        def attend(q, k, v, _):
            rows = lambda a: a[0, P:].reshape(B, S, *a.shape[2:])
            out_p = attention(q[:, :P], k[:, :P], v[:, :P], causal_p)[0]
            out_s = prefixed_attention(rows(q), k[0, :P], v[0, :P], rows(k), rows(v), allowed_s)
            return jnp.concatenate([out_p, out_s.reshape(B * S, -1)])[None], None

        h, _ = self._run_layers(x, positions[None], attend, None)
        return h[0, :P], h[0, P:].reshape(B, S, -1)

    def __call__(self, tokens: Array, attention_mask: Array | None = None) -> Array:
        """Float32 logits [B, T, V]. For long sequences use `token_logprobs` instead."""
        return self.logits(self.hidden_states(tokens, attention_mask))

    def forward_cached(
        self,
        tokens: Array,
        cache: KVCache,
        input_mask: Array | None = None,
        layers: tuple[dict[str, Array], ...] | None = None,
        adapter_ids: Array | None = None,
    ) -> tuple[Array, KVCache]:
        """Append `tokens` [B, t] to each row's cached sequence and return
        (hidden [B, t, D], updated cache). `input_mask` [B, t] marks real new tokens;
        they must be a prefix of each row's chunk (right padding). Padded positions
        become holes in the cache (never attended to).

        The caller guarantees `cache.cursor + t <= cache.capacity`.
        `layers`: per-layer weights from `unstack_layers` (faster on CPU); by default
        they are sliced from the stacked weights. The layer loop is unrolled.
        `adapter_ids` int [B]: each row's LoRA adapter when the model has several.
        """
        B, t = tokens.shape
        if input_mask is None:
            input_mask = jnp.ones((B, t), bool)
        input_mask = input_mask.astype(bool)
        positions = cache.length[:, None] + jnp.arange(t, dtype=jnp.int32)[None]
        at = (0, 0, cache.cursor, 0)
        mask = jax.lax.dynamic_update_slice(cache.mask, input_mask, (0, cache.cursor))
        slot = jnp.arange(cache.capacity, dtype=jnp.int32)
        # query i (at slot cursor + i) sees every real slot up to and including its own
        own_slot = cache.cursor + jnp.arange(t, dtype=jnp.int32)
        allowed = mask[:, None, :] & (slot[None, None, :] <= own_slot[:, None])

        def attend(q, k, v, layer_cache):
            ck, cv = layer_cache
            ck = jax.lax.dynamic_update_slice(ck, k.swapaxes(1, 2).astype(ck.dtype), at)
            cv = jax.lax.dynamic_update_slice(cv, v.swapaxes(1, 2).astype(cv.dtype), at)
            return cached_attention(q, ck, cv, allowed), (ck, cv)

        cfg = self.cfg
        if layers is None:
            layers = unstack_layers(self.layers.layer_params())
        inv_freq = jnp.asarray(rope_inv_freq(cfg))
        scales = dict(self.layers.lora_scale)
        select = adapter_select(_per_token(adapter_ids, t), self.num_adapters)
        x = self.embed(tokens)
        k_all, v_all = [], []
        for p, ck, cv in zip(layers, cache.k, cache.v):
            x, (ck, cv) = decoder_layer(p, x, positions, inv_freq, attend, (ck, cv), cfg, scales,
                                        select)
            k_all.append(ck)
            v_all.append(cv)
        h = rms_norm(x, self.norm.value, cfg.rms_norm_eps)
        length = cache.length + input_mask.sum(axis=1).astype(jnp.int32)
        return h, KVCache(k=tuple(k_all), v=tuple(v_all), mask=mask, length=length,
                          cursor=cache.cursor + t)


# ------------------------------------------------------------------ log-probs
def chunked_logprobs(
    hidden: Array,
    unembed: Array,
    targets: Array,
    *,
    chunk_size: int = 128,
    with_entropy: bool = False,
) -> tuple[Array, Array | None]:
    """log p(targets) (and entropy) from hidden states, chunked over time.

    hidden [B, T, D], unembed [V, D], targets [B, T] -> float32 [B, T].
    Only a [B, chunk, V] slab of logits exists at a time, and each chunk is
    rematerialised in the backward pass, so memory is O(B * chunk * V), not
    O(B * T * V): with V = 49152 the full logits of a 16 x 1024 batch would be 3 GiB.
    """
    B, T, D = hidden.shape
    c = min(chunk_size, T)
    pad = (-T) % c
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    n = (T + pad) // c
    hs = hidden.reshape(B, n, c, D).swapaxes(0, 1)
    ts = targets.reshape(B, n, c).swapaxes(0, 1)
    w = unembed.astype(hidden.dtype)

    @jax.checkpoint
    def one(h, t):
        logits = jnp.einsum("bcd,vd->bcv", h, w, preferred_element_type=jnp.float32)
        lse = jax.nn.logsumexp(logits, axis=-1)
        lp = jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0] - lse
        if with_entropy:
            probs = jax.nn.softmax(logits, axis=-1)
            ent = lse - jnp.sum(probs * logits, axis=-1)
        else:
            ent = jnp.zeros_like(lp)
        return lp, ent

    lp, ent = jax.lax.map(lambda xs: one(*xs), (hs, ts))
    lp = lp.swapaxes(0, 1).reshape(B, n * c)[:, :T]
    ent = ent.swapaxes(0, 1).reshape(B, n * c)[:, :T]
    return lp, (ent if with_entropy else None)


def token_logprobs(
    model: Transformer,
    tokens: Array,
    attention_mask: Array | None = None,
    *,
    chunk_size: int = 128,
    with_entropy: bool = False,
) -> tuple[Array, Array | None]:
    """Log-prob of every token given its prefix: out[:, t] = log p(tokens[t] | tokens[<t]).

    Aligned with `EpisodeBatch.sample_logprobs` (position t holds the log-prob of
    token t); position 0 has no prefix and is 0. Entropy (optional) is that of the
    predictive distribution for position t.
    """
    h = model.hidden_states(tokens, attention_mask)
    lp, ent = chunked_logprobs(
        h[:, :-1], model.unembed_matrix(), tokens[:, 1:], chunk_size=chunk_size,
        with_entropy=with_entropy,
    )
    lp = jnp.pad(lp, ((0, 0), (1, 0)))
    if ent is not None:
        ent = jnp.pad(ent, ((0, 0), (1, 0)))
    return lp, ent


# ------------------------------------------------------------------ value head
class ValueHead(nnx.Module):
    """Scalar value per token from final hidden states (PPO critic)."""

    def __init__(self, hidden_size: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.kernel = _param(
            jnp.zeros((hidden_size, 1), param_dtype), ("embed", None)
        )
        self.bias = _param(jnp.zeros((1,), param_dtype), (None,))

    def __call__(self, hidden: Array) -> Array:
        h = hidden.astype(jnp.float32)
        return (h @ self.kernel.value.astype(jnp.float32))[..., 0] + self.bias.value[0]


class PolicyModel(nnx.Module):
    """The policy LM, optionally with a critic: a value head on the shared trunk
    (`value_head=True`) or a separate `CriticModel` (`critic=`), never both."""

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        rngs: nnx.Rngs,
        value_head: bool = False,
        lm: Transformer | None = None,
        critic: CriticModel | None = None,
    ):
        if value_head and critic is not None:
            raise ValueError("a policy has either a value head on its trunk (shared critic) "
                             "or a separate critic, not both")
        self.lm = lm if lm is not None else Transformer(cfg, rngs=rngs)
        # nnx.data: a head or critic may be attached later (None now is not a static field)
        self.value_head = nnx.data(ValueHead(cfg.hidden_size, rngs=rngs) if value_head
                                   else None)
        # A separate critic (its own trunk + head); its values replace the shared head's.
        self.critic = nnx.data(critic)

    @property
    def cfg(self) -> ModelConfig:
        return self.lm.cfg

    def __call__(self, tokens, attention_mask=None):
        return self.lm(tokens, attention_mask)

    def logprobs_and_values(
        self, tokens, attention_mask=None, *, chunk_size: int = 128, with_entropy=False,
        prefix_len: int = 0, adapter_ids=None,
    ):
        """One trunk pass giving token log-probs, entropies and values [B, T] (values from
        the shared head, or from the separate critic's own pass; None without a critic).

        All three are aligned the same way: position t holds what the policy had *before*
        emitting token t (from the hidden state at t - 1), so values[t] is V(state in
        which token t was chosen). A value read at t itself would already have seen the
        action: as a baseline it would cancel the action's own advantage. Position 0 is 0.

        `prefix_len` > 0 declares that every row starts with the same `prefix_len` real
        tokens (see `Transformer.prefixed_hidden_states`): the prefix's trunk pass and
        its log-probs are computed once, not once per row. Same results.
        `adapter_ids` [B, T]: each token's LoRA adapter (models with several; see
        `Transformer.hidden_states`), for the policy and a separate critic alike.
        """
        if prefix_len:
            lp, ent, values = self._prefixed_logprobs_and_values(
                tokens, attention_mask, prefix_len, chunk_size, with_entropy)
        else:
            h = self.lm.hidden_states(tokens, attention_mask, adapter_ids)
            lp, ent = chunked_logprobs(
                h[:, :-1], self.lm.unembed_matrix(), tokens[:, 1:], chunk_size=chunk_size,
                with_entropy=with_entropy,
            )
            lp = jnp.pad(lp, ((0, 0), (1, 0)))
            ent = jnp.pad(ent, ((0, 0), (1, 0))) if ent is not None else None
            values = _shifted_values(self.value_head, h) if self.value_head is not None else None
        if self.critic is not None:
            values = self.critic.aligned_values(tokens, attention_mask, prefix_len=prefix_len,
                                                adapter_ids=adapter_ids)
        return lp, ent, values

    def _prefixed_logprobs_and_values(self, tokens, attention_mask, P, chunk_size, with_entropy):
        B, T = tokens.shape
        attention_mask = _check_prefix(tokens, attention_mask, P)
        hp, hs = self.lm.prefixed_hidden_states(tokens, attention_mask, P)
        w = self.lm.unembed_matrix()
        logprobs = functools.partial(chunked_logprobs, chunk_size=chunk_size,
                                     with_entropy=with_entropy)
        # Inside the prefix: once, then broadcast. From position P on: per row, the
        # first prediction coming from the prefix's last hidden state.
        lp_p, ent_p = logprobs(hp[None, :-1], w, tokens[:1, 1:P])
        first = jnp.broadcast_to(hp[-1], (B, 1, hp.shape[-1]))
        lp_s, ent_s = logprobs(jnp.concatenate([first, hs[:, :-1]], axis=1), w, tokens[:, P:])

        def join(a_p, a_s):
            return jnp.concatenate(
                [jnp.zeros((B, 1), a_s.dtype), jnp.broadcast_to(a_p, (B, P - 1)), a_s], axis=1)

        lp = join(lp_p, lp_s)
        ent = join(ent_p, ent_s) if with_entropy else None
        values = (_prefixed_values(self.value_head, hp, hs) if self.value_head is not None
                  else None)
        return lp, ent, values


def _check_prefix(tokens, attention_mask, P):
    if P < 2:
        raise ValueError(f"prefix_len must be 0 (off) or >= 2, got {P}")
    return jnp.ones(tokens.shape, bool) if attention_mask is None else attention_mask


def _shifted_values(head: ValueHead, h: Array) -> Array:
    """values[t] = head(h[t - 1]): the value of the state in which token t was chosen."""
    return jnp.pad(head(h[:, :-1]), ((0, 0), (1, 0)))


def _prefixed_values(head: ValueHead, hp: Array, hs: Array) -> Array:
    """`_shifted_values` of rows sharing a prefix: hp [P, D] (computed once), hs [B, T-P, D]."""
    B, P = hs.shape[0], hp.shape[0]
    first = jnp.broadcast_to(hp[-1], (B, 1, hp.shape[-1]))
    vp = jnp.broadcast_to(head(hp[None, :-1]), (B, P - 1))
    vs = head(jnp.concatenate([first, hs[:, :-1]], axis=1))
    return jnp.concatenate([jnp.zeros((B, 1), vs.dtype), vp, vs], axis=1)


class CriticModel(nnx.Module):
    """A separate critic: its own trunk (usually initialised from the policy) + value head.

    Trained with its own optimizer chain (`rl.critic="separate"`): value learning then
    neither shares nor disturbs the policy's representation, at the price of a second
    trunk pass and the critic's parameters and moments."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, lm: Transformer | None = None):
        self.lm = lm if lm is not None else Transformer(cfg, rngs=rngs)
        self.value_head = ValueHead(cfg.hidden_size, rngs=rngs)

    def __call__(self, tokens, attention_mask=None) -> Array:
        return self.value_head(self.lm.hidden_states(tokens, attention_mask))

    def aligned_values(self, tokens, attention_mask=None, *, prefix_len: int = 0,
                       adapter_ids=None) -> Array:
        """Values [B, T] aligned like `PolicyModel.logprobs_and_values`' (values[t] is V of
        the state before token t; position 0 is 0); `prefix_len` as there."""
        if prefix_len:
            mask = _check_prefix(tokens, attention_mask, prefix_len)
            hp, hs = self.lm.prefixed_hidden_states(tokens, mask, prefix_len)
            return _prefixed_values(self.value_head, hp, hs)
        return _shifted_values(self.value_head,
                               self.lm.hidden_states(tokens, attention_mask, adapter_ids))


def critic_from(lm: Transformer, *, seed: int = 0) -> CriticModel:
    """A separate critic whose trunk starts as a copy of `lm` (fresh buffers, adapters
    included) and whose value head starts at zero."""
    graphdef, state = nnx.split(lm)
    trunk = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))
    return CriticModel(lm.cfg, rngs=nnx.Rngs(seed), lm=trunk)


# ------------------------------------------------------------------ LoRA
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
    Train only `LoRAParam`s (e.g. `nnx.Optimizer(model, tx, wrt=LoRAParam)`): the
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
                    _param(a.astype(dtype), ("layers", ax_in, "lora_rank"), LoRAParam))
            setattr(layers, f"{name}_lora_b",
                    _param(jnp.zeros((L, width, fan_out), dtype), ("layers", "lora_rank", ax_out),
                           LoRAParam))
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
                    _param(a, ("layers", ax_in, "lora_rank"), LoRAParam))
            setattr(layers, f"{name}_lora_b",
                    _param(b, ("layers", "lora_rank", ax_out), LoRAParam))
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
            k: v.value for k, v in vars(layers).items() if isinstance(v, LoRAParam)
        }
        out.append((dict(layers.lora_scale), arrays))
    return {"layers": out}


def logical_axes(model: nnx.Module):
    """PartitionSpecs of logical axis names for every parameter (for a Mesh)."""
    return nnx.get_partition_spec(nnx.state(model))
