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
import shutil
import tempfile
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


def temporary_dir(prefix: str) -> Path:
    """A fresh directory removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


# Registers every suite (each module in suites/ decorates its functions with ENVS.register).
from agentic_rl.envs import suites  # noqa: E402, F401
