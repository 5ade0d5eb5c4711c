"""Loss aggregation: how per-token loss terms become one number, as (sum, denominator).

Every loss returns per-token terms; the update step sums its weighted terms per token
and aggregates that total once with ``LossConfig.aggregation`` (a name in
``AGGREGATIONS``). Returning the sum and the denominator separately, summed over
micro-batches before dividing (``finalize``), makes gradient accumulation exact: a mean
of micro-batch means is not the batch mean when micro-batches hold different numbers of
tokens.

Imports: jax, agentic_rl.registry and agentic_rl.rl.tokens.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from agentic_rl.registry import Registry
from agentic_rl.rl.tokens import safe_div

if TYPE_CHECKING:
    from agentic_rl.rl.losses import LossConfig

Array = jax.Array

AGGREGATIONS = Registry("loss aggregation")


@AGGREGATIONS.register("token_mean")
def token_mean(per_token: Array, mask: Array, cfg: LossConfig) -> tuple[Array, Array]:
    """Mean over every action token of the batch (DAPO's token-level loss): each token
    weighs the same, so an episode's weight grows with its length. Per-episode means
    would instead shrink the per-token gradient of long episodes."""
    m = mask.astype(jnp.float32)
    return jnp.sum(jnp.where(mask, per_token, 0)), jnp.sum(m)


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(per_token: Array, mask: Array, cfg: LossConfig) -> tuple[Array, Array]:
    """Mean over episodes of each episode's token mean (original GRPO): every episode
    weighs the same whatever its length. Rows without action tokens are not counted."""
    m = mask.astype(jnp.float32)
    n = jnp.sum(m, axis=-1)
    row = safe_div(jnp.sum(jnp.where(mask, per_token, 0), axis=-1), n)
    return jnp.sum(row), jnp.sum(n > 0).astype(jnp.float32)


@AGGREGATIONS.register("seq_mean_token_sum")
def seq_mean_token_sum(per_token: Array, mask: Array, cfg: LossConfig) -> tuple[Array, Array]:
    """Mean over episodes of each episode's token sum (rows without tokens not counted)."""
    n = jnp.sum(mask, axis=-1)
    return jnp.sum(jnp.where(mask, per_token, 0)), jnp.sum(n > 0).astype(jnp.float32)


@AGGREGATIONS.register("seq_sum_const")
def seq_sum_const(per_token: Array, mask: Array, cfg: LossConfig) -> tuple[Array, Array]:
    """Token sums over a constant: sum / (B * cfg.loss_norm_const) (Dr.GRPO, Liu et al. 2025).

    Why a constant: dividing each episode's loss by its own length gives the tokens
    of long episodes smaller gradients, so for negative advantages long wrong
    answers are penalised less per token and response length drifts upward. With a
    denominator that does not depend on the sample (the generation budget) every
    token's gradient has the same scale. Every row counts, even an empty one,
    because the denominator must not depend on what was sampled.

    Rows are counted over every leading axis of the mask: the update step passes a
    minibatch as [n_micro, micro, T], which holds n_micro x micro episodes.
    """
    num_rows = jnp.asarray(math.prod(mask.shape[:-1]), jnp.float32)
    return jnp.sum(jnp.where(mask, per_token, 0)), num_rows * cfg.loss_norm_const


def aggregate(per_token: Array, mask: Array, cfg: LossConfig) -> tuple[Array, Array]:
    """(sum, denominator) of a per-token loss with the mode named by cfg.aggregation."""
    return AGGREGATIONS.get(cfg.aggregation)(per_token, mask, cfg)
