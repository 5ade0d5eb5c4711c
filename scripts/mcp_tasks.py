"""Writes a task set for an MCP server: a local model reads the server's tool list and
writes questions, and only those that a real call to the server answers are kept
(`agentic_rl.agents.task_gen`).

    python scripts/mcp_tasks.py --out runs/mcp_atlas/tasks.jsonl            # the atlas server
    python scripts/mcp_tasks.py --server "python my_server.py stdio" --n 32 --out tasks.jsonl
    python scripts/mcp_tasks.py --server http://127.0.0.1:8000/mcp --model DIR --out t.jsonl

The model is any local model (a registered name such as the embedded
smollm2-135m-instruct, an HF directory or a .gguf), sampled greedily through the batched
sampler, as the judge is. Prints the generation's statistics (attempts, kept, and each
rejection reason) and a few of the tasks; the JSONL feeds the `mcp` environment
(`--config.env.kwargs.tasks_file=...`, experiments/mcp_atlas_judge.py).

Imports: any layer (a script).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_SERVER = "python -m agentic_rl.envs.tools.mcp.atlas_server stdio"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default=DEFAULT_SERVER, help="a command line or an http(s) URL")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--chat-format", default="smollm2")
    ap.add_argument("--n", type=int, default=24, help="tasks to keep")
    ap.add_argument("--max-attempts", type=int, default=0, help="proposals (default 4n)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--explore", default="all",
                    help="no-argument tools to call first: 'all', 'none' or a comma list "
                         "(every proposed call is executed too: use servers whose tools "
                         "are safe to call)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.n < 1:
        print("error: --n must be >= 1", file=sys.stderr)
        return 2

    from agentic_rl.agents.task_gen import generate_tool_tasks, write_tasks_jsonl
    from agentic_rl.envs.suites.mcp_tasks import server_spec
    from agentic_rl.envs.tools.mcp import McpToolset
    from agentic_rl.models import load_policy
    from agentic_rl.rollout import make_chat_format
    from agentic_rl.train.judging import local_chat

    t0 = time.perf_counter()
    loaded = load_policy(a.model)
    chat, engine, _ = local_chat(loaded.model.lm, loaded.tokenizer,
                                 make_chat_format(a.chat_format, loaded.tokenizer), rows=1,
                                 seed=0, max_new_tokens=a.max_new_tokens,
                                 max_context_tokens=a.context)
    try:
        with McpToolset(server_spec(a.server)) as toolset:
            explore = (None if a.explore == "all" else () if a.explore == "none"
                       else tuple(x.strip() for x in a.explore.split(",")))
            tasks, stats = generate_tool_tasks(chat, toolset.tools, a.n,
                                               max_attempts=a.max_attempts or None,
                                               explore=explore)
    finally:
        engine.close()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_tasks_jsonl(a.out, tasks)
    stats["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(stats))
    for t in tasks[:8]:
        print(f"- {t.prompt}  =>  {t.answer[:80]}")
    print(f"{len(tasks)} tasks -> {a.out}")
    return 0 if tasks else 1


if __name__ == "__main__":
    sys.exit(main())
