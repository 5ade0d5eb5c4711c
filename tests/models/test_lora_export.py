"""LoRA (identity at init, adapter-only gradients/optimizer, merge/unmerge) and HF export."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from agentic_rl.models import (
    LoRAWeight,
    PolicyModel,
    add_lora,
    load_hf_model,
    lora_state,
    merge_lora,
    save_hf_model,
    token_logprobs,
    unmerge_lora,
)
from tests.models.tiny import save_tiny

forward = nnx.jit(lambda m, t: m(t))


@pytest.fixture(scope="module")
def tiny_dir():
    return save_tiny("qwen2")[0]


def _toks(seed=0, shape=(2, 13)):
    return jnp.asarray(np.random.RandomState(seed).randint(0, 97, shape))


def test_zero_init_adapters_leave_logits_unchanged(tiny_dir):
    base = load_hf_model(tiny_dir)
    adapted = load_hf_model(tiny_dir)
    names = add_lora(adapted, rank=4, alpha=8.0, rngs=nnx.Rngs(1))
    assert names == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj"])
    np.testing.assert_array_equal(np.asarray(forward(base, _toks())),
                                  np.asarray(forward(adapted, _toks())))


def test_target_pattern_and_bad_pattern(tiny_dir):
    m = load_hf_model(tiny_dir)
    assert add_lora(m, rank=2, alpha=2.0, targets=r"(q|v)_proj", rngs=nnx.Rngs(0)) == [
        "q_proj", "v_proj"]
    assert not hasattr(m.layers, "k_proj_lora_a")
    with pytest.raises(ValueError, match="matched no projection"):
        add_lora(load_hf_model(tiny_dir), rank=2, alpha=2.0, targets="attn", rngs=nnx.Rngs(0))


def test_gradients_and_optimizer_state_only_for_adapters(tiny_dir):
    m = load_hf_model(tiny_dir)
    add_lora(m, rank=4, alpha=8.0, rngs=nnx.Rngs(1))
    toks = _toks(1)

    def loss(model):
        return -token_logprobs(model, toks)[0].sum()

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, LoRAWeight))(m)
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert leaves and all("lora" in jax.tree_util.keystr(p) for p, _ in leaves)
    # B starts at zero, so only B receives gradient at init (dL/dA = 0 exactly)
    gb = grads["layers"]["q_proj_lora_b"].value
    assert float(jnp.abs(gb).max()) > 0

    opt = nnx.Optimizer(m, optax.adam(1e-2), wrt=LoRAWeight)
    n_opt = sum(x.size for x in jax.tree.leaves(nnx.state(opt, nnx.optimizer.OptState))
                if x.ndim)  # scalars are step counts
    n_lora = sum(x.size for x in jax.tree.leaves(nnx.state(m, LoRAWeight)))
    assert n_opt == 2 * n_lora  # adam mu + nu for the adapters, nothing for the base
    base_before = jax.tree.map(np.asarray, nnx.state(m, nnx.Not(LoRAWeight)))
    opt.update(m, grads)
    base_after = jax.tree.map(np.asarray, nnx.state(m, nnx.Not(LoRAWeight)))
    jax.tree.map(np.testing.assert_array_equal, base_before, base_after)


def test_policy_model_lora_and_value_head(tiny_dir):
    lm = load_hf_model(tiny_dir)
    pm = PolicyModel(lm.cfg, rngs=nnx.Rngs(0), value_head=True, lm=lm)
    add_lora(pm, rank=2, alpha=4.0, rngs=nnx.Rngs(0))
    lp, ent, v = pm.logprobs_and_values(_toks(), with_entropy=True)
    assert lp.shape == v.shape == ent.shape == (2, 13)
    np.testing.assert_array_equal(np.asarray(v), 0.0)  # zero-initialised value head


def _perturb_adapters(m, seed=3):
    key = jax.random.key(seed)
    for _, var in nnx.iter_graph(m):
        if isinstance(var, LoRAWeight):
            key, sub = jax.random.split(key)
            var.value = 0.05 * jax.random.normal(sub, var.value.shape)


def test_merge_and_unmerge(tiny_dir):
    m = load_hf_model(tiny_dir)
    add_lora(m, rank=4, alpha=8.0, rngs=nnx.Rngs(1))
    _perturb_adapters(m)
    before = np.asarray(forward(m, _toks()))
    saved = lora_state(m)
    merge_lora(m)
    assert not nnx.state(m, LoRAWeight)  # adapters removed after merging
    np.testing.assert_allclose(np.asarray(forward(m, _toks())), before, atol=1e-4)
    unmerge_lora(m, saved)
    assert nnx.state(m, LoRAWeight)
    np.testing.assert_allclose(np.asarray(forward(m, _toks())), before, atol=1e-4)


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_export_round_trip_with_transformers(kind, tmp_path):
    from transformers import AutoModelForCausalLM

    d, _ = save_tiny(kind, seed=7)
    m = load_hf_model(d)
    add_lora(m, rank=4, alpha=8.0, rngs=nnx.Rngs(1))
    _perturb_adapters(m)
    ours = np.asarray(forward(m, _toks(2)))
    out = save_hf_model(m, tmp_path / "export")
    assert nnx.state(m, LoRAWeight)  # exporting merges into a copy, not the live model
    hf = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.tensor(np.asarray(_toks(2)))).logits.numpy()
    assert np.abs(ours - ref).max() <= 1e-4


def test_sharded_export_round_trip(tmp_path):
    d, _ = save_tiny("llama", seed=2)
    m = load_hf_model(d)
    out = save_hf_model(m, tmp_path / "sharded", max_shard_bytes=20_000)
    assert (out / "model.safetensors.index.json").exists()
    assert len(list(out.glob("model-*.safetensors"))) > 1
    again = load_hf_model(out)
    np.testing.assert_array_equal(np.asarray(forward(m, _toks())),
                                  np.asarray(forward(again, _toks())))


def test_logical_axis_names_on_every_parameter(tiny_dir):
    from agentic_rl.models import logical_axes

    m = load_hf_model(tiny_dir)
    add_lora(m, rank=2, alpha=2.0, rngs=nnx.Rngs(0))
    specs = jax.tree.leaves(logical_axes(m), is_leaf=lambda x: isinstance(x, jax.P))
    params = jax.tree.leaves(nnx.state(m, nnx.Param))
    assert len(specs) == len(params)
    for spec, arr in zip(specs, params):
        assert len(spec) == arr.ndim
    names = {a for s in specs for a in s if a}
    assert {"vocab", "embed", "layers", "q_heads", "kv_heads", "mlp", "lora_rank"} <= names


def test_separate_critic_from_checkpoint(tiny_dir):
    from agentic_rl.models import load_critic

    critic = load_critic(tiny_dir)
    lm = load_hf_model(tiny_dir)
    np.testing.assert_array_equal(np.asarray(critic.lm.embed_tokens.value),
                                  np.asarray(lm.embed_tokens.value))
    values = nnx.jit(lambda c, t: c(t))(critic, _toks())
    assert values.shape == (2, 13)
    np.testing.assert_array_equal(np.asarray(values), 0.0)  # zero-initialised head
    grads = nnx.grad(lambda c: c(_toks()).sum())(critic)
    assert float(jnp.abs(grads["value_head"]["kernel"].value).max()) > 0
