"""The tree lints clean with the project's ruff configuration."""

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_ruff_check_clean():
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(REPO / ".venv" / "bin"))
    if ruff is None:
        pytest.fail("ruff is not installed; it is part of the test extra: pip install -e .[test]")
    proc = subprocess.run([ruff, "check", "."], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_package_imports_without_torch():
    """torch is a test-only oracle: the library must never import it."""
    code = ("import sys, agentic_rl.models, agentic_rl.sampling, agentic_rl.chat; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
