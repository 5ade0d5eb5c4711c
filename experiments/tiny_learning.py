"""A tiny random model learns guess-the-number from scratch, with GRPO and with PPO (CPU, ~2 min).

Commands:

    python -m agentic_rl.train --config experiments/tiny_learning.py:grpo \
        --workdir runs/tiny_learning_grpo
    python -m agentic_rl.train --config experiments/tiny_learning.py:ppo \
        --workdir runs/tiny_learning_ppo
    python -m agentic_rl.train --config experiments/tiny_learning.py:ppo_separate \
        --workdir runs/tiny_learning_ppo_separate
    python -m agentic_rl.train --config experiments/tiny_learning.py:grpo_async1 \
        --workdir runs/tiny_learning_async1     # also grpo_async2, grpo_async2_nocorr

The policy is the `tiny` random model (character tokenizer, 2 layers, d=64, full
fine-tuning: LoRA on random weights would only restrict it). The game: a secret in
[1, 3], two guesses, one character per turn. Binary search ("2", then "1" or "3" by the
feedback) always wins; the best *fixed* sequence ("2" then "1") wins only when the secret
is 1 or 2: 69% of the 64 held-out games. So eval success >= 0.9 means the policy reads
the environment's feedback. tests/train/test_learning.py runs both variants.

Two environment settings make this learnable in minutes by a character-level model:
- a short prompt (`instructions`): the default one is ~250 characters, hence tokens;
- feedback words "higher" / "lower". The default sentences ("2 is too low. The number is
  higher." / "2 is too high. The number is lower.") are anagrams of each other. A random
  model's last position starts out averaging its context, so it sees the same bag of
  characters after both: its next-character probabilities after the two stayed equal to
  two decimals through a 60-step GRPO run, and runs of 60-100 steps never got past a
  fixed guess sequence (eval 0.66-0.75). Telling word order apart needs attention
  patterns that reward alone did not teach within the budget.

Expected result, measured by running this config through the Trainer with seed S (the
same as the commands above plus `--config.seed=S`; runs are deterministic on one machine,
see `rollout.straggler_wait_s` below)
on the 2-core dev CPU shared with other jobs (load average 3-7, `nice -n 10`; wall times
include ~35 s of compilation):
- untrained policy: greedy eval success 0.0 at step 0 in every run; sampled success at
  step 1 between 0 and 1.6%.
- grpo: eval success >= 0.9 first at step 15, 20, 15, 20, 25, 20, 15 for seeds 0-6, 1.0
  at step 30; seed 7 stayed at 0.64 (always "2" then "3") through 45 steps. ~2 min/run
  (seed 0 alone, load average ~3.7: 82 s wall).
- ppo: first >= 0.9 at step 25, 20, 20, 25, 20 for seeds 0-4, 1.0 at step 30 in all.
  ~2 min/run (seed 0 alone, load average ~3.7: 84 s wall).
- seed 0 again after the trainer began skipping exactly-zero-gradient updates (commit
  582e419; 2 of GRPO's 240 updates were skipped): same curves, GRPO >= 0.9 at step 15 and
  PPO at step 25, both 1.0 at step 30; 62 s and 57 s wall on a quiet machine.
- ppo_separate (PPO with a separate critic: its own trunk, a copy of the initial policy,
  and its own optimizer chain at the same rate), seeds 0-2, against ppo re-run on the
  same code (2026-12-02): first >= 0.9 at step 20, 25 and never (seed 2: 0.33 until step
  25, 0.69 at 30) vs 20, 25, 25 for the shared value head (1.0 at step 30 in all three).
  No gain here: on this game the shared trunk's features serve both heads. Median update
  0.98 s vs 0.93 s (the critic's trunk pass and its parameters).
- grpo_async1 / grpo_async2 / grpo_async2_nocorr (asynchronous, staleness 1 and 2, TIS
  or no correction; 50 steps), seeds 0-2 (2026-12-04, docs/ablations.md `async`): eval
  success reached >= 0.9 in 3/3, 2/3 and 1/3 runs; final 1.0/1.0/0.69, 1.0/0.67/0.69 and
  0.64/0.67/1.0 (sync GRPO over 50 steps: 3/3, all 1.0). Seed 0: grpo_async1 at the
  fixed-guess plateau 0.69 from step 15 to 30, 1.0 from step 35; grpo_async2 1.0 from
  step 15. ~40 s/run. (These used the constant rate and symmetric clip of `grpo`.)
- The same seeds on a second machine (AMD EPYC, 2026-12-04 evening; XLA's float rounding
  differs between machines, so the same seed is not the same run there): grpo_async1
  seed 0 stayed at the 0.69 plateau through 50 steps and grpo_async2 seed 0 reached 1.0
  at step 15 and fell back to 0.69 at step 45 (training success 0.56 at step 50). Final
  eval, seeds 0/1/2, S=1 | S=2, after a sweep on that machine (`--config.seed=S` plus the
  overrides): entropy_coef 0.01: 0.69/1.0/1.0 | 1.0/0.67/0.69; asym_clip: 0.64 (1.0 from
  step 25 to 45)/1.0/1.0 | 1.0/0.67/1.0; cosine: 0.69/1.0/1.0 | 1.0/1.0/1.0; cosine +
  asym_clip: 1.0/1.0/1.0 | 1.0/0.67/1.0 (first >= 0.9 at step 20/20/20 | 25/never/20).
  The async variants now use cosine + asym_clip; the S=2 seed-1 run still plateaus.
"""

from agentic_rl.train.config import default_config

VARIANTS = ("grpo", "ppo", "ppo_separate", "grpo_async1", "grpo_async2", "grpo_async2_nocorr")
INSTRUCTIONS = "Guess my number from {low} to {high}."


def get_config(variant: str | None = None):
    c = default_config()
    c.seed = 0
    c.model.name = "tiny"
    c.model.chat_format = "chatml"
    c.model.lora_rank = 0  # a random model: train every weight

    c.env.name = "guess_number"
    c.env.kwargs = {"low": 1, "high": 3, "max_guesses": 2, "num_train": 512, "num_eval": 64,
                    "instructions": INSTRUCTIONS, "too_low_feedback": "higher",
                    "too_high_feedback": "lower"}

    # 128 episodes per step: with 64 (16 tasks x 4) the policy often settled on a fixed
    # guess sequence for tens of steps before it learned to read the feedback. Groups of
    # 8 and 8 smaller updates per step (2 epochs x 4 minibatches) made GRPO reliable.
    c.rollout.tasks_per_step = 16
    c.rollout.group_size = 8
    c.rollout.max_turns = 2
    c.rollout.max_new_tokens = 1  # a guess is one character
    c.rollout.max_episode_tokens = 96  # prompt 47 + 2 turns + one observation (26): 77
    c.rollout.length_bucket = 96  # one sequence length, hence one compilation
    # Every turn's sampler call waits for every live episode, so the calls, hence the
    # float rounding, do not depend on timing: with the default 0.2 s, two runs of grpo
    # started together on the 2-core machine differed from step 8 on (sampling
    # log-probs in the 7th significant digit first); with 60 s they were bit-identical
    # through 25 steps, and equal to a 0.2 s run that had not been split. The game
    # answers at once, so nothing waits long (env.step_latency_s: the slowest episode).
    c.rollout.straggler_wait_s = 60.0

    c.rl.algo = "grpo"
    c.optim.learning_rate = 3e-3
    c.train.max_steps = 30
    c.train.num_epochs = 2
    c.train.num_minibatches = 4
    c.eval.every = 5
    c.eval.num_episodes = 64
    c.eval.at_start = True  # the untrained policy's success, at step 0
    c.eval.num_trajectories = 4
    c.checkpoint.every = 1000  # the last step (and the best eval) are still saved
    c.checkpoint.keep = 1
    c.checkpoint.export_final = False
    c.log.progress = False
    c.log.tensorboard = False

    if variant in (None, "", "grpo"):
        pass
    elif variant == "ppo":
        c.rl.algo = "ppo"  # value head on the shared trunk, token-level GAE
        c.rl.advantage.lam = 0.95
        c.train.num_minibatches = 2  # 4 updates per step: 8 left 2 of 4 seeds unsolved
    elif variant == "ppo_separate":
        c = get_config("ppo")
        c.rl.critic = "separate"  # the critic's own trunk (a copy) and optimizer chain
    elif variant in ("grpo_async1", "grpo_async2"):
        # asynchronous: batch j sampled by the weights of step j - S while step j - 1
        # trains, with token-level truncated importance sampling against the sampler
        c.train.max_off_policy_steps = int(variant[-1])
        c.rl.loss.off_policy = "tis"
        c.train.max_steps = 50  # stale batches learn slower: 30 steps left 1-2 of 3 short
        # clip-higher (asym_clip: eps_high 0.28) against the fixed-guess plateau and a
        # cosine decay against late collapses: with the constant rate and symmetric clip,
        # seed 0 on a second machine stayed at 0.69 (S=1) or fell from 1.0 to 0.69 at
        # step 45 (S=2); see the docstring's sweep
        c.optim.schedule = "cosine"
        c.rl.loss.policy_loss = "asym_clip"
    elif variant == "grpo_async2_nocorr":
        c = get_config("grpo_async2")
        c.rl.loss.off_policy = "none"  # the same stale batches, no correction
    else:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return c
