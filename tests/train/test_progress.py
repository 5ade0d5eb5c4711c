"""Progress on the console: the step bar counts steps (not writes), episode bars count
every episode (dropped ones too) with the success rate so far, long XLA compiles are
announced, and a real CLI run shows its evaluation, compile and checkpoint phases."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import jax
import jax.numpy as jnp

from agentic_rl.train.metrics import MetricsWriter
from agentic_rl.train.progress import Progress
from tests.train.viewer_episodes import calculator_rollout


def test_step_bar_counts_steps_not_writes(tmp_path, capsys):
    w = MetricsWriter(tmp_path, total_steps=2, tensorboard=False)
    w.write(0, {"eval/success_rate": 0.1})  # the evaluation before the first step
    assert w.bar.n == 0
    w.write(1, {"rollout/success_rate": 0.5})
    w.write(2, {"rollout/success_rate": 0.7, "eval/success_rate": 0.9})
    assert w.bar.n == 2
    w.close()
    err = capsys.readouterr().err
    assert "2/2" in err and not re.search(r"(?<![\d.])3it|3/2", err)


def test_episode_bar_counts_success_and_drops():
    out = io.StringIO()
    progress = Progress(stream=out)
    with progress.episodes(4, "eval @ step 0", leave=True) as on_episode:
        for meta in ({"success": True}, None, {"success": False}, {"success": True}):
            on_episode(meta)
    text = out.getvalue()
    assert "4/4" in text and "success=50.0%" in text and "dropped=1" in text


def test_run_episodes_reports_each_episode():
    seen = []
    res = calculator_rollout(num_tasks=3, on_episode=seen.append)
    assert len(seen) == 3 and all(m["success"] for m in seen)
    assert sorted(m["episode_id"] for m in seen) == sorted(
        r.metadata["episode_id"] for r in res.records)


def test_long_compiles_are_announced():
    out = io.StringIO()
    progress = Progress(stream=out, compile_notice_after_s=0.0)

    @jax.jit
    def _progress_probe(x):
        return jnp.sin(x) * 2

    with progress.watch_compiles():
        _progress_probe(jnp.ones(17)).block_until_ready()
    _progress_probe(jnp.ones(19)).block_until_ready()  # after the block: not watched
    lines = out.getvalue().splitlines()
    assert any(re.fullmatch(r"\[ *\d+:\d\d\] compiled progress_probe in \d+\.\d s", ln)
               for ln in lines), lines
    assert sum("progress_probe" in ln for ln in lines) <= 2  # one compile: at most 2 lines
    quiet = io.StringIO()
    with Progress(stream=quiet, enabled=False).watch_compiles():
        _progress_probe(jnp.ones(23)).block_until_ready()
    assert quiet.getvalue() == ""


def test_cli_run_shows_its_phases(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "agentic_rl.train", "--config", "experiments/tiny_learning.py:grpo",
         "--workdir", str(tmp_path / "run"), "--config.log.progress=True",
         "--config.train.max_steps=2", "--config.eval.every=2"],
        capture_output=True, text=True, timeout=600, check=True)
    err = out.stderr.replace("\r", "\n")
    for line in ("loaded model 'tiny'", "evaluating step 0 on 64 'eval' tasks (greedy)",
                 "eval @ step 0: success", "evaluating step 2 on", "eval @ step 2: success",
                 "saved the checkpoint of step 2"):  # compiles: cached by an earlier run
        assert re.search(r"\[ *\d+:\d\d\] " + re.escape(line), err), (line, err[-3000:])
    assert re.search(r"rollout step 1: +\d+%.*\d+/128", err)
    assert "train: 100%" in err and "2/2" in err and not re.search(r"(?<![\d.])3it|3/2", err)
    assert "PyTorch was not found" not in err
