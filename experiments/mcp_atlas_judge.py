"""Tasks generated from an MCP server, trained against that server with the judge as the
only reward: SmolLM2-135M-Instruct on the atlas server (agentic_rl/envs/tools/mcp/
atlas_server.py), end to end at tiny scale.

Commands:

    python scripts/mcp_tasks.py --n 24 --out runs/mcp_atlas/tasks.jsonl
    python -m agentic_rl.train --config experiments/mcp_atlas_judge.py \
        --workdir runs/mcp_atlas_judge

The first writes the tasks: SmolLM2 reads the server's tool list and proposes questions
with the call that answers them; a proposal is kept only if the call, run on the server,
succeeds and the question names its arguments without giving the result away
(agentic_rl/agents/task_gen.py). The second trains with GRPO on those tasks, the
server's tools live over stdio, and the reward is the relative judge's score (the policy
itself, frozen at each step, judging each group: `judge.w_verifier=0`). The environment's
own check, "grounded" (every word of the answer occurs in the reference call's result),
is measured but not trained on: it is what `eval/success` reports.

Variants: `judge` (default, judge reward only), `verifier` (the grounded check as the
reward, no judge: the comparison), `smoke` (1 step, 4 eval episodes).

Measured (2026-12-03, docs/results.md "Tasks from an MCP server"; 54 min wall at
`nice -n 19` beside other runs): task generation kept 24 of 44 proposals (11 add, 9
subtract, 4 list_cities); eval success 0/8 before and after 4 steps; the policy never
called a tool, and the judge (the policy itself) wrote no parseable scores for any group
(30 of 32 scores neutral, two zero-gradient steps). The pipeline works; SmolLM2-135M is
too weak here both as a tool user without demonstrations and as a judge.
"""

from agentic_rl.train.config import default_config

TASKS_FILE = "runs/mcp_atlas/tasks.jsonl"


def get_config(variant: str | None = None):
    c = default_config()
    c.seed = 0
    c.model.name = "smollm2-135m-instruct"
    c.model.chat_format = "smollm2"
    c.model.lora_rank = 8
    c.model.lora_alpha = 16.0

    c.env.name = "mcp"
    c.env.kwargs = {"server": "python -m agentic_rl.envs.tools.mcp.atlas_server stdio",
                    "tasks_file": TASKS_FILE, "eval_fraction": 0.34}

    c.rollout.tasks_per_step = 2
    c.rollout.group_size = 4
    c.rollout.max_turns = 3  # call a tool, maybe another, answer
    c.rollout.max_new_tokens = 64
    c.rollout.max_episode_tokens = 1024
    c.rollout.length_bucket = 128
    c.rollout.temperature = 1.0

    c.rl.algo = "grpo"
    c.optim.learning_rate = 5e-4
    c.optim.warmup_steps = 1
    c.train.max_steps = 4
    c.train.num_epochs = 1
    c.train.num_minibatches = 1
    c.train.micro_batch_size = 4
    c.train.reuse_sample_logprobs = True

    c.judge.enabled = True
    c.judge.source = "policy"
    c.judge.w_verifier = 0.0
    c.judge.w_judge = 1.0
    c.judge.max_new_tokens = 96
    c.judge.max_context_tokens = 2048

    c.eval.every = 4
    c.eval.num_episodes = 8
    c.eval.at_start = True
    c.checkpoint.every = 1000
    c.checkpoint.export_final = False
    c.log.tensorboard = False

    if variant in (None, "", "judge"):
        pass
    elif variant == "verifier":
        c.judge.enabled = False
    elif variant == "smoke":
        c.train.max_steps = 1
        c.eval.every = 1
        c.eval.num_episodes = 4
        c.eval.at_start = False
    else:
        raise ValueError(f"unknown variant {variant!r}; valid: judge, verifier, smoke")
    return c
