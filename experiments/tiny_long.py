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

Measured (2026-12-03, seed 0 only, 2-core dev CPU shared with a CI run and a benchmark,
load average 8-13 for most of it, `nice -n 10`, up to 4 runs at once; 35-60 min wall per
40-step run, 15-30 s per step once the machine was quiet):
- untrained: greedy eval success 0 and return 0 (it answers other characters).
- turn_credit: greedy eval success 0 at steps 0-30, 1.0 at step 40 (return 2.0, every
  held-out walk in 30 turns). Training success 0 until step 30, then 0.19 (step 33),
  0.72 (36), 0.97 (38), 1.0 (40).
- full (= episode_credit): greedy eval 0 at every eval through step 40. Training return
  ~0.6 from step 20 on: it answers a/b but ignores the sign (random a/b gets 0.67). A
  greedy wrong letter gets the same observation back and repeats, so eval return 0.025.
- ppo: 12 steps (stopped), behind the GRPO arms at step 12. window / memory / summarize:
  3 / 2 / 2 steps, for cost only. Tokens per episode: full ~960-1015 (one row), window
  1283 (up to 5 rows, rollout 2.5-3.5x slower), memory 2647 (its tool prompt in every
  row, notes never written), summarize ~2200 (its request and a one-character summary
  at each rewrite). Table: docs/ablations.md, "context".
Later the same day, on a quieter machine (a CI run alongside, `nice -n 19`, ~30 s/step):
- turn_credit seed 1 (`--config.seed=1`): greedy eval 0 at steps 0, 10, 20, **1.0 at 30
  and 40** (return 2.0); training success 0 until step 24, 0.31 (25), 0.84 (27), 0.97 (30).
- full (= episode_credit) seed 1 (`--config.seed=1`, alongside a CI run): greedy eval 0
  at steps 0, 10, 20, 30 and 40 (return 0.025); training success 0 throughout, training
  return 0.53 at step 20 and 0.66 at step 40: the a/b-at-random plateau again.
So on seeds 0 and 1 turn-level credit learned the walk (eval 1.0) and episode-level
credit did not (eval 0). Not run: seed 2, and seeds 1-2 of window, memory, summarize, ppo.
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
