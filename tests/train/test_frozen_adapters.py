"""Per-agent adapters left out of `agent.train_agents` are held exactly still by the
optimizer (`state.freeze_adapter_slices`), weight decay included: a zero gradient alone
is not a zero AdamW update."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from agentic_rl.models import LoRAWeight, ModelConfig, PolicyModel, add_lora
from agentic_rl.train.config import default_config, frozen_adapters
from agentic_rl.train.state import freeze_adapter_slices, make_optimizer

N, R = 3, 2  # adapters, rank of each


def lora_params() -> nnx.State:
    cfg = ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=4, num_kv_heads=2)
    model = PolicyModel(cfg, rngs=nnx.Rngs(0))
    add_lora(model, rank=R, alpha=4.0, rngs=nnx.Rngs(1), num_adapters=N)
    return nnx.state(model, LoRAWeight)


def slices(params: nnx.State, k: int) -> list[np.ndarray]:
    """Adapter k's slice of every factor, found by the 'lora_rank' axis name."""
    out = []
    for v in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        axis = v.get_metadata()["out_sharding"].index("lora_rank")
        out.append(np.take(np.asarray(v.get_value()), range(k * R, (k + 1) * R), axis=axis))
    return out


def train(tx: optax.GradientTransformation, params: nnx.State, *, zero_for: int | None,
          steps: int = 3) -> nnx.State:
    """`steps` AdamW updates from random gradients; adapter `zero_for` gets none (as a
    frozen agent's adapter does when its rows leave the batch)."""
    rng = np.random.default_rng(0)
    state = tx.init(params)
    for _ in range(steps):
        def grad(v):
            g = rng.normal(size=v.get_value().shape).astype(np.float32)
            if zero_for is not None:
                axis = v.get_metadata()["out_sharding"].index("lora_rank")
                idx = [slice(None)] * g.ndim
                idx[axis] = slice(zero_for * R, (zero_for + 1) * R)
                g[tuple(idx)] = 0.0
            return v.replace(value=g)

        grads = jax.tree.map(grad, params, is_leaf=lambda x: isinstance(x, nnx.Variable))
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def optim(weight_decay: float):
    ocfg = default_config().optim
    with ocfg.unlocked():
        ocfg.learning_rate, ocfg.weight_decay = 1e-2, weight_decay
    return ocfg


def moved(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_weight_decay_moves_a_zero_gradient_adapter_without_the_mask():
    # the gap this guards: A is initialised non-zero, so decay shrinks it with no gradient
    params = lora_params()
    after = train(make_optimizer(optim(0.1), 10), params, zero_for=1)
    assert moved(slices(params, 1), slices(after, 1))


@pytest.mark.parametrize("zero_grad", [True, False])
def test_frozen_adapters_stay_bit_for_bit_and_the_others_train(zero_grad):
    params = lora_params()
    tx = make_optimizer(optim(0.1), 10, frozen_adapters=(1,), num_adapters=N)
    # even a non-zero gradient into the frozen slices must not move them
    after = train(tx, params, zero_for=1 if zero_grad else None)
    assert not moved(slices(params, 1), slices(after, 1))
    assert moved(slices(params, 0), slices(after, 0))
    assert moved(slices(params, 2), slices(after, 2))
    # the trained adapters get exactly the unmasked optimizer's update
    free = train(make_optimizer(optim(0.1), 10), params, zero_for=1 if zero_grad else None)
    for k in (0, 2):
        for x, y in zip(slices(after, k), slices(free, k), strict=True):
            np.testing.assert_array_equal(x, y)


def test_frozen_adapters_follow_train_agents():
    c = default_config()
    c.agent.names = "writer,checker,judge"
    c.model.lora_rank = 4
    assert frozen_adapters(c) == ()  # shared adapter: nothing of a frozen agent's own
    c.model.lora_adapters = "per_agent"
    assert frozen_adapters(c) == ()  # every agent trains
    c.agent.train_agents = "writer|judge"
    assert frozen_adapters(c) == (1,)
    c.agent.train_agents = "check"  # a full match, as the rollout's row filter uses
    assert frozen_adapters(c) == (0, 1, 2)


def test_out_of_range_adapters_are_refused():
    with pytest.raises(ValueError, match="out of range for 2 adapters"):
        freeze_adapter_slices((2,), 2)
