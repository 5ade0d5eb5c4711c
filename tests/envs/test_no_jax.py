"""agentic_rl.envs is plain Python: importing every module must not pull in jax or flax."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import agentic_rl.envs


def test_envs_never_import_jax():
    modules = [m.name for m in pkgutil.walk_packages(agentic_rl.envs.__path__, "agentic_rl.envs.")]
    assert "agentic_rl.envs.tools.calculator" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
