"""A SQL writer and a checker (agentic_rl/agents/teams.py: SqlTeam) trained together on the
generated text2sql databases, with SmolLM2-135M-Instruct: one LoRA adapter per agent over
the shared frozen base, both trained in the same jitted GRPO update.

Command:

    python -m agentic_rl.train --config experiments/sql_team.py:both \
        --workdir runs/sql_team_both

The writer sees the database schema and drafts a query in <answer></answer>; the checker
runs the draft with the read-only run_sql tool and replies ACCEPT or a critique; the
writer revises once. Team reward: execution match of the last draft (the text2sql
scorer); the checker also earns 0.5 per right verdict. Rows: one per agent per episode,
grouped by (task, agent), so each agent's GRPO baseline is over its own rows.

Variants:
  both     per-agent adapters, both agents trained (default)
  writer   per-agent adapters, only the writer trained (the checker acts, frozen)
  shared   one adapter shared by both agents, both trained
  smoke    `both` for 2 steps of 2 tasks, 4 evaluation episodes (a CPU check)

Expected result: no learning result yet. Measured so far, `:smoke` on the 2-core CPU
(2026-12-02, before the prompts had worked examples): 21 min wall for 2 steps of 16
episodes (32 rows) and a 4-episode evaluation; a step took 498-550 s (rollout 289 s: four
sequential calls per episode, up to 96 tokens each; update 207 s); success 0/16 and 0/4:
the untrained writer answered in prose ("The maximum price ... is 2001."), never in
<answer>SQL</answer>, so every group's reward was equal and GRPO had no gradient
(train/zero_grad 1). The writer's and checker's prompts now carry worked examples
(SqlTeam(examples=True)) and a query after an unclosed <answer> tag counts. Greedy
evaluation of the untrained system with them, 16 held-out episodes (Trainer(cfg).evaluate()
with eval.num_episodes=16): success 0/16 again (658 s and 748 s wall, two runs); some
drafts are SQL now ("<answer>SELECT COUNT(*) FROM employees WHERE salary > 67776;") but
none matched, the revisions fall back to prose, and the checker never called run_sql.
With no success to compare, GRPO has no signal here: the next step is to make the task
reachable for a 135M model (demonstrations as chat turns, as the calculator needed; one-
table questions first; or a short supervised warm-up), then the `both` / `writer` /
`shared` runs (about 8 min a step: 8 steps is about 70 min).
"""

from agentic_rl.train.config import default_config


def get_config(variant: str | None = None):
    c = default_config()
    c.seed = 0
    c.model.name = "smollm2-135m-instruct"
    c.model.chat_format = "smollm2"
    c.model.lora_rank = 8
    c.model.lora_alpha = 16.0
    c.model.lora_adapters = "per_agent"

    c.env.name = "text2sql"  # the tasks (questions, databases, gold queries)
    c.env.kwargs = {"num_train_dbs": 8, "num_eval_dbs": 4, "questions_per_db": 16}

    c.agent.program = "sql_team"
    c.agent.names = "writer,checker"
    c.agent.rows_per_episode = 2  # one row per agent
    c.agent.timeout_s = 1800.0

    c.rollout.tasks_per_step = 4
    c.rollout.group_size = 8
    c.rollout.max_turns = 4  # per agent: the checker's tool call + verdict, 2 drafts
    c.rollout.max_new_tokens = 96
    c.rollout.max_episode_tokens = 1536
    c.rollout.length_bucket = 128
    c.rollout.temperature = 1.0

    c.rl.algo = "grpo"
    c.optim.learning_rate = 5e-4
    c.optim.warmup_steps = 2

    c.train.max_steps = 8
    c.train.micro_batch_size = 8
    c.train.score_batch_size = 8
    c.train.reuse_sample_logprobs = True

    c.eval.every = 8
    c.eval.num_episodes = 32
    c.eval.at_start = True
    c.checkpoint.every = 4
    c.checkpoint.keep = 2

    if variant in (None, "", "both"):
        pass
    elif variant == "writer":
        c.agent.train_agents = "writer"
    elif variant == "shared":
        c.model.lora_adapters = "shared"
    elif variant == "smoke":
        c.rollout.tasks_per_step = 2
        c.train.max_steps = 2
        c.eval.every = 2
        c.eval.num_episodes = 4
        c.eval.at_start = False
    else:
        raise ValueError(f"unknown variant {variant!r}; valid: both, writer, shared, smoke")
    return c
