"""Policy, value, KL and entropy losses on token arrays, and their aggregation.

Every loss here returns per-token terms, ``(per_token [B, T], metrics)``, and the caller
aggregates once: the update step sums its weighted terms (policy, KL, value, entropy)
per token and aggregates that total with ``LossConfig.aggregation``, whose denominator
is computed over the whole minibatch first. ``aggregate(per_token, mask, cfg)`` gives
``(loss_sum, denominator)``; summing both over micro-batches before dividing makes
gradient accumulation exact (a mean of micro-batch means is not the batch mean when
micro-batches hold different numbers of tokens). ``finalize(loss_sum, denominator)`` does
the safe division. Metrics are means over the micro-batch's action tokens (ratios, clip
fractions, ...), for logging.

All policy losses share one signature::

    fn(logprobs, old_logprobs, advantages, mask, cfg, **inputs) -> (per_token, metrics)

with float [B, T] ``logprobs`` (current policy, differentiated), ``old_logprobs`` (the
policy the ratio is taken against: the proximal/pre-update policy recomputed by the
trainer, or the sampler's), ``advantages`` and bool ``mask`` (the loss_mask), and a
``LossConfig``; ``per_token`` is 0 off the mask. A loss that needs more declares it at
registration, ``@POLICY_LOSSES.register("name", reads=("ref_logprobs",))``, and gets
those keywords, all [B, T]: ``turn_index``, ``ref_logprobs`` (the trainer then scores the
reference even without a KL term), ``entropy`` (the forward then computes entropies),
``values`` (the trainer then trains a critic), ``behaviour_logprobs``. Registration may
also pin the one aggregation the objective is defined with (``aggregation="..."``).
``LossConfig(policy_loss="name")`` selects it. Off-policy weights multiply the per-token
loss outside the loss function, so every loss, built-in or new, can be corrected.

Aggregation (``rl/aggregation.py``), KL (``rl/kl.py``) and off-policy corrections
(``rl/off_policy.py``) have their own modules; the shared token arithmetic is
``rl/tokens.py``. The module is longer than most because it holds every registered
policy loss next to the one signature they share.

Imports: jax, flax.struct, agentic_rl.registry and the rl modules above.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
from flax import struct

from agentic_rl.registry import Registry
from agentic_rl.rl.aggregation import aggregate
from agentic_rl.rl.off_policy import OFF_POLICY, off_policy_weights
from agentic_rl.rl.tokens import (
    finalize,
    log_ratio,
    masked_mean,
    ratio_metrics,
    safe_div,
    token_terms,
)

Array = jax.Array

# reads: the optional inputs a loss takes (LOSS_INPUTS); aggregation: the only
# aggregation its objective is defined with (None: any).
POLICY_LOSSES = Registry("policy loss", defaults={"reads": (), "aggregation": None})
LOSS_INPUTS = ("turn_index", "ref_logprobs", "entropy", "values", "behaviour_logprobs")


@struct.dataclass
class LossConfig:
    """Loss hyperparameters.

    Static (names, part of the jit cache key): ``policy_loss`` (in POLICY_LOSSES),
    ``aggregation`` (in AGGREGATIONS), ``kl_estimator`` (in KL_ESTIMATORS),
    ``gspo_level`` ("sequence" or "turn").

    Traced floats (pytree leaves, so a sweep can vmap over them):
      clip_eps                    symmetric PPO / dual-clip ratio clip
      clip_eps_low, clip_eps_high asymmetric clip (DAPO clip-higher: 0.2, 0.28)
      dual_clip_c                 dual-clip bound on the loss for negative advantages
      gspo_eps_low, gspo_eps_high GSPO clip on the sequence ratio (paper: 3e-4, 4e-4)
      cispo_eps_low, cispo_eps_high  CISPO clip of the stop-gradient IS weight
      tis_cap                     truncated-IS cap on the stop-gradient weight
      value_clip_eps              clip of the value update around the old values
      loss_norm_const             Dr.GRPO's constant per-sequence denominator
                                  (set it to the generation budget, max new tokens)
      off_policy_tis_cap          off_policy="tis": cap on pi_prox / pi_behaviour (>= 1)
      off_policy_mis_low/high     off_policy="mis": band on the sequence ratio
                                  pi_prox(y) / pi_behaviour(y) (must contain 1)

    Static ``off_policy`` (in OFF_POLICY): the correction for sampling from a policy
    other than the proximal one; "none" keeps the on-policy losses.
    """

    policy_loss: str = struct.field(pytree_node=False, default="ppo")
    aggregation: str = struct.field(pytree_node=False, default="token_mean")
    kl_estimator: str = struct.field(pytree_node=False, default="k3")
    gspo_level: str = struct.field(pytree_node=False, default="sequence")
    clip_eps: float = 0.2
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.28
    dual_clip_c: float = 3.0
    gspo_eps_low: float = 3e-4
    gspo_eps_high: float = 4e-4
    cispo_eps_low: float = 1.0
    cispo_eps_high: float = 1.0
    tis_cap: float = 2.0
    value_clip_eps: float = 0.2
    loss_norm_const: float = 1.0
    off_policy: str = struct.field(pytree_node=False, default="none")
    off_policy_tis_cap: float = 2.0
    off_policy_mis_low: float = 0.5
    off_policy_mis_high: float = 2.0


# ----------------------------------------------------------------------------- policy losses


def clipped_surrogate(ratio: Array, advantages: Array, low: Array, high: Array):
    """PPO's pessimistic surrogate, as a loss: -min(r A, clip(r, low, high) A).

    Returns (per-token loss, bool where the clipped branch is the active one).
    When the clipped branch is active the gradient is 0: the update already moved
    the ratio far enough in the direction the advantage asks for.
    """
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, low, high) * advantages
    return -jnp.minimum(unclipped, clipped), clipped < unclipped


def _ppo_like(logprobs, old_logprobs, advantages, mask, cfg, low, high):
    lr = log_ratio(logprobs, old_logprobs, mask)
    loss, is_clipped = clipped_surrogate(jnp.exp(lr), advantages, low, high)
    metrics = {"clip_frac": masked_mean(is_clipped, mask), **ratio_metrics(lr, mask)}
    return loss, metrics, lr


@POLICY_LOSSES.register("ppo")
def ppo(logprobs, old_logprobs, advantages, mask, cfg):
    """PPO clip (Schulman et al., 2017) with a symmetric range 1 +- cfg.clip_eps."""
    loss, metrics, _ = _ppo_like(
        logprobs, old_logprobs, advantages, mask, cfg, 1 - cfg.clip_eps, 1 + cfg.clip_eps
    )
    return token_terms(loss, mask, metrics)


@POLICY_LOSSES.register("asym_clip")
def asym_clip(logprobs, old_logprobs, advantages, mask, cfg):
    """PPO clip with range [1 - clip_eps_low, 1 + clip_eps_high] (DAPO clip-higher, Yu et
    al., 2025). A wider upper bound lets low-probability tokens with positive
    advantage grow faster, which counters entropy collapse."""
    loss, metrics, _ = _ppo_like(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        cfg,
        1 - cfg.clip_eps_low,
        1 + cfg.clip_eps_high,
    )
    return token_terms(loss, mask, metrics)


@POLICY_LOSSES.register("dual_clip")
def dual_clip(logprobs, old_logprobs, advantages, mask, cfg):
    """Dual-clip PPO (Ye et al., 2020): for A < 0 the loss is also capped at -c * A.

    With a negative advantage PPO's min() keeps the unclipped r * A, which is
    unbounded as the ratio grows: one stale, very off-policy token can dominate the
    batch. The cap bounds it (and zeroes its gradient) beyond r = c.
    """
    loss, metrics, _ = _ppo_like(
        logprobs, old_logprobs, advantages, mask, cfg, 1 - cfg.clip_eps, 1 + cfg.clip_eps
    )
    capped = jnp.minimum(loss, -cfg.dual_clip_c * advantages)
    is_dual = (advantages < 0) & (capped < loss)
    loss = jnp.where(advantages < 0, capped, loss)
    metrics = {**metrics, "dual_clip_frac": masked_mean(is_dual, mask)}
    return token_terms(loss, mask, metrics)


def segment_mean_log_ratio(lr: Array, mask: Array, segment_ids: Array) -> Array:
    """Mean of lr over the action tokens of each (row, segment), gathered back to [B, T].

    segment_ids [B, T] are per-row labels in [0, T) (all 0 for whole sequences,
    turn_index for turns).
    """
    num_rows, seq_len = lr.shape
    seg = jnp.clip(segment_ids, 0, seq_len - 1) + seq_len * jnp.arange(num_rows)[:, None]
    seg = seg.reshape(-1)
    m = mask.astype(lr.dtype).reshape(-1)
    total = jax.ops.segment_sum(lr.reshape(-1) * m, seg, num_rows * seq_len)
    count = jax.ops.segment_sum(m, seg, num_rows * seq_len)
    return safe_div(total, count)[seg].reshape(num_rows, seq_len)


@POLICY_LOSSES.register("gspo", reads=("turn_index",), aggregation="seq_mean_token_mean")
def gspo(logprobs, old_logprobs, advantages, mask, cfg, *, turn_index=None):
    """GSPO (Zheng et al., 2025): clip a sequence-level ratio instead of token ratios.

    s = exp(mean over the sequence's action tokens of log(pi / pi_sample)), the
    length-normalised sequence likelihood ratio; with ``cfg.gspo_level="turn"`` one
    ratio per turn (needs ``turn_index``), so a multi-turn episode is not clipped
    as a whole because of one turn. Written in the GSPO-token form:
    s_t = sg(s) * pi_t / sg(pi_t), whose value is s and whose gradient is
    s * grad log pi_t, so advantages may vary per token; with constant advantages
    per sequence and ``seq_mean_token_mean`` aggregation it is exactly GSPO, and
    that is the only aggregation it accepts (its registry ``aggregation``): under a
    token mean long sequences would weigh more, which is not the GSPO objective.
    Token ratios are noisy and their variance grows with length; the sequence
    ratio matches the sequence-level reward, hence the much smaller clip range
    (cfg.gspo_eps_low/high).
    """
    if cfg.gspo_level == "sequence":
        segments = jnp.zeros(mask.shape, jnp.int32)
    elif cfg.gspo_level == "turn":
        if turn_index is None:
            raise ValueError("gspo with gspo_level='turn' needs turn_index")
        segments = jnp.asarray(turn_index, jnp.int32)
    else:
        raise ValueError(f"unknown gspo_level {cfg.gspo_level!r}; valid names: sequence, turn")
    _check_aggregation("gspo", cfg)
    lr = log_ratio(logprobs, old_logprobs, mask)
    seq_lr = segment_mean_log_ratio(lr, mask, segments)
    lp = jnp.where(mask, logprobs, 0.0)
    s = jnp.exp(jax.lax.stop_gradient(seq_lr) + lp - jax.lax.stop_gradient(lp))
    loss, is_clipped = clipped_surrogate(s, advantages, 1 - cfg.gspo_eps_low, 1 + cfg.gspo_eps_high)
    metrics = {
        "clip_frac": masked_mean(is_clipped, mask),
        "seq_ratio_mean": masked_mean(jnp.exp(seq_lr), mask),
        **ratio_metrics(lr, mask),
    }
    return token_terms(loss, mask, metrics)


def _weighted_pg(logprobs, weight, advantages, mask):
    """-sg(w) * A * log pi: a policy gradient whose importance weight gets no gradient."""
    lp = jnp.where(mask, logprobs, 0.0)
    return -jax.lax.stop_gradient(weight) * advantages * lp


@POLICY_LOSSES.register("cispo")
def cispo(logprobs, old_logprobs, advantages, mask, cfg):
    """CISPO (MiniMax-M1, 2025): clip the importance weight, not the update.

    loss = -sg(clip(r, 1 - cispo_eps_low, 1 + cispo_eps_high)) * A * log pi.
    PPO's clip zeroes the gradient of clipped tokens, and the rare tokens whose
    ratio moves most (often "reflective" tokens such as "wait") stop learning after
    the first update; here every token keeps a gradient, with a bounded weight.
    Defaults: no lower bound (eps_low = 1), weight at most 2.
    """
    lr = log_ratio(logprobs, old_logprobs, mask)
    ratio = jnp.exp(lr)
    w = jnp.clip(ratio, 1 - cfg.cispo_eps_low, 1 + cfg.cispo_eps_high)
    loss = _weighted_pg(logprobs, w, advantages, mask)
    metrics = {
        "clip_frac": masked_mean(w != ratio, mask),
        "is_weight_mean": masked_mean(w, mask),
        **ratio_metrics(lr, mask),
    }
    return token_terms(loss, mask, metrics)


@POLICY_LOSSES.register("truncated_is")
def truncated_is(logprobs, old_logprobs, advantages, mask, cfg):
    """Truncated importance sampling policy gradient: -sg(min(r, tis_cap)) * A * log pi.

    Corrects for the sampler being a different policy (stale weights, or an
    inference engine whose numerics differ from the trainer's) with a weight
    truncated from above, trading a little bias for bounded variance.
    """
    lr = log_ratio(logprobs, old_logprobs, mask)
    ratio = jnp.exp(lr)
    w = jnp.minimum(ratio, cfg.tis_cap)
    loss = _weighted_pg(logprobs, w, advantages, mask)
    metrics = {
        "clip_frac": masked_mean(ratio > cfg.tis_cap, mask),
        "is_weight_mean": masked_mean(w, mask),
        **ratio_metrics(lr, mask),
    }
    return token_terms(loss, mask, metrics)


@POLICY_LOSSES.register("pg")
def pg(logprobs, old_logprobs, advantages, mask, cfg):
    """Plain policy gradient (REINFORCE): -A * log pi, no importance correction.

    Correct for on-policy data; for data from another policy use a ratio-based loss.
    Its gradient equals PPO's at ratio 1.
    """
    lr = log_ratio(logprobs, old_logprobs, mask)
    loss = -advantages * jnp.where(mask, logprobs, 0.0)
    return token_terms(loss, mask, ratio_metrics(lr, mask))


def policy_loss_terms(logprobs, old_logprobs, advantages, mask, cfg, *,
                      behaviour_logprobs=None, **inputs):
    """The per-token policy loss named by ``cfg.policy_loss``, corrected by ``cfg.off_policy``:
    ``(per_token [B, T], metrics)``.

    ``old_logprobs`` are the proximal/old policy's (the ratio's denominator; the
    sampler's own when nothing was recomputed). ``behaviour_logprobs`` [B, T], the
    sampler's, are needed by every correction but "none"; given with "none" they only
    add the ``behav_*`` metrics of pi_prox / pi_behaviour (the loss is untouched).
    ``inputs``: the optional inputs (``LOSS_INPUTS``); the loss gets those its registry
    entry ``reads``; one it reads that is missing is an error naming it, unless the loss
    gives that keyword a default.
    """
    fn = POLICY_LOSSES.get(cfg.policy_loss)
    reads = POLICY_LOSSES.meta(cfg.policy_loss)["reads"]
    given = {**inputs, "behaviour_logprobs": behaviour_logprobs}
    unknown = sorted(set(inputs) - set(LOSS_INPUTS))
    if unknown:
        raise ValueError(f"unknown loss inputs {unknown}; valid: {', '.join(LOSS_INPUTS)}")
    params = inspect.signature(fn).parameters
    kwargs = {}
    for name in reads:
        if given.get(name) is not None:
            kwargs[name] = given[name]
        elif name not in params or params[name].default is inspect.Parameter.empty:
            # an input the loss declares without a default is required (one with a
            # default, like gspo's turn_index, is needed only in some settings)
            raise ValueError(f"policy loss {cfg.policy_loss!r} reads {name!r}, which was not given")
    per_token, metrics = fn(logprobs, old_logprobs, advantages, mask, cfg, **kwargs)
    if behaviour_logprobs is None:
        if cfg.off_policy != "none":
            OFF_POLICY.get(cfg.off_policy)  # an unknown name fails with the valid ones
            raise ValueError(
                f"off_policy={cfg.off_policy!r} needs behaviour_logprobs (the sampler's "
                "log-probs) besides the proximal ones"
            )
        return per_token, metrics
    weights, is_metrics = off_policy_weights(old_logprobs, behaviour_logprobs, mask, cfg)
    if cfg.off_policy != "none":  # a constant per-token weight (no gradient through it)
        per_token = per_token * jax.lax.stop_gradient(weights)
    return per_token, {**metrics, **is_metrics}


def compute_policy_loss(logprobs, old_logprobs, advantages, mask, cfg, *,
                        behaviour_logprobs=None, **inputs):
    """``policy_loss_terms`` aggregated with ``cfg.aggregation``: ``(loss_sum,
    denominator, metrics)``, metrics with ``loss`` = loss_sum / denominator. For a loss
    on its own (notebooks, tests); the update step aggregates all its terms at once."""
    per_token, metrics = policy_loss_terms(logprobs, old_logprobs, advantages, mask, cfg,
                                           behaviour_logprobs=behaviour_logprobs, **inputs)
    loss_sum, denom = aggregate(per_token, mask, cfg)
    return loss_sum, denom, {"loss": finalize(loss_sum, denom), **metrics}


def _check_aggregation(name: str, cfg: LossConfig) -> None:
    want = POLICY_LOSSES.meta(name)["aggregation"]
    if cfg.aggregation != want:
        raise ValueError(
            f"policy loss {name!r} needs aggregation={want!r}, got {cfg.aggregation!r}: "
            "under any other aggregation it optimises a different objective"
        )


# ----------------------------------------------------------------------------- value, entropy


def value_loss(values, old_values, returns, mask, cfg: LossConfig):
    """Clipped value loss (PPO2): 0.5 * max((V - R)^2, (V_clip - R)^2),
    V_clip = V_old + clip(V - V_old, -value_clip_eps, value_clip_eps).

    Taking the max keeps the critic from moving far from the values the
    advantages were computed with in one update. Returns (per_token, metrics).
    """
    delta = jnp.clip(values - old_values, -cfg.value_clip_eps, cfg.value_clip_eps)
    unclipped = jnp.square(values - returns)
    clipped = jnp.square(old_values + delta - returns)
    loss = 0.5 * jnp.maximum(unclipped, clipped)
    metrics = {
        "vf_clip_frac": masked_mean(clipped > unclipped, mask),
        "value_mean": masked_mean(values, mask),
        "return_mean": masked_mean(returns, mask),
    }
    return token_terms(loss, mask, metrics)


def entropy_loss(entropy, mask, cfg: LossConfig):
    """Entropy bonus as a loss term, -H per token, so a positive coefficient times it
    added to the loss raises entropy. ``entropy`` is per token [B, T]
    (``entropy_from_logits``). Returns (per_token, metrics)."""
    h = jnp.where(mask, entropy, 0.0)
    return token_terms(-h, mask, {"entropy": masked_mean(h, mask)})
