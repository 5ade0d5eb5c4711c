"""The rollout's contract: episodes laid out as an `EpisodeBatch` with exact tokens (each
segment tokenized once; see `chat_format`), the policy protocol the runtime samples
from (`policy`, `sampler_policy`), what a rollout is configured with and returns
(`types`), and episode metrics (`metrics`).

The runtime that runs episodes is one level up, in `agentic_rl.agents` (`run_agents`;
`run_episodes` and `evaluate_policy` for our environments, in `agents.env_rollout`):
an environment episode is one agent program among others, so the rollout layer holds
only what every runtime and the layers below the agents share.

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
from agentic_rl.rollout.metrics import (
    EvalReport,
    episode_metrics,
    episode_summaries,
    eval_metrics,
)
from agentic_rl.rollout.policy import (
    Generation,
    GenerationRequest,
    PolicyContractError,
    RolloutPolicy,
    ScriptedPolicy,
    check_generation,
)
from agentic_rl.rollout.tokenizer import CharTokenizer, HFTokenizer, Tokenizer, as_tokenizer
from agentic_rl.rollout.types import (
    ContextConfig,
    EpisodeError,
    ErrorBudgetExceeded,
    RolloutConfig,
    RolloutResult,
    episode_seed,
)

__all__ = [
    "ChatMLFormat",
    "CharTokenizer",
    "ContextConfig",
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
    "episode_summaries",
    "eval_metrics",
    "episode_seed",
    "make_chat_format",
    "validate_episode_batch",
]
