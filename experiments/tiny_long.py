"""A tiny random model on a 30-turn corridor walk (signal_walk), under each context strategy.

Commands (one variant each; the ablation family `context` in experiments/ablations.py
runs them all over seeds):

    python -m agentic_rl.train --config experiments/tiny_long.py:full \
        --workdir runs/tiny_long_full
    python -m agentic_rl.train --config experiments/tiny_long.py:window \
        --workdir runs/tiny_long_window
    (variants: full, window, memory, summarize, episode_credit (= full), turn_credit)

The policy is the `tiny` random model (character tokenizer, 2 layers, d=64, full
fine-tuning), one character per turn. The walk (agentic_rl/envs/suites/signal_walk.py):
30 cells, 40 turns; each turn `a` or `b`, the observation is the current cell's sign (one
character, which letter moves forward); reward 1/30 per step forward, +1 at the end. A
fixed letter gets stuck at the first cell whose sign differs; a uniformly random a/b
policy succeeds with probability 0.0011; reading the latest observation solves it in 30
turns. With chatml each turn costs ~23 tokens (1 sampled, the rest template and
observation), so the full context grows to ~1000 tokens by turn 40.

Variants:
- full: one row per episode (max_episode_tokens 1024).
- window: prompt + the last 2-9 turns (keep_turns 2, rewrite_every 8): up to 5 rows per
  episode of at most 320 tokens.
- memory: window + the `memory` tool's notes slot. A char model never writes the JSON
  tool call, so the slot stays "(none)": window plus a longer prompt.
- summarize: window + at each rewrite one extra sampled turn, the summary. With
  max_new_tokens 1 the summary is one character.
  The three rewriting strategies train with turn-level credit (as turn_credit), the
  credit that learns the walk with the full context; episode-level credit does not.
- episode_credit / turn_credit: GRPO with outcome-level advantages (= full) vs
  `rl.advantage.level=turn` (turn k's return-to-go against turn k of the group).
- ppo: full context, PPO with a value head on the shared trunk and token-level GAE
  (lam 0.95): per-step credit from a learned baseline.

Measured (2026-12-03, `python scripts/ablate.py --family context --seeds 0 1 2 ...`,
docs/ablations.md "context"; 2-core CPU, two runs at a time; 40 steps each):
- untrained: greedy eval success 0 and return 0 (it answers other characters).
- turn_credit (full context): greedy eval 1.0 (return 2.0, every held-out walk in 30
  turns) on seeds 0, 1 and 2, at step 40, 30 and 30; ~12 s per step.
- full (= episode_credit): greedy eval 0 on all 3 seeds through step 40; training return
  0.64 +- 0.02, the a/b-at-random plateau (random a/b gets 0.67).
- window (turn credit): eval 1.0 at step 30 on seeds 1 and 2, 0 at step 40 on seed 0;
  1194 tokens/episode (up to 5 rows), ~20 s per step.
- summarize (turn credit, seed 0 only): eval 1.0 at step 30; 2067 tokens/episode, ~58 s
  per step. memory (turn credit, seed 0 only): eval 0 at step 40; 2589 tokens/episode,
  ~40 s per step (its notes slot is never written by a char model).
- ppo: not rerun (an earlier 12-step run was behind the GRPO arms at step 12).
"""

from agentic_rl.train.config import default_config

VARIANTS = ("full", "window", "memory", "summarize", "episode_credit", "turn_credit", "ppo")
LENGTH = 30
MAX_TURNS = 40


def get_config(variant: str | None = None):
    c = default_config()
    c.seed = 0
    c.model.name = "tiny"
    c.model.chat_format = "chatml"
    c.model.lora_rank = 0  # a random model: train every weight

    c.env.name = "signal_walk"
    c.env.kwargs = {"length": LENGTH, "max_turns": MAX_TURNS, "sign_every": 1,
                    "num_train": 512, "num_eval": 32}

    c.rollout.tasks_per_step = 4
    c.rollout.group_size = 8
    c.rollout.max_turns = MAX_TURNS
    c.rollout.max_new_tokens = 1  # a step is one character
    c.rollout.max_episode_tokens = 1024
    c.rollout.length_bucket = 1024
    c.rollout.context.keep_turns = 2
    c.rollout.context.rewrite_every = 8

    c.rl.algo = "grpo"
    c.optim.learning_rate = 3e-3
    c.train.max_steps = 40
    c.train.num_epochs = 1
    c.train.num_minibatches = 2
    c.eval.every = 10
    c.eval.num_episodes = 16
    c.eval.at_start = True
    c.eval.num_trajectories = 2
    c.checkpoint.every = 1000
    c.checkpoint.keep = 1
    c.checkpoint.export_final = False
    c.log.progress = False
    c.log.tensorboard = False

    if variant in (None, "", "full", "episode_credit"):
        pass
    elif variant in ("window", "memory", "summarize"):
        c.rollout.context.strategy = variant
        c.rl.advantage.level = "turn"  # the credit that learns the walk (see above)
        # rows of at most keep_turns + rewrite_every = 10 turns (~23 tokens each) after the
        # prompt; memory adds its tool prompt and summarize its request (~250 characters)
        c.rollout.max_episode_tokens = 320 if variant == "window" else 640
        c.rollout.length_bucket = c.rollout.max_episode_tokens
    elif variant == "turn_credit":
        c.rl.advantage.level = "turn"
    elif variant == "ppo":
        c.rl.algo = "ppo"  # value head on the shared trunk, token-level GAE
        c.rl.advantage.lam = 0.95
    else:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return c
