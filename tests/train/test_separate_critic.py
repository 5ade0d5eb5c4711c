"""The separate critic (`rl.critic="separate"`) and the critic's own optimizer chain
(`optim.critic_learning_rate`): the model's values, gradient isolation between the two
trunks, the optimizer against single-chain references, and the trainer end to end with
exact resume."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from agentic_rl.models import ModelConfig, PolicyModel, critic_from
from agentic_rl.train import Trainer
from agentic_rl.train.config import ConfigError, validate
from agentic_rl.train.config_files import apply_overrides
from agentic_rl.train.metrics import read_jsonl
from agentic_rl.train.state import critic_labels, make_optimizer
from tests.train.test_loop import run, strip_timing

CFG = ModelConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=2,
                  num_heads=4, num_kv_heads=2, max_position_embeddings=64)


def policy_with_critic(seed: int = 0) -> PolicyModel:
    """A tiny policy with a separate critic whose value head is random (not zero) and
    whose trunk has drifted from the policy's, so the two are distinguishable."""
    model = PolicyModel(CFG, rngs=nnx.Rngs(seed))
    model.critic = critic_from(model.lm, seed=seed)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 1))
    head = model.critic.value_head
    head.kernel.value = jax.random.normal(k1, head.kernel.value.shape)
    head.bias.value = head.bias.value + 0.3
    norm = model.critic.lm.norm
    norm.value = norm.value * (1 + 0.5 * jax.random.uniform(k2, norm.value.shape))
    return model


def tokens_and_mask(seed: int = 0, B: int = 3, T: int = 12, prefix: int = 0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, CFG.vocab_size, (B, T))
    if prefix:
        tokens[:, :prefix] = tokens[0, :prefix]
    lengths = np.array([T, T - 3, T - 5][:B])
    mask = np.arange(T)[None] < lengths[:, None]
    return jnp.asarray(tokens * mask), jnp.asarray(mask)


def test_critic_starts_as_a_copy_with_its_own_buffers():
    model = PolicyModel(CFG, rngs=nnx.Rngs(0))
    critic = critic_from(model.lm)
    a, b = nnx.state(model.lm, nnx.Param), nnx.state(critic.lm, nnx.Param)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert x.unsafe_buffer_pointer() != y.unsafe_buffer_pointer()  # donation-safe
    assert float(jnp.abs(critic.value_head.kernel.value).max()) == 0.0


def test_separate_critic_values_and_unchanged_logprobs():
    model = policy_with_critic()
    plain = PolicyModel(CFG, rngs=nnx.Rngs(0))
    tokens, mask = tokens_and_mask()
    lp, ent, values = model.logprobs_and_values(tokens, mask, with_entropy=True)
    lp0, ent0, none = plain.logprobs_and_values(tokens, mask, with_entropy=True)
    assert none is None
    np.testing.assert_allclose(lp, lp0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ent, ent0, rtol=1e-6, atol=1e-6)
    # values[t] = critic head over the critic's own hidden state at t - 1; position 0 is 0
    h = model.critic.lm.hidden_states(tokens, mask)
    want = np.asarray(model.critic.value_head(h))[:, :-1]
    np.testing.assert_allclose(np.asarray(values)[:, 1:], want, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(values)[:, 0] == 0)
    # not the policy trunk's hidden states
    hp = model.lm.hidden_states(tokens, mask)
    assert not np.allclose(np.asarray(model.critic.value_head(hp))[:, :-1], want, atol=1e-3)


def test_separate_critic_with_a_shared_prefix_matches_the_plain_pass():
    model = policy_with_critic()
    tokens, mask = tokens_and_mask(prefix=5)
    lp, _, values = model.logprobs_and_values(tokens, mask)
    lp_p, _, values_p = model.logprobs_and_values(tokens, mask, prefix_len=5)
    m = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(lp_p)[m], np.asarray(lp)[m], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(values_p)[m], np.asarray(values)[m],
                               rtol=1e-5, atol=1e-5)


def test_a_policy_has_one_critic():
    from agentic_rl.models.heads import CriticModel

    with pytest.raises(ValueError, match="not both"):
        PolicyModel(CFG, rngs=nnx.Rngs(0), value_head=True,
                    critic=CriticModel(CFG, rngs=nnx.Rngs(0)))


def test_gradients_stay_in_their_own_trunk():
    """A loss on the values moves only the critic; a loss on the log-probs only the policy."""
    model = policy_with_critic()
    graphdef, params = nnx.split(model, nnx.Param)
    tokens, mask = tokens_and_mask()

    def outputs(p):
        return nnx.merge(graphdef, p).logprobs_and_values(tokens, mask)

    g_value = jax.grad(lambda p: jnp.sum(outputs(p)[2] ** 2))(params)
    g_policy = jax.grad(lambda p: jnp.sum(outputs(p)[0]))(params)
    labels = critic_labels(g_value)
    for grads, moves in ((g_value, "critic"), (g_policy, "policy")):
        flat = zip(jax.tree.leaves(grads), jax.tree.leaves(labels), strict=True)
        norms = {"critic": 0.0, "policy": 0.0}
        for g, label in flat:
            norms[label] += float(jnp.sum(jnp.abs(g)))
        assert norms[moves] > 0
        assert norms[{"critic": "policy", "policy": "critic"}[moves]] == 0.0


def test_critic_labels_cover_the_separate_critic_and_the_shared_head():
    model = policy_with_critic()
    params = nnx.state(model, nnx.Param)
    labels = jax.tree_util.tree_flatten_with_path(critic_labels(params))[0]
    for path, label in labels:
        assert (label == "critic") == (jax.tree_util.keystr(path).startswith("['critic']"))
    shared = nnx.state(PolicyModel(CFG, rngs=nnx.Rngs(0), value_head=True), nnx.Param)
    labels = jax.tree_util.tree_flatten_with_path(critic_labels(shared))[0]
    assert {jax.tree_util.keystr(p) for p, lab in labels if lab == "critic"} == {
        "['value_head']['bias'].value", "['value_head']['kernel'].value"}


class Optim:
    """The optim.* keys make_optimizer reads."""

    def __init__(self, **kw):
        self.__dict__.update(dict(learning_rate=1e-2, schedule="constant", warmup_steps=0,
                                  weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8,
                                  max_grad_norm=1e9, critic_learning_rate=0.0) | kw)


def _apply(tx, params, grads_seq):
    state = tx.init(params)
    for g in grads_seq:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _random_grads(params, n, seed=0, critic_scale=1.0):
    labels = critic_labels(params)
    out = []
    for i in range(n):
        keys = iter(jax.random.split(jax.random.PRNGKey(seed + i), len(jax.tree.leaves(params))))
        out.append(jax.tree.map(
            lambda p, lab, keys=keys: jax.random.normal(next(keys), p.shape)
            * (critic_scale if lab == "critic" else 1.0), params, labels))
    return out


def _split(tree):
    labels = critic_labels(tree)
    leaves = list(zip(jax.tree.leaves(tree), jax.tree.leaves(labels), strict=True))
    return ([np.asarray(x) for x, lab in leaves if lab == "policy"],
            [np.asarray(x) for x, lab in leaves if lab == "critic"])


def test_critic_chain_with_the_same_rate_and_no_clipping_is_the_single_chain():
    params = nnx.state(policy_with_critic(), nnx.Param)
    grads = _random_grads(params, 3)
    one = _apply(make_optimizer(Optim(), 10), params, grads)
    two = _apply(make_optimizer(Optim(), 10, critic_chain=True), params, grads)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_critic_learning_rate_scales_only_the_critic_update():
    params = nnx.state(policy_with_critic(), nnx.Param)
    grads = _random_grads(params, 1)
    base = _apply(make_optimizer(Optim(), 10), params, grads)
    fast = _apply(make_optimizer(Optim(critic_learning_rate=1e-1), 10, critic_chain=True),
                  params, grads)
    p0, c0 = _split(params)
    pb, cb = _split(base)
    pf, cf = _split(fast)
    for a, b in zip(pb, pf, strict=True):
        np.testing.assert_array_equal(a, b)
    for x0, xb, xf in zip(c0, cb, cf, strict=True):  # Adam's first step: lr * g / |g|
        np.testing.assert_allclose(xf - x0, 10 * (xb - x0), rtol=1e-4, atol=1e-7)


def test_critic_gradients_do_not_set_the_policy_clipping_factor():
    """Clipped jointly, the policy's gradients are scaled by a factor set by the value
    gradients' norm, which changes from step to step and so re-weights the policy's steps
    in Adam's moments; in its own chain the policy update is what its gradients alone give."""
    params = nnx.state(policy_with_critic(), nnx.Param)
    grads = [jax.tree.map(lambda g, lab, scale=scale: g * (scale if lab == "critic" else 1.0), g,
                          critic_labels(g))
             for g, scale in zip(_random_grads(params, 3), (1e4, 1e1, 1e3), strict=True)]
    o = Optim(max_grad_norm=1.0)
    policy_alone = _apply(make_optimizer(o, 10), params,
                          [jax.tree.map(lambda g, lab: g * (lab == "policy"), g,
                                        critic_labels(g)) for g in grads])
    own = _apply(make_optimizer(o, 10, critic_chain=True), params, grads)
    joint = _apply(make_optimizer(o, 10), params, grads)
    for a, b in zip(_split(policy_alone)[0], _split(own)[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    gap = max(float(np.abs(a - b).max()) for a, b in
              zip(_split(joint)[0], _split(own)[0], strict=True))
    assert gap > 1e-3  # lr 1e-2: the coupling is a sizeable part of the update


# ------------------------------------------------------------------ config and trainer


def test_config_checks(tiny_config):
    with pytest.raises(ConfigError, match="rl.critic='both' is not valid"):
        validate(apply_overrides(tiny_config("ppo"), {"rl.critic": "both"}))
    with pytest.raises(ConfigError, match="does not train"):
        validate(apply_overrides(tiny_config("grpo"), {"rl.critic": "separate"}))
    with pytest.raises(ConfigError, match="does not train"):
        validate(apply_overrides(tiny_config("grpo"), {"optim.critic_learning_rate": "1e-3"}))
    with pytest.raises(ConfigError, match="critic_learning_rate must be >= 0"):
        validate(apply_overrides(tiny_config("ppo"), {"optim.critic_learning_rate": "-1"}))


@pytest.mark.slow
def test_ppo_with_a_separate_critic_trains_both_and_resumes_exactly(tiny_config, tmp_path):
    over = {"rl.critic": "separate", "optim.critic_learning_rate": "3e-3",
            "eval.every": "0", "eval.at_start": "false"}
    full = apply_overrides(tiny_config("ppo"), {**over, "train.max_steps": "3"})
    trainer, _ = run(full, tmp_path / "full")
    model = trainer.state.model()
    assert model.value_head is None and model.critic is not None
    rows = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    for r in rows:
        assert np.isfinite(r["train/value_loss"]) and r["train/skipped"] == 0
        assert r["train/critic_learning_rate"] == pytest.approx(3e-3)
        assert r["train/learning_rate"] == pytest.approx(1e-3)
    # both trunks moved, differently; the reference copy holds no critic
    fresh = Trainer(full, tmp_path / "fresh")
    try:
        p0, c0 = _split(fresh.state.params)
    finally:
        fresh.close()
    p1, c1 = _split(trainer.state.params)
    assert any(not np.array_equal(a, b) for a, b in zip(p0, p1, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(c0, c1, strict=True))
    assert "critic" not in trainer.state.ref
    head = apply_overrides(tiny_config("ppo"), {**over, "train.max_steps": "2"})
    run(head, tmp_path / "resumed")  # "killed" after step 2
    resumed, _ = run(full, tmp_path / "resumed")
    assert resumed.resumed_from == 2
    assert strip_timing(rows) == strip_timing(read_jsonl(tmp_path / "resumed" / "metrics.jsonl"))


def test_a_loaded_policy_gets_the_critic_the_config_asks_for(tiny_config, tmp_path):
    """AgentTrainer(model=LoadedPolicy, ...): LoRA first, then the critic copies the adapters,
    as builders.build_policy does."""
    from agentic_rl.models import LoadedPolicy, LoRAWeight
    from agentic_rl.rollout import CharTokenizer
    from agentic_rl.train.facade import _adopt_policy

    cfg = apply_overrides(tiny_config("ppo"), {"rl.critic": "separate", "model.lora_rank": "2"})
    policy = LoadedPolicy(model=PolicyModel(CFG, rngs=nnx.Rngs(0)), tokenizer=CharTokenizer(),
                          path=tmp_path, name="tiny")
    model = _adopt_policy(policy, cfg).model
    assert model.value_head is None and model.critic is not None
    adapters = lambda m: sorted(jax.tree_util.keystr(p) for p, _ in
                                jax.tree_util.tree_flatten_with_path(nnx.state(m, LoRAWeight))[0])
    assert adapters(model.lm) and adapters(model.lm) == adapters(model.critic.lm)
    shared = _adopt_policy(LoadedPolicy(model=PolicyModel(CFG, rngs=nnx.Rngs(0)),
                                        tokenizer=CharTokenizer(), path=tmp_path, name="tiny"),
                           tiny_config("ppo")).model
    assert shared.value_head is not None and shared.critic is None
