"""Two agents of the tiny random model learn guess-the-number as a team (GuessTeam,
agentic_rl/agents/teams.py): credit between agents on CPU in minutes.

Command:

    python -m agentic_rl.train --config experiments/tiny_team.py:both \
        --workdir runs/tiny_team_both

The opener makes the first guess of a secret in [1, 3]; the game answers "correct",
"higher" or "lower"; the closer sees only "<first guess> <answer>" and gives the team's
final guess (reward 1 if it is the secret). Best play (opener "2"; closer repeats it,
or moves up or down) wins every game; an opener fixed on an end caps the team at 2/3;
a closer that ignores the answer, at 1/3 per fixed guess. Each agent has its own LoRA
adapter over the shared frozen random base, trained in one jitted GRPO update; rows are
grouped by (task, agent).

Variants (the arms meant for a `multi_agent` ablation family; see the result below):
  both            per-agent adapters, both trained, team reward (default)
  closer          only the closer trained (the opener acts with its untrained adapter)
  shared          one adapter shared by both agents, both trained
  own             each agent rewarded for its own guess only (team_reward_weight 0;
                  GuessTeam(own_weight=1)): the obvious per-agent reward, misaligned for
                  the opener, whose guess matters only as information
  counterfactual  team reward minus each agent's counterfactual baseline
                  (agent.credit, runtime.counterfactual_baselines)

Expected result: none yet; the per-agent LoRA team does not learn this game. Measured on
the 2-core CPU (2026-12-06, seed 0, ~60 s a 30-step run; eval = greedy team success on
the 64 held-out games):
- `:both` (LoRA rank 16, alpha 32, lr 1e-2): eval 0.0 at step 0, 0.36 from step 5 (the
  closer's greedy guess became a digit), 0.33 at step 30; training success 1-4 % at
  every step (8 of 30 steps had no success at all, train/zero_grad).
- the same with lr 3e-2 (40 steps): 0.36 from step 5, 0.33 at 30-40; with lr 3e-2 and
  alpha 64: 0.31-0.36 through step 15. Training success stayed at 0-4 %.
- full fine-tuning of one shared model instead (`:shared --config.model.lora_rank=0
  --config.optim.learning_rate=0.003`): eval 0.31 at step 5, **0.67 from step 15 to 30**
  (the fixed-opener plateau), training success 0.03 -> 0.59 at step 25.
So the game is learnable by the tiny model, but LoRA adapters over its random, frozen
base (embeddings and output head included) did not move the sampled success in 30-40
steps. The `multi_agent` ablation family needs a base that LoRA can steer (a pretrained
model, or a tiny model pre-trained to emit digits) before its arms compare anything.
"""

from agentic_rl.train.config import default_config

VARIANTS = ("both", "closer", "shared", "own", "counterfactual")
INSTRUCTIONS = "Guess my number from {low} to {high}."


def get_config(variant: str | None = None):
    c = default_config()
    c.seed = 0
    c.model.name = "tiny"
    c.model.chat_format = "chatml"
    # LoRA on a random base: rank 16 of d=64 leaves the adapters room to learn
    c.model.lora_rank = 16
    c.model.lora_alpha = 32.0
    c.model.lora_adapters = "per_agent"

    c.env.name = "guess_number"  # the tasks (secrets); the team plays them
    c.env.kwargs = {"low": 1, "high": 3, "max_guesses": 2, "num_train": 512, "num_eval": 64,
                    "instructions": INSTRUCTIONS}

    c.agent.program = "guess_team"
    c.agent.names = "opener,closer"
    c.agent.rows_per_episode = 2  # one row per agent
    c.agent.timeout_s = 300.0

    c.rollout.tasks_per_step = 16
    c.rollout.group_size = 8
    c.rollout.max_turns = 1  # one call per agent
    c.rollout.max_new_tokens = 1  # a guess is one character
    c.rollout.max_episode_tokens = 64
    c.rollout.length_bucket = 64

    c.rl.algo = "grpo"
    c.optim.learning_rate = 1e-2
    c.train.max_steps = 30
    c.train.num_epochs = 2
    c.train.num_minibatches = 4
    c.eval.every = 5
    c.eval.num_episodes = 64
    c.eval.at_start = True
    c.eval.num_trajectories = 4
    c.checkpoint.every = 1000
    c.checkpoint.keep = 1
    c.checkpoint.export_final = False
    c.log.progress = False
    c.log.tensorboard = False

    if variant in (None, "", "both"):
        pass
    elif variant == "closer":
        c.agent.train_agents = "closer"
    elif variant == "shared":
        c.model.lora_adapters = "shared"
    elif variant == "own":
        c.agent.kwargs = {"own_weight": 1.0}
        c.agent.team_reward_weight = 0.0
    elif variant == "counterfactual":
        c.agent.credit = "counterfactual"
    else:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return c
