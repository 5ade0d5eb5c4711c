"""Sampler placement (train.sampler_placement) on 4 forced CPU devices: "separate" samples on
the last device with its own copy of the weights and trains on the other three, and gives
the same training as the sampler co-located on the train mesh, synchronous and async;
with LoRA only the adapters move after the first copy."""

from __future__ import annotations

import pytest

from agentic_rl.train import Trainer
from agentic_rl.train.config import ConfigError
from agentic_rl.train.config_files import apply_overrides
from tests.train.conftest import run_json_worker

WORKER = r"""
import os, json, sys, tempfile
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax
from agentic_rl.train import Trainer
from agentic_rl.train.config_files import apply_overrides, load_config_file

assert len(jax.devices()) == 4, jax.devices()
SMALL = {"rollout.tasks_per_step": "3", "rollout.group_size": "4", "train.num_minibatches": "1",
         "train.max_steps": "3", "eval.every": "0", "eval.at_start": "False",
         "checkpoint.every": "100"}

def devices_of(tree):  # of the arrays (a reset's scalar cursor starts on the default device)
    leaves = [x for x in jax.tree.leaves(tree) if not x.is_deleted() and x.ndim]
    return sorted({d.id for x in leaves for d in x.devices()})

out = {}
for name, over in [("colocated", {}), ("separate", {"train.sampler_placement": "separate"}),
                   ("separate_async", {"train.sampler_placement": "separate",
                                       "train.max_off_policy_steps": "1",
                                       "rl.loss.off_policy": "tis"}),
                   ("colocated_async", {"train.max_off_policy_steps": "1",
                                        "rl.loss.off_policy": "tis"}),
                   ("separate_lora", {"train.sampler_placement": "separate",
                                      "model.lora_rank": "4",
                                      "train.max_off_policy_steps": "1",
                                      "rl.loss.off_policy": "tis"}),
                   ("colocated_lora", {"model.lora_rank": "4",
                                       "train.max_off_policy_steps": "1",
                                       "rl.loss.off_policy": "tis"})]:
    cfg = apply_overrides(load_config_file("experiments/tiny_learning.py:grpo"), {**SMALL, **over})
    t = Trainer(cfg, tempfile.mkdtemp())
    try:
        history = t.train()
        sampler = t.sampler.sampler
        out[name] = {
            "history": [{k: v for k, v in h.items() if k.startswith(("train/loss", "rollout/",
                         "data/", "async/staleness"))} for h in history],
            "train_devices": devices_of(t.state.params),
            "mesh": [d.id for d in t.mesh.devices.ravel()],
            # (co-located: the learner's own arrays, donated to its last update since)
            "sampler_devices": devices_of(sampler.state),
            "cache_devices": devices_of(sampler.cache),
            "tokens": [[int(x) for x in row] for row in t.last_batch.tokens.tolist()],
            "frozen_moves": t.frozen_moves,
            "frozen_arrays": sum(x.size for x in jax.tree.leaves(t.state.frozen)),
        }
    finally:
        t.close()
json.dump(out, sys.stdout)
"""


@pytest.mark.slow
def test_a_separate_sampler_device_trains_like_a_colocated_one():
    res = run_json_worker(WORKER, timeout=900)
    for name in ("separate", "separate_async"):
        r = res[name]
        assert r["mesh"] == [0, 1, 2] and r["train_devices"] == [0, 1, 2], r
        assert r["sampler_devices"] == [3] and r["cache_devices"] == [3], r
    assert res["colocated"]["mesh"] == [0, 1, 2, 3]
    for sep, col in (("separate", "colocated"), ("separate_async", "colocated_async")):
        a, b = res[sep], res[col]
        assert a["tokens"] == b["tokens"]  # the same episodes at the last step
        for ha, hb in zip(a["history"], b["history"], strict=True):
            assert ha.keys() == hb.keys()
            for k in ha:
                assert ha[k] == pytest.approx(hb[k], rel=1e-4, abs=1e-6, nan_ok=True), (sep, k)
    assert [h["async/staleness"] for h in res["separate_async"]["history"]] == [0.0, 1.0, 1.0]
    # LoRA: the frozen base was copied (moved, for a separate sampler) once, shared by
    # every published version; each later publish and sync copies only the adapters
    for name in ("separate_lora", "colocated_lora"):
        lora = res[name]
        assert lora["frozen_arrays"] > 10_000 and lora["frozen_moves"] == 1, (name, lora)
    assert res["separate_lora"]["sampler_devices"] == [3]
    assert res["separate_lora"]["train_devices"] == [0, 1, 2]


def test_a_separate_sampler_needs_two_devices(tiny_config, tmp_path):
    cfg = apply_overrides(tiny_config("grpo"), {"train.sampler_placement": "separate"})
    with pytest.raises(ConfigError, match="needs one process with >= 2 devices"):
        Trainer(cfg, tmp_path)
    with pytest.raises(ConfigError, match="'colocated' or 'separate'"):
        Trainer(apply_overrides(tiny_config("grpo"), {"train.sampler_placement": "gpu1"}),
                tmp_path)
