"""One LoRA adapter per agent over a shared frozen base, trained in one jitted update:
`AgentTrainer(system, method="rlvr", adapters="per_agent")` on the tiny model. A frozen
agent's adapter does not move (bit for bit) while the trained agent's does; training both
moves both; the sampler samples each agent's calls with its own adapter (its log-probs
equal the learner's scoring pass); the chat service refuses an unknown agent; each agent
exports as its own HF directory."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flax import nnx

from agentic_rl.agents import Agent, AgentSystem, ServiceConfig, critique_loop
from agentic_rl.agents.openai_format import APIError
from agentic_rl.envs import Task
from agentic_rl.models import LoRAWeight
from agentic_rl.rollout import CharTokenizer, ScriptedPolicy, make_chat_format
from agentic_rl.train import AgentTrainer
from tests.agents.conftest import make_service

TASKS = [Task(f"t{i}", f"Say yes ({i})", answer="y") for i in range(8)]
SYSTEM = AgentSystem([Agent("writer", "You write."), Agent("checker", "You check.")],
                     critique_loop("writer", "checker", rounds=1,
                                   reward=lambda task, answer: float("y" in answer)))


def adapter_slices(trainer, k: int, n: int = 2) -> list[np.ndarray]:
    """Adapter k's slices of every LoRA factor (A: last axis, B: axis 1)."""
    lora = nnx.state(trainer.state.model(), LoRAWeight)
    out = []
    for path, v in nnx.to_flat_state(lora):
        x = np.asarray(v.get_value())
        parts = np.split(x, n, axis=-1) if str(path[-1]).endswith("_lora_a") else \
            np.split(x, n, axis=1)
        out.append(parts[k])
    return out


def make(tmp_path, overrides=(), **kw):
    return AgentTrainer(
        SYSTEM, method="rlvr", policy="tiny", tasks=TASKS, adapters="per_agent",
        workdir=tmp_path, tasks_per_step=2, group_size=4, max_new_tokens=8, max_turns=3,
        chat_format="chatml", lora_rank=4, learning_rate=1e-2,
        overrides={"rollout.max_episode_tokens": 640, "rollout.length_bucket": 640,
                   "eval.every": 0, "log.progress": False, "train.num_minibatches": 1,
                   "checkpoint.export_final": False, **dict(overrides)}, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("train_agents", [["writer"], None])
def test_per_agent_adapters_train_only_their_agents(compile_cache, tmp_path, train_agents):
    # training both: the checker's advantages by RLOO, the writer's by GRPO; the writer
    # alone with weight decay on, which must not shrink the frozen checker's adapter
    per_agent = ({"optim.weight_decay": 0.1} if train_agents else
                 {"rl.advantage.per_agent": "checker:rloo"})
    trainer = make(tmp_path / "run", per_agent, train_agents=train_agents)
    try:
        built = trainer._build()
        assert trainer.cfg.agent.names == "writer,checker"
        estimators = [(i, c.estimator) for i, c in built.learner_config.agent_advantages]
        assert estimators == ([] if train_agents else [(1, "rloo")])
        assert built.policy.model.lm.num_adapters == 2
        before = {k: adapter_slices(built, k) for k in (0, 1)}
        history = trainer.run(steps=2)
        after = {k: adapter_slices(built, k) for k in (0, 1)}
        moved = {k: any(not np.array_equal(a, b) for a, b in zip(before[k], after[k],
                                                                strict=True))
                 for k in (0, 1)}
        assert all(math.isfinite(h["train/loss"]) for h in history)
        if train_agents == ["writer"]:
            assert moved == {0: True, 1: False}
            assert all(h["rollout/frozen_rows"] == 8 for h in history)
        else:
            assert moved == {0: True, 1: True}
        # step 2 sampled with the adapters step 1 trained: the sampler's log-probs are the
        # learner's (a wrong adapter in the sampler would make this ratio far from 1)
        assert history[1]["train/behav_ratio_max"] < 1.01
        assert history[1]["train/behav_ratio_min"] > 0.99
        if train_agents is None:
            out = built.export(tmp_path / "export")
            assert (out / "writer" / "config.json").is_file()
            assert (out / "checker" / "config.json").is_file()
            # served from its checkpoint: both adapters, each agent named
            import argparse

            from agentic_rl.serve import load

            lm, _, _, _, agents = load(argparse.Namespace(workdir=str(tmp_path / "run"),
                                                          checkpoint="latest"))
            assert agents == ("writer", "checker") and lm.num_adapters == 2
    finally:
        trainer.trainer.close()


def test_a_per_agent_service_refuses_an_unnamed_agent():
    fmt = make_chat_format("chatml", CharTokenizer())
    service = make_service(ScriptedPolicy(fmt.tok, lambda r, h: "hi"), fmt,
                           agents=("writer", "checker"), adapter_per_agent=True)
    try:
        service.start_rollout("r0")
        with pytest.raises(APIError, match="unknown agent 'someone'"):
            service.chat({"model": "policy", "messages": [{"role": "user", "content": "x"}]},
                         rollout_id="r0", agent="someone")
        body, _, _ = service.chat(
            {"model": "policy", "messages": [{"role": "user", "content": "x"}]},
            rollout_id="r0", agent="checker")
        assert body["choices"][0]["message"]["content"] == "hi"
        assert service.finish_rollout("r0")[0][0].metadata["agent"] == "checker"
    finally:
        service.engine.close()
    assert ServiceConfig().adapter_per_agent is False  # the default: one shared adapter


def test_per_agent_estimators_name_known_agents(tmp_path):
    from agentic_rl.train.config import ConfigError

    with pytest.raises(ConfigError, match=r"names \['critic'\], not agents"):
        make(tmp_path, {"rl.advantage.per_agent": "critic:rloo"})._build()
    with pytest.raises(ConfigError, match="'agent:estimator' pairs"):
        make(tmp_path, {"rl.advantage.per_agent": "writer"})._build()
    with pytest.raises(ConfigError, match="is not valid"):
        make(tmp_path, {"rl.advantage.per_agent": "writer:nope"})._build()


def test_method_and_system_arguments(tmp_path):
    with pytest.raises(ValueError, match="method='sft' is not valid"):
        AgentTrainer(SYSTEM, method="sft", policy="tiny", tasks=TASKS, workdir=tmp_path)
    t = AgentTrainer(SYSTEM, method="rlvr", policy="tiny", tasks=TASKS, workdir=tmp_path,
                     train_agents=["writer", "check.r"])
    assert t.cfg.rl.algo == "grpo" and t.cfg.model.name == "tiny"
    assert t.cfg.agent.train_agents == r"writer|check\.r"
    assert t.cfg.agent.names == "writer,checker"
