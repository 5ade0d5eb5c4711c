"""rollout.backend="ray": the environments run in real Ray actors (a local Ray runtime with
two worker processes, started here; no mocks). The same seeds give the same episodes
and the same training as the thread backend; a worker killed with SIGKILL mid-rollout
costs only the episodes it held, and training goes on."""

from __future__ import annotations

import os
import signal
import threading
import time
from functools import partial

import pytest
import ray  # the test extra installs it: a missing Ray fails here, never skips

from agentic_rl.envs import make_env_suite
from agentic_rl.envs.ray_backend import EnvWorkerDied, RayEnvPool, suite_in_worker
from agentic_rl.train import Trainer
from agentic_rl.train.config_files import apply_overrides
from agentic_rl.train.metrics import read_jsonl
from tests.train.test_loop import strip_timing

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def config(tiny_config, backend: str, **over):
    return apply_overrides(tiny_config("grpo"), {
        "rollout.backend": backend, "rollout.ray_workers": "2", "train.max_steps": "2",
        "eval.every": "2", **{k: str(v) for k, v in over.items()}})


def test_ray_environments_train_exactly_like_threads(ray_runtime, tiny_config, tmp_path):
    runs = {}
    for backend in ("threads", "ray"):
        trainer = Trainer(config(tiny_config, backend), tmp_path / backend)
        try:
            if backend == "ray":
                pids = trainer.env_pool.pids()
                assert len(set(pids)) == 2 and os.getpid() not in pids  # two processes
            runs[backend] = trainer.train()
        finally:
            trainer.close()
    assert strip_timing(runs["ray"]) == strip_timing(runs["threads"])
    assert runs["ray"][-1]["rollout/num_errors"] == 0
    assert "eval/success_rate" in runs["ray"][-1]


def test_a_killed_worker_costs_only_its_episodes(ray_runtime, tiny_config, tmp_path):
    # every step sleeps 1 s, so the kill lands while the worker holds live episodes
    cfg = config(tiny_config, "ray", **{"env.step_latency_s": 1.0, "eval.every": 0,
                                        "rollout.max_error_fraction": 0.6})
    trainer = Trainer(cfg, tmp_path)
    try:
        pool = trainer.env_pool
        victim, victim_pid = pool.workers[0], pool.pids()[0]
        killed = threading.Event()

        def kill_when_busy():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if ray.get(victim.live.remote()) > 0:
                    time.sleep(0.3)  # in the middle of an environment step
                    os.kill(victim_pid, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        first = trainer.train_step()
        killer.join(5)
        assert killed.is_set()
        episodes = cfg.rollout.tasks_per_step * cfg.rollout.group_size
        # round robin: the victim held every other episode, and only those failed
        assert first["rollout/num_errors"] == episodes // 2, first
        assert first["rollout/num_episodes"] == episodes - episodes // 2
        errors = read_jsonl(tmp_path / "errors.jsonl")  # the trainer logs each dropped one
        assert len(errors) == episodes // 2 and {e["step"] for e in errors} == {1}
        assert {e["stage"] for e in errors} <= {"reset", "step"}
        assert all("Ray worker holding this episode's environment died" in e["message"]
                   for e in errors), errors
        assert pool.pids()[0] != victim_pid  # Ray restarted the worker
        second = trainer.train_step()  # training goes on, on the restarted worker too
        assert second["rollout/num_errors"] == 0
        assert second["rollout/num_episodes"] == episodes
    finally:
        trainer.close()


def test_a_worker_killed_between_two_calls_fails_its_episode_as_died(ray_runtime):
    # The race a CI run hit: the kill lands between an episode's reset and its step, so
    # the step reaches the restarted actor, which never held that environment.
    pool = RayEnvPool(partial(suite_in_worker, "guess_number", {}), num_workers=1)
    try:
        task = next(iter(make_env_suite("guess_number").tasks.split("train")))
        env = pool.make_env()
        env.reset(task, seed=0)
        victim = pool.pids()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:  # until Ray has restarted the actor
            try:
                if pool.pids()[0] != victim:
                    break
            except ray.exceptions.RayActorError:
                pass
            assert time.monotonic() < deadline, "Ray did not restart the worker"
            time.sleep(0.1)
        with pytest.raises(EnvWorkerDied, match="holds no environment 'env0'"):
            env.step("<answer>1</answer>")
        env.close()  # closing a lost environment is not an error
        fresh = pool.make_env()  # later episodes use the restarted worker
        assert fresh.reset(task, seed=0)
    finally:
        pool.close()
