"""Training state: the policy split into trainable and frozen pytrees, the optimizer, the mesh.

`TrainState` is a pytree of arrays (plus static graphdef and optimizer), so the update
step is a pure jitted function of (state, batch) that donates the state. The policy is
`nnx.split` into:
  params   what the optimizer updates: LoRA adapters (+ value head) with LoRA, else
           every `nnx.Param`;
  frozen   the rest (the base weights under LoRA; empty for full fine-tuning);
  ref      the reference policy for the KL term when it is not free: a frozen copy of
           the initial params for full fine-tuning with kl_coef > 0 (a separate critic's
           are not copied). With LoRA the reference is the same params with the adapters
           zeroed (no copy at all).

Imports: flax, optax, jax and agentic_rl.models (LoRA weights decide what trains).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from agentic_rl.models import LoRAWeight, PolicyModel

DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: training steps done (rollout + updates)
    params: nnx.State
    frozen: nnx.State
    ref: nnx.State | None
    opt_state: Any
    rng: jax.Array  # uint32[2] PRNG key (raw, so it checkpoints as a plain array)
    graphdef: nnx.GraphDef = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    def model(self, params: nnx.State | None = None) -> PolicyModel:
        """A live module over `params` (default: the current ones); shares the arrays."""
        return nnx.merge(self.graphdef, self.params if params is None else params, self.frozen)


def _is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def trainable_filter(lora: bool):
    """LoRA: adapters and the value head; full fine-tuning: every Param."""
    if lora:
        return nnx.Any(LoRAWeight, nnx.All(nnx.Param, nnx.PathContains("value_head")))
    return nnx.Param


def zero_lora(params: nnx.State) -> nnx.State:
    """The params with every LoRA adapter zeroed: the base model, i.e. the reference policy."""
    return jax.tree.map(
        lambda v: v.replace(value=jnp.zeros_like(v.get_value())) if isinstance(v, LoRAWeight)
        else v,
        params,
        is_leaf=_is_var,
    )


def has_lora(params: nnx.State) -> bool:
    return any(isinstance(v, LoRAWeight) for v in jax.tree.leaves(params, is_leaf=_is_var))


def make_schedule(ocfg, total_updates: int, learning_rate: float | None = None
                  ) -> optax.Schedule:
    """Linear warmup, then constant / linear decay to 0 / cosine decay to 0, peaking at
    `learning_rate` (default: ocfg.learning_rate)."""
    lr = float(ocfg.learning_rate if learning_rate is None else learning_rate)
    warm = int(ocfg.warmup_steps)
    rest = max(total_updates - warm, 1)
    if ocfg.schedule == "constant":
        after = optax.constant_schedule(lr)
    elif ocfg.schedule == "linear":
        after = optax.linear_schedule(lr, 0.0, rest)
    else:
        after = optax.cosine_decay_schedule(lr, rest)
    if warm <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])


def _chain(ocfg, total_updates: int, learning_rate: float | None = None):
    return optax.chain(
        optax.clip_by_global_norm(float(ocfg.max_grad_norm)),
        optax.adamw(make_schedule(ocfg, total_updates, learning_rate), b1=float(ocfg.b1),
                    b2=float(ocfg.b2), eps=float(ocfg.eps),
                    weight_decay=float(ocfg.weight_decay)),
    )


def is_critic_path(path) -> bool:
    """A parameter of the critic: the shared value head or anything of a separate critic."""
    names = {getattr(k, "key", getattr(k, "name", None)) for k in path}
    return bool(names & {"critic", "value_head"})


def critic_labels(params: nnx.State):
    """'critic' / 'policy' per leaf of `params`, for `optax.multi_transform`."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "critic" if is_critic_path(path) else "policy", params)


def make_optimizer(ocfg, total_updates: int, *, critic_chain: bool = False,
                   frozen_adapters: tuple[int, ...] = (), num_adapters: int = 1
                   ) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with the configured schedule.

    `critic_chain`: the critic's parameters get a chain of their own (their own clipping
    norm, and `ocfg.critic_learning_rate` when > 0). Clipped jointly, value gradients,
    often far larger than the policy's, set the policy's clipping factor; it changes from
    step to step with the critic's gradient norm and so re-weights the policy's steps in
    Adam's moments. In its own chain the policy update is what its own gradients give.

    `frozen_adapters` (of `num_adapters` per-agent adapters): their updates are zeroed
    after everything else (`freeze_adapter_slices`), so a frozen agent's weights stay bit
    for bit what they were, weight decay included.
    """
    if not critic_chain:
        tx = _chain(ocfg, total_updates)
    else:
        critic_lr = float(ocfg.critic_learning_rate) or float(ocfg.learning_rate)
        tx = optax.multi_transform(
            {"policy": _chain(ocfg, total_updates),
             "critic": _chain(ocfg, total_updates, critic_lr)}, critic_labels)
    if frozen_adapters:
        tx = optax.chain(tx, freeze_adapter_slices(tuple(frozen_adapters), num_adapters))
    return tx


def freeze_adapter_slices(frozen: tuple[int, ...], num_adapters: int
                          ) -> optax.GradientTransformation:
    """Zeroes the updates of adapters `frozen` (indices) in every stacked LoRA factor.

    With one adapter per agent the n adapters sit side by side along each factor's
    'lora_rank' axis (A [L, in, n*r], B [L, n*r, out]). A frozen agent's rows leave the
    batch, so its slices get zero gradient, but a zero gradient is not a zero update:
    AdamW's decoupled weight decay (and any moments left from earlier training) would
    still move them. Placed last in the chain, this makes the update exactly 0 there.
    """
    frozen = tuple(sorted(set(frozen)))
    if any(not 0 <= k < num_adapters for k in frozen):
        raise ValueError(f"frozen adapters {frozen} out of range for {num_adapters} adapters")

    def mask(v):
        if not isinstance(v, LoRAWeight):
            return v
        x = v.get_value()
        axes = tuple(v.get_metadata().get("out_sharding") or ())
        if "lora_rank" not in axes or len(axes) != x.ndim:
            raise ValueError(f"a LoRA weight of shape {x.shape} has no 'lora_rank' axis "
                             f"(axes {axes}): cannot find its adapters' slices")
        axis = axes.index("lora_rank")
        r = x.shape[axis] // num_adapters
        keep = np.ones(x.shape[axis], np.float32)
        for k in frozen:
            keep[k * r:(k + 1) * r] = 0.0
        shape = [1] * x.ndim
        shape[axis] = x.shape[axis]
        return v.replace(value=x * jnp.asarray(keep.reshape(shape), x.dtype))

    def update(updates, state, params=None):
        del params
        return jax.tree.map(mask, updates, is_leaf=_is_var), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def init_train_state(
    model: PolicyModel,
    tx: optax.GradientTransformation,
    *,
    seed: int,
    need_ref_copy: bool,
) -> TrainState:
    """Splits `model` and initialises the optimizer. `need_ref_copy`: keep a frozen copy of
    the initial params as the KL reference (only meaningful without LoRA)."""
    lora = any(isinstance(v, LoRAWeight) for _, v in nnx.iter_graph(model))
    graphdef, params, frozen = nnx.split(model, trainable_filter(lora), ...)
    # The reference is a policy: a separate critic's parameters are not copied (the
    # reference pass reads only log-probs; `reference_params` fills in the current ones).
    ref = (jax.tree.map(jnp.copy, params.filter(nnx.Not(nnx.PathContains("critic"))))
           if need_ref_copy and not lora else None)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        frozen=frozen,
        ref=ref,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(seed),
        graphdef=graphdef,
        tx=tx,
    )


# ------------------------------------------------------------------ mesh and shardings


def make_mesh(devices=None) -> Mesh:
    """A 1-D data-parallel mesh over every local device."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def _var_spec(v: nnx.Variable, mesh: Mesh, fsdp: bool) -> P:
    """FSDP: shard the variable's 'embed' axis over 'data' when the size divides; else replicate.

    Derived from the logical axis names every parameter carries, so any model gets the
    same treatment; optimizer moments inherit the metadata of their parameter.
    """
    axes = v.get_metadata().get("out_sharding") or ()
    shape = np.shape(v.get_value())
    n = mesh.shape[DATA_AXIS]
    if not fsdp or n == 1 or len(axes) != len(shape):
        return P()
    spec = [None] * len(shape)
    for i, name in enumerate(axes):
        if name == "embed" and shape[i] % n == 0:
            spec[i] = DATA_AXIS
            break
    return P(*spec)


def tree_shardings(tree: Any, mesh: Mesh, fsdp: bool = False) -> Any:
    """NamedShardings for a pytree holding nnx Variables (params, optimizer state, ...):
    a prefix tree where each Variable becomes one sharding; other leaves are replicated."""

    def one(x):
        if _is_var(x):
            return NamedSharding(mesh, _var_spec(x, mesh, fsdp))
        return NamedSharding(mesh, P())

    return jax.tree.map(one, tree, is_leaf=_is_var)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (row) axis split over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def place_state(state: TrainState, mesh: Mesh, fsdp: bool = False) -> TrainState:
    return jax.device_put(state, tree_shardings(state, mesh, fsdp))
