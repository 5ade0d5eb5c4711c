"""Episodes laid out as several rows: the stitching that makes their advantages exact.

Why: a long-horizon agent's context gets rewritten (a sliding window drops old turns, a
summary replaces them). Each sampled token must be trained with the context it was
sampled under, so every rewrite starts a new token row, and one episode becomes several
rows. Credit assignment must not see the cuts: the rows of one episode share its return,
its turn-level advantages and its group comparison exactly as if it had been one row.

The layout (EpisodeBatch, DESIGN.md): rows with the same ``episode_index[b]`` are one
episode; row b's local turn k is the episode's turn ``turn_offset[b] + k``. Rows of one
episode have disjoint turn ranges inside [0, K); only the row holding the episode's
last turn (its *final* row) may be cut by a limit, so only its ``bootstrap`` counts.

Two tools, both pure jax with static shapes:

* Episode space [B, K] (E <= B episodes on the first axis, global turns on the second):
  ``to_episode_turns`` scatters row turn quantities there, ``from_episode_turns``
  gathers them back. Turn-level estimators run their usual turn maths on episode space.
* ``chained_gae``: token-level GAE (and, with V = 0 and lambda = 1, reward-to-go) across
  the rows of an episode. Per row, GAE bootstrapped from the critic's value at the next
  row's first action token gives A_trunc; the exact advantage is
  A(t) = A_trunc(t) + (gamma lam)^n(t) C_next, with n(t) the action tokens from t to the
  row's end inclusive and C_next the exact advantage at the next row's first action
  token, C_r = A_trunc_first(r) + (gamma lam)^N_r C_{r+1} (a backward scan over the
  rows sorted by episode and offset).

Imports: jax, agentic_rl.rl.groups and .returns.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from agentic_rl.rl.groups import dense_group_ranks
from agentic_rl.rl.returns import masked_gae

Array = jax.Array


class Episodes(NamedTuple):
    """Which rows form one episode, and where each row's turns sit in it."""

    episode_index: Array  # int32 [B]: rows with the same id are one episode (any ints)
    turn_offset: Array  # int32 [B]: episode-global index of the row's first turn


def as_episodes(episodes: Episodes | tuple, batch_size: int) -> Episodes:
    """Converts to int32 jax arrays and checks both are [B]."""
    idx, off = (jnp.asarray(x, jnp.int32) for x in episodes)
    if idx.shape != (batch_size,) or off.shape != (batch_size,):
        raise ValueError(f"episodes: episode_index {idx.shape} and turn_offset {off.shape} "
                         f"must both be [B] = ({batch_size},)")
    return Episodes(idx, off)


def episode_rank(episodes: Episodes) -> Array:
    """Each row's episode as a dense id 0..E-1 (its slot in episode space)."""
    return dense_group_ranks(episodes.episode_index)


def _global_cols(episodes: Episodes, num_turns: int) -> Array:
    return episodes.turn_offset[:, None] + jnp.arange(num_turns, dtype=jnp.int32)[None, :]


def to_episode_turns(x: Array, present: Array, episodes: Episodes) -> Array:
    """Row turn quantities x [B, K] -> episode space [B, K] (first axis: episode rank,
    second: global turn); 0 where no row has a present turn. Bool x gives bool."""
    B, K = present.shape
    rank = jnp.broadcast_to(episode_rank(episodes)[:, None], (B, K))
    cols = jnp.where(present, _global_cols(episodes, K), K)  # K: dropped
    if x.dtype == jnp.bool_:
        out = jnp.zeros((B, K), jnp.int32).at[rank, cols].add(
            (x & present).astype(jnp.int32), mode="drop")
        return out > 0
    return jnp.zeros((B, K), x.dtype).at[rank, cols].add(jnp.where(present, x, 0), mode="drop")


def from_episode_turns(y: Array, present: Array, episodes: Episodes) -> Array:
    """Episode-space y [B, K] -> each row's turns [B, K] (0 where the row has no turn)."""
    B, K = present.shape
    rank = jnp.broadcast_to(episode_rank(episodes)[:, None], (B, K))
    cols = jnp.clip(_global_cols(episodes, K), 0, K - 1)
    return jnp.where(present, y[rank, cols], 0)


def final_turn_rows(present: Array, episodes: Episodes) -> Array:
    """bool [B]: the row holding its episode's last present turn."""
    B, K = present.shape
    has = jnp.any(present, axis=1)
    last_local = K - 1 - jnp.argmax(present[:, ::-1], axis=1)
    end = jnp.where(has, episodes.turn_offset + last_local, -1)
    rank = episode_rank(episodes)
    return has & (end == jax.ops.segment_max(end, rank, B)[rank])


def episode_bootstrap(bootstrap: Array | None, present: Array, episodes: Episodes
                      ) -> Array | None:
    """Episode-space [B] bootstrap: that of the episode's final row (non-final rows are
    continued by the next row, never bootstrapped from their own cut)."""
    if bootstrap is None:
        return None
    final = final_turn_rows(present, episodes)
    return jax.ops.segment_sum(jnp.where(final, bootstrap, 0.0), episode_rank(episodes),
                               present.shape[0])


def episode_group_id(group_id: Array, episodes: Episodes) -> Array:
    """Episode-space [B] group ids (rows of an episode share one); slots without an
    episode get one shared id of their own, harmless since nothing there is valid."""
    return jax.ops.segment_max(group_id, episode_rank(episodes), group_id.shape[0])


def _row_order(episodes: Episodes) -> Array:
    """Rows sorted by (episode, turn offset): an episode's rows, first to last."""
    return jnp.lexsort((episodes.turn_offset, episode_rank(episodes)))


def _scan_rows_backward(step, init, xs, episodes: Episodes):
    """Runs `step(carry, new_episode, x) -> (carry, y)` over the rows from each episode's
    last row to its first (rows sorted by episode, then offset); ys in row order."""
    order = _row_order(episodes)
    rank = episode_rank(episodes)[order]
    xs = jax.tree_util.tree_map(lambda a: a[order], xs)

    def body(carry, inp):
        prev_rank, c = carry
        r, x = inp
        c, y = step(c, r != prev_rank, x)
        return (r, c), y

    _, ys = jax.lax.scan(body, (jnp.int32(-1), init), (rank, xs), reverse=True)
    return jax.tree_util.tree_map(lambda a: jnp.zeros_like(a).at[order].set(a), ys)


def chained_gae(
    rewards: Array,
    values: Array,
    mask: Array,
    gamma: float | Array,
    lam: float | Array,
    episodes: Episodes,
    last_value: Array | None = None,
) -> Array:
    """Token-level masked GAE over the action tokens (``mask``) of whole episodes laid out
    as several rows: the same numbers `masked_gae` gives the episode as one row.

    ``last_value`` [B] is the value after each row's last action (the truncation
    bootstrap); only the final row's (the last row with an action token) is read. With
    values 0 and lam 1 this is the discounted reward-to-go.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    values = jnp.asarray(values, jnp.float32)
    mask = jnp.asarray(mask, bool)
    B, _ = mask.shape
    gamma = jnp.asarray(gamma, jnp.float32)
    gl = gamma * jnp.asarray(lam, jnp.float32)
    has = jnp.any(mask, axis=1)
    first = jnp.argmax(mask, axis=1)
    first_value = jnp.take_along_axis(values, first[:, None], axis=1)[:, 0]
    boot = jnp.zeros((B,), jnp.float32) if last_value is None else jnp.broadcast_to(
        jnp.asarray(last_value, jnp.float32), (B,))

    # Pass 1: the value after each row's last action = the next non-empty row's first
    # value, or (for the episode's final row) its own bootstrap.
    def next_value(carry, new_episode, x):
        seen, v = carry
        h, fv, bv = x
        seen = seen & ~new_episode
        out = jnp.where(seen, v, bv)
        return (seen | h, jnp.where(h, fv, v)), out

    lv = _scan_rows_backward(next_value, (jnp.bool_(False), jnp.float32(0)),
                             (has, first_value, boot), episodes)
    a_trunc = masked_gae(rewards, values, mask, gamma, lam, last_value=lv)

    # Pass 2: C_r = A_trunc_first(r) + (gamma lam)^N_r C_{r+1}, the exact advantage at each
    # row's first action token; each row needs C of the next non-empty row.
    n_after = jnp.cumsum(mask[:, ::-1].astype(jnp.float32), axis=1)[:, ::-1]  # n(t)
    decay = jnp.power(gl, jnp.sum(mask, axis=1).astype(jnp.float32))
    a_first = jnp.take_along_axis(a_trunc, first[:, None], axis=1)[:, 0]

    def carry_next(c, new_episode, x):
        h, af, d = x
        c = jnp.where(new_episode, 0.0, c)
        return jnp.where(h, af + d * c, c), c

    c_next = _scan_rows_backward(carry_next, jnp.float32(0), (has, a_first, decay), episodes)
    return jnp.where(mask, a_trunc + jnp.power(gl, n_after) * c_next[:, None], 0.0)


def first_rows(mask: Array, episodes: Episodes) -> Array:
    """bool [B]: the first row (lowest offset) with an action token of each episode."""
    B = mask.shape[0]
    has = jnp.any(mask, axis=1)
    rank = episode_rank(episodes)
    off = jnp.where(has, episodes.turn_offset, jnp.iinfo(jnp.int32).max)
    return has & (off == jax.ops.segment_min(off, rank, B)[rank])

