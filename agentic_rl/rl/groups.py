"""Group and batch statistics for critic-free baselines: GRPO groups (episodes that share
a task, any integer ids) and whitening over the batch.

Imports: jax only.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

WEIGHTINGS = ("token", "rollout")


def dense_group_ranks(group_id: Array) -> Array:
    """Maps arbitrary group ids to 0..G-1 (in sorted id order), so segment ops can use
    a static ``num_segments = B`` whatever integers the rollout used as ids."""
    order = jnp.argsort(group_id, stable=True)
    s = group_id[order]
    new = jnp.concatenate([jnp.zeros((1,), bool), s[1:] != s[:-1]])
    ranks_sorted = jnp.cumsum(new).astype(jnp.int32)
    return jnp.zeros(group_id.shape, jnp.int32).at[order].set(ranks_sorted)


class GroupStats(NamedTuple):
    """Per-element statistics of the element's group, gathered back to x's shape."""

    count: Array  # members of the group that are valid in this column
    mean: Array
    std: Array  # unbiased (n - 1) standard deviation; 0 for groups of one
    spread: Array  # bool: valid and the group's values are not all identical


def group_stats(x: Array, valid: Array, group_id: Array) -> GroupStats:
    """Statistics of x [B, C] within each (group, column) over valid entries.

    ``spread`` is computed from the group max and min, which are exact: the mean of
    identical floats can be off by an ulp, and (x - mean) / (std + eps) would turn
    that rounding into an advantage of ~1e-2. Estimators use ``spread`` to return an
    exact 0 for groups without signal.
    """
    num = x.shape[0]
    rank = dense_group_ranks(group_id)
    v = valid.astype(x.dtype)
    n_group = jax.ops.segment_sum(v, rank, num)
    n = n_group[rank]
    mean = (jax.ops.segment_sum(x * v, rank, num) / jnp.maximum(n_group, 1))[rank]
    c = jnp.where(valid, x - mean, 0)
    ss = jax.ops.segment_sum(c * c, rank, num)[rank]
    std = jnp.sqrt(jnp.where(n > 1, ss / jnp.maximum(n - 1, 1), 0))
    gmax = jax.ops.segment_max(jnp.where(valid, x, -jnp.inf), rank, num)[rank]
    gmin = jax.ops.segment_min(jnp.where(valid, x, jnp.inf), rank, num)[rank]
    return GroupStats(n, mean, std, valid & (gmax > gmin))


def whiten(x: Array, mask: Array, *, weighting: str = "token", eps: float | Array = 1e-6,
           episode_index: Array | None = None) -> Array:
    """Normalises x to zero mean / unit std over the masked entries of the whole batch.

    ``weighting="token"`` gives every action token the same weight (REINFORCE++ as
    published). ``weighting="rollout"`` gives every episode (row) the same total
    weight, 1/n_tokens per token, so a few long episodes cannot dominate the batch
    mean and std. Returns 0 where mask is 0, and exact 0 everywhere if all masked
    values are identical. ``episode_index`` [B] (rows with one id are one episode laid
    out as several rows): "rollout" then weighs every episode the same, not every row.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown whiten weighting {weighting!r}; valid names: token, rollout")
    x = x.astype(jnp.float32)
    m = mask.astype(jnp.float32)
    if weighting == "token":
        w = m
    else:
        n = m.sum(axis=-1, keepdims=True)
        if episode_index is not None:  # tokens of the row's whole episode
            rank = dense_group_ranks(jnp.asarray(episode_index))
            n = jax.ops.segment_sum(n[:, 0], rank, n.shape[0])[rank][:, None]
        w = m / jnp.maximum(n, 1)
    total = jnp.maximum(w.sum(), 1e-12)
    mu = jnp.sum(w * x) / total
    var = jnp.sum(w * jnp.square(x - mu)) / total
    xmax = jnp.max(jnp.where(mask, x, -jnp.inf))
    xmin = jnp.min(jnp.where(mask, x, jnp.inf))
    return jnp.where(mask & (xmax > xmin), (x - mu) / (jnp.sqrt(var) + eps), 0)
