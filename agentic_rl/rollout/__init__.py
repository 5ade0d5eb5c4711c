"""The rollout loop: runs many episodes concurrently and lays them out as an `EpisodeBatch`
with exact tokens (each segment tokenized once; see `chat_format` and `loop`).

Imports: the rollout modules only (their public names).
"""

from agentic_rl.rollout.batch import (
    EpisodeBatch,
    EpisodeRecord,
    HostMetadata,
    collate,
    pad_rows,
    share_prefix,
    validate_episode_batch,
)
from agentic_rl.rollout.chat_format import ChatMLFormat, make_chat_format
from agentic_rl.rollout.evaluate import EvalReport, eval_metrics, evaluate_policy
from agentic_rl.rollout.loop import (
    EpisodeError,
    ErrorBudgetExceeded,
    RolloutConfig,
    RolloutResult,
    episode_seed,
    run_episodes,
)
from agentic_rl.rollout.metrics import episode_metrics
from agentic_rl.rollout.policy import (
    Generation,
    GenerationRequest,
    PolicyContractError,
    RolloutPolicy,
    ScriptedPolicy,
    check_generation,
)
from agentic_rl.rollout.tokenizer import CharTokenizer, HFTokenizer, Tokenizer, as_tokenizer

__all__ = [
    "ChatMLFormat",
    "CharTokenizer",
    "EpisodeBatch",
    "EpisodeError",
    "EpisodeRecord",
    "ErrorBudgetExceeded",
    "EvalReport",
    "Generation",
    "GenerationRequest",
    "HFTokenizer",
    "HostMetadata",
    "PolicyContractError",
    "RolloutConfig",
    "RolloutPolicy",
    "RolloutResult",
    "ScriptedPolicy",
    "Tokenizer",
    "as_tokenizer",
    "check_generation",
    "collate",
    "pad_rows",
    "share_prefix",
    "episode_metrics",
    "eval_metrics",
    "episode_seed",
    "evaluate_policy",
    "make_chat_format",
    "run_episodes",
    "validate_episode_batch",
]
