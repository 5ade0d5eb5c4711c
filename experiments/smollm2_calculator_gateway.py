"""SmolLM2-135M-Instruct trained through the OpenAI-compatible gateway: the calculator task
as an agent written only against the `openai` SDK (experiments/agents/calculator_openai.py).

Command:

    python -m agentic_rl.train --config experiments/smollm2_calculator_gateway.py \
        --workdir runs/smollm2_calculator_gateway

Everything is the README's main job (experiments/smollm2_calculator_grpo.py: GRPO + LoRA,
4 tasks x 8 episodes, 6 steps, greedy evaluation on the same held-out problems before
and after: now the main job's 96, 32 of them with larger operands), except who runs the
episodes: the trainer starts the gateway on a free port of 127.0.0.1, and each of the
32 concurrent episodes is the user's agent function, given its own base URL; its chat
requests (with `tools=[calculator]`) are batched into the jitted sampler, every call is
kept token-exactly, and the traces are the training batch.
`agent.render_tools=False`: the agent's own prompt shows the call format (as in the
environment version), so the gateway parses the tool calls without adding the schema.

Variants: `:smoke` (2 steps, 4 eval episodes), `:inprocess` (the same agent over HTTP is
the point; this variant runs the environment as an in-process agent program instead).

Expected result: see docs/results.md ("Training through the gateway"; measured with the
main job's earlier 64-problem evaluation and 40-token turns, not yet re-run with the
current ones).
"""

from experiments.smollm2_calculator_grpo import get_config as env_config


def get_config(variant: str | None = None):
    c = env_config("smoke" if variant == "smoke" else None)
    c.agent.program = "experiments.agents.calculator_openai:agent"
    c.agent.transport = "http"
    c.agent.render_tools = False
    c.agent.timeout_s = 1800.0
    if variant in (None, "", "smoke"):
        pass
    elif variant == "inprocess":
        c.agent.program = "env"
        c.agent.transport = "inprocess"
    else:
        raise ValueError(f"unknown variant {variant!r}; valid: smoke, inprocess")
    return c
