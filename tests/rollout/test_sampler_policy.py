"""The real KV-cached sampler behind the rollout's RolloutPolicy protocol: the EpisodeBatch's
sampling log-probs equal a full-sequence recomputation (the invariant importance
ratios rely on), and no episode's history is ever re-prefilled."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentic_rl.agents import run_episodes
from agentic_rl.envs import make_env_suite
from agentic_rl.models import token_logprobs
from agentic_rl.rollout import CharTokenizer, RolloutConfig, make_chat_format
from agentic_rl.rollout.sampler_policy import SamplerPolicy
from agentic_rl.sampling import SamplingParams
from tests.sampling.test_sampler import tiny_model


def test_rollout_logprobs_match_full_forward_and_no_reprefill():
    tok = CharTokenizer()
    model = tiny_model(seed=3, scale=0.3)
    policy = SamplerPolicy(model, tok, max_rows=8, params=SamplingParams(temperature=1.0),
                           seed=0)
    fmt = make_chat_format("chatml", tok)
    suite = make_env_suite("guess_number", num_eval=3)
    cfg = RolloutConfig(max_turns=3, max_new_tokens=12, max_episode_tokens=2048)
    res = run_episodes(policy, fmt, suite.make_env, suite.tasks.split("eval"), group_size=2,
                       config=cfg, seed=5)
    assert not res.errors
    b = res.batch
    assert b.tokens.shape[0] == 6 and policy.stats["reprefills"] == 0
    assert not policy.rows  # every episode released its row
    gd, st = nnx.split(model)
    lp = np.asarray(jax.jit(lambda s, t, m: token_logprobs(nnx.merge(gd, s), t, m)[0])(
        st, jnp.asarray(b.tokens), jnp.asarray(b.attention_mask)))
    mask = np.asarray(b.loss_mask, bool)
    assert mask.sum() > 30
    np.testing.assert_allclose(np.asarray(b.sample_logprobs)[mask], lp[mask], atol=2e-4)
    # every multi-turn episode continued from its cache (prefill = prompt + observations)
    assert policy.stats["prefill_tokens"] < int(np.asarray(b.attention_mask).sum())

    again = run_episodes(SamplerPolicy(model, tok, max_rows=8, seed=0,
                                       params=SamplingParams(temperature=1.0)),
                         fmt, suite.make_env, suite.tasks.split("eval"), group_size=2,
                         config=cfg, seed=5)
    np.testing.assert_array_equal(np.asarray(again.batch.tokens), np.asarray(b.tokens))


def test_a_rewritten_context_reuses_the_cached_prefix_and_samples_exactly():
    """Sliding-window rows: each new row takes over its episode's sampler row and keeps the
    cached prompt; the sampling log-probs still equal a full forward pass of each row."""
    from agentic_rl.rollout import ContextConfig

    tok = CharTokenizer()
    model = tiny_model(seed=3, scale=0.3)
    policy = SamplerPolicy(model, tok, max_rows=4, params=SamplingParams(temperature=1.0),
                           seed=0)
    fmt = make_chat_format("chatml", tok)
    suite = make_env_suite("guess_number", num_eval=2)
    cfg = RolloutConfig(max_turns=5, max_new_tokens=6, max_episode_tokens=2048,
                        context=ContextConfig("window", keep_turns=1, rewrite_every=1))
    res = run_episodes(policy, fmt, suite.make_env, suite.tasks.split("eval"), config=cfg,
                       seed=1)
    assert not res.errors
    b = res.batch
    assert b.tokens.shape[0] > 2  # rewrites made rows
    # system + task, less the assistant header the first row's prompt ends with
    head = len(fmt.encode_prompt(res.records[0].metadata["messages"][:2])) - 32
    continued = sum(r.metadata["continued"] for r in res.records)
    assert continued >= 2 and policy.stats["reprefills"] == 0
    assert policy.stats["reused_prefix_tokens"] >= head * continued
    assert not policy.rows
    gd, st = nnx.split(model)
    lp = np.asarray(jax.jit(lambda s, t, m: token_logprobs(nnx.merge(gd, s), t, m)[0])(
        st, jnp.asarray(b.tokens), jnp.asarray(b.attention_mask)))
    mask = np.asarray(b.loss_mask, bool)
    np.testing.assert_allclose(np.asarray(b.sample_logprobs)[mask], lp[mask], atol=2e-4)


def test_weights_switched_under_live_episodes_resample_them_exactly():
    """Partial rollouts resumed on newer weights (async training): a `weight_source` swaps
    the model between turns; every live episode is re-prefilled with the new weights, so
    each turn's sampling log-probs equal a full forward pass of the version that sampled
    it (`turn_versions`), and later turns differ from what the old weights give."""
    tok = CharTokenizer()
    old, new = tiny_model(seed=3, scale=0.3), tiny_model(seed=4, scale=0.3)
    policy = SamplerPolicy(old, tok, max_rows=8, params=SamplingParams(temperature=1.0),
                           seed=0)
    calls = {"n": 0}

    def source(current):
        calls["n"] += 1
        return (7, new) if current == 0 and calls["n"] > 1 else None  # after turn 0's batch

    policy.weight_source = source
    fmt = make_chat_format("chatml", tok)
    suite = make_env_suite("guess_number", num_eval=3)
    cfg = RolloutConfig(max_turns=3, max_new_tokens=12, max_episode_tokens=2048)
    res = run_episodes(policy, fmt, suite.make_env, suite.tasks.split("eval"), group_size=2,
                       config=cfg, seed=5)
    assert not res.errors and not policy.rows and not policy._stale
    b = res.batch
    versions = [policy.turn_versions[r.metadata["episode_id"]] for r in res.records]
    assert all(v[0] == 0 and set(v[1:]) <= {7} for v in versions), versions
    multi = [i for i, v in enumerate(versions) if len(v) > 1]
    assert len(multi) >= 2, versions  # episodes that lived through the switch
    assert policy.stats["switch_reprefills"] == len(multi) and policy.stats["reprefills"] == 0

    def logprobs(model):
        gd, st = nnx.split(model)
        return np.asarray(jax.jit(lambda s, t, m: token_logprobs(nnx.merge(gd, s), t, m)[0])(
            st, jnp.asarray(b.tokens), jnp.asarray(b.attention_mask)))

    by_version = {0: logprobs(old), 7: logprobs(new)}
    sampled = np.asarray(b.sample_logprobs)
    mask, turn = np.asarray(b.loss_mask, bool), np.asarray(b.turn_index)
    later_gap = 0.0
    for i, v in enumerate(versions):
        for k, version in enumerate(v):
            m = mask[i] & (turn[i] == k)
            np.testing.assert_allclose(sampled[i][m], by_version[version][i][m], atol=2e-4)
            if k:
                later_gap = max(later_gap, np.abs(sampled[i][m] - by_version[0][i][m]).max())
    assert later_gap > 1e-2  # the old weights would have sampled the later turns differently
