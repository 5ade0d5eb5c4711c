"""agentic_rl: JAX-native reinforcement learning for multi-turn, tool-using LLM agents.

Heavy submodules load lazily, so `import agentic_rl` stays cheap and the
environment layer can be used without importing JAX.
"""

__version__ = "0.1.0"


def load_policy(*args, **kwargs):
    """See `agentic_rl.models.loading.load_policy`."""
    from agentic_rl.models.loading import load_policy as _load

    return _load(*args, **kwargs)


__all__ = ["__version__", "load_policy"]
