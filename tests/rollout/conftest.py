"""Rollout fixtures: the real SmolLM2 tokenizer (built once per session from the embedded
GGUF by the root conftest's `hf_gguf_tokenizer`) and the instant pure-Python CharTokenizer."""

from __future__ import annotations

import pytest

from agentic_rl.rollout import CharTokenizer, HFTokenizer


@pytest.fixture(scope="session")
def smollm2_tokenizer(hf_gguf_tokenizer) -> HFTokenizer:
    return HFTokenizer(hf_gguf_tokenizer)


@pytest.fixture
def char_tokenizer() -> CharTokenizer:
    return CharTokenizer()
