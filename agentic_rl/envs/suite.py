"""`ENVS`: environment suites by name, so a config string selects the environment.

A suite bundles what a run needs from an environment: a factory for fresh episode
instances (one per concurrent episode), the task splits, and the discount `gamma`
(part of the environment's config because it encodes how the task values time).

Registration happens in ONE place: each `agentic_rl.envs.suites.<family>` module
registers its own suite functions with `@ENVS.register(name)`, and the import of
`agentic_rl.envs.suites` at the bottom of this module loads them all, so `ENVS` is
complete whenever this module is. Each suite function's keyword arguments are the
environment's config; generated splits use `seed` for train and `seed + 1` for eval.
Heavy backends start lazily: the search index is built when the suite is made (once,
shared by its episodes), SQLite files are generated when the suite is made, sandboxes
start on an episode's first call.

Imports: stdlib, agentic_rl.registry, agentic_rl.envs.base/tasks, and (at the bottom, to
register them) agentic_rl.envs.suites; never jax.
"""

from __future__ import annotations

import atexit
import dataclasses
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentic_rl.envs.base import Env
from agentic_rl.envs.tasks import TaskSet
from agentic_rl.registry import Registry


@dataclass(frozen=True)
class EnvSuite:
    """A named environment: `make_env()` gives a fresh `Env`; `tasks` holds the splits."""

    name: str
    make_env: Callable[[], Env]
    tasks: TaskSet
    gamma: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"env {self.name!r}: gamma must be in (0, 1], got {self.gamma}")


SuiteFactory = Callable[..., EnvSuite]


# name -> suite factory (keyword arguments = the environment's config)
ENVS = Registry("environment")


def make_env_suite(name: str, config: Mapping[str, Any] | None = None, **kwargs: Any) -> EnvSuite:
    """Builds suite `name` from a config mapping (e.g. a ConfigDict) and/or keyword overrides."""
    options = {**dict(config or {}), **kwargs}
    return ENVS.get(name)(**options)


class SlowEnv:
    """An environment whose every step first sleeps `latency_s` (x (1 +- jitter), drawn
    from the episode seed): a real sleep, as a slow tool, sandbox or web API makes the
    rollout wait. For benchmarks of what overlaps with environment time (asynchronous
    training, remote environments); everything else is the wrapped environment's."""

    def __init__(self, inner: Env, latency_s: float, jitter: float = 0.0):
        self.inner, self.latency_s, self.jitter = inner, latency_s, jitter
        self._rng = random.Random(0)

    def reset(self, task, seed):
        self._rng.seed(seed)
        return self.inner.reset(task, seed)

    def step(self, action):
        time.sleep(self.latency_s * (1 + self.jitter * (2 * self._rng.random() - 1)))
        return self.inner.step(action)

    def __getattr__(self, name: str):  # tools, close, the game's own attributes
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def with_latency(suite: EnvSuite, latency_s: float, jitter: float = 0.0) -> EnvSuite:
    """`suite` with every environment step delayed (see `SlowEnv`); 0 returns it as is."""
    if not latency_s:
        return suite
    if latency_s < 0 or not 0 <= jitter <= 1:
        raise ValueError(f"step latency must be >= 0 and its jitter in [0, 1], got "
                         f"{latency_s}, {jitter}")
    inner = suite.make_env
    return dataclasses.replace(suite, make_env=lambda: SlowEnv(inner(), latency_s, jitter))


def temporary_dir(prefix: str) -> Path:
    """A fresh directory removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


# Registers every suite (each module in suites/ decorates its functions with ENVS.register).
from agentic_rl.envs import suites  # noqa: E402, F401
