"""Off-policy corrections (``OFF_POLICY``, ``LossConfig.off_policy``): per-token weights
that carry a loss computed against the proximal policy over to data sampled by another.

Three log-probs per sampled token (DESIGN.md), once rollouts can be off-policy (async
workers, external inference engines): behaviour pi_b (what the sampler used, stored in
the batch), proximal/old pi_prox (recomputed at the start of the update) and current
pi. The policy losses clip pi / pi_prox; an off-policy correction (``OFF_POLICY``,
``LossConfig.off_policy``) weights each token by a function of rho = pi_prox / pi_b:

    none       1 (today's losses; rho is still measured and logged)
    tis        min(rho_t, off_policy_tis_cap)        token-level truncated IS
    mis        rho(y) = prod_t rho_t if it lies in [off_policy_mis_low, off_policy_mis_high],
               else 0 for the whole sequence        sequence-level masked IS
    decoupled  rho_t                                decoupled PPO (Hilton et al., 2021)

With synchronous on-policy sampling pi_b = pi_prox, every weight is exactly 1 and each
corrected loss is the plain one, bit for bit. ``policy_loss_terms(...,
behaviour_logprobs=...)`` applies the correction and adds its ``behav_*`` metrics.

Imports: jax, agentic_rl.registry and agentic_rl.rl.tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from agentic_rl.registry import Registry
from agentic_rl.rl.tokens import MAX_LOG_RATIO, log_ratio, masked_max, masked_mean, masked_min

if TYPE_CHECKING:
    from agentic_rl.rl.losses import LossConfig

Array = jax.Array

OFF_POLICY = Registry("off-policy correction")


def off_policy_weights(old_logprobs: Array, behaviour_logprobs: Array, mask: Array,
                       cfg: LossConfig) -> tuple[Array, dict[str, Array]]:
    """Per-token weights [B, T] of the correction named by ``cfg.off_policy``, and metrics.

    rho_t = pi_prox(y_t) / pi_behaviour(y_t) from the proximal (recomputed) and
    behaviour (sampler) log-probs, log-ratio clipped to +-MAX_LOG_RATIO like every
    ratio here. The weights are constants of the update (neither policy is the one
    being differentiated). Metrics, over the action tokens: ``behav_ratio_mean/max/min``
    of rho, ``behav_kl`` (k3 estimate of KL(pi_behaviour || pi_prox)), ``behav_weight_mean``,
    and the correction's own (``behav_clip_frac``, ``behav_mask_frac``).
    """
    log_rho = log_ratio(old_logprobs, behaviour_logprobs, mask)
    weights, metrics = OFF_POLICY.get(cfg.off_policy)(log_rho, mask, cfg)
    rho = jnp.exp(log_rho)
    return weights, {
        "behav_ratio_mean": masked_mean(rho, mask),
        "behav_ratio_max": masked_max(rho, mask),
        "behav_ratio_min": masked_min(rho, mask),
        "behav_kl": masked_mean(jnp.expm1(log_rho) - log_rho, mask),
        "behav_weight_mean": masked_mean(weights, mask),
        **metrics,
    }


@OFF_POLICY.register("none")
def no_correction(log_rho: Array, mask: Array, cfg: LossConfig):
    """No correction: weight 1 (the ratio is taken against the proximal policy only).

    Right for synchronous on-policy sampling, where behaviour and proximal policies are
    the same weights (up to the sampler's numerics, which the ``behav_*`` metrics show)."""
    return jnp.ones_like(log_rho), {}


@OFF_POLICY.register("tis")
def tis(log_rho: Array, mask: Array, cfg: LossConfig):
    """Token-level truncated IS: w_t = min(rho_t, off_policy_tis_cap) (Ionides, 2008; for
    sampler/trainer mismatch, Yao et al., 2025). Corrects the token distribution from the
    behaviour to the proximal policy with a bounded weight: a little bias for bounded
    variance. ``behav_clip_frac``: share of tokens whose rho was truncated."""
    rho = jnp.exp(log_rho)
    w = jnp.minimum(rho, cfg.off_policy_tis_cap)
    return w, {"behav_clip_frac": masked_mean(rho > cfg.off_policy_tis_cap, mask)}


@OFF_POLICY.register("mis")
def mis(log_rho: Array, mask: Array, cfg: LossConfig):
    """Sequence-level masked IS: rho(y) = prod over the row's action tokens of rho_t, the
    sequence's likelihood ratio; a row whose rho(y) lies outside
    [off_policy_mis_low, off_policy_mis_high] is dropped (weight 0, no gradient), the
    others are weighted by rho(y). Masking instead of truncating leaves no biased
    weight on the sequences the behaviour policy got most wrong. Dropped rows still
    count in the denominator (they are weight-0 samples, so the aggregation's
    denominator does not depend on the weights). ``behav_mask_frac``: share of non-empty
    rows dropped."""
    seq = jnp.sum(jnp.where(mask, log_rho, 0.0), axis=-1, keepdims=True)
    seq = jnp.clip(seq, -MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = jnp.exp(seq)
    keep = (ratio >= cfg.off_policy_mis_low) & (ratio <= cfg.off_policy_mis_high)
    w = jnp.broadcast_to(jnp.where(keep, ratio, 0.0), log_rho.shape)
    rows = jnp.any(mask, axis=-1, keepdims=True)
    return w, {"behav_mask_frac": masked_mean(~keep, rows)}


@OFF_POLICY.register("decoupled")
def decoupled(log_rho: Array, mask: Array, cfg: LossConfig):
    """Decoupled PPO (Hilton et al., 2021; AReaL's asynchronous PPO): the clip is taken
    against the proximal policy (the policy loss's ratio pi / pi_prox) and every token is
    weighted by w_t = rho_t = pi_prox / pi_behaviour, the exact IS weight from the
    sampler to the proximal policy. Unbounded: with a very stale sampler use tis."""
    return jnp.exp(log_rho), {}
