"""The learner as one pure function: scoring, advantages and the update.

    learner_step(state, batch: LearnerBatch, hp: LearnerConfig) -> (state, metrics)

is what the trainer, the benchmarks, notebooks and tests call. One rollout batch in, the
updated state and the step's metrics out:

  1. a no-grad scoring pass at the sampling temperature: the proximal (old) log-probs,
     the critic's values and the reference log-probs, as the config needs them;
  2. advantages and returns (`rl.compute_advantages`), with the KL as a per-token reward
     penalty if asked, and truncated rows bootstrapped from the critic's value at the cut;
     the rows of an episode laid out as several rows (context rewrites: `episode_index`,
     `turn_offset`) get the advantages of the one episode they are;
  3. `train_on_batch`: epochs x minibatches x micro-batches of guarded updates.

`LearnerBatch` holds the device fields of an `EpisodeBatch` (plus which tokens the sampler
produced); build it with `LearnerBatch.from_episodes`. Host-side transforms of the
episodes (padding to a fixed row count, a shared prefix for padding rows) are
`EpisodeBatch -> EpisodeBatch` functions in `agentic_rl.rollout.batch`.

`metrics` holds scalars (the update's, `advantage_mean` / `advantage_std` over the loss
tokens) and `advantages` [B, T], for the trajectory viewer.

Imports: agentic_rl.rl, agentic_rl.rollout (the EpisodeBatch) and the train modules.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from agentic_rl.rl import (
    AdvantageConfig,
    DPOConfig,
    build_preference_pairs,
    compute_advantages_by_agent,
    dpo_loss_from_pairs,
    episode_returns,
    finalize,
    kl_penalty_rewards,
    masked_mean,
    sequence_logprobs,
)
from agentic_rl.rollout.batch import EpisodeBatch, token_adapters
from agentic_rl.train.state import TrainState
from agentic_rl.train.step import (
    StepConfig,
    TrainBatch,
    forward,
    guarded_update,
    score,
    train_on_batch,
    value_at_cut,
)

Array = jax.Array


@flax.struct.dataclass
class LearnerBatch:
    """What the learner reads of one rollout batch; every leaf has the row axis first.

    The fields of `EpisodeBatch` (DESIGN.md) without host metadata, plus `sampled_mask`:
    the tokens the sampler produced, where `sample_logprobs` are the behaviour policy's.
    It equals `loss_mask` unless observations are trained on too (then the loss mask is
    wider and the behaviour log-probs of observation tokens are taken as the old ones).
    """

    tokens: Array  # int32 [B, T]
    attention_mask: Array  # bool [B, T]
    loss_mask: Array  # bool [B, T]
    sampled_mask: Array  # bool [B, T]
    sample_logprobs: Array  # f32 [B, T]
    turn_index: Array  # int32 [B, T]
    turn_end: Array  # int32 [B, K]
    turn_rewards: Array  # f32 [B, K]
    group_id: Array  # int32 [B]
    truncated: Array  # bool [B]
    # int32 [B, T]: each token's LoRA adapter, for a policy with one per agent
    # (`rollout.batch.token_adapters`); None with one adapter.
    adapter_ids: Array | None = None
    # int32 [B]: each row's acting agent (-1: none), for per-agent advantage estimators
    row_agent: Array | None = None
    # int32 [B] each: episodes laid out as several rows (context rewrites): rows with one
    # episode_index are one episode, row b's turn k is its turn turn_offset[b] + k. None
    # (the default, and what `from_episodes` keeps when every episode is one row): each
    # row its own episode, the advantages' one-row code.
    episode_index: Array | None = None
    turn_offset: Array | None = None

    @classmethod
    def from_episodes(cls, batch: EpisodeBatch, *, train_on_observations: bool = False,
                      num_adapters: int = 1, row_agents: bool = False) -> LearnerBatch:
        """The learner's view of an EpisodeBatch (host numpy arrays, not yet placed).

        `train_on_observations` widens the loss mask to every real token after the prompt
        (turn_index >= 0: the policy's turns plus the observations and appended
        end-of-turn tokens between them), for the `rl.train_on_observations` ablation;
        the prompt and padding stay out. `num_adapters` > 1: the policy has one LoRA adapter
        per agent, and `adapter_ids` says which one computed each token. `row_agents`: keep
        each row's agent (`row_agent`, its last turn's), for per-agent estimators.
        `episode_index` / `turn_offset` are kept when some episode spans several rows
        (the advantages then treat its rows as one episode), else left None."""
        a = lambda name: np.asarray(getattr(batch, name))
        loss = a("loss_mask").astype(bool)
        sampled = loss
        if train_on_observations:
            loss = loss | (a("attention_mask").astype(bool) & (a("turn_index") >= 0))
        episode_index = getattr(batch, "episode_index", None)
        multi_row = episode_index is not None and \
            np.unique(np.asarray(episode_index)).size < np.size(episode_index)
        return cls(tokens=a("tokens").astype(np.int32), attention_mask=a("attention_mask"),
                   loss_mask=loss, sampled_mask=sampled,
                   sample_logprobs=a("sample_logprobs").astype(np.float32),
                   turn_index=a("turn_index").astype(np.int32),
                   turn_end=a("turn_end").astype(np.int32),
                   turn_rewards=a("turn_rewards").astype(np.float32),
                   group_id=a("group_id").astype(np.int32), truncated=a("truncated"),
                   adapter_ids=(token_adapters(a("agent_id")) if num_adapters > 1 else None),
                   row_agent=(a("agent_id").max(axis=1).astype(np.int32) if row_agents
                              else None),
                   episode_index=(a("episode_index").astype(np.int32) if multi_row else None),
                   turn_offset=(a("turn_offset").astype(np.int32) if multi_row else None))


@flax.struct.dataclass
class LearnerConfig:
    """Hyperparameters of `learner_step`. Floats are traced; structure is static.

    `step`: the update (losses, coefficients, epochs, minibatches, micro-batches, prefix,
    temperature, mesh). `advantage`: the estimator. `need_ref`: score the reference
    policy (a KL term, or a loss that reads reference log-probs). `kl_reward`: the KL
    is a per-token reward penalty (`rl.kl_mode="reward"`) instead of a loss term.
    `score_chunk`: rows per scoring pass (0 = all). `reuse_sample_logprobs`: take the
    sampler's log-probs as the old ones instead of a scoring pass (only without a
    critic or a reference). `with_cut_values`: score one extra column, for the critic's
    value after a row that fills all T positions (the host sets it per batch:
    `needs_cut_column`).

    `algo="dpo"`: instead of a policy-gradient update, DPO on the batch's groups: each
    group's best and worst episode (by return) form a (chosen, rejected) pair, the
    reference is the KL reference (LoRA off, or the frozen initial copy), `dpo` holds beta,
    label smoothing and the minimum return margin of a pair; `step.num_epochs` whole-batch
    updates (no minibatches or micro-batches).
    """

    step: StepConfig
    advantage: AdvantageConfig
    dpo: DPOConfig = DPOConfig()
    dpo_min_margin: float = 0.0
    # (agent id, its estimator's config) pairs: rl.advantage.per_agent
    agent_advantages: tuple[tuple[int, AdvantageConfig], ...] = flax.struct.field(
        pytree_node=False, default=())
    algo: str = flax.struct.field(pytree_node=False, default="pg")
    need_ref: bool = flax.struct.field(pytree_node=False, default=False)
    kl_reward: bool = flax.struct.field(pytree_node=False, default=False)
    score_chunk: int = flax.struct.field(pytree_node=False, default=0)
    reuse_sample_logprobs: bool = flax.struct.field(pytree_node=False, default=False)
    with_cut_values: bool = flax.struct.field(pytree_node=False, default=False)


def needs_cut_column(batch: LearnerBatch | EpisodeBatch, hp: LearnerConfig) -> bool:
    """Whether a critic run must score one column past T: some row fills all T positions,
    so the value after its last token lies past the array."""
    return bool(hp.step.use_critic and np.asarray(batch.attention_mask).all(axis=1).any())


def score_and_advantages(state: TrainState, batch: LearnerBatch, hp: LearnerConfig
                         ) -> TrainBatch:
    """Steps 1-2 of `learner_step`: the scoring pass and the advantages, as the update's
    TrainBatch. Pure; jit it (or call `learner_step`)."""
    step = hp.step
    rows = batch.tokens.shape[0]
    chunk = hp.score_chunk or rows
    tokens, attn = batch.tokens, batch.attention_mask
    common = dict(chunk=chunk, with_ref=hp.need_ref, prefix_len=step.prefix_len,
                  temperature=step.temperature, adapter_ids=batch.adapter_ids)
    cut = None
    if hp.reuse_sample_logprobs and not (step.use_critic or hp.need_ref):
        old_lp = batch.sample_logprobs
        values = ref_lp = jnp.zeros_like(old_lp)
    elif step.use_critic and hp.with_cut_values:
        old_lp, values, ref_lp, cut = score(state, tokens, attn, with_values=True,
                                            with_cut_values=True, **common)
    elif step.use_critic:  # the value at each row's cut, for truncated episodes
        old_lp, values, ref_lp = score(state, tokens, attn, with_values=True, **common)
        cut = value_at_cut(values, attn)
    else:
        old_lp, values, ref_lp = score(state, tokens, attn, with_values=False, **common)
    token_rewards = None
    if hp.kl_reward:  # KL as a per-token reward penalty
        token_rewards = kl_penalty_rewards(old_lp, ref_lp, batch.loss_mask, step.kl_coef,
                                           step.loss.kl_estimator)
    adv, ret = compute_advantages_by_agent(
        batch, hp.advantage, hp.agent_advantages,
        batch.row_agent if hp.agent_advantages else None,
        values=values if step.use_critic else None, token_rewards=token_rewards,
        cut_values=cut)
    # Behaviour log-probs: the sampler's on the tokens it sampled; elsewhere (observation
    # tokens of rl.train_on_observations) the old ones, a ratio of 1.
    behaviour = jnp.where(batch.sampled_mask, batch.sample_logprobs, old_lp)
    return TrainBatch(tokens=tokens, attention_mask=attn, loss_mask=batch.loss_mask,
                      turn_index=batch.turn_index, advantages=adv, returns=ret,
                      old_logprobs=old_lp, ref_logprobs=ref_lp, old_values=values,
                      behaviour_logprobs=behaviour, adapter_ids=batch.adapter_ids)


def learner_step(state: TrainState, batch: LearnerBatch, hp: LearnerConfig
                 ) -> tuple[TrainState, dict[str, Array]]:
    """Scoring, advantages and all epochs x minibatches of updates on one rollout batch
    (or, with `hp.algo="dpo"`, the DPO updates on its best/worst pairs).

    Pure: same inputs, same outputs. Advances `state.step` and its PRNG key. See the
    module docstring for the metrics."""
    if hp.algo == "dpo":
        return dpo_step(state, batch, hp)
    train_batch = score_and_advantages(state, batch, hp)
    state, metrics = train_on_batch(state, train_batch, hp.step)
    return state, {**metrics, **_advantage_metrics(train_batch.advantages, batch.loss_mask)}


def _advantage_metrics(adv: Array, mask: Array) -> dict[str, Array]:
    """advantage_mean / advantage_std over the loss tokens, and the advantages themselves."""
    mean = masked_mean(adv, mask)
    return {"advantage_mean": mean,
            "advantage_std": jnp.sqrt(masked_mean(jnp.square(adv - mean), mask)),
            "advantages": adv}


def dpo_step(state: TrainState, batch: LearnerBatch, hp: LearnerConfig
             ) -> tuple[TrainState, dict[str, Array]]:
    """DPO (Rafailov et al., 2023) on the best vs worst episode of each group.

    Episode log-probs are sums over the tokens the policy produced (`sampled_mask`;
    prompts and observations are conditioning, not choices), at the sampling temperature;
    the reference's are scored once, without gradient. `metrics`: the DPO ones
    (reward_margin = beta x the mean log-ratio margin of chosen over rejected,
    reward_accuracy, chosen/rejected rewards, num_pairs) of the first update, the guard's,
    and `advantages` [B, T]: +1 on chosen and -1 on rejected tokens (for the viewer)."""
    if batch.episode_index is not None:
        raise ValueError(
            "DPO compares whole episodes by their sequence log-probs and returns; a batch "
            "with an episode laid out as several rows (episode_index, context rewrites) is "
            "not supported by dpo_step")
    step = hp.step
    tokens, attn, mask = batch.tokens, batch.attention_mask, batch.sampled_mask
    rows = tokens.shape[0]
    _, _, ref_lp = score(state, tokens, attn, chunk=hp.score_chunk or rows, with_values=False,
                         with_ref=True, prefix_len=step.prefix_len,
                         temperature=step.temperature, adapter_ids=batch.adapter_ids)
    ref_seq = sequence_logprobs(ref_lp, mask)
    returns = episode_returns(batch.turn_rewards, batch.turn_end)
    pairs = build_preference_pairs(returns, batch.group_id, min_margin=hp.dpo_min_margin)

    def loss_fn(params):
        lp, _, _ = forward(state, params, tokens, attn, prefix_len=step.prefix_len,
                           temperature=step.temperature, adapter_ids=batch.adapter_ids)
        s, d, m = dpo_loss_from_pairs(sequence_logprobs(lp, mask), ref_seq, pairs, hp.dpo)
        return finalize(s, d), m

    def update(st, _):
        (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(st.params)
        st, guard = guarded_update(st, grads, loss)
        return st, {**m, **guard}

    state, metrics = jax.lax.scan(update, state, None, length=step.num_epochs)
    first = {k: v[0] for k, v in metrics.items() if k not in ("skipped", "zero_grad")}
    first["skipped"] = jnp.sum(metrics["skipped"])
    first["zero_grad"] = jnp.sum(metrics["zero_grad"])
    chosen = jnp.zeros(rows, bool).at[pairs.chosen].max(pairs.valid)
    rejected = jnp.zeros(rows, bool).at[pairs.rejected].max(pairs.valid)
    sign = jnp.where(chosen, 1.0, jnp.where(rejected, -1.0, 0.0))
    first.update(_advantage_metrics(jnp.where(mask, sign[:, None], 0.0), mask))
    return state.replace(step=state.step + 1), first


@functools.partial(jax.jit, donate_argnums=(0,))
def _learner_step_jit(state, batch, hp):
    return learner_step(state, batch, hp)


def make_learner_step(state_shardings: Any = None, batch_shardings: Any = None):
    """`learner_step` jitted with the state donated (and placed by the given shardings).
    Without shardings all calls share one compiled cache."""
    if state_shardings is None:
        return _learner_step_jit
    return jax.jit(learner_step, donate_argnums=(0,),
                   in_shardings=(state_shardings, batch_shardings, None),
                   out_shardings=(state_shardings, None))
