"""Environments in Ray actors (`rollout.backend=ray`): the rollout's environments run in a
pool of Ray worker processes, here or across a cluster; generation stays on this host.

Why this split: the policy's decode is one batched sampler call over every live episode
(one KV cache, one weight copy); spreading it over actors would copy the weights to each
and break the batch into small ones. What is slow and parallel in agentic RL is the
environment side (tools, sandboxes, databases, web calls, seconds per step), and that
is what the actors take. Each episode's environment lives in one actor for the whole
episode (`RayEnv` is a proxy with the `Env` interface: `reset` / `step` / `close` are
remote calls), so an environment keeps its state between steps however many machines
the pool spans.

    pool = RayEnvPool(partial(suite_in_worker, "calculator", {}), num_workers=4)
    run_episodes(sampler, fmt, pool.make_env, tasks)      # the usual rollout
    pool.close()

The trainer builds the pool from `rollout.backend="ray"`, `rollout.ray_workers` and
`rollout.ray_address` ("" starts a local Ray in this process; "auto" or
"ray://host:10001" joins a cluster started with `ray start --head`). Each worker builds
the suite itself (`make_suite`, shipped by Ray's pickling: a suite built from the config
is rebuilt by name in the worker, so nothing but the name and kwargs crosses the wire).

Same episodes as the thread backend: environments are deterministic given (task,
seed) and the sampler's draws are keyed by episode id and turn, so the backend does not
change a single token (tests/train/test_ray_rollouts.py).

Failures: an actor that dies (its process killed, the machine gone) fails the calls of
the episodes it held (`EnvWorkerDied`, an episode error at stage reset/step, counted
against the rollout's error budget), whether it died during one of their calls or
between two (the restarted actor does not hold their environments: `EnvLost`, turned
into `EnvWorkerDied`); Ray restarts the actor (`max_restarts=-1`) and
later episodes use it again, so training goes on. A call stuck in an actor is bounded
by the rollout's `step_timeout_s` as for a local environment.

Imports: stdlib, ray (lazily) and agentic_rl.envs; never jax.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from agentic_rl.envs.base import Task
from agentic_rl.envs.suite import EnvSuite, make_env_suite, with_latency
from agentic_rl.envs.tools.base import Tool


class EnvWorkerDied(RuntimeError):
    """The Ray actor holding an episode's environment died (its episode is dropped)."""


class EnvLost(LookupError):
    """Raised in a worker asked for an episode it does not hold: the actor was restarted
    (its process died between two calls of the episode) and its environments went with
    it. The proxy turns it into `EnvWorkerDied`, like a death seen during a call."""


def suite_in_worker(name: str, kwargs: Mapping[str, Any], latency_s: float = 0.0,
                    jitter: float = 0.0) -> EnvSuite:
    """The suite a config names, built in the worker (see the module docstring)."""
    return with_latency(make_env_suite(name, dict(kwargs)), latency_s, jitter)


def _runs_in_the_worker(**_: Any) -> Any:
    raise RuntimeError("this tool runs inside the environment's Ray worker (env.step)")


def _tool_spec(tool: Tool) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description,
            "parameters": dict(tool.parameters), "timeout_s": tool.timeout_s,
            "max_output_chars": tool.max_output_chars}


class EnvWorker:
    """The body of one Ray actor: a suite and the environments of its live episodes."""

    def __init__(self, make_suite: Callable[[], EnvSuite]):
        self.suite = make_suite()
        self.envs: dict[str, Any] = {}

    def pid(self) -> int:
        return os.getpid()

    def reset(self, key: str, task: Task, seed: int) -> tuple[list, list[dict[str, Any]]]:
        """A fresh environment for episode `key`: (its first messages, its tools' specs)."""
        env = self.envs[key] = self.suite.make_env()
        messages = list(env.reset(task, seed))
        return messages, [_tool_spec(t) for t in getattr(env, "tools", ())]

    def step(self, key: str, action):
        env = self.envs.get(key)
        if env is None:
            raise EnvLost(f"this worker (pid {os.getpid()}) holds no environment {key!r}: "
                          f"it was restarted after the one that held it died")
        return env.step(action)

    def close(self, key: str) -> None:
        env = self.envs.pop(key, None)
        close = getattr(env, "close", None)
        if callable(close):
            close()

    def live(self) -> int:
        return len(self.envs)


class RayEnv:
    """An `Env` whose instance lives in a Ray actor (see the module docstring)."""

    def __init__(self, pool: RayEnvPool, worker, key: str):
        self._pool, self._worker, self._key = pool, worker, key
        self.tools: tuple[Tool, ...] = ()

    def _get(self, ref):
        ray = self._pool.ray
        try:
            return ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as e:
            raise EnvWorkerDied(f"the Ray worker holding this episode's environment died: "
                                f"{type(e).__name__}") from None
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, EnvLost):  # died between calls, restarted since
                raise EnvWorkerDied(f"the Ray worker holding this episode's environment "
                                    f"died: {e.cause}") from None
            raise e.as_instanceof_cause() from None  # the environment's own exception

    def reset(self, task: Task, seed: int):
        messages, specs = self._get(self._worker.reset.remote(self._key, task, seed))
        self.tools = tuple(Tool(fn=_runs_in_the_worker, **s) for s in specs)
        return messages

    def step(self, action):
        return self._get(self._worker.step.remote(self._key, action))

    def close(self) -> None:
        try:
            self._get(self._worker.close.remote(self._key))
        except EnvWorkerDied:
            pass


class RayEnvPool:
    """`num_workers` Ray actors holding environments; `make_env()` places an episode's
    environment on the next one (round robin)."""

    def __init__(self, make_suite: Callable[[], EnvSuite], *, num_workers: int = 2,
                 address: str | None = None, init_kwargs: Mapping[str, Any] | None = None):
        import ray

        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.ray = ray
        self.started_ray = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False,
                       "configure_logging": False, **dict(init_kwargs or {})}
            ray.init(address=address or None, **options)
            self.started_ray = True
        # num_cpus=0: an environment mostly waits (tools, I/O), so more workers than cores
        # is fine; SPREAD puts them on as many nodes of a cluster as it can.
        actor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0,
                           scheduling_strategy="SPREAD")(EnvWorker)
        self.workers = [actor.remote(make_suite) for _ in range(num_workers)]
        self.pids()  # the workers have built their suites (a bad one raises here)
        self._keys = itertools.count()
        self._lock = threading.Lock()

    def make_env(self) -> RayEnv:
        with self._lock:
            i = next(self._keys)
        return RayEnv(self, self.workers[i % len(self.workers)], f"env{i}")

    def pids(self) -> list[int]:
        """The workers' process ids (each call waits for a restarted worker to be up)."""
        return self.ray.get([w.pid.remote() for w in self.workers])

    def close(self) -> None:
        for w in self.workers:
            try:
                self.ray.kill(w)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.workers = []
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False
