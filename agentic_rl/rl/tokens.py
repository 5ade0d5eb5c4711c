"""Per-token arithmetic every loss shares: masked reductions, safe division, log-ratios,
and log-probs / entropies from logits.

Arrays are [..., T] token rows with a bool mask of the action tokens (the EpisodeBatch's
``loss_mask``); everything off the mask is ignored, both in the values and in the
gradients (masking happens before subtracting log-probs, which may be -inf on padding).

Imports: jax only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# exp() of a log-ratio beyond this overflows float32 or is meaningless anyway.
MAX_LOG_RATIO = 20.0


def safe_div(num: Array, den: Array) -> Array:
    """num / den, and 0 where den == 0, with finite gradients (double-where)."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


def finalize(loss_sum: Array, denominator: Array) -> Array:
    """The loss value: loss_sum / denominator (0 for an empty batch)."""
    return safe_div(loss_sum, denominator)


def masked_mean(x: Array, mask: Array) -> Array:
    """Mean of x over mask (0 if the mask is empty)."""
    m = mask.astype(jnp.float32)
    return safe_div(jnp.sum(jnp.where(mask, x, 0) * m), jnp.sum(m))


def masked_max(x: Array, mask: Array) -> Array:
    return jnp.where(jnp.any(mask), jnp.max(jnp.where(mask, x, -jnp.inf)), 0)


def masked_min(x: Array, mask: Array) -> Array:
    return jnp.where(jnp.any(mask), jnp.min(jnp.where(mask, x, jnp.inf)), 0)


def log_ratio(logprobs: Array, sample_logprobs: Array, mask: Array) -> Array:
    """log(pi / pi_sample) on action tokens, 0 elsewhere, clipped to +-MAX_LOG_RATIO.

    Masking before the subtraction keeps padding (where log-probs may be -inf or
    garbage) out of both the forward values and the gradients.
    """
    lr = jnp.where(mask, logprobs - sample_logprobs, 0.0)
    return jnp.clip(lr, -MAX_LOG_RATIO, MAX_LOG_RATIO)


def logprobs_from_logits(logits: Array, targets: Array) -> Array:
    """log softmax(logits)[targets]: [..., V], int [...] -> [...]. Alignment of logits
    with targets (the usual shift by one) is the caller's business."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def entropy_from_logits(logits: Array) -> Array:
    """Entropy of softmax(logits) over the last axis; handles -inf (banned) logits."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * jnp.where(p > 0, logp, 0), 0), axis=-1)


def ratio_metrics(lr: Array, mask: Array) -> dict[str, Array]:
    ratio = jnp.exp(lr)
    return {
        # KL(pi_sample || pi) by the k3 estimator on the sampled tokens (Schulman 2020).
        "approx_kl": masked_mean(jnp.expm1(lr) - lr, mask),
        "ratio_mean": masked_mean(ratio, mask),
        "ratio_max": masked_max(ratio, mask),
        "ratio_min": masked_min(ratio, mask),
    }


def token_terms(per_token: Array, mask: Array, metrics: dict[str, Array]):
    """(per-token loss, 0 off the mask, metrics): what every loss returns."""
    return jnp.where(mask, per_token, 0.0), metrics
