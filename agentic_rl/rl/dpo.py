"""DPO on sequence log-probs, and preference pairs built from groups of episodes.

Online/iterative DPO on agent rollouts: sample a group of episodes per task, take
the best and the worst episode of each group as (chosen, rejected), and apply the
DPO loss to their whole-episode log-probs (sum over the sampled tokens of every
turn; observation tokens are conditioning, not choices, so they are excluded).

Imports: jax, flax.struct and agentic_rl.rl (groups, tokens).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from agentic_rl.rl.groups import dense_group_ranks
from agentic_rl.rl.tokens import masked_mean

Array = jax.Array


@struct.dataclass
class DPOConfig:
    """``beta``: strength of the implicit KL to the reference (traced float).
    ``label_smoothing``: assumed probability that a pair's label is flipped
    (conservative DPO, Mitchell 2023); 0 is plain DPO."""

    beta: float = 0.1
    label_smoothing: float = 0.0


def sequence_logprobs(token_logprobs: Array, mask: Array) -> Array:
    """Log-prob of each episode's sampled tokens: sum over the mask, [B, T] -> [B]."""
    return jnp.sum(jnp.where(mask, token_logprobs, 0.0), axis=-1)


def dpo_loss(
    chosen_logps: Array,
    rejected_logps: Array,
    ref_chosen_logps: Array,
    ref_rejected_logps: Array,
    cfg: DPOConfig,
    *,
    pair_mask: Array | None = None,
):
    """DPO (Rafailov et al., 2023) on per-pair sequence log-probs [P].

    h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l));
    loss = -(1 - ls) * log sigmoid(beta h) - ls * log sigmoid(-beta h).
    Pairs where ``pair_mask`` is False contribute nothing. Returns (sum over valid
    pairs, number of valid pairs, metrics), like the token losses, so micro-batches
    of pairs accumulate exactly.
    """
    h = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    z = cfg.beta * h
    loss = -(1 - cfg.label_smoothing) * jax.nn.log_sigmoid(z) - (
        cfg.label_smoothing * jax.nn.log_sigmoid(-z)
    )
    valid = jnp.ones(h.shape, bool) if pair_mask is None else jnp.asarray(pair_mask, bool)
    loss_sum = jnp.sum(jnp.where(valid, loss, 0.0))
    denom = jnp.sum(valid).astype(jnp.float32)
    metrics = {
        "loss": masked_mean(loss, valid),
        "reward_accuracy": masked_mean(h > 0, valid),
        "reward_margin": masked_mean(z, valid),
        "chosen_reward": masked_mean(cfg.beta * (chosen_logps - ref_chosen_logps), valid),
        "rejected_reward": masked_mean(cfg.beta * (rejected_logps - ref_rejected_logps), valid),
        "num_pairs": denom,
    }
    return loss_sum, denom, metrics


class PreferencePairs(NamedTuple):
    """One slot per possible group (static size B): indices into the batch, and
    whether the slot holds a real pair."""

    chosen: Array  # int32 [B]
    rejected: Array  # int32 [B]
    valid: Array  # bool [B]


def build_preference_pairs(
    rewards: Array, group_id: Array, *, min_margin: float | Array = 0.0
) -> PreferencePairs:
    """Best vs worst episode of each group -> PreferencePairs with B slots.

    Slot g holds the g-th group in sorted group-id order; slots beyond the number
    of groups are invalid. Ties pick the lowest batch index. A group is a valid pair
    only if best - worst > min_margin: identical rewards carry no preference, and
    a group of one has no pair. Output shapes are static, so this jits and vmaps;
    use ``pairs.valid`` as the ``pair_mask`` of ``dpo_loss``.

    ``rewards`` [B] are per-episode scores, e.g. ``advantages.episode_returns``.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    num = rewards.shape[0]
    rank = dense_group_ranks(jnp.asarray(group_id))
    idx = jnp.arange(num, dtype=jnp.int32)
    gmax = jax.ops.segment_max(rewards, rank, num)
    gmin = jax.ops.segment_min(rewards, rank, num)
    best = jax.ops.segment_min(jnp.where(rewards == gmax[rank], idx, num), rank, num)
    worst = jax.ops.segment_min(jnp.where(rewards == gmin[rank], idx, num), rank, num)
    exists = jax.ops.segment_sum(jnp.ones(num, jnp.int32), rank, num) > 0
    valid = exists & (gmax - gmin > min_margin)
    return PreferencePairs(
        chosen=jnp.where(valid, best, 0).astype(jnp.int32),
        rejected=jnp.where(valid, worst, 0).astype(jnp.int32),
        valid=valid,
    )


def dpo_loss_from_pairs(
    seq_logps: Array, ref_seq_logps: Array, pairs: PreferencePairs, cfg: DPOConfig
):
    """DPO loss on episode log-probs [B] (``sequence_logprobs``) for the given pairs."""
    return dpo_loss(
        seq_logps[pairs.chosen],
        seq_logps[pairs.rejected],
        ref_seq_logps[pairs.chosen],
        ref_seq_logps[pairs.rejected],
        cfg,
        pair_mask=pairs.valid,
    )
