"""Data parallelism: one update over 4 simulated CPU devices equals the 1-device update."""

from __future__ import annotations

from tests.train.conftest import run_json_worker

WORKER = r"""
import os, json, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from agentic_rl.rl import LossConfig
from agentic_rl.train.state import make_mesh, place_state, tree_shardings, batch_sharding
from agentic_rl.train.step import StepConfig, make_train_fn
from tests.train.test_step import make_state, make_batch

assert len(jax.devices()) == 4, jax.devices()
results = {}
for name, devices, fsdp in [("one", jax.devices()[:1], False), ("data4", jax.devices(), False),
                            ("fsdp4", jax.devices(), True)]:
    mesh = make_mesh(devices)
    state = make_state(lora=False, critic=True, sgd=True)
    batch = make_batch(state, critic=True)
    shard = tree_shardings(state, mesh, fsdp)
    state = place_state(state, mesh, fsdp)
    batch = jax.device_put(batch, batch_sharding(mesh))
    hp = StepConfig(loss=LossConfig(), kl_coef=0.1, num_minibatches=2, micro_batch_size=4,
                    kl_in_loss=True, use_critic=True, mesh=mesh)
    state, metrics = make_train_fn(shard, batch_sharding(mesh))(state, batch, hp)
    emb = state.params["lm"]["embed_tokens"].get_value()
    results[name] = {
        "loss": float(metrics["loss"]),
        "params": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(state.params)],
        "embed_devices": len(emb.sharding.device_set),
        "embed_spec": str(emb.sharding.spec),
    }
json.dump(results, sys.stdout)
"""


def test_update_on_four_devices_matches_one_device():
    res = run_json_worker(WORKER, timeout=300)
    one = res["one"]
    for name in ("data4", "fsdp4"):
        other = res[name]
        assert abs(other["loss"] - one["loss"]) <= 1e-5 * max(1.0, abs(one["loss"]))
        for a, b in zip(one["params"], other["params"]):
            assert max(abs(x - y) for x, y in zip(a, b)) < 1e-6
    assert res["data4"]["embed_devices"] == 4  # replicated over the 4 devices
    assert "data" in res["fsdp4"]["embed_spec"]  # FSDP: 'embed' axis sharded over 'data'
