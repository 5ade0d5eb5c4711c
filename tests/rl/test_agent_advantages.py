"""An advantage estimator per agent (`compute_advantages_by_agent`): each agent's rows
get its own estimator computed over its rows alone, checked against the NumPy references
run on each agent's sub-batch; without a map it is `compute_advantages`."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from agentic_rl import rl

from . import reference as ref

B, T, K = 12, 28, 4


def draw(seed):
    rng = np.random.default_rng(seed)
    batch = ref.random_batch(rng, B, T, K)
    agent = rng.integers(-1, 3, B).astype(np.int32)  # -1: a padding-like row
    # rows grouped by (task, agent), as run_agents groups a multi-agent program's rows
    batch = dataclasses.replace(batch, group_id=(batch.group_id * 10 + agent + 1)
                                .astype(np.int32))
    cfg = rl.AdvantageConfig(turn_gamma=float(rng.uniform(0.5, 1.0)))
    return batch, agent, cfg


def rows(batch, sel):
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[sel]
                                         for f in dataclasses.fields(batch)})


@pytest.mark.parametrize("seed", range(4))
def test_each_agent_gets_its_own_estimator_over_its_own_rows(seed):
    batch, agent, cfg = draw(seed)
    per_agent = ((0, cfg.replace(estimator="grpo", whiten=True)),
                 (1, cfg.replace(estimator="reinforce_pp")))
    default = cfg.replace(estimator="rloo")
    fn = jax.jit(rl.compute_advantages_by_agent, static_argnames=("cfg", "per_agent"))
    adv, ret = fn(ref.fields(batch), cfg=default, per_agent=per_agent, row_agent=agent)
    adv, ret = np.asarray(adv), np.asarray(ret)
    for sel, want in (
        (agent == 0, lambda b: _whitened(b, *ref.group_advantages(
            b, "grpo", "outcome", cfg.turn_gamma, cfg.eps))),
        (agent == 1, lambda b: ref.reinforce_pp(b, cfg.gamma, cfg.eps, "token", False)),
        ((agent != 0) & (agent != 1), lambda b: ref.group_advantages(
            b, "rloo", "outcome", cfg.turn_gamma, cfg.eps)),
    ):
        if not sel.any():
            continue
        a_ref, r_ref = want(rows(batch, sel))
        np.testing.assert_allclose(adv[sel], a_ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ret[sel], r_ref, rtol=1e-4, atol=1e-4)


def _whitened(b, adv, raw):
    return ref.whiten(adv, b.loss_mask, "token", 1e-6), raw


def test_no_map_is_compute_advantages():
    batch, agent, cfg = draw(0)
    a, r = rl.compute_advantages_by_agent(ref.fields(batch), cfg, (), agent)
    a0, r0 = rl.compute_advantages(ref.fields(batch), cfg)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(a0))
    np.testing.assert_array_equal(np.asarray(r), np.asarray(r0))
