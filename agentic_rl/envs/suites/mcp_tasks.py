"""Tasks from an MCP server, answered with that server's tools: the `mcp` suite.

The server is any MCP server, stdio (a command line) or streamable HTTP (a URL); its tool
list becomes the agent's tools through `McpToolset` (one live session per suite, shared by
the episodes, closed when the process exits). The tasks are a JSONL file of
`{"id", "prompt", "answer", "data"}` written by `scripts/mcp_tasks.py`, which has a model
write questions from the server's tool list and keeps those a real call answers
(`agentic_rl.agents.task_gen`): `answer` is that call's result, `data["calls"]` the call.

Episode: as in the other tool suites (`MathToolEnv`): tool calls get the server's results
as observations, a reply without a tool call ends the episode. Reward, for when no judge
scores it (`judge.w_verifier` weighs it against the judge): "grounded", 1 when every word
of the final answer occurs in the reference result (a proxy: it checks that the answer
was read off the tool, not that it is the right field of it), which decides `success`,
plus the `<answer>` format bonus. Training with the judge only is
`judge.enabled=True, judge.w_verifier=0` (experiments/mcp_atlas_judge.py).

Imports: stdlib and agentic_rl.envs only; never jax.
"""

from __future__ import annotations

import atexit
import json
import random
import shlex
import sys
from pathlib import Path

from agentic_rl.envs.base import Task
from agentic_rl.envs.rewards import CompositeReward, extract_final_answer, format_reward
from agentic_rl.envs.rewards import normalize_text as _norm
from agentic_rl.envs.suite import ENVS, EnvSuite
from agentic_rl.envs.suites.math import MathToolEnv
from agentic_rl.envs.tasks import TaskSet
from agentic_rl.envs.tools.mcp import HttpServer, McpToolset, StdioServer
from agentic_rl.envs.tools.parser import render_tool_call

INSTRUCTIONS = (
    "You answer questions with tools. To call a tool, write for example:\n{example}\n"
    "Its result comes back in <tool_response></tool_response>. When you know the answer, "
    "reply with <answer>ANSWER</answer> and no tool call.")


def grounded_reward():
    """1.0 if the final answer is non-empty and every one of its words (SQuAD-normalised)
    occurs in the task's reference tool result, else 0."""

    def reward(text: str, task: Task) -> float:
        words = _norm(extract_final_answer(text) or "").split()
        if not words or not task.answer:
            return 0.0
        ref = set(_norm(task.answer).split())
        return float(all(w in ref for w in words))

    return reward


def load_tasks_jsonl(path: str | Path) -> list[Task]:
    """Tasks from a JSONL file of {"id", "prompt", "answer", "data"} objects."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mcp tasks_file {str(path)!r} does not exist: write one with "
                         "scripts/mcp_tasks.py")
    tasks = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            tasks.append(Task(id=str(row["id"]), prompt=str(row["prompt"]),
                              answer=None if row.get("answer") is None else str(row["answer"]),
                              data=dict(row.get("data") or {})))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{i}: not a task ({type(e).__name__}: {e})") from None
    if not tasks:
        raise ValueError(f"mcp tasks_file {str(path)!r} holds no tasks")
    return tasks


def server_spec(server: str) -> StdioServer | HttpServer:
    """An http(s) URL or a command line (a leading `python` is this interpreter)."""
    if server.startswith(("http://", "https://")):
        return HttpServer(server)
    argv = shlex.split(server)
    if not argv:
        raise ValueError("mcp server: give a command line or an http(s) URL")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return StdioServer(argv[0], tuple(argv[1:]))


@ENVS.register("mcp")
def mcp_suite(
    *,
    server: str = "python -m agentic_rl.envs.tools.mcp.atlas_server stdio",
    tasks_file: str = "",
    eval_fraction: float = 0.25,
    seed: int = 0,
    timeout_s: float = 30.0,
    format_weight: float = 0.1,
) -> EnvSuite:
    """The `mcp` suite (module docstring). `eval_fraction` of the shuffled tasks (seeded)
    are the eval split, at least one and leaving at least one to train on."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"mcp env: eval_fraction must be in (0, 1), got {eval_fraction}")
    if not tasks_file:
        raise ValueError("mcp env: tasks_file is required (write one with "
                         "scripts/mcp_tasks.py)")
    tasks = load_tasks_jsonl(tasks_file)
    if len(tasks) < 2:
        raise ValueError(f"mcp env: {tasks_file} has {len(tasks)} task; need >= 2 (train "
                         "and eval)")
    random.Random(seed).shuffle(tasks)
    n_eval = min(len(tasks) - 1, max(1, round(eval_fraction * len(tasks))))
    toolset = McpToolset(server_spec(server), timeout_s=timeout_s)
    atexit.register(toolset.close)
    tools = toolset.tools
    if not tools:
        toolset.close()
        raise ValueError(f"mcp env: the server {server!r} lists no usable tools "
                         f"(skipped: {toolset.skipped})")
    # the format shown with a tool that takes arguments, where there is one
    shown = next((t for t in tools if t.parameters.get("properties")), tools[0])
    example = render_tool_call(shown.name, {
        k: "..." for k in (shown.parameters.get("properties") or {})})
    reward = CompositeReward({"grounded": (grounded_reward(), 1.0),
                              "format": (format_reward(), format_weight)})

    def make_env():
        return MathToolEnv(tools, reward=reward, success_term="grounded",
                           instructions=INSTRUCTIONS.replace("{example}", example),
                           describe_tools=True)

    return EnvSuite("mcp", make_env, TaskSet({"train": tasks[n_eval:], "eval": tasks[:n_eval]}))
