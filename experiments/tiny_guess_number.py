"""A random tiny model on guess-the-number: the trainer's end-to-end smoke test (CPU, ~1 min).

Command:

    python -m agentic_rl.train --config experiments/tiny_guess_number.py:grpo \
        --workdir runs/tiny_guess_number_grpo

Variants: grpo (default, LoRA rank 4), ppo (value head + GAE, full fine-tuning, KL to a
frozen reference copy), grpo_kl_reward (KL as a per-token reward penalty).

Expected result: the run completes with finite losses, checkpoints every step,
metrics in metrics.jsonl and trajectories at each evaluation. A random character-level
model does not learn the game in a few steps (success rate stays near 0); this config
exists to exercise every code path quickly, and tests/train runs it.
"""

from agentic_rl.train.config import default_config


def get_config(variant: str | None = None):
    c = default_config()
    c.seed = 0
    c.model.name = "tiny"
    c.model.chat_format = "chatml"
    c.model.lora_rank = 4
    c.model.lora_alpha = 8.0

    c.env.name = "guess_number"
    c.env.kwargs = {"low": 1, "high": 8, "max_guesses": 3, "num_train": 64, "num_eval": 8}

    c.rollout.tasks_per_step = 2
    c.rollout.group_size = 4
    c.rollout.max_turns = 3
    c.rollout.max_new_tokens = 8
    c.rollout.max_episode_tokens = 640
    c.rollout.length_bucket = 640  # one sequence length, hence one compilation
    # Every sampler call waits for every live episode (the game answers at once), so the
    # calls, hence the float rounding, do not depend on timing: with the default 0.2 s a
    # kill-and-resume test on the loaded CI machine once differed from the uninterrupted
    # run in train/behav_kl by 1e-14 (see experiments/tiny_learning.py for the measurement).
    c.rollout.straggler_wait_s = 60.0

    c.rl.algo = "grpo"
    c.optim.learning_rate = 1e-2
    c.train.max_steps = 4
    c.train.num_minibatches = 2
    c.eval.every = 2
    c.eval.num_episodes = 4
    c.checkpoint.every = 1
    c.checkpoint.keep = 2
    c.checkpoint.best_metric = "eval/mean_return"
    c.log.progress = False

    if variant in (None, "", "grpo"):
        pass
    elif variant == "ppo":
        c.rl.algo = "ppo"
        c.model.lora_rank = 0
        c.rl.kl_coef = 0.05
        c.rl.advantage.lam = 0.95
        c.train.num_epochs = 2
        c.optim.learning_rate = 1e-3
    elif variant == "grpo_kl_reward":
        c.rl.kl_coef = 0.05
        c.rl.kl_mode = "reward"
    else:
        raise ValueError(f"unknown variant {variant!r}; valid: grpo, ppo, grpo_kl_reward")
    return c
