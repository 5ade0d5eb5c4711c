"""`compile_cache.release_compiled`: compiled programs hold memory mappings, and a process
that compiles thousands of them (the whole suite, an ablation sweep) reached the kernel's
limit (vm.max_map_count) and aborted inside LLVM; releasing them gives the mappings back."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

PROBE = """
import jax, jax.numpy as jnp
from agentic_rl import compile_cache
start = compile_cache.memory_maps()
f = jax.jit(lambda x, i: (jnp.sin(x) * i + jnp.cos(x @ x.T @ x)).sum(axis=0),
            static_argnums=1)  # like a module-level jitted function: its cache pins them
for i in range(150):  # distinct programs, each its own executable
    f(jnp.ones((8 + i % 7, 8)), i).block_until_ready()
grown = compile_cache.memory_maps()
compile_cache.release_compiled()
print(start, grown, compile_cache.memory_maps())
"""


def test_released_programs_give_their_memory_mappings_back():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    start, grown, after = map(int, out.stdout.split())
    assert grown - start > 300  # ~3 mappings per small program
    assert after - start < (grown - start) / 4, (start, grown, after)
