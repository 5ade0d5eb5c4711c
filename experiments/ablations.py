"""Ablation families on the tiny guess-number learner (`experiments/tiny_learning.py`) and
on the tiny 30-turn corridor walk (`experiments/tiny_long.py`: family `context`).

Each family compares a few *arms*; an arm is a variant of that config plus config
overrides, so every run is an ordinary trainer run (its workdir holds config.json).
Arms shared by several families (the GRPO baseline is in most of them) are named once in
ARMS and run once per seed. `scripts/ablate.py` runs them and writes the tables and plots:

    python scripts/ablate.py --family algo --seeds 0 1 2 --out runs/ablations/algo
    python scripts/ablate.py --family obs_mask --seeds 0 1 2 --out runs/ablations/obs_mask
    python scripts/ablate.py --family grpo_vs_drgrpo --seeds 0 1 2 \
        --out runs/ablations/grpo_vs_drgrpo
    python scripts/ablate.py --family group_size --seeds 0 1 2 --out runs/ablations/group_size
    python scripts/ablate.py --family kl --seeds 0 1 2 --out runs/ablations/kl
    python scripts/ablate.py --family credit --seeds 0 1 2 --out runs/ablations/credit
    python scripts/ablate.py --family async --seeds 0 1 2 --out runs/ablations/async
    python scripts/ablate.py --family context --seeds 0 1 2 --out runs/ablations/context \
        --figure-dir docs/figures/ablations
    python scripts/ablate.py --family all --seeds 0 1 2 --out runs/ablations

Every guess-number run trains 30 steps of 128 episodes (see tiny_learning.py), the
`async` family's 50 (stale batches learn slower); the `context` family's runs are much
longer (40 turns an episode, see tiny_long.py). Results and their reading:
docs/ablations.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE_CONFIG = Path(__file__).with_name("tiny_learning.py")
LONG_CONFIG = Path(__file__).with_name("tiny_long.py")
EPISODES_PER_STEP = 128  # tiny_learning.py: 16 tasks x 8 episodes


@dataclass(frozen=True)
class Arm:
    """One configuration: a variant of `config` (default BASE_CONFIG) plus dotted-key
    overrides."""

    variant: str
    overrides: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    config: Path | None = None


def _group(size: int) -> dict[str, Any]:
    """Group size at a fixed 128 episodes per step: the compute per step and the number of
    samples behind each update stay equal, only how they split into groups changes."""
    return {"rollout.group_size": size, "rollout.tasks_per_step": EPISODES_PER_STEP // size}


# A guess is one sampled token per turn (max_turns 2), so an episode samples at most 2.
MAX_SAMPLED_TOKENS = 2

ARMS: dict[str, Arm] = {
    "grpo": Arm("grpo", note="GRPO, outcome-level advantages, token-mean loss (baseline)"),
    "ppo": Arm("ppo", note="PPO: value head on the shared trunk, token-level GAE (lam 0.95)"),
    "train_on_obs": Arm("grpo", {"rl.train_on_observations": True},
                        note="the loss also covers the environment's tokens between turns"),
    "dr_grpo": Arm("grpo", {"rl.advantage.estimator": "dr_grpo",
                            "rl.loss.aggregation": "seq_sum_const",
                            "rl.loss.loss_norm_const": float(MAX_SAMPLED_TOKENS)},
                   note="no group-std division; token sums / (episodes x max sampled tokens)"),
    "group4": Arm("grpo", _group(4), note="32 tasks x 4 episodes"),
    "group16": Arm("grpo", _group(16), note="8 tasks x 16 episodes"),
    "kl0.01": Arm("grpo", {"rl.kl_coef": 0.01},
                  note="k3 KL to the initial weights in the loss, coefficient 0.01"),
    "turn_credit": Arm("grpo", {"rl.advantage.level": "turn"},
                       note="turn k's return-to-go vs turn k of the other episodes"),
    # the 30-turn corridor walk (tiny_long.py); long_full is also its episode-level arm
    "long_full": Arm("full", config=LONG_CONFIG,
                     note="walk: full context (one row), GRPO outcome-level credit"),
    # the rewriting strategies' variants train with turn-level credit (tiny_long.py)
    "long_window": Arm("window", config=LONG_CONFIG,
                       note="walk: prompt + last 2-9 turns (rewrite every 8), turn credit"),
    "long_memory": Arm("memory", config=LONG_CONFIG,
                       note="walk: window + a notes slot (never written: '(none)'), "
                            "turn credit"),
    "long_summarize": Arm("summarize", config=LONG_CONFIG,
                          note="walk: window + a one-character self-written summary, "
                               "turn credit"),
    "long_turn_credit": Arm("turn_credit", config=LONG_CONFIG,
                            note="walk: full context, GRPO turn-level credit"),
    "grpo50": Arm("grpo", {"train.max_steps": 50, "optim.schedule": "cosine",
                           "rl.loss.policy_loss": "asym_clip"},
                  note="synchronous GRPO, 50 steps, cosine + clip-higher (the async arms' "
                       "settings)"),
    "async1": Arm("grpo_async1", note="asynchronous, batch j sampled by the weights of step "
                                      "j - 1, TIS (cap 2) against the sampler"),
    "async2": Arm("grpo_async2", note="asynchronous, staleness 2, TIS (cap 2)"),
    "async2_nocorr": Arm("grpo_async2_nocorr",
                         note="asynchronous, staleness 2, no off-policy correction"),
    "long_ppo": Arm("ppo", config=LONG_CONFIG,
                    note="walk: full context, PPO (value head, token-level GAE, lam 0.95)"),
}


@dataclass(frozen=True)
class Family:
    """A question and the arms (label -> ARMS key) that answer it."""

    question: str
    arms: dict[str, str]


FAMILIES: dict[str, Family] = {
    "algo": Family("GRPO vs PPO", {"grpo": "grpo", "ppo": "ppo"}),
    "obs_mask": Family(
        "loss on the policy's tokens only (masked) vs also on observation tokens",
        {"masked": "grpo", "train_on_obs": "train_on_obs"}),
    "grpo_vs_drgrpo": Family(
        "GRPO vs Dr.GRPO (no std normalisation, constant loss normaliser)",
        {"grpo": "grpo", "dr_grpo": "dr_grpo"}),
    "group_size": Family(
        "group size 4 / 8 / 16 at a fixed 128 episodes per step",
        {"4": "group4", "8": "grpo", "16": "group16"}),
    "kl": Family("KL coefficient 0 vs 0.01", {"0": "grpo", "0.01": "kl0.01"}),
    "credit": Family(
        "episode-level vs turn-level credit on the dense-reward game (GRPO)",
        {"episode": "grpo", "turn": "turn_credit"}),
    "async": Family(
        "synchronous vs asynchronous (staleness 1 and 2) GRPO, with and without the "
        "off-policy correction",
        {"sync": "grpo50", "S=1, TIS": "async1", "S=2, TIS": "async2",
         "S=2, no correction": "async2_nocorr"}),
    "context": Family(
        "context strategies full / window / memory / summarize (turn-level credit), and "
        "episode- vs turn-level credit with the full context, on the 30-turn dense-reward "
        "corridor walk",
        {"full, episode credit": "long_full", "full": "long_turn_credit",
         "window": "long_window", "memory": "long_memory", "summarize": "long_summarize"}),
}


def family_names() -> list[str]:
    return list(FAMILIES)


def get_family(name: str) -> Family:
    """The family called `name`; a clear error listing the valid names otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown ablation family {name!r}; valid: {', '.join(FAMILIES)}, all")
    return FAMILIES[name]
