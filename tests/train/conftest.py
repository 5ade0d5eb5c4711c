"""Trainer test fixtures: tiny configs from experiments/, and a shared XLA compilation cache.

The update step of even a tiny model takes ~15 s to compile on 2 CPU cores; every test
here uses the same shapes, so a persistent cache (one per session) lets each later run
of the same program skip compilation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from agentic_rl.train.config_files import load_config_file

REPO = Path(__file__).resolve().parents[2]


def run_json_worker(code: str, timeout: int) -> dict:
    """Runs `code` in a fresh Python (its own XLA_FLAGS: forced CPU devices) from the repo
    and returns the JSON object on the last line of its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


TINY = REPO / "experiments" / "tiny_guess_number.py"


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory) -> Path:
    path = Path(os.environ.get("AGENTIC_RL_TEST_JAX_CACHE") or tmp_path_factory.mktemp("xla"))
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


@pytest.fixture
def tiny_config(compile_cache):
    """`tiny_config("ppo")` -> the tiny guess-number experiment config (a fresh copy)."""

    def make(variant: str = "grpo"):
        return load_config_file(f"{TINY}:{variant}")

    return make
