"""Importing the library silences transformers' "PyTorch was not found" advice (the
project never uses torch models) and nothing else: another transformers warning still
prints. Run in fresh interpreters with torch hidden, as on a machine without it."""

from __future__ import annotations

import subprocess
import sys

HIDE_TORCH = """
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: (
    None if name.split('.')[0] == 'torch' else _find(name, *a, **k))
"""
AFTER = """
import transformers
from transformers.utils import logging
logging.get_logger('transformers').warning('another transformers warning')
logging.get_logger('transformers.tokenization_utils_base').warning('a submodule warning')
"""


def _stderr(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stderr


def test_torch_advice_is_silenced_and_other_warnings_are_not():
    plain = _stderr(HIDE_TORCH + AFTER)
    assert "PyTorch was not found" in plain  # the simulation shows the advice...
    ours = _stderr(HIDE_TORCH + "import agentic_rl.rollout.tokenizer\n" + AFTER)
    assert "PyTorch was not found" not in ours  # ...which importing agentic_rl drops
    assert "another transformers warning" in ours and "a submodule warning" in ours
