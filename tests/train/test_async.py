"""Asynchronous training (train.max_off_policy_steps = S): the producer thread, the fixed
lag (batch j sampled by the weights of version j - S, exactly), reproducibility,
evaluation between steps, resume, and learning with the off-policy correction."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from agentic_rl.train import Trainer
from agentic_rl.train.async_rollout import AsyncRollouts
from agentic_rl.train.config import ConfigError
from agentic_rl.train.config_files import apply_overrides, load_config_file
from agentic_rl.train.metrics import read_jsonl
from tests.train.conftest import REPO
from tests.train.test_loop import strip_timing

# -- the producer on its own (no model) ---------------------------------------------------


def test_batch_j_is_produced_with_version_j_minus_lag():
    seen = []

    def produce(step, weights):
        seen.append((step, weights))
        return f"batch {step}"

    for lag in (1, 2):
        seen.clear()
        p = AsyncRollouts(produce, start=3, weights="w3", lag=lag, limit=lambda: 9)
        try:
            for step in range(3, 9):
                got = p.next()
                assert (got.step, got.value) == (step, f"batch {step}")
                assert got.version == max(3, step - lag)
                # the learner trains step `step`, then publishes version step + 1
                if p.wants(step + 1):
                    p.publish(step + 1, f"w{step + 1}")
            assert seen == [(s, f"w{max(3, s - lag)}") for s in range(3, 9)]
            assert not p.wants(9 - lag)  # the batch of step 9 is past the horizon
            assert len(p._weights) <= lag + 1
        finally:
            p.close()


def test_the_producer_runs_ahead_by_at_most_the_lag():
    produced = []

    def produce(step, weights):
        produced.append(step)
        return step

    p = AsyncRollouts(produce, start=0, weights="w0", lag=2, limit=lambda: 100)
    try:
        deadline = time.monotonic() + 5
        while len(produced) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert produced == [0, 1, 2]  # batch 3 needs version 1, not published yet
        assert p.next().step == 0 and p.ready() == 2
    finally:
        p.close()


def test_a_producer_error_reaches_the_learner_and_close_stops_it():
    def produce(step, weights):
        if step == 1:
            raise RuntimeError("rollout over its error budget")
        return step

    p = AsyncRollouts(produce, start=0, weights="w", lag=1, limit=lambda: 5)
    assert p.next().step == 0
    with pytest.raises(RuntimeError, match="error budget"):
        p.next()
    p.close()

    started = threading.Event()

    def slow(step, weights):
        started.set()
        time.sleep(0.3)
        return step

    p = AsyncRollouts(slow, start=0, weights="w", lag=1, limit=lambda: 100)
    started.wait(5)
    t0 = time.monotonic()
    p.close()
    assert time.monotonic() - t0 < 2 and not p._thread.is_alive()
    with pytest.raises(ValueError, match="lag must be >= 1"):
        AsyncRollouts(slow, start=0, weights="w", lag=0, limit=lambda: 1)


# -- in the trainer (tiny model) ----------------------------------------------------------


def async_config(tiny_config, lag: int, steps: int = 3, **over):
    return apply_overrides(tiny_config("grpo"), {
        "train.max_steps": str(steps), "train.max_off_policy_steps": str(lag),
        "rl.loss.off_policy": "tis", **{k: str(v) for k, v in over.items()}})


def run(cfg, workdir):
    trainer = Trainer(cfg, workdir)
    try:
        history = trainer.train()
        return trainer, history
    finally:
        trainer.close()


def test_an_async_run_is_stale_by_the_lag_and_reproduces(tiny_config, tmp_path):
    cfg = async_config(tiny_config, 1, steps=3, **{"eval.every": 2})
    trainer, history = run(cfg, tmp_path / "a")
    assert [h["async/staleness"] for h in history] == [0.0, 1.0, 1.0]
    assert {m["policy_version"] for m in trainer.last_metadata} == {1}  # step 3: version 1
    # finished on the version they started with: every turn of every row
    assert all(m["policy_versions"] == [1] * m["num_turns"] for m in trainer.last_metadata)
    assert [h["async/resumed_fraction"] for h in history] == [0.0, 0.0, 0.0]
    assert [h["async/staleness_min"] for h in history] == [0.0, 1.0, 1.0]
    # version 0 sampled step 2's batch, trained by version 1: the behaviour ratio moved
    assert history[0]["train/behav_ratio_max"] == pytest.approx(1.0, abs=1e-3)
    assert history[1]["train/behav_ratio_max"] > 1.01 or \
        history[1]["train/behav_ratio_min"] < 0.99
    assert "eval/success_rate" in history[1]  # evaluated between steps, then went on
    _, again = run(cfg, tmp_path / "b")
    assert strip_timing(again) == strip_timing(history)


def test_the_batch_of_step_2_is_the_one_version_0_samples(tiny_config, tmp_path):
    """S = 1: step 2 trains on exactly what the initial weights sample at step 2."""
    cfg = async_config(tiny_config, 1, steps=2)
    trainer, _ = run(cfg, tmp_path / "async")
    stale = trainer.last_batch
    sync = Trainer(async_config(tiny_config, 0, steps=2), tmp_path / "sync")
    try:
        sync.step, sync.position = 1, cfg.rollout.tasks_per_step  # version 0, batch 2
        result, _ = sync.rollout()
        fresh, _ = sync.learner_batch(result.batch)
    finally:
        sync.close()
    np.testing.assert_array_equal(np.asarray(fresh.tokens), np.asarray(stale.tokens))
    np.testing.assert_allclose(np.asarray(fresh.sample_logprobs),
                               np.asarray(stale.sample_logprobs), atol=1e-6)


def test_partial_rollouts_resume_on_the_newest_weights(tiny_config, tmp_path):
    """train.partial_rollouts=resume: the learner publishes version k + 1 while batch k + 1's
    episodes wait on their slow environment (1 s a step), so those that take a second turn
    sample it with the newer weights: the rows record both versions, the staleness of the
    newest turns drops to 0, and the switched rows were re-prefilled."""
    cfg = async_config(tiny_config, 1, steps=4, **{
        "eval.every": 0, "train.partial_rollouts": "resume", "env.step_latency_s": 1.0,
        "rollout.max_workers": 64})
    trainer, history = run(cfg, tmp_path)
    resumed = [h["async/resumed_fraction"] for h in history]
    assert max(resumed) > 0, history
    late = history[-1]
    assert late["async/staleness"] == 1.0 and late["async/staleness_min"] == 0.0, late
    rows = trainer.last_metadata
    assert {m["policy_version"] for m in rows} == {2}
    versions = [m["policy_versions"] for m in rows]
    # the last batch's switch (it needs version 3 published although no batch starts on it)
    assert any(set(v) == {2, 3} for v in versions), versions
    assert all(len(v) == m["num_turns"] and v == sorted(v) and v[0] == 2 and set(v) <= {2, 3}
               for v, m in zip(versions, rows))
    assert trainer.sampler.stats["switch_reprefills"] > 0


def test_resuming_partial_rollouts_needs_async(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="only asynchronous training has"):
        Trainer(apply_overrides(tiny_config("grpo"), {"train.partial_rollouts": "resume"}),
                tmp_path)
    with pytest.raises(ConfigError, match="'finish' or 'resume'"):
        Trainer(async_config(tiny_config, 1, **{"train.partial_rollouts": "newest"}), tmp_path)


class Interrupted(Exception):
    pass


class StopsAfterTwoSteps(Trainer):
    """Dies before step 3 once the producer holds a batch it sampled ahead (a kill)."""

    def train_step(self):
        if self.step == 2:
            deadline = time.monotonic() + 60
            while self.producer.ready() < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert self.producer.ready() >= 1
            raise Interrupted
        return super().train_step()


def test_resume_keeps_the_trained_position_and_skips_no_task(tiny_config, tmp_path):
    cfg = async_config(tiny_config, 2, steps=4, **{"checkpoint.every": 1,
                                                   "eval.every": 0})
    tps = cfg.rollout.tasks_per_step
    killed = StopsAfterTwoSteps(cfg, tmp_path)
    try:
        with pytest.raises(Interrupted):
            killed.train()
    finally:
        killed.close()
    assert killed.position == 2 * tps  # what was sampled ahead was never trained
    resumed, history = run(cfg, tmp_path)
    assert resumed.resumed_from == 2 and resumed.position == 4 * tps
    # the old weights are gone after a resume: batches 3 and 4 are the restored version's
    assert [h["async/staleness"] for h in history] == [0.0, 1.0]
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    whole, _ = run(cfg, tmp_path / "whole")
    # step 4 trained the tasks an uninterrupted run trains at step 4
    assert [m["task_id"] for m in resumed.last_metadata] == \
        [m["task_id"] for m in whole.last_metadata]


def test_bad_lags_are_config_errors(tiny_config, tmp_path):
    for bad, match in (("-1", "max_off_policy_steps must be an integer >= 0"),
                       ("1.5", "max_off_policy_steps expects an int")):
        with pytest.raises(ConfigError, match=match):
            Trainer(apply_overrides(tiny_config("grpo"),
                                    {"train.max_off_policy_steps": bad}), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["grpo_async1", "grpo_async2"])
def test_the_tiny_learner_learns_with_stale_batches(compile_cache, tmp_path, variant):
    cfg = load_config_file(f"{REPO / 'experiments' / 'tiny_learning.py'}:{variant}")
    trainer, history = run(cfg, tmp_path)
    lag = cfg.train.max_off_policy_steps
    assert max(h["async/staleness"] for h in history) == lag
    evals = [(r["step"], r["eval/success_rate"]) for r in read_jsonl(tmp_path / "metrics.jsonl")
             if "eval/success_rate" in r]
    assert evals[0][1] <= 0.2 and evals[-1][1] >= 0.9, evals
