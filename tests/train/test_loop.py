"""End-to-end runs of the trainer on a tiny random model and the guess-number game."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from agentic_rl.train import Trainer
from agentic_rl.train.config_files import apply_overrides
from agentic_rl.train.metrics import is_timing, read_jsonl
from tests.train.conftest import REPO


def run(cfg, workdir):
    trainer = Trainer(cfg, workdir)
    try:
        return trainer, trainer.train()
    finally:
        trainer.close()


def strip_timing(rows):
    return [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]


@pytest.mark.parametrize("variant", ["grpo", "ppo"])
def test_short_run_end_to_end(tiny_config, tmp_path, variant):
    cfg = apply_overrides(tiny_config(variant), {"train.max_steps": "2"})
    trainer, history = run(cfg, tmp_path)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert np.isfinite(r["train/loss"]) and r["train/skipped"] == 0
        assert r["rollout/num_episodes"] == 8
    if variant == "ppo":
        assert "train/value_loss" in rows[-1] and "train/kl_loss" in rows[-1]
    assert "eval/success_rate" in rows[-1]  # eval.every = 2
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                  if p.name.isdigit()) == [1, 2]
    traj = tmp_path / "trajectories" / "step_000002.jsonl"
    records = [json.loads(line) for line in traj.read_text().splitlines()]
    train_recs = [r for r in records if r["kind"] == "train"]
    assert train_recs and len(train_recs[0]["turn_advantages"]) == len(
        train_recs[0]["turn_rewards"])
    html = traj.with_suffix(".html").read_text()
    assert "advantage" in html and "assistant" in html
    assert (tmp_path / "export" / "config.json").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_a_windowed_context_trains_on_every_row_of_its_episodes(tiny_config, tmp_path):
    """rollout.context.strategy=window: each rewrite is a row of the same episode; the
    step's rows grow to hold them all and the learner gets them stitched (episode_index;
    PPO: token GAE chained across an episode's rows)."""
    cfg = apply_overrides(tiny_config("ppo"), {
        "train.max_steps": "1", "eval.every": "0", "rollout.context.strategy": "window",
        "rollout.context.keep_turns": "1", "rollout.context.rewrite_every": "1"})
    trainer = Trainer(cfg, tmp_path)
    try:
        assert trainer.rows == 2 * 4 * 2  # tasks x group x (1 + (3 - 1 - 1) // 1)
        result, _ = trainer.rollout()
        batch, _ = trainer.learner_batch(result.batch)
        continued = sum(bool(r.metadata["continued"]) for r in result.records)
        assert continued > 0 and result.metrics["num_episodes"] == 8
        assert batch.episode_index is not None
        ids = np.asarray(batch.episode_index)[: len(result.records)]
        assert len(set(ids.tolist())) == 8  # the rows form 8 episodes
        history = trainer.train()
    finally:
        trainer.close()
    (row,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert np.isfinite(row["train/loss"]) and row["train/skipped"] == 0
    del history


def test_kill_and_resume_matches_uninterrupted_run(tiny_config, tmp_path):
    full = apply_overrides(tiny_config(), {"train.max_steps": "4"})
    run(full, tmp_path / "full")
    head = apply_overrides(tiny_config(), {"train.max_steps": "2"})
    run(head, tmp_path / "resumed")  # "killed" after step 2
    trainer, _ = run(full, tmp_path / "resumed")
    assert trainer.resumed_from == 2
    a = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    b = read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert strip_timing(a) == strip_timing(b)


def test_evaluate_cli_reads_a_workdir(tiny_config, tmp_path):
    cfg = apply_overrides(tiny_config(), {"train.max_steps": "2"})
    run(cfg, tmp_path)
    for which in ("latest", "best"):
        out = subprocess.run(
            [sys.executable, "-m", "agentic_rl.evaluate", "--workdir", str(tmp_path),
             "--checkpoint", which, "--num-episodes", "2", "--max-turns", "2",
             "--max-new-tokens", "4", "--json"],
            capture_output=True, text=True, cwd=REPO, timeout=300)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert summary["env"] == "guess_number" and summary["num_episodes"] == 2
        assert summary["model"].endswith("@2")


def test_agent_trainer_facade(compile_cache, tmp_path):
    from agentic_rl.train import AgentTrainer

    trainer = AgentTrainer(model="tiny", environment="guess_number", algo="grpo",
                           workdir=tmp_path, chat_format="chatml", lora_rank=4,
                           env_kwargs={"low": 1, "high": 8, "max_guesses": 3},
                           overrides={"rollout.max_new_tokens": 8, "rollout.max_turns": 3,
                                      "rollout.tasks_per_step": 2, "rollout.max_episode_tokens":
                                      640, "rollout.length_bucket": 640, "eval.every": 0,
                                      "log.progress": False})
    history = trainer.train(episodes=8)
    assert len(history) == 1 and np.isfinite(history[0]["train/loss"])
    assert history[0]["train/learning_rate"] == pytest.approx(trainer.cfg.optim.learning_rate)


def test_agent_trainer_schedule_spans_the_horizon_it_trains(compile_cache, tmp_path):
    """An evaluate() first builds the trainer with the config's max_steps (100); the
    linear decay must still end at the last step train() runs, here step 2 of 2."""
    from agentic_rl.train import AgentTrainer

    lr = 1e-3
    trainer = AgentTrainer(model="tiny", environment="guess_number", algo="grpo",
                           workdir=tmp_path, chat_format="chatml", lora_rank=4,
                           env_kwargs={"low": 1, "high": 8, "max_guesses": 2},
                           overrides={"rollout.max_new_tokens": 8, "rollout.max_turns": 2,
                                      "rollout.tasks_per_step": 2, "rollout.group_size": 2,
                                      "rollout.max_episode_tokens": 640,
                                      "rollout.length_bucket": 640, "eval.every": 0,
                                      "eval.num_episodes": 2, "log.progress": False,
                                      "optim.schedule": "linear", "optim.learning_rate": lr})
    trainer.evaluate()
    history = trainer.train(steps=2)
    assert [h["train/learning_rate"] for h in history] == pytest.approx([lr, lr / 2])
    assert trainer.cfg.train.max_steps == 2
    with pytest.raises(TypeError, match="learning_rate"):
        AgentTrainer(model="tiny", learning_rat=1e-3)
