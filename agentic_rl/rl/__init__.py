"""RL core: pure array functions for advantages, policy/value/KL/entropy losses and DPO.

Nothing here knows about models: every function takes arrays shaped like the
EpisodeBatch of DESIGN.md and returns arrays, so a new loss can be prototyped in
a notebook on synthetic data. Variants are selected by name through registries:

    ADVANTAGES      advantage estimators   (AdvantageConfig.estimator)     advantages.py
    POLICY_LOSSES   policy losses          (LossConfig.policy_loss)        losses.py
    KL_ESTIMATORS   k1 / k2 / k3           (LossConfig.kl_estimator)       kl.py
    AGGREGATIONS    loss aggregation modes (LossConfig.aggregation)        aggregation.py
    OFF_POLICY      off-policy corrections (LossConfig.off_policy)         off_policy.py
                    none, tis, mis, decoupled

The rest: `returns.py` (masked GAE, discounted returns, turn <-> token placement),
`groups.py` (GRPO group statistics, whitening), `episodes.py` (episodes laid out as
several rows after context rewrites: episode space and chained GAE), `tokens.py`
(masked means, log-ratios, log-probs and entropies from logits), `dpo.py` (DPO and
preference pairs).

Losses return per-token terms; the caller aggregates once (`aggregate`). Registry
metadata says what a variant needs: `ADVANTAGES.meta(name)["needs_values"]`,
`POLICY_LOSSES.meta(name)["reads"]` / `["aggregation"]`.

Imports: jax, flax.struct and agentic_rl.registry; never a model, a sampler or an
environment (tests/test_layers.py).
"""

from agentic_rl.registry import Registry
from agentic_rl.rl.advantages import (
    ADVANTAGES,
    AdvantageConfig,
    batch_episodes,
    compute_advantages,
    compute_advantages_by_agent,
)
from agentic_rl.rl.aggregation import AGGREGATIONS, aggregate
from agentic_rl.rl.dpo import (
    DPOConfig,
    PreferencePairs,
    build_preference_pairs,
    dpo_loss,
    dpo_loss_from_pairs,
    sequence_logprobs,
)
from agentic_rl.rl.episodes import (
    Episodes,
    chained_gae,
    from_episode_turns,
    to_episode_turns,
)
from agentic_rl.rl.groups import GroupStats, dense_group_ranks, group_stats, whiten
from agentic_rl.rl.kl import KL_ESTIMATORS, kl_loss, kl_penalty_rewards, kl_per_token
from agentic_rl.rl.losses import (
    LOSS_INPUTS,
    POLICY_LOSSES,
    LossConfig,
    clipped_surrogate,
    compute_policy_loss,
    entropy_loss,
    policy_loss_terms,
    value_loss,
)
from agentic_rl.rl.off_policy import OFF_POLICY, off_policy_weights
from agentic_rl.rl.returns import (
    broadcast_turns_to_tokens,
    discounted_returns,
    effective_turn_rewards,
    episode_returns,
    fold_token_rewards,
    gather_at_turn_ends,
    masked_gae,
    place_turn_values,
    present_turns,
    turn_starts,
)
from agentic_rl.rl.tokens import (
    entropy_from_logits,
    finalize,
    log_ratio,
    logprobs_from_logits,
    masked_mean,
    safe_div,
)

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "LOSS_INPUTS",
    "OFF_POLICY",
    "POLICY_LOSSES",
    "AdvantageConfig",
    "DPOConfig",
    "Episodes",
    "GroupStats",
    "LossConfig",
    "PreferencePairs",
    "Registry",
    "aggregate",
    "batch_episodes",
    "broadcast_turns_to_tokens",
    "build_preference_pairs",
    "chained_gae",
    "clipped_surrogate",
    "compute_advantages",
    "compute_advantages_by_agent",
    "compute_policy_loss",
    "dense_group_ranks",
    "discounted_returns",
    "dpo_loss",
    "dpo_loss_from_pairs",
    "effective_turn_rewards",
    "entropy_from_logits",
    "entropy_loss",
    "episode_returns",
    "finalize",
    "fold_token_rewards",
    "from_episode_turns",
    "gather_at_turn_ends",
    "turn_starts",
    "group_stats",
    "kl_loss",
    "kl_penalty_rewards",
    "kl_per_token",
    "log_ratio",
    "logprobs_from_logits",
    "masked_gae",
    "masked_mean",
    "off_policy_weights",
    "place_turn_values",
    "policy_loss_terms",
    "present_turns",
    "safe_div",
    "sequence_logprobs",
    "to_episode_turns",
    "value_loss",
    "whiten",
]
