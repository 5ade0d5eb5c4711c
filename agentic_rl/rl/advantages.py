"""Advantage estimators (``ADVANTAGES``) for multi-turn episodes laid out as token rows.

Inputs follow the EpisodeBatch contract of DESIGN.md:

    loss_mask    bool  [B, T]  True only on tokens the policy sampled ("action tokens")
    turn_index   int32 [B, T]  turn of each token (only read on action tokens)
    turn_end     int32 [B, K]  position of the last sampled token of turn k; -1 = no turn k
    turn_rewards f32   [B, K]  reward received after turn k
    group_id     int32 [B]     episodes that share a task (any integers, not necessarily dense)
    episodes     optional ``Episodes(episode_index [B], turn_offset [B])``: rows with one
                 episode_index are one episode whose context was rewritten, row b's
                 turn k being the episode's turn turn_offset[b] + k (``rl/episodes.py``)

Conventions shared by every estimator in this module:

* Rewards sit at turn ends. Credit assignment is the choice of estimator, never
  baked into the data.
* A turn is *present* iff ``turn_end[b, k] >= 0``. Rewards of absent ("empty")
  turns are ignored: no action exists to credit them to. Absent turns are skipped
  by the across-turn discount (the return of turn k bootstraps from the next
  *present* turn), the turn-level analogue of GAE skipping observation tokens.
* Only action tokens carry advantages: outputs are 0 wherever ``loss_mask`` is 0,
  whatever ``turn_index`` says there.
* Every registered estimator has the keyword-only signature::

      fn(*, turn_rewards, turn_end, turn_index, loss_mask, group_id, cfg,
         values=None, token_rewards=None, bootstrap=None, episodes=None)
          -> (advantages [B, T], returns [B, T])

  ``returns`` are value targets for critic-based estimators and the raw
  (un-normalised) return each token was credited with otherwise.
  ``token_rewards`` [B, T] (e.g. a KL penalty from ``kl.kl_penalty_rewards``)
  is added per token by token-level estimators and summed into its turn's reward
  by turn- and episode-level ones.
* Truncation: ``bootstrap`` [B] is the value of the state after each row's last
  action, V(cut) for an episode cut by a limit (max_turns / max_tokens: it did not
  end, the environment would have gone on) and 0 for one that terminated.
  Critic-based estimators bootstrap their last step from it (``compute_advantages``
  builds it from the batch's ``truncated`` flag and the critic's value at the cut);
  critic-free ones accept and ignore it: they have no value to bootstrap with.
* Episodes as several rows: with ``episodes`` every estimator gives each sampled token
  exactly the advantage and return it would get if its episode were one row. Turn-level
  maths (turn GAE, Monte-Carlo and group returns) runs on episode space, token-level
  recurrences are chained across rows, group estimators compare episodes (one sample per
  episode), and an episode's truncation bootstrap is its final row's. ``episodes=None``
  (each row its own episode) is the one-row code, unchanged. ``compute_advantages``
  passes ``episodes`` when the batch has ``episode_index`` and ``turn_offset``; an
  estimator registered without the keyword still runs on batches of one-row episodes
  and raises for batches with a multi-row one.
* Float hyperparameters live in ``AdvantageConfig`` as pytree leaves, so they can
  be traced: a sweep can ``jax.vmap`` over ``cfg.replace(gamma=g)``.

The returns and turn <-> token helpers these are built from are ``rl/returns.py``; the
group statistics and whitening of the critic-free baselines are ``rl/groups.py``. The
module holds every registered estimator next to the shared input checks and the entry
point, one registry in one place, hence its length.

Imports: jax, numpy (the host-side check of concrete episode fields), flax.struct,
agentic_rl.registry, agentic_rl.rl.returns, .groups and .episodes.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from agentic_rl.registry import Registry
from agentic_rl.rl.episodes import (
    Episodes,
    as_episodes,
    chained_gae,
    episode_bootstrap,
    episode_group_id,
    episode_rank,
    first_rows,
    from_episode_turns,
    to_episode_turns,
)
from agentic_rl.rl.groups import GroupStats, group_stats, whiten
from agentic_rl.rl.returns import (
    broadcast_turns_to_tokens,
    discounted_returns,
    effective_turn_rewards,
    gather_at_turn_ends,
    masked_gae,
    place_turn_values,
    present_turns,
    turn_starts,
)

Array = jax.Array

# needs_values: the estimator reads the critic's values (the trainer then trains one).
ADVANTAGES = Registry("advantage estimator", defaults={"needs_values": False})

LEVELS = ("outcome", "turn")


@struct.dataclass
class AdvantageConfig:
    """Advantage hyperparameters.

    Static (part of the jit cache key):
      estimator         a name in ``ADVANTAGES``
      level             read by grpo, dr_grpo and rloo: "outcome" compares one scalar
                        per episode; "turn" compares the return-to-go of turn k with
                        turn k of the other episodes of the group
      whiten            whiten the final advantages over the batch
      whiten_weighting  "token": every action token weighs the same; "rollout": every
                        episode weighs the same, so long episodes do not dominate the
                        batch statistics (used by ``whiten`` and REINFORCE++)

    Traced floats: ``gamma``/``lam`` discount and GAE lambda per token,
    ``turn_gamma``/``turn_lam`` the same across turns, ``eps`` in std divisions.
    """

    estimator: str = struct.field(pytree_node=False, default="grpo")
    level: str = struct.field(pytree_node=False, default="outcome")
    whiten: bool = struct.field(pytree_node=False, default=False)
    whiten_weighting: str = struct.field(pytree_node=False, default="token")
    gamma: float = 1.0
    lam: float = 0.95
    turn_gamma: float = 1.0
    turn_lam: float = 0.95
    eps: float = 1e-6


# ----------------------------------------------------------------------------- input checks


def _prep(turn_rewards, turn_end, turn_index, loss_mask, group_id):
    """Converts the EpisodeBatch fields to jax arrays and checks their shapes agree."""
    turn_rewards = jnp.asarray(turn_rewards, jnp.float32)
    turn_end = jnp.asarray(turn_end, jnp.int32)
    turn_index = jnp.asarray(turn_index, jnp.int32)
    loss_mask = jnp.asarray(loss_mask, bool)
    group_id = jnp.asarray(group_id)
    if loss_mask.shape != turn_index.shape or loss_mask.ndim != 2:
        raise ValueError(
            f"loss_mask {loss_mask.shape} and turn_index {turn_index.shape} must both be [B, T]"
        )
    if turn_end.shape != turn_rewards.shape or turn_end.ndim != 2:
        raise ValueError(
            f"turn_end {turn_end.shape} and turn_rewards {turn_rewards.shape} must both be [B, K]"
        )
    if not (loss_mask.shape[0] == turn_end.shape[0] == group_id.shape[0]) or group_id.ndim != 1:
        raise ValueError(
            "batch sizes differ: loss_mask "
            f"{loss_mask.shape}, turn_end {turn_end.shape}, group_id {group_id.shape}"
        )
    return turn_rewards, turn_end, turn_index, loss_mask, group_id


def _bootstrap(bootstrap: Array | None, loss_mask: Array) -> Array | None:
    if bootstrap is None:
        return None
    bootstrap = jnp.asarray(bootstrap, jnp.float32)
    if bootstrap.shape != loss_mask.shape[:1]:
        raise ValueError(f"bootstrap {bootstrap.shape} must be [B] = {loss_mask.shape[:1]}")
    return bootstrap


def _episodes(episodes, loss_mask: Array) -> Episodes | None:
    return None if episodes is None else as_episodes(episodes, loss_mask.shape[0])


def _require_values(values: Array | None, loss_mask: Array, name: str) -> Array:
    if values is None:
        raise ValueError(f"advantage estimator {name!r} needs critic values [B, T]")
    values = jnp.asarray(values, jnp.float32)
    if values.shape != loss_mask.shape:
        raise ValueError(f"values {values.shape} must match loss_mask {loss_mask.shape}")
    return values


def _token_rewards(turn_rewards, turn_end, loss_mask, token_rewards) -> Array:
    """Turn rewards placed at turn ends plus optional per-token rewards on action tokens."""
    r = place_turn_values(turn_rewards.astype(jnp.float32), turn_end, loss_mask.shape[1])
    if token_rewards is not None:
        r = r + jnp.where(loss_mask, jnp.asarray(token_rewards, jnp.float32), 0)
    return r


# ----------------------------------------------------------------------------- critic-based


@ADVANTAGES.register("gae", needs_values=True)
def gae(
    *, turn_rewards, turn_end, turn_index, loss_mask, group_id, cfg, values=None,
    token_rewards=None, bootstrap=None, episodes=None,
):
    """Token-level GAE with a critic (PPO).

    Each action token is a step of the MDP. Turn rewards sit on the turn's last
    sampled token; the TD error of that token bootstraps (across the observation
    tokens that follow) from the value of the first action token of the next
    turn, and the episode ends after its last action token (V = 0; V = ``bootstrap``
    for a truncated episode). Uses ``cfg.gamma`` and ``cfg.lam``; returns =
    advantages + values (value targets).
    """
    turn_rewards, turn_end, turn_index, loss_mask, group_id = _prep(
        turn_rewards, turn_end, turn_index, loss_mask, group_id
    )
    values = _require_values(values, loss_mask, "gae")
    bootstrap = _bootstrap(bootstrap, loss_mask)
    r = _token_rewards(turn_rewards, turn_end, loss_mask, token_rewards)
    episodes = _episodes(episodes, loss_mask)
    if episodes is None:
        adv = masked_gae(r, values, loss_mask, cfg.gamma, cfg.lam, last_value=bootstrap)
    else:
        adv = chained_gae(r, values, loss_mask, cfg.gamma, cfg.lam, episodes,
                          last_value=bootstrap)
    return adv, jnp.where(loss_mask, adv + values, 0)


def _turn_level_gae(name, turn_rewards, turn_end, turn_index, loss_mask, group_id, values,
                    token_rewards, cfg, bootstrap, episodes):
    """Checked inputs and the turn-level GAE shared by turn_gae and bilevel_gae:
    (a_turn [B, K], v_turn [B, K], turn_end, turn_index, loss_mask, values)."""
    turn_rewards, turn_end, turn_index, loss_mask, group_id = _prep(
        turn_rewards, turn_end, turn_index, loss_mask, group_id
    )
    values = _require_values(values, loss_mask, name)
    r_turn = effective_turn_rewards(turn_rewards, turn_end, turn_index, loss_mask, token_rewards)
    # V_k is read at the turn's first sampled token: the state the turn starts from. At the
    # turn's end the critic has already seen (almost) the whole utterance it should judge.
    starts = turn_starts(turn_index, loss_mask, turn_end.shape[1])
    present = present_turns(turn_end)
    v_turn = jnp.where(present, gather_at_turn_ends(values, starts), 0)
    bootstrap = _bootstrap(bootstrap, loss_mask)
    episodes = _episodes(episodes, loss_mask)
    if episodes is None:
        a_turn = masked_gae(r_turn, v_turn, present, cfg.turn_gamma, cfg.turn_lam,
                            last_value=bootstrap)
    else:  # the same turn maths on whole episodes
        a_ep = masked_gae(to_episode_turns(r_turn, present, episodes),
                          to_episode_turns(v_turn, present, episodes),
                          to_episode_turns(present, present, episodes),
                          cfg.turn_gamma, cfg.turn_lam,
                          last_value=episode_bootstrap(bootstrap, present, episodes))
        a_turn = from_episode_turns(a_ep, present, episodes)
    return a_turn, v_turn, turn_end, turn_index, loss_mask, values


@ADVANTAGES.register("turn_gae", needs_values=True)
def turn_gae(
    *, turn_rewards, turn_end, turn_index, loss_mask, group_id, cfg, values=None,
    token_rewards=None, bootstrap=None, episodes=None,
):
    """Turn-level GAE: one MDP step per turn, every token of the turn shares its advantage.

    The critic's value of turn k is its value at the turn's first sampled token,
    V_k = values[turn_start[k]] (``turn_starts``): with values[t] read from the state in
    which token t was chosen (``PolicyModel.logprobs_and_values``), that is the value of
    the state the turn starts from, before any of its tokens. Then over present turns
    delta_k = r_k + turn_gamma * V_{k+1} - V_k and A_k = delta_k + turn_gamma *
    turn_lam * A_{k+1}. This is the utterance-level critic of ArCHer (Zhou et al.,
    2024) without its token-level actor refinement; ``bilevel_gae`` adds that.
    After the last present turn V = 0, or ``bootstrap`` for a truncated episode.
    Returns (value targets) are A_k + V_k on every token of the turn.
    """
    a_turn, v_turn, turn_end, turn_index, loss_mask, values = _turn_level_gae(
        "turn_gae", turn_rewards, turn_end, turn_index, loss_mask, group_id, values,
        token_rewards, cfg, bootstrap, episodes,
    )
    adv = broadcast_turns_to_tokens(a_turn, turn_index, loss_mask)
    ret = broadcast_turns_to_tokens(a_turn + v_turn, turn_index, loss_mask)
    return adv, ret


@ADVANTAGES.register("bilevel_gae", needs_values=True)
def bilevel_gae(
    *, turn_rewards, turn_end, turn_index, loss_mask, group_id, cfg, values=None,
    token_rewards=None, bootstrap=None, episodes=None,
):
    """Bi-level GAE: turn-level GAE across turns, then token-level GAE within each turn.

    The hierarchical credit assignment of ArCHer (Zhou et al., 2024) as the
    "bi-level GAE" of multi-turn agent RL (e.g. VAGEN, Wang et al., 2025). Definition:

    1. Turn level (as ``turn_gae``): V_k = values[turn_start[k]],
       A^turn_k = GAE(turn rewards, V_k; turn_gamma, turn_lam) over present turns,
       and the turn's target return R_k = A^turn_k + V_k.
    2. Token level: each turn is its own segment whose only reward, R_k, sits on its
       last token and after which nothing is bootstrapped. Token GAE with
       (gamma, lam) inside the segment gives the last token delta = R_k - V_end, and
       earlier tokens see it discounted by gamma * lam plus the critic's within-turn TD
       errors. With gamma = lam = 1 the turn's first token gets exactly
       R_k - V_k = A^turn_k: the within-turn TD errors telescope.

    So turn-level discounting (how far rewards propagate across turns) and
    token-level discounting (how credit spreads inside one utterance) are set
    independently. Returns = advantages + values.
    """
    a_turn, v_turn, turn_end, turn_index, loss_mask, values = _turn_level_gae(
        "bilevel_gae", turn_rewards, turn_end, turn_index, loss_mask, group_id, values,
        token_rewards, cfg, bootstrap, episodes,
    )
    seq_len = loss_mask.shape[1]
    r = place_turn_values(a_turn + v_turn, turn_end, seq_len)
    cut = place_turn_values(jnp.ones_like(a_turn), turn_end, seq_len) > 0
    adv = masked_gae(r, values, loss_mask, cfg.gamma, cfg.lam, cut=cut)
    return adv, jnp.where(loss_mask, adv + values, 0)


# ----------------------------------------------------------------------------- critic-free


@ADVANTAGES.register("mc_returns")
def mc_returns(
    *, turn_rewards, turn_end, turn_index, loss_mask, group_id, cfg, values=None,
    token_rewards=None, bootstrap=None, episodes=None,
):
    """Monte-Carlo discounted return per turn, as the advantage of every token of the turn.

    G_k = r_k + turn_gamma * G_{k+1} over present turns (REINFORCE without a
    baseline, with per-turn credit: a turn is credited only with rewards received
    after it, not with earlier ones).
    """
    turn_rewards, turn_end, turn_index, loss_mask, group_id = _prep(
        turn_rewards, turn_end, turn_index, loss_mask, group_id
    )
    r_turn = effective_turn_rewards(turn_rewards, turn_end, turn_index, loss_mask, token_rewards)
    present = present_turns(turn_end)
    episodes = _episodes(episodes, loss_mask)
    if episodes is None:
        g = discounted_returns(r_turn, present, cfg.turn_gamma)
    else:
        g = from_episode_turns(discounted_returns(
            to_episode_turns(r_turn, present, episodes),
            to_episode_turns(present, present, episodes), cfg.turn_gamma), present, episodes)
    ret = broadcast_turns_to_tokens(g, turn_index, loss_mask)
    return ret, ret


def _group_scores(turn_rewards, turn_end, turn_index, loss_mask, token_rewards, cfg):
    """The scalar(s) a group-relative estimator compares: x [B, C], valid [B, C].

    level="outcome": C = 1, the episode's discounted return (sum of turn rewards
    when turn_gamma = 1); episodes without any present turn take no part.
    level="turn": C = K, the return-to-go from turn k; turn k of an episode is
    compared with turn k of the other episodes of its group that have a turn k.
    """
    r_turn = effective_turn_rewards(turn_rewards, turn_end, turn_index, loss_mask, token_rewards)
    return _scores(r_turn, present_turns(turn_end), cfg)


def _scores(r_turn, present, cfg):
    """`_group_scores` from effective turn rewards and present turns (of rows, or of
    whole episodes in episode space)."""
    if cfg.level == "outcome":
        g = discounted_returns(r_turn, present, cfg.turn_gamma)
        first = jnp.argmax(present, axis=1)[:, None]
        return jnp.take_along_axis(g, first, axis=1), jnp.any(present, axis=1, keepdims=True)
    if cfg.level == "turn":
        return discounted_returns(r_turn, present, cfg.turn_gamma), present
    raise ValueError(f"unknown advantage level {cfg.level!r}; valid names: {', '.join(LEVELS)}")


def _scores_to_tokens(x, turn_index, loss_mask, level):
    if level == "outcome":
        return jnp.where(loss_mask, x[:, :1], 0)
    return broadcast_turns_to_tokens(x, turn_index, loss_mask)


def _episode_scores_to_rows(x, present, episodes, level):
    if level == "outcome":  # the episode's scalar on every row of it
        return x[episode_rank(episodes)]
    return from_episode_turns(x, present, episodes)


def _group_estimator(name, adv_fn):
    def estimator(
        *,
        turn_rewards,
        turn_end,
        turn_index,
        loss_mask,
        group_id,
        cfg,
        values=None,
        token_rewards=None,
        bootstrap=None,
        episodes=None,
    ):
        turn_rewards, turn_end, turn_index, loss_mask, group_id = _prep(
            turn_rewards, turn_end, turn_index, loss_mask, group_id
        )
        episodes = _episodes(episodes, loss_mask)
        if episodes is None:
            x, valid = _group_scores(turn_rewards, turn_end, turn_index, loss_mask,
                                     token_rewards, cfg)
            a = adv_fn(x, group_stats(x, valid, group_id), cfg)
        else:  # one sample per episode, compared within the group of its rows
            present = present_turns(turn_end)
            r_turn = effective_turn_rewards(turn_rewards, turn_end, turn_index, loss_mask,
                                            token_rewards)
            x, valid = _scores(to_episode_turns(r_turn, present, episodes),
                               to_episode_turns(present, present, episodes), cfg)
            a = adv_fn(x, group_stats(x, valid, episode_group_id(group_id, episodes)), cfg)
            x, a = (_episode_scores_to_rows(v, present, episodes, cfg.level) for v in (x, a))
        adv = _scores_to_tokens(a, turn_index, loss_mask, cfg.level)
        return adv, _scores_to_tokens(x, turn_index, loss_mask, cfg.level)

    estimator.__name__ = name
    return estimator


def _grpo(x, st: GroupStats, cfg):
    return jnp.where(st.spread, (x - st.mean) / (st.std + cfg.eps), 0)


def _dr_grpo(x, st: GroupStats, cfg):
    return jnp.where(st.spread, x - st.mean, 0)


def _rloo(x, st: GroupStats, cfg):
    # mean of the *other* members: r_i - (S - r_i)/(n-1) = n/(n-1) * (r_i - mean)
    return jnp.where(st.spread, st.count / jnp.maximum(st.count - 1, 1) * (x - st.mean), 0)


grpo = ADVANTAGES.register("grpo", _group_estimator("grpo", _grpo))
grpo.__doc__ = """GRPO (Shao et al., 2024): (r - group mean) / (group std + eps).

The std is the unbiased (n - 1) one, as in TRL and verl. Groups whose rewards
are all identical carry no signal and get exactly 0. ``cfg.level`` picks
outcome-level or per-turn comparison (see ``_group_scores``)."""

dr_grpo = ADVANTAGES.register("dr_grpo", _group_estimator("dr_grpo", _dr_grpo))
dr_grpo.__doc__ = """Dr.GRPO (Liu et al., 2025): r - group mean, no std division.

Dividing by the group std up-weights groups whose rewards barely differ (too
easy or too hard prompts), a difficulty bias; Dr.GRPO drops it. Its other half,
no length normalisation, is the ``seq_sum_const`` loss aggregation."""

rloo = ADVANTAGES.register("rloo", _group_estimator("rloo", _rloo))
rloo.__doc__ = """RLOO (Ahmadian et al., 2024): r_i - mean of the other members of the group.

The leave-one-out baseline is independent of the episode it scores, so the
estimator stays unbiased. Groups of one, and identical rewards, give 0."""


def _reinforce_pp(
    turn_rewards, turn_end, turn_index, loss_mask, group_id, cfg, token_rewards, baseline: bool,
    episodes=None,
):
    turn_rewards, turn_end, turn_index, loss_mask, group_id = _prep(
        turn_rewards, turn_end, turn_index, loss_mask, group_id
    )
    r = _token_rewards(turn_rewards, turn_end, loss_mask, token_rewards)
    episodes = _episodes(episodes, loss_mask)
    if episodes is None:
        g = discounted_returns(r, loss_mask, cfg.gamma)
    else:  # reward-to-go across the episode's rows: GAE with V = 0, lambda = 1
        g = chained_gae(r, jnp.zeros_like(r), loss_mask, cfg.gamma, 1.0, episodes)
    adv = g
    if baseline:
        has_tokens = jnp.any(loss_mask, axis=1)
        first = jnp.argmax(loss_mask, axis=1)[:, None]
        x = jnp.take_along_axis(g, first, axis=1)  # episode return seen from its first token
        if episodes is None:
            st = group_stats(x, has_tokens[:, None], group_id)
            # Identical group returns: subtract the episode's own return (exact 0 signal).
            b = jnp.where(st.spread, st.mean, x)
        else:  # the return from the episode's first row, one sample per episode
            rank = episode_rank(episodes)
            head = first_rows(loss_mask, episodes)
            x_ep = jax.ops.segment_sum(jnp.where(head, x[:, 0], 0.0), rank, x.shape[0])[:, None]
            valid = jax.ops.segment_max(has_tokens.astype(jnp.int32), rank, x.shape[0]) > 0
            valid = valid[:, None]
            st = group_stats(x_ep, valid, episode_group_id(group_id, episodes))
            b = jnp.where(st.spread, st.mean, x_ep)[rank]
        adv = jnp.where(loss_mask, g - b, 0)
    return whiten(adv, loss_mask, weighting=cfg.whiten_weighting, eps=cfg.eps,
                  episode_index=None if episodes is None else episodes.episode_index), g


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp(
    *, turn_rewards, turn_end, turn_index, loss_mask, group_id, cfg, values=None,
    token_rewards=None, bootstrap=None, episodes=None,
):
    """REINFORCE++ (Hu, 2025): token-level reward-to-go, whitened over the batch.

    G_t = sum of rewards (turn rewards at turn ends + ``token_rewards``, typically
    a KL penalty) at action tokens from t on, discounted by ``cfg.gamma`` per
    action token; then (G - mean) / std over all action tokens of the batch
    (``cfg.whiten_weighting``). The batch-level baseline replaces a critic.
    """
    return _reinforce_pp(
        turn_rewards, turn_end, turn_index, loss_mask, group_id, cfg, token_rewards, False,
        episodes,
    )


@ADVANTAGES.register("reinforce_pp_baseline")
def reinforce_pp_baseline(
    *, turn_rewards, turn_end, turn_index, loss_mask, group_id, cfg, values=None,
    token_rewards=None, bootstrap=None, episodes=None,
):
    """REINFORCE++-baseline: reward-to-go minus the group-mean episode return, then
    whitened over the batch. The group mean removes per-prompt difficulty before the
    batch normalisation sets the scale."""
    return _reinforce_pp(
        turn_rewards, turn_end, turn_index, loss_mask, group_id, cfg, token_rewards, True,
        episodes,
    )


# ----------------------------------------------------------------------------- entry point


def _field(batch: Any, name: str) -> Any:
    if isinstance(batch, dict):
        return batch[name]
    return getattr(batch, name)


def _optional_field(batch: Any, name: str) -> Any:
    if isinstance(batch, dict):
        return batch.get(name)
    return getattr(batch, name, None)


def batch_episodes(batch: Any) -> Episodes | None:
    """The batch's ``Episodes`` if it has both ``episode_index`` and ``turn_offset``
    (not None), else None (each row its own episode). Also None for concrete (not traced)
    fields in which every episode is one row: then the estimators run their one-row code
    and reproduce it bit for bit (traced, the episode code agrees to float rounding)."""
    idx, off = _optional_field(batch, "episode_index"), _optional_field(batch, "turn_offset")
    if idx is None or off is None:
        return None
    if not isinstance(idx, jax.core.Tracer) and np.unique(np.asarray(idx)).size == np.size(idx):
        return None  # known now: every episode is one row, so the one-row code, bit for bit
    return Episodes(jnp.asarray(idx, jnp.int32), jnp.asarray(off, jnp.int32))


def accepts_episodes(fn) -> bool:
    """Whether an estimator takes the ``episodes`` keyword (or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "episodes" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _legacy_message(name: str) -> str:
    return (f"advantage estimator {name!r} takes no `episodes` keyword, but the batch has an "
            "episode laid out as several rows (repeated episode_index): its advantages "
            "would treat each row as an episode. Add `episodes=None` to its signature and "
            "handle it (agentic_rl.rl.episodes), or give every row its own episode_index")


def _check_one_row_episodes(name: str, episodes: Episodes) -> None:
    """For an estimator without the ``episodes`` keyword: every episode must be one row.
    Checked now on concrete arrays; under jit by a host callback that raises."""
    idx = episodes.episode_index

    def check(idx):
        idx = np.asarray(idx)
        if len(np.unique(idx)) != idx.size:
            raise ValueError(_legacy_message(name))

    if isinstance(idx, jax.core.Tracer):
        jax.debug.callback(check, idx)
    else:
        check(idx)


def compute_advantages(
    batch: Any,
    cfg: AdvantageConfig,
    *,
    values: Array | None = None,
    token_rewards: Array | None = None,
    cut_values: Array | None = None,
) -> tuple[Array, Array]:
    """Runs the estimator named by ``cfg.estimator`` on an EpisodeBatch-like object.

    ``batch`` is anything with the fields turn_rewards, turn_end, turn_index,
    loss_mask and group_id (an EpisodeBatch, a dict, a namespace). If it also has
    ``episode_index`` and ``turn_offset`` (not None), they reach the estimator as
    ``episodes``: rows of one episode get its exact advantages (``rl/episodes.py``);
    an estimator without that keyword gets a ValueError for a multi-row episode. With
    ``cut_values`` [B] (the critic's value of the state after each row's last token)
    it also needs ``truncated`` [B]: rows cut by a limit bootstrap from their cut
    value, the others from 0. If ``cfg.whiten``, the advantages are then whitened over
    the batch with ``cfg.whiten_weighting``. Returns (advantages [B, T], returns [B, T]).
    """
    fn = ADVANTAGES.get(cfg.estimator)
    loss_mask = jnp.asarray(_field(batch, "loss_mask"), bool)
    kwargs = {}
    if cut_values is not None:
        try:
            truncated = jnp.asarray(_field(batch, "truncated"), bool)
        except (KeyError, AttributeError):
            raise ValueError(
                "cut_values need the batch's truncated flag [B] (which rows were cut by a limit)"
            ) from None
        kwargs["bootstrap"] = jnp.where(truncated, jnp.asarray(cut_values, jnp.float32), 0.0)
    episodes = batch_episodes(batch)
    if episodes is not None:
        if accepts_episodes(fn):
            kwargs["episodes"] = episodes
        else:
            _check_one_row_episodes(cfg.estimator, episodes)
    adv, ret = fn(
        turn_rewards=jnp.asarray(_field(batch, "turn_rewards")),
        turn_end=jnp.asarray(_field(batch, "turn_end")),
        turn_index=jnp.asarray(_field(batch, "turn_index")),
        loss_mask=loss_mask,
        group_id=jnp.asarray(_field(batch, "group_id")),
        cfg=cfg,
        values=values,
        token_rewards=token_rewards,
        **kwargs,
    )
    if cfg.whiten:
        adv = whiten(adv, loss_mask, weighting=cfg.whiten_weighting, eps=cfg.eps,
                     episode_index=None if episodes is None else episodes.episode_index)
    return adv, ret


def compute_advantages_by_agent(
    batch: Any,
    cfg: AdvantageConfig,
    per_agent: tuple[tuple[int, AdvantageConfig], ...],
    row_agent: Array,
    *,
    values: Array | None = None,
    token_rewards: Array | None = None,
    cut_values: Array | None = None,
) -> tuple[Array, Array]:
    """`compute_advantages` with an estimator per agent (rLLM's per-role estimators).

    ``per_agent`` pairs an agent id with its ``AdvantageConfig``; ``row_agent`` [B] is
    each row's agent (-1: a padding row). Each listed agent's rows get its estimator,
    computed with the loss mask restricted to its rows, so batch statistics (whitening,
    batch baselines) see only that agent's rows; group baselines already do when rows
    are grouped by (task, agent). Every other row gets ``cfg``, over the other rows.
    With no map this is `compute_advantages`.
    """
    if not per_agent:
        return compute_advantages(batch, cfg, values=values, token_rewards=token_rewards,
                                  cut_values=cut_values)
    fields = ("turn_rewards", "turn_end", "turn_index", "loss_mask", "group_id")
    base = {k: _field(batch, k) for k in fields}
    for k in ("episode_index", "turn_offset"):
        base[k] = _optional_field(batch, k)
    if cut_values is not None:
        base["truncated"] = _field(batch, "truncated")
    loss_mask = jnp.asarray(base["loss_mask"], bool)
    row_agent = jnp.asarray(row_agent)
    listed = jnp.zeros(row_agent.shape, bool)
    parts = []
    for agent, agent_cfg in per_agent:
        rows = row_agent == agent
        listed = listed | rows
        parts.append((rows, agent_cfg))
    parts.append((~listed, cfg))
    adv = ret = None
    for rows, part_cfg in parts:
        sub = {**base, "loss_mask": loss_mask & rows[:, None]}
        a, r = compute_advantages(sub, part_cfg, values=values, token_rewards=token_rewards,
                                  cut_values=cut_values)
        adv = jnp.where(rows[:, None], a, 0.0 if adv is None else adv)
        ret = jnp.where(rows[:, None], r, 0.0 if ret is None else ret)
    return adv, ret
