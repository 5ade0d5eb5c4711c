"""A Llama-family decoder in Flax NNX, with layer weights stacked for `lax.scan`.

What lives here: `Transformer` (embeddings, the scanned layer stack, final norm, LM head,
the full-sequence, prefix-sharing and cached forwards) and `logical_axes`. The parameter
layout and layer body are in models.layers, attention kernels in models.attention, the KV
cache and the cached forward in models.kv_cache, LoRA in models.lora, value head, policy /
critic models and log-prob helpers in models.heads.

Every parameter carries logical axis names (see models.layers) so a
`jax.sharding.Mesh` can map them to devices later.

Imports: jax, flax.nnx and agentic_rl.models.{config, layers, attention, kv_cache, lora}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from agentic_rl.models.attention import (
    causal_attention,
    prefixed_attention,
    triangular_attention,
)
from agentic_rl.models.config import ModelConfig, rope_inv_freq
from agentic_rl.models.kv_cache import KVCache, cached_forward
from agentic_rl.models.layers import (
    DecoderLayers,
    _param,
    decoder_layer,
    rms_norm,
    unstack_layers,
)
from agentic_rl.models.lora import adapter_select, per_token

Array = jax.Array


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

        Attention takes its queries in blocks of `cfg.attention_chunk` (memory linear in
        T). Positions count real tokens only (cumsum of the mask), so left and right
        padding both give the positions an unpadded sequence would have.
        `adapter_ids` int [B, T] (or [B]): each token's LoRA adapter when the model has
        several (-1: none); ignored with one.
        """
        B, T = tokens.shape
        if attention_mask is None:
            attention_mask = jnp.ones((B, T), bool)
        attention_mask = attention_mask.astype(bool)
        positions = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0).astype(jnp.int32)
        block = self.cfg.attention_chunk

        def attend(q, k, v, _):
            return causal_attention(q, k, v, attention_mask, block), None

        select = adapter_select(per_token(adapter_ids, T), self.num_adapters)
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
        prefix_mask = jnp.ones((1, P), bool)

        def attend(q, k, v, _):
            rows = lambda a: a[0, P:].reshape(B, S, *a.shape[2:])
            out_p = triangular_attention(q[:, :P], k[:, :P], v[:, :P], prefix_mask)[0]
            out_s = prefixed_attention(rows(q), k[0, :P], v[0, :P], rows(k), rows(v), mask_s)
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
        adapter_ids: Array | None = None,
    ) -> tuple[Array, KVCache]:
        """`kv_cache.cached_forward` (append `tokens` to each row's cached sequence; its
        docstring has the contract) with the per-layer weights sliced from the stacked ones.
        The sampler instead passes weights it unstacked once, which is faster on CPU."""
        return cached_forward(self, unstack_layers(self.layers.layer_params()), tokens, cache,
                              input_mask, adapter_ids)


def logical_axes(model: nnx.Module):
    """PartitionSpecs of logical axis names for every parameter (for a Mesh)."""
    return nnx.get_partition_spec(nnx.state(model))
