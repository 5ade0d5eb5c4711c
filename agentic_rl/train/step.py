"""The pure update step: scoring, losses, gradient accumulation and guarded optimizer updates.

    train_on_batch(state, batch, hp) -> (state, metrics)

runs `hp.num_epochs` passes over one rollout batch, each split (after a seeded shuffle)
into `hp.num_minibatches` optimizer updates, each accumulated exactly over micro-batches:
every loss term shares one denominator (the aggregation's, computed over the whole
minibatch first), so summing micro-batch loss sums and gradients and dividing once gives
the gradient of the minibatch loss, whatever the micro-batch size.

Log-probs are those of the distribution the rollout sampled from, softmax(logits / T) at
the sampling temperature T (`StepConfig.temperature`, as verl and OpenRLHF do), in the
scoring pass and in the update alike: the ratio and the gradient are then for the policy
that produced the tokens. Three log-probs per sampled token: the batch's behaviour
log-probs (the sampler's), the old/proximal ones (the scoring pass at the start of the
update) and the current ones; `loss.off_policy` corrects for the first two differing.

An update whose loss or gradient is not finite is skipped: params and optimizer state
are kept as they were and `skipped` counts it, so the host can log it and stop after
repeated occurrences. An update whose gradient is exactly zero is skipped too
(`zero_grad` counts it): with no gradient, Adam would still move the weights along its
momentum. Under a mesh the rows of every micro-batch are sharded over the
data axis; XLA inserts the gradient all-reduce.

Imports: agentic_rl.rl, flax, optax, jax and the train modules.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from agentic_rl.rl import (
    POLICY_LOSSES,
    LossConfig,
    aggregate,
    entropy_loss,
    kl_loss,
    policy_loss_terms,
    value_loss,
)
from agentic_rl.train.state import DATA_AXIS, TrainState, zero_lora

Array = jax.Array


@flax.struct.dataclass
class TrainBatch:
    """What the update step needs per token; all [B, T]. Built by the loop from an
    EpisodeBatch plus the scoring pass and the advantages."""

    tokens: Array
    attention_mask: Array
    loss_mask: Array
    turn_index: Array
    advantages: Array
    returns: Array
    old_logprobs: Array  # proximal/pre-update policy (PPO ratio denominators)
    ref_logprobs: Array  # reference policy (KL); zeros when unused
    old_values: Array  # critic before the update (value clipping); zeros when unused
    # The sampler's (behaviour) log-probs, for the off-policy corrections and the behav_*
    # metrics of pi_old / pi_behaviour; None: not measured, and only off_policy="none".
    behaviour_logprobs: Array | None = None
    # Each token's LoRA adapter (a policy with one adapter per agent); None: one adapter.
    adapter_ids: Array | None = None


@flax.struct.dataclass
class StepConfig:
    """Hyperparameters of the update. Floats are traced; structure is static."""

    loss: LossConfig
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    vf_coef: float = 0.5
    num_epochs: int = flax.struct.field(pytree_node=False, default=1)
    num_minibatches: int = flax.struct.field(pytree_node=False, default=1)
    micro_batch_size: int = flax.struct.field(pytree_node=False, default=0)
    kl_in_loss: bool = flax.struct.field(pytree_node=False, default=False)
    use_entropy: bool = flax.struct.field(pytree_node=False, default=False)
    use_critic: bool = flax.struct.field(pytree_node=False, default=False)
    # Rows share their first `prefix_len` tokens (0 = unknown): computed once per
    # micro-batch instead of once per row (see PolicyModel.logprobs_and_values).
    prefix_len: int = flax.struct.field(pytree_node=False, default=0)
    # The sampling temperature: log-probs and entropies are those of softmax(logits / T).
    temperature: float = flax.struct.field(pytree_node=False, default=1.0)
    mesh: Mesh | None = flax.struct.field(pytree_node=False, default=None)


# ------------------------------------------------------------------ forward / scoring


def _temper(model, temperature: float):
    """Makes `model`'s log-probs and entropies those of softmax(logits / temperature).

    logits = h W^T are linear in the unembedding W, which the model reads only on the
    output side (`unembed_matrix`; input embeddings read the table directly, the value
    head reads h), so serving W / T from this one module instance tempers the log-probs
    and entropies and leaves values untouched. `state.model()` builds a fresh module
    per call, so nothing outside this forward pass sees it.
    """
    lm = model.lm
    unembed = lm.unembed_matrix
    object.__setattr__(lm, "unembed_matrix", lambda: unembed() / temperature)
    return model


def forward(state: TrainState, params: nnx.State, tokens, mask, *, with_entropy=False,
            prefix_len: int = 0, temperature: float = 1.0, adapter_ids=None):
    """(log-probs, entropies or None, values or None), each [B, T], aligned with tokens.

    Log-probs and entropies are of softmax(logits / temperature), the sampled distribution.
    `adapter_ids` [B, T]: each token's LoRA adapter, for a policy with one per agent.
    """
    model = state.model(params)
    if temperature != 1.0:
        model = _temper(model, temperature)
    return model.logprobs_and_values(tokens, mask, with_entropy=with_entropy,
                                     prefix_len=prefix_len, adapter_ids=adapter_ids)


def reference_params(state: TrainState) -> nnx.State:
    """The KL reference: the frozen initial copy (over the current params, for a separate
    critic's, which it does not hold), or the params with LoRA switched off."""
    if state.ref is not None:
        return nnx.merge_state(state.params, state.ref)
    return zero_lora(state.params)


def _chunks(x: Array, size: int) -> Array:
    return x.reshape(x.shape[0] // size, size, *x.shape[1:])


@functools.partial(jax.jit, static_argnames=("chunk", "with_values", "with_ref", "prefix_len",
                                             "temperature", "with_cut_values"))
def score(state: TrainState, tokens, mask, *, chunk: int, with_values: bool, with_ref: bool,
          prefix_len: int = 0, temperature: float = 1.0, with_cut_values: bool = False,
          adapter_ids=None):
    """No-grad pass over a whole batch, `chunk` rows at a time: log-probs of the current
    policy, its values (critic) and the reference log-probs, all at the sampling
    `temperature`. Zeros for what is not asked. Returns (lp, values, ref) [B, T].

    `with_cut_values` also returns cut [B]: the critic's value of the state after each
    row's last real token (values[t] is read before token t, so this is the value one
    position past the row; the pass runs on one extra padding column to have it even
    for a row that fills all T positions). A truncated episode bootstraps from it.
    When no row fills T, `value_at_cut(values, mask)` of a plain pass gives the same
    without the extra column (whose different shape changes log-probs by float noise).
    """
    ref_params = reference_params(state) if with_ref else None

    def one(xs):
        t, m, ids = xs
        if with_cut_values:  # one more (padding) column: the value after the last token
            tp, mp = jnp.pad(t, ((0, 0), (0, 1))), jnp.pad(m, ((0, 0), (0, 1)))
            idp = None if ids is None else jnp.pad(ids, ((0, 0), (0, 1)), mode="edge")
            lp, _, v = forward(state, state.params, tp, mp, prefix_len=prefix_len,
                               temperature=temperature, adapter_ids=idp)
            n = jnp.sum(m, axis=-1).astype(jnp.int32)  # right-padded: last real token n - 1
            cut = (jnp.take_along_axis(v, n[:, None], axis=-1)[:, 0] if v is not None
                   else jnp.zeros(t.shape[:1], jnp.float32))
            lp, v = lp[:, :-1], (v[:, :-1] if v is not None else None)
        else:
            lp, _, v = forward(state, state.params, t, m, prefix_len=prefix_len,
                               temperature=temperature, adapter_ids=ids)
            cut = jnp.zeros(t.shape[:1], jnp.float32)
        ref = (forward(state, ref_params, t, m, prefix_len=prefix_len,
                       temperature=temperature, adapter_ids=ids)[0]
               if with_ref else jnp.zeros_like(lp))
        v = v if (with_values and v is not None) else jnp.zeros_like(lp)
        return lp, v, ref, cut

    ids = None if adapter_ids is None else _chunks(adapter_ids, chunk)
    lp, v, ref, cut = jax.lax.map(one, (_chunks(tokens, chunk), _chunks(mask, chunk), ids))
    flat = lambda x: x.reshape(tokens.shape[0], *x.shape[2:])
    if with_cut_values:
        return flat(lp), flat(v), flat(ref), flat(cut)
    return flat(lp), flat(v), flat(ref)


def value_at_cut(values: Array, mask: Array) -> Array:
    """values[b, n_b] for rows with n_b < T real tokens: the critic's value of the state
    after the row's last token. Rows that fill all T positions need `score(...,
    with_cut_values=True)` instead (their value lies one column past the array)."""
    n = jnp.sum(mask, axis=-1).astype(jnp.int32)
    idx = jnp.minimum(n, values.shape[-1] - 1)
    return jnp.take_along_axis(values, idx[:, None], axis=-1)[:, 0]


# ------------------------------------------------------------------ losses


def denominator(loss_mask: Array, cfg: LossConfig) -> Array:
    """The aggregation's denominator for a whole minibatch (shared by every loss term)."""
    return aggregate(jnp.zeros(loss_mask.shape, jnp.float32), loss_mask, cfg)[1]


def loss_sums(params, state: TrainState, mb: TrainBatch, hp: StepConfig):
    """Un-normalised loss of one micro-batch: (total_sum, ({term: sum}, metrics)).

    Every loss returns per-token terms; they are weighted and summed per token and the
    total is aggregated once with the configured aggregation (the per-term sums are for
    logging). The policy loss gets the optional inputs its registry entry reads."""
    reads = POLICY_LOSSES.meta(hp.loss.policy_loss)["reads"]
    lp, ent, values = forward(state, params, mb.tokens, mb.attention_mask,
                              with_entropy=hp.use_entropy or "entropy" in reads,
                              prefix_len=hp.prefix_len, temperature=hp.temperature,
                              adapter_ids=mb.adapter_ids)
    mask = mb.loss_mask.astype(bool)
    available = {"turn_index": mb.turn_index, "ref_logprobs": mb.ref_logprobs,
                 "entropy": ent, "values": values}
    inputs = {k: available[k] for k in reads if k in available}
    pg, metrics = policy_loss_terms(lp, mb.old_logprobs, mb.advantages, mask, hp.loss,
                                    behaviour_logprobs=mb.behaviour_logprobs, **inputs)
    terms = {"pg_loss": pg}
    total = pg
    if hp.kl_in_loss:
        kl, _ = kl_loss(lp, mb.ref_logprobs, mask, hp.loss)
        terms["kl_loss"] = kl
        total = total + hp.kl_coef * kl
    if hp.use_critic:
        v, v_metrics = value_loss(values, mb.old_values, mb.returns, mask, hp.loss)
        terms["value_loss"] = v
        metrics.update(v_metrics)
        total = total + hp.vf_coef * v
    if hp.use_entropy:
        e, _ = entropy_loss(ent, mask, hp.loss)
        terms["entropy"] = -e  # entropy_loss is -H; log H itself
        total = total + hp.entropy_coef * e
    total_sum, _ = aggregate(total, mask, hp.loss)
    sums = {k: aggregate(t, mask, hp.loss)[0] for k, t in terms.items()}
    return total_sum, (sums, metrics)


def _constrain(tree, mesh: Mesh | None, spec: P):
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))


def _all_finite(tree) -> Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def minibatch_update(state: TrainState, mb: TrainBatch, hp: StepConfig):
    """One optimizer update from a minibatch shaped [n_micro, micro, T].

    Returns (state, metrics). Skips the update (keeps params and optimizer state) when the
    loss or any gradient is not finite.
    """
    mb = _constrain(mb, hp.mesh, P(None, DATA_AXIS))
    denom = denominator(mb.loss_mask.astype(bool), hp.loss)
    grad_fn = jax.value_and_grad(loss_sums, has_aux=True)

    def micro(acc, m: TrainBatch):
        grads, total, sums = acc
        (t, (s, metrics)), g = grad_fn(state.params, state, m, hp)
        grads = jax.tree.map(jnp.add, grads, g)
        sums = jax.tree.map(jnp.add, sums, s)
        return (grads, total + t, sums), metrics

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    first = jax.tree.map(lambda x: x[0], mb)
    sum_shapes = jax.eval_shape(lambda: loss_sums(state.params, state, first, hp)[1][0])
    zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sum_shapes)
    (grads, total, sums), metrics = jax.lax.scan(
        micro,
        (zeros, jnp.zeros((), jnp.float32), zero_sums),
        mb,
    )
    safe = jnp.where(denom > 0, denom, 1.0)
    grads = jax.tree.map(lambda g: g / safe, grads)
    loss = total / safe
    state, guard = guarded_update(state, grads, loss)
    out = {k: jnp.mean(v) for k, v in metrics.items()}
    out.update({k: v / safe for k, v in sums.items()})
    out.update(guard)
    return state, out


def guarded_update(state: TrainState, grads, loss: Array):
    """One optimizer update from `grads`, skipped (params and optimizer state kept) when
    the loss or a gradient is not finite, or the gradient is exactly zero. Returns
    (state, {loss, grad_norm, skipped, zero_grad})."""
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & _all_finite(grads)
    # An exactly-zero gradient (e.g. a GRPO minibatch whose groups all had equal rewards,
    # no KL or entropy term) carries no information, but Adam would still step along its
    # momentum (and AdamW decay the weights). Skipping it keeps a solved policy in place;
    # unskipped, such steps were seen to undo solved runs (docs/ablations.md, late dips).
    ok = finite & (grad_norm > 0)
    updates, new_opt = state.tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    state = state.replace(params=keep(new_params, state.params),
                          opt_state=keep(new_opt, state.opt_state))
    return state, {"loss": loss, "grad_norm": grad_norm,
                   "skipped": (~finite).astype(jnp.float32),
                   "zero_grad": (finite & (grad_norm == 0)).astype(jnp.float32)}


def split_minibatches(batch: TrainBatch, hp: StepConfig, key: Array) -> TrainBatch:
    """Shuffle rows, then shape every field [num_minibatches, n_micro, micro, T]."""
    rows = batch.tokens.shape[0]
    mb_rows = rows // hp.num_minibatches
    micro = hp.micro_batch_size or mb_rows
    perm = jax.random.permutation(key, rows)

    def reshape(x):
        return x[perm].reshape(hp.num_minibatches, mb_rows // micro, micro, *x.shape[1:])

    return jax.tree.map(reshape, batch)


def train_on_batch(state: TrainState, batch: TrainBatch, hp: StepConfig):
    """All epochs x minibatches of updates on one rollout batch; advances step and rng.

    Metrics are means over the updates, except `skipped` and `zero_grad` (how many updates
    were skipped for a non-finite or an exactly-zero gradient).
    """
    rng, key = jax.random.split(state.rng)

    def epoch(st, k):
        mbs = split_minibatches(batch, hp, k)
        return jax.lax.scan(lambda s, mb: minibatch_update(s, mb, hp), st, mbs)

    state, metrics = jax.lax.scan(epoch, state, jax.random.split(key, hp.num_epochs))
    out = {k: jnp.mean(v) for k, v in metrics.items()}
    out["skipped"] = jnp.sum(metrics["skipped"])
    out["zero_grad"] = jnp.sum(metrics["zero_grad"])
    for key, reduce in (("ratio_max", jnp.max), ("behav_ratio_max", jnp.max),
                        ("behav_ratio_min", jnp.min)):
        if key in metrics:
            out[key] = reduce(metrics[key])
    return state.replace(step=state.step + 1, rng=rng), out


def make_train_fn(state_shardings: Any = None, batch_shardings: Any = None):
    """`train_on_batch` jitted with the state donated (and placed by the given shardings)."""
    kwargs: dict[str, Any] = {}
    if state_shardings is not None:
        kwargs = {"in_shardings": (state_shardings, batch_shardings, None),
                  "out_shardings": (state_shardings, None)}
    return jax.jit(train_on_batch, donate_argnums=(0,), **kwargs)
