"""What sits on the trunk: the value head, the policy and critic models, and the
token log-prob helpers.

What lives here: `ValueHead`, `PolicyModel`, `CriticModel`, `critic_from`,
`chunked_logprobs` and `token_logprobs`. The log-prob helpers live here rather than with
the `Transformer` because, like the value head, they turn the trunk's hidden states into
per-token outputs (and `PolicyModel` is their main user); the Transformer stays the trunk.

Imports: jax, flax.nnx and agentic_rl.models.{config, layers, transformer} only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from agentic_rl.models.config import ModelConfig
from agentic_rl.models.layers import _param
from agentic_rl.models.transformer import Transformer

Array = jax.Array


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
