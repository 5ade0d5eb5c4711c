"""agentic_rl: JAX-native reinforcement learning for multi-turn, tool-using LLM agents.

Heavy submodules load lazily, so `import agentic_rl` stays cheap and the
environment layer can be used without importing JAX.

Imports: agentic_rl.models, lazily (`load_policy`).
"""

import logging as _logging

__version__ = "0.1.0"


class _NoTorchAdvice(_logging.Filter):
    """Drops transformers' import-time "PyTorch was not found. Models won't be available..."
    advice. We use transformers for tokenizers, configs and checkpoint files only (the
    models are ours, in JAX), so on every run it was noise; it is the only message this
    filter drops, and it sits on the "transformers" logger, where that advice is logged,
    so every other transformers warning still shows."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return not str(record.msg).startswith("PyTorch was not found.")


_transformers_logger = _logging.getLogger("transformers")
if not any(isinstance(f, _NoTorchAdvice) for f in _transformers_logger.filters):
    _transformers_logger.addFilter(_NoTorchAdvice())


def load_policy(*args, **kwargs):
    """See `agentic_rl.models.loading.load_policy`."""
    from agentic_rl.models.loading import load_policy as _load

    return _load(*args, **kwargs)


__all__ = ["__version__", "load_policy"]
