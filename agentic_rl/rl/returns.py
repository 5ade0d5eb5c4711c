"""Returns and the turn <-> token placement of multi-turn rows.

A row is one episode laid out as tokens (the EpisodeBatch of DESIGN.md): rewards sit at
turn ends (``turn_end`` [B, K]), actions are the ``loss_mask`` tokens, and ``turn_index``
says which turn each token belongs to. Here: masked GAE and discounted returns along a
row (observation tokens are transparent), and the helpers that move values between the
turn axis [B, K] and the token axis [B, T]. The estimators of ``rl/advantages.py`` are
built from these.

Imports: jax only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def masked_gae(
    rewards: Array,
    values: Array,
    valid: Array,
    gamma: float | Array,
    lam: float | Array,
    cut: Array | None = None,
    last_value: Array | None = None,
) -> Array:
    """Generalised advantage estimation along the last axis, over valid positions only.

    A reverse ``lax.scan``. Invalid positions are transparent: the carry (the next
    valid position's value and advantage) passes through them unchanged and they
    output 0, so the TD error of the last valid position before a gap bootstraps
    from the first valid position after it. This is why GAE on a multi-turn row
    skips observation tokens: the environment's tokens are not actions of the
    policy, so no value or TD error belongs to them and the Markov chain of
    decisions runs from one action token to the next.

    ``cut[..., t]`` (bool, read only where valid) ends an episode segment after t:
    the next value and advantage are treated as 0 there (used by bi-level GAE to
    keep token-level GAE inside a turn). The value after the last valid position is
    ``last_value`` (shape ``rewards.shape[:-1]``; 0 if None: the episode terminated).

    Recurrence over valid positions i (next valid position i+1):
        delta_i = r_i + gamma * V_{i+1} - V_i
        A_i     = delta_i + gamma * lam * A_{i+1}
    """
    rewards = jnp.asarray(rewards)
    dtype = jnp.result_type(rewards.dtype, jnp.float32)
    rewards = rewards.astype(dtype)
    values = jnp.asarray(values, dtype)
    valid = jnp.asarray(valid, bool)
    cut = jnp.zeros_like(valid) if cut is None else jnp.asarray(cut, bool)
    gamma = jnp.asarray(gamma, dtype)
    lam = jnp.asarray(lam, dtype)

    def step(carry, x):
        next_value, next_adv = carry
        r, v, m, c = x
        nv = jnp.where(c, 0.0, next_value)
        na = jnp.where(c, 0.0, next_adv)
        adv = r + gamma * nv - v + gamma * lam * na
        carry = (jnp.where(m, v, next_value), jnp.where(m, adv, next_adv))
        return carry, jnp.where(m, adv, 0.0)

    xs = tuple(jnp.moveaxis(a, -1, 0) for a in (rewards, values, valid, cut))
    zeros = jnp.zeros(rewards.shape[:-1], dtype)
    last = zeros if last_value is None else jnp.broadcast_to(
        jnp.asarray(last_value, dtype), zeros.shape)
    _, adv = jax.lax.scan(step, (last, zeros), xs, reverse=True)
    return jnp.moveaxis(adv, 0, -1)


def discounted_returns(
    rewards: Array, valid: Array, gamma: float | Array, cut: Array | None = None
) -> Array:
    """Reward-to-go over valid positions of the last axis: G_i = r_i + gamma * G_{i+1}.

    Monte-Carlo returns are GAE with V = 0 and lambda = 1.
    """
    return masked_gae(rewards, jnp.zeros_like(rewards), valid, gamma, 1.0, cut)


def present_turns(turn_end: Array) -> Array:
    """bool [B, K]: which turns exist (turn_end >= 0)."""
    return turn_end >= 0


def place_turn_values(turn_values: Array, turn_end: Array, seq_len: int) -> Array:
    """Scatters per-turn values [B, K] onto their turn-end token positions -> [B, T].

    Absent turns contribute nothing. Used to put turn rewards where DESIGN.md says
    they sit: on the last sampled token of the turn.
    """
    present = present_turns(turn_end)
    rows = jnp.arange(turn_end.shape[0])[:, None]
    cols = jnp.where(present, turn_end, 0)
    vals = jnp.where(present, turn_values, 0)
    return jnp.zeros((turn_end.shape[0], seq_len), vals.dtype).at[rows, cols].add(vals)


def gather_at_turn_ends(token_values: Array, turn_end: Array) -> Array:
    """Reads token_values [B, T] at each turn's end -> [B, K] (0 for absent turns)."""
    present = present_turns(turn_end)
    idx = jnp.where(present, turn_end, 0)
    return jnp.where(present, jnp.take_along_axis(token_values, idx, axis=1), 0)


def turn_starts(turn_index: Array, loss_mask: Array, num_turns: int) -> Array:
    """Position of the first sampled token of each turn -> int32 [B, K] (-1: no such turn).

    This is where a critic that follows the log-prob alignment (values[t] = V of the
    state in which token t was chosen) holds the value of the state the turn starts from.
    """
    B, T = loss_mask.shape
    ok = loss_mask & (turn_index >= 0) & (turn_index < num_turns)
    pos = jnp.where(ok, jnp.arange(T, dtype=jnp.int32)[None, :], T)
    rows = jnp.broadcast_to(jnp.arange(B)[:, None], (B, T))
    cols = jnp.clip(turn_index, 0, num_turns - 1)
    first = jnp.full((B, num_turns), T, jnp.int32).at[rows, cols].min(pos)
    return jnp.where(first < T, first, -1)


def broadcast_turns_to_tokens(turn_values: Array, turn_index: Array, loss_mask: Array) -> Array:
    """Gives every action token the value of its turn: [B, K] -> [B, T].

    Non-action tokens, and action tokens whose turn_index is outside [0, K), get 0.
    """
    num_turns = turn_values.shape[1]
    ok = loss_mask & (turn_index >= 0) & (turn_index < num_turns)
    idx = jnp.clip(turn_index, 0, num_turns - 1)
    return jnp.where(ok, jnp.take_along_axis(turn_values, idx, axis=1), 0)


def fold_token_rewards(
    token_rewards: Array, turn_index: Array, loss_mask: Array, num_turns: int
) -> Array:
    """Sums per-token rewards of the action tokens of each turn: [B, T] -> [B, K]."""
    ok = loss_mask & (turn_index >= 0) & (turn_index < num_turns)
    rows = jnp.arange(token_rewards.shape[0])[:, None]
    cols = jnp.where(ok, turn_index, 0)
    vals = jnp.where(ok, token_rewards, 0)
    return jnp.zeros((token_rewards.shape[0], num_turns), vals.dtype).at[rows, cols].add(vals)


def effective_turn_rewards(
    turn_rewards: Array,
    turn_end: Array,
    turn_index: Array,
    loss_mask: Array,
    token_rewards: Array | None = None,
) -> Array:
    """Turn rewards with absent turns zeroed and token rewards folded into their turns."""
    r = jnp.where(present_turns(turn_end), turn_rewards, 0).astype(jnp.float32)
    if token_rewards is not None:
        r = r + fold_token_rewards(token_rewards, turn_index, loss_mask, turn_rewards.shape[1])
    return jnp.where(present_turns(turn_end), r, 0)


def episode_returns(turn_rewards: Array, turn_end: Array, gamma: float | Array = 1.0) -> Array:
    """Discounted return of each episode from its first present turn -> [B].

    G = sum_k gamma^(number of present turns before k) * r_k over present turns.
    With gamma = 1 this is the plain sum of the episode's turn rewards.
    """
    present = present_turns(turn_end)
    r = jnp.where(present, turn_rewards, 0).astype(jnp.float32)
    steps = (jnp.cumsum(present, axis=1) - 1).astype(jnp.float32)
    disc = jnp.power(jnp.asarray(gamma, jnp.float32), jnp.maximum(steps, 0.0))
    return jnp.sum(jnp.where(present, disc * r, 0), axis=1)
