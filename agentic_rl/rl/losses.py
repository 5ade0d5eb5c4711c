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

Three log-probs per sampled token (DESIGN.md), once rollouts can be off-policy (async
workers, external inference engines): behaviour pi_b (what the sampler used, stored in
the batch), proximal/old pi_prox (recomputed at the start of the update) and current
pi. The policy losses clip pi / pi_prox; an off-policy correction (``OFF_POLICY``,
``LossConfig.off_policy``) weights each token by a function of rho = pi_prox / pi_b:

    none       1 (today's losses; rho is still measured and logged)
    tis        min(rho_t, off_policy_tis_cap)        token-level truncated IS
    mis        rho(y) = prod_t rho_t if it lies in [off_policy_mis_low, off_policy_mis_high],
               else 0 for the whole sequence        sequence-level masked IS
    decoupled  rho_t                                decoupled PPO (Hilton et al., 2021)

With synchronous on-policy sampling pi_b = pi_prox, every weight is exactly 1 and each
corrected loss is the plain one, bit for bit. ``policy_loss_terms(...,
behaviour_logprobs=...)`` applies the correction and adds its ``behav_*`` metrics.
"""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
from flax import struct

from agentic_rl.registry import Registry

Array = jax.Array

# reads: the optional inputs a loss takes (LOSS_INPUTS); aggregation: the only
# aggregation its objective is defined with (None: any).
POLICY_LOSSES = Registry("policy loss", defaults={"reads": (), "aggregation": None})
LOSS_INPUTS = ("turn_index", "ref_logprobs", "entropy", "values", "behaviour_logprobs")
AGGREGATIONS = Registry("loss aggregation")
KL_ESTIMATORS = Registry("KL estimator")
OFF_POLICY = Registry("off-policy correction")

# exp() of a log-ratio beyond this overflows float32 or is meaningless anyway.
MAX_LOG_RATIO = 20.0


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


# ----------------------------------------------------------------------------- helpers


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


def _masked_max(x: Array, mask: Array) -> Array:
    return jnp.where(jnp.any(mask), jnp.max(jnp.where(mask, x, -jnp.inf)), 0)


def _masked_min(x: Array, mask: Array) -> Array:
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


def _ratio_metrics(lr: Array, mask: Array) -> dict[str, Array]:
    ratio = jnp.exp(lr)
    return {
        # KL(pi_sample || pi) by the k3 estimator on the sampled tokens (Schulman 2020).
        "approx_kl": masked_mean(jnp.expm1(lr) - lr, mask),
        "ratio_mean": masked_mean(ratio, mask),
        "ratio_max": _masked_max(ratio, mask),
        "ratio_min": _masked_min(ratio, mask),
    }


# ----------------------------------------------------------------------------- aggregation


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


def _terms(per_token: Array, mask: Array, metrics: dict[str, Array]):
    """(per-token loss, 0 off the mask, metrics): what every loss returns."""
    return jnp.where(mask, per_token, 0.0), metrics


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
    metrics = {"clip_frac": masked_mean(is_clipped, mask), **_ratio_metrics(lr, mask)}
    return loss, metrics, lr


@POLICY_LOSSES.register("ppo")
def ppo(logprobs, old_logprobs, advantages, mask, cfg):
    """PPO clip (Schulman et al., 2017) with a symmetric range 1 +- cfg.clip_eps."""
    loss, metrics, _ = _ppo_like(
        logprobs, old_logprobs, advantages, mask, cfg, 1 - cfg.clip_eps, 1 + cfg.clip_eps
    )
    return _terms(loss, mask, metrics)


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
    return _terms(loss, mask, metrics)


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
    return _terms(loss, mask, metrics)


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
        **_ratio_metrics(lr, mask),
    }
    return _terms(loss, mask, metrics)


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
        **_ratio_metrics(lr, mask),
    }
    return _terms(loss, mask, metrics)


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
        **_ratio_metrics(lr, mask),
    }
    return _terms(loss, mask, metrics)


@POLICY_LOSSES.register("pg")
def pg(logprobs, old_logprobs, advantages, mask, cfg):
    """Plain policy gradient (REINFORCE): -A * log pi, no importance correction.

    Correct for on-policy data; for data from another policy use a ratio-based loss.
    Its gradient equals PPO's at ratio 1.
    """
    lr = log_ratio(logprobs, old_logprobs, mask)
    loss = -advantages * jnp.where(mask, logprobs, 0.0)
    return _terms(loss, mask, _ratio_metrics(lr, mask))


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


# ----------------------------------------------------------------------------- off-policy


def off_policy_weights(old_logprobs: Array, behaviour_logprobs: Array, mask: Array,
                       cfg: LossConfig) -> tuple[Array, dict[str, Array]]:
    """Per-token weights [B, T] of the correction named by ``cfg.off_policy``, and metrics.

    rho_t = pi_prox(y_t) / pi_behaviour(y_t) from the proximal (recomputed) and
    behaviour (sampler) log-probs, log-ratio clipped to +-MAX_LOG_RATIO like every
    ratio here. The weights are constants of the update (neither policy is the one
    being differentiated). Metrics, over the action tokens: ``behav_ratio_mean/max/min``
    of rho, ``behav_kl`` (k3 estimate of KL(pi_behaviour || pi_prox)), ``behav_weight_mean``,
    and the correction's own (``behav_clip_frac``, ``behav_mask_frac``).
    """
    log_rho = log_ratio(old_logprobs, behaviour_logprobs, mask)
    weights, metrics = OFF_POLICY.get(cfg.off_policy)(log_rho, mask, cfg)
    rho = jnp.exp(log_rho)
    return weights, {
        "behav_ratio_mean": masked_mean(rho, mask),
        "behav_ratio_max": _masked_max(rho, mask),
        "behav_ratio_min": _masked_min(rho, mask),
        "behav_kl": masked_mean(jnp.expm1(log_rho) - log_rho, mask),
        "behav_weight_mean": masked_mean(weights, mask),
        **metrics,
    }


@OFF_POLICY.register("none")
def no_correction(log_rho: Array, mask: Array, cfg: LossConfig):
    """No correction: weight 1 (the ratio is taken against the proximal policy only).

    Right for synchronous on-policy sampling, where behaviour and proximal policies are
    the same weights (up to the sampler's numerics, which the ``behav_*`` metrics show)."""
    return jnp.ones_like(log_rho), {}


@OFF_POLICY.register("tis")
def tis(log_rho: Array, mask: Array, cfg: LossConfig):
    """Token-level truncated IS: w_t = min(rho_t, off_policy_tis_cap) (Ionides, 2008; for
    sampler/trainer mismatch, Yao et al., 2025). Corrects the token distribution from the
    behaviour to the proximal policy with a bounded weight: a little bias for bounded
    variance. ``behav_clip_frac``: share of tokens whose rho was truncated."""
    rho = jnp.exp(log_rho)
    w = jnp.minimum(rho, cfg.off_policy_tis_cap)
    return w, {"behav_clip_frac": masked_mean(rho > cfg.off_policy_tis_cap, mask)}


@OFF_POLICY.register("mis")
def mis(log_rho: Array, mask: Array, cfg: LossConfig):
    """Sequence-level masked IS: rho(y) = prod over the row's action tokens of rho_t, the
    sequence's likelihood ratio; a row whose rho(y) lies outside
    [off_policy_mis_low, off_policy_mis_high] is dropped (weight 0, no gradient), the
    others are weighted by rho(y). Masking instead of truncating leaves no biased
    weight on the sequences the behaviour policy got most wrong. Dropped rows still
    count in the denominator (they are weight-0 samples, so the aggregation's
    denominator does not depend on the weights). ``behav_mask_frac``: share of non-empty
    rows dropped."""
    seq = jnp.sum(jnp.where(mask, log_rho, 0.0), axis=-1, keepdims=True)
    seq = jnp.clip(seq, -MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = jnp.exp(seq)
    keep = (ratio >= cfg.off_policy_mis_low) & (ratio <= cfg.off_policy_mis_high)
    w = jnp.broadcast_to(jnp.where(keep, ratio, 0.0), log_rho.shape)
    rows = jnp.any(mask, axis=-1, keepdims=True)
    return w, {"behav_mask_frac": masked_mean(~keep, rows)}


@OFF_POLICY.register("decoupled")
def decoupled(log_rho: Array, mask: Array, cfg: LossConfig):
    """Decoupled PPO (Hilton et al., 2021; AReaL's asynchronous PPO): the clip is taken
    against the proximal policy (the policy loss's ratio pi / pi_prox) and every token is
    weighted by w_t = rho_t = pi_prox / pi_behaviour, the exact IS weight from the
    sampler to the proximal policy. Unbounded: with a very stale sampler use tis."""
    return jnp.exp(log_rho), {}


# ----------------------------------------------------------------------------- KL


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
    return _terms(kl, mask, {"kl": masked_mean(kl, mask)})


def kl_penalty_rewards(logprobs, ref_logprobs, mask, coef, estimator: str = "k1") -> Array:
    """KL to a reference as a per-token reward penalty (PPO-RLHF style): -coef * KL_t.

    Gradient-free (it is a reward). Pass it as ``token_rewards`` to an advantage
    estimator; k1 is the usual choice since only its expectation matters here.
    """
    kl = kl_per_token(logprobs, ref_logprobs, mask, estimator)
    return -coef * jax.lax.stop_gradient(kl)


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
    return _terms(loss, mask, metrics)


def entropy_loss(entropy, mask, cfg: LossConfig):
    """Entropy bonus as a loss term, -H per token, so a positive coefficient times it
    added to the loss raises entropy. ``entropy`` is per token [B, T]
    (``entropy_from_logits``). Returns (per_token, metrics)."""
    h = jnp.where(mask, entropy, 0.0)
    return _terms(-h, mask, {"entropy": masked_mean(h, mask)})
