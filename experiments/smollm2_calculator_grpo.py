"""SmolLM2-135M-Instruct learns to use the calculator tool, with GRPO + LoRA on CPU.

Command (the README's main job):

    python -m agentic_rl.train --config experiments/smollm2_calculator_grpo.py \
        --workdir runs/smollm2_calculator_grpo

Variants (append `:NAME` to the config path):
    (none)  GRPO, LoRA rank 8, 4 tasks x 4 episodes per step, 8 steps
    ppo     PPO with a value head on the shared trunk and GAE
    full    full fine-tuning (no LoRA) with the KL reference as a frozen copy
    smoke   2 steps, to check the set-up

Expected result: not yet measured end to end. What was measured (2026-11-21, a 2-core
CPU shared with other jobs): the `:smoke` variant (2 steps) took 19 min wall, the first
step mostly XLA compilation, the second 437 s (update 265 s, rollout 169 s); untrained
SmolLM2 almost never calls the calculator tool (eval success 0-6%), so with GRPO most
groups have zero advantage early on. The full 8-step run and its learning curve are
issue #8's job.
"""

from agentic_rl.train.config import default_config

EXPECTED = "unmeasured: see the module docstring"


def get_config(variant: str | None = None):
    c = default_config()
    c.seed = 0
    c.model.name = "smollm2-135m-instruct"
    c.model.chat_format = "smollm2"
    c.model.lora_rank = 8
    c.model.lora_alpha = 16.0

    c.env.name = "calculator"
    c.env.kwargs = {"min_ops": 1, "max_ops": 2, "num_train": 500, "num_eval": 16}

    c.rollout.tasks_per_step = 4
    c.rollout.group_size = 4
    c.rollout.max_turns = 3
    c.rollout.max_new_tokens = 48
    c.rollout.max_episode_tokens = 576
    c.rollout.length_bucket = 128  # few distinct lengths, hence few compilations
    c.rollout.temperature = 1.0

    c.rl.algo = "grpo"
    c.rl.kl_coef = 0.0
    c.rl.loss.policy_loss = "ppo"
    c.rl.loss.aggregation = "token_mean"

    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 2
    c.optim.max_grad_norm = 1.0

    c.train.max_steps = 8
    c.train.num_epochs = 1
    c.train.num_minibatches = 1
    c.train.micro_batch_size = 4
    c.train.score_batch_size = 8
    c.train.reuse_sample_logprobs = True  # one epoch, T=1 sampling: skip the scoring pass

    c.eval.every = 8
    c.eval.num_episodes = 16
    c.eval.at_start = True
    c.checkpoint.every = 3
    c.checkpoint.keep = 2

    if variant in (None, "", "grpo"):
        pass
    elif variant == "ppo":
        c.rl.algo = "ppo"
        c.rl.advantage.gamma = 1.0
        c.rl.advantage.lam = 0.95
        c.rl.vf_coef = 0.1
    elif variant == "full":
        c.model.lora_rank = 0
        c.optim.learning_rate = 1e-6
        c.rl.kl_coef = 0.01
    elif variant == "smoke":
        c.train.max_steps = 2
        c.eval.every = 2
        c.eval.num_episodes = 4
        c.eval.at_start = False
    else:
        raise ValueError(f"unknown variant {variant!r}; valid: grpo, ppo, full, smoke")
    return c
