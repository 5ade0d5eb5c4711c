"""scripts/kill_resume.py on a small tiny-learner config: 3 kill -9 / resume cycles (one
while a checkpoint is being saved) end bit-identical to the uninterrupted run."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.train.conftest import REPO

SMALL = ["rollout.tasks_per_step=4", "rollout.group_size=4", "train.num_minibatches=2",
         "eval.num_episodes=16", "train.max_steps=5", "eval.every=2"]


@pytest.mark.slow
def test_kill_resume_cycles_match_the_uninterrupted_run(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "kill_resume.py"), "--cycles", "3",
         "--seed", "1", "--out", str(tmp_path / "kr"), *(f"--config.{s}" for s in SMALL)],
        capture_output=True, text=True, cwd=REPO, timeout=900)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert "RESULT: identical to the uninterrupted run" in out.stdout
    assert re.search(r"^3 kill -9 in 3 cycles", out.stdout, re.M), out.stdout
    assert "while saving" in out.stdout  # the save-mode cycle hit a save in progress
    assert "bitwise identical" in out.stdout and "DIFFERENT" not in out.stdout


@pytest.mark.slow
def test_async_kill_resume_cycles_train_every_task_once(tmp_path):
    """Asynchronous training (S = 1) killed -9 twice (once while saving) and resumed: every
    step is logged once and trains the tasks the uninterrupted run trains at that step
    (data/position, data/tasks_crc32), and the run ends at its last step."""
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "kill_resume.py"), "--cycles", "3",
         "--seed", "2", "--variant", "grpo_async1", "--out", str(tmp_path / "kr"),
         *(f"--config.{s}" for s in SMALL)],
        capture_output=True, text=True, cwd=REPO, timeout=900)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert "RESULT: consistent with the uninterrupted run" in out.stdout
    assert re.search(r"^[23] kill -9 in 3 cycles", out.stdout, re.M), out.stdout
    assert "while saving" in out.stdout
    assert "DIFFERENT" not in out.stdout and "MISSING" not in out.stdout
    # 5 steps, each compared on the 2 fields (a table row per step)
    assert len(re.findall(r"^\| [1-5] +\| 2 +\| identical", out.stdout, re.M)) == 5, out.stdout
