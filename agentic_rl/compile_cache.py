"""Opt-in persistent XLA compilation cache.

Compiling the sampler's programs for a 30-layer model takes tens of seconds on a
small CPU, and a command-line run compiles the same programs every time. With the
persistent cache on, a later process (the next CLI call, the next test) loads them
from disk instead. Entry points call `enable()`; the library itself never changes
global JAX configuration.

Imports: jax only.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("AGENTIC_RL_CACHE", str(Path.home() / ".cache" / "agentic_rl"))
    return Path(root) / "jax_compilation_cache"


def enable(path: str | os.PathLike | None = None, min_compile_secs: float = 1.0) -> Path:
    """Turn on JAX's persistent compilation cache (idempotent). Set
    AGENTIC_RL_NO_COMPILE_CACHE=1 to keep it off."""
    import jax

    target = Path(path) if path is not None else cache_dir()
    if os.environ.get("AGENTIC_RL_NO_COMPILE_CACHE"):
        return target
    target.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(target))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return target


def memory_maps() -> int:
    """This process's memory mappings (Linux; 0 elsewhere). Compiled XLA programs hold a
    few per kernel, and the kernel allows `vm.max_map_count` (65530 by default)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def release_compiled() -> None:
    """Drops every compiled program JAX caches in memory (they reload from the persistent
    cache when needed again).

    For processes that run many independent jobs in turn (an ablation sweep, the test
    suite): each live executable keeps its machine code in memory mappings, and past
    `vm.max_map_count` LLVM cannot map the next program's code and aborts the process
    ("LLVM ERROR: Unable to allocate section memory"). Programs still referenced by live
    objects stay alive; the jit caches no longer pin them."""
    import gc

    import jax

    gc.collect()
    jax.clear_caches()
    gc.collect()


def exit_now(code: int) -> None:
    """Flush stdio and end the process without interpreter teardown.

    For command-line entry points whose work is finished and whose output is written:
    tearing down the loaded native runtimes (XLA, tokenizers) at interpreter exit has
    been seen to abort intermittently ("FATAL: exception not rethrown", SIGABRT) after
    a successful run, which would turn a good result into a failing exit status.
    """
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
