"""KL to a reference policy: the k1 / k2 / k3 estimators (``KL_ESTIMATORS``), as a loss
term (GRPO style) or as a per-token reward penalty (PPO-RLHF style).

Imports: jax, agentic_rl.registry and agentic_rl.rl.tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from agentic_rl.registry import Registry
from agentic_rl.rl.tokens import MAX_LOG_RATIO, masked_mean, token_terms

if TYPE_CHECKING:
    from agentic_rl.rl.losses import LossConfig

Array = jax.Array

KL_ESTIMATORS = Registry("KL estimator")


def _ref_log_ratio(logprobs: Array, ref_logprobs: Array) -> Array:
    """log(pi_ref / pi), clipped so exp() stays finite."""
    return jnp.clip(ref_logprobs - logprobs, -MAX_LOG_RATIO, MAX_LOG_RATIO)


@KL_ESTIMATORS.register("k1")
def kl_k1(logprobs: Array, ref_logprobs: Array) -> Array:
    """k1 = log(pi / pi_ref): unbiased for KL(pi || pi_ref) on samples of pi, high
    variance, can be negative. As a loss its expected gradient is 0 (the score
    function has mean 0), so use it as a reward penalty, not a loss term."""
    return logprobs - ref_logprobs


@KL_ESTIMATORS.register("k2")
def kl_k2(logprobs: Array, ref_logprobs: Array) -> Array:
    """k2 = 0.5 * log(pi / pi_ref)^2: biased but low variance, non-negative. As a loss
    on on-policy samples its gradient is the gradient of KL(pi || pi_ref)."""
    return 0.5 * jnp.square(logprobs - ref_logprobs)


@KL_ESTIMATORS.register("k3")
def kl_k3(logprobs: Array, ref_logprobs: Array) -> Array:
    """k3 = (pi_ref / pi - 1) - log(pi_ref / pi) (Schulman 2020): unbiased, non-negative,
    low variance. As a loss (GRPO's choice) its expected gradient is that of the
    forward KL(pi_ref || pi), not of KL(pi || pi_ref)."""
    lr = _ref_log_ratio(logprobs, ref_logprobs)
    return jnp.expm1(lr) - lr


def kl_per_token(logprobs: Array, ref_logprobs: Array, mask: Array, estimator: str) -> Array:
    """Per-token KL estimate with the named estimator, 0 off the mask."""
    lp = jnp.where(mask, logprobs, 0.0)
    ref = jnp.where(mask, ref_logprobs, 0.0)
    return jnp.where(mask, KL_ESTIMATORS.get(estimator)(lp, ref), 0.0)


def kl_loss(logprobs, ref_logprobs, mask, cfg: LossConfig):
    """KL to a reference policy as a loss term (GRPO style): (per_token, metrics).

    Uses cfg.kl_estimator; the caller weights it by the KL coefficient and aggregates.
    """
    kl = kl_per_token(logprobs, ref_logprobs, mask, cfg.kl_estimator)
    return token_terms(kl, mask, {"kl": masked_mean(kl, mask)})


def kl_penalty_rewards(logprobs, ref_logprobs, mask, coef, estimator: str = "k1") -> Array:
    """KL to a reference as a per-token reward penalty (PPO-RLHF style): -coef * KL_t.

    Gradient-free (it is a reward). Pass it as ``token_rewards`` to an advantage
    estimator; k1 is the usual choice since only its expectation matters here.
    """
    kl = kl_per_token(logprobs, ref_logprobs, mask, estimator)
    return -coef * jax.lax.stop_gradient(kl)
