"""Training: TrainState, the jitted update step, the outer loop, checkpoints, metrics, CLI.

    python -m agentic_rl.train --config experiments/<name>.py[:variant] --workdir DIR \\
        [--config.rl.kl_coef=0.01 ...]

or from Python, `AgentTrainer(model=..., environment=..., algo="grpo").train(episodes=500)`.

Imports: the train modules only (their public names).
"""

from agentic_rl.train.config import ConfigError, default_config, validate
from agentic_rl.train.config_files import apply_overrides
from agentic_rl.train.facade import AgentTrainer
from agentic_rl.train.loop import NonFiniteError, Trainer
from agentic_rl.train.state import TrainState, init_train_state, make_mesh, make_optimizer
from agentic_rl.train.step import StepConfig, TrainBatch, minibatch_update, train_on_batch

__all__ = [
    "AgentTrainer", "ConfigError", "NonFiniteError", "StepConfig", "TrainBatch", "TrainState",
    "Trainer", "apply_overrides", "default_config", "init_train_state", "make_mesh",
    "make_optimizer", "minibatch_update", "train_on_batch", "validate",
]
