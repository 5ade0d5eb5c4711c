"""scripts/ablate.py: one family, one seed, one step, tiny batches -> table and plot."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest

from tests.train.conftest import REPO

# Tiny batches; evaluation samples like training (no separate greedy decode program to
# compile) and only after the step.
SMALL = ["rollout.tasks_per_step=2", "rollout.group_size=2", "train.num_minibatches=1",
         "train.num_epochs=1", "eval.num_episodes=4", "eval.every=1", "eval.greedy=false",
         "eval.at_start=false"]
CONFIG = [f"--config.{s}" for s in SMALL]  # the trainer's override syntax


@pytest.fixture
def ablate(compile_cache, monkeypatch):
    monkeypatch.setenv("AGENTIC_RL_NO_COMPILE_CACHE", "1")  # keep the test session's cache
    spec = importlib.util.spec_from_file_location("_ablate_script", REPO / "scripts" / "ablate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_family_writes_table_results_and_plot(ablate, tmp_path):
    out = tmp_path / "obs_mask"
    figures = tmp_path / "figures"
    code = ablate.main(["--family", "obs_mask", "--seeds", "0", "--steps", "1", "--out",
                        str(out), "--figure-dir", str(figures), *CONFIG])
    assert code == 0
    table = (out / "table.md").read_text()
    assert "| masked |" in table and "| train_on_obs |" in table
    rows = list(csv.reader((out / "table.csv").open()))
    assert rows[0][0] == "arm" and [r[0] for r in rows[1:]] == ["masked", "train_on_obs"]
    results = json.loads((out / "results.json").read_text())
    assert results["masked"]["runs"][0]["steps"] == 1
    assert "![obs_mask: eval success and training return per step](curves.png)" in table
    assert "[masked seed 0](runs/grpo/seed_0/overview.png)" in table
    assert "[train_on_obs seed 0](runs/train_on_obs/seed_0/overview.png)" in table
    for png in (out / "curves.png", figures / "obs_mask.png",
                out / "runs" / "grpo" / "seed_0" / "overview.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = sorted(p.parent.parent.name for p in (out / "runs").glob("*/seed_0/config.json"))
    assert runs == ["grpo", "train_on_obs"]
    # a second call finds both runs finished and only rewrites the outputs
    assert ablate.main(["--family", "obs_mask", "--seeds", "0", "--steps", "1", "--out",
                        str(out), *CONFIG]) == 0


def test_unknown_family_lists_the_valid_ones(ablate, tmp_path, capsys):
    assert ablate.main(["--family", "algos", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown ablation family 'algos'" in err and "grpo_vs_drgrpo" in err and "all" in err


def test_every_arm_of_every_family_is_a_valid_config(ablate):
    ablations = ablate.load_ablations()
    assert ablate.resolve_families(["all"], ablations) == ablations.family_names()
    for key, arm in ablations.ARMS.items():
        cfg = ablate.arm_config(ablations, key, seed=3, steps=2, extra={})
        assert cfg.seed == 3 and cfg.train.max_steps == 2
        for dotted, value in arm.overrides.items():
            if dotted == "train.max_steps":  # --steps overrides an arm's own length
                continue
            node = cfg
            for part in dotted.split("."):
                node = node[part]
            assert node == value, (key, dotted)
    configs = [ablate.arm_config(ablations, k, 0, None, {})
               for k in ablations.get_family("group_size").arms.values()]
    assert [c.rollout.group_size for c in configs] == [4, 8, 16]
    episodes = {c.rollout.group_size * c.rollout.tasks_per_step for c in configs}
    assert episodes == {ablations.EPISODES_PER_STEP}  # fixed episodes per step
