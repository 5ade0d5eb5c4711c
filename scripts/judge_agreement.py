"""How well does the embedded model, as a relative judge, agree with a verifier?

Rolls out SmolLM2-135M-Instruct (the embedded model, no LoRA) on calculator eval tasks,
`--group-size` episodes per task at temperature 1 (the main job's environment settings:
`experiments/smollm2_calculator_grpo.py`), judges each group with the same model as a
greedy relative judge (`agentic_rl.agents.judge`, default rubric and prompt), and prints
the judge's pairwise accuracy and Kendall tau against the verifier's rewards over the
pairs of one group with different verifier rewards, with the malformed-reply rate:

    python scripts/judge_agreement.py --tasks 16 --group-size 4 --out runs/judge_agreement.json

Chance is a pairwise accuracy of 0.5 and a tau of 0. Results: docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=16)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--split", default="eval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge-context", type=int, default=2048)
    p.add_argument("--judge-new-tokens", type=int, default=192)
    p.add_argument("--judge-batch", type=int, default=4,
                   help="judge prompts per sampler call (bounds the prefill's memory)")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)

    from agentic_rl.agents import BatchingEngine, ChatService, run_episodes
    from agentic_rl.agents.judge import (
        Combine,
        Judge,
        JudgeConfig,
        ServiceChat,
        judge_batch,
        judge_service_config,
        pairwise_agreement,
    )
    from agentic_rl.models import load_policy
    from agentic_rl.rollout import make_chat_format
    from agentic_rl.rollout.sampler_policy import SamplerPolicy
    from agentic_rl.sampling import SamplingParams
    from agentic_rl.train import builders
    from experiments.smollm2_calculator_grpo import get_config

    cfg = get_config()
    t0 = time.perf_counter()
    policy = load_policy(cfg.model.name)
    fmt = make_chat_format(cfg.model.chat_format, policy.tokenizer)
    suite = builders.build_suite(cfg)
    tasks = list(suite.tasks.split(args.split))[: args.tasks]
    rows = len(tasks) * args.group_size
    sampler = SamplerPolicy(policy.model.lm, policy.tokenizer, max_rows=rows,
                            params=SamplingParams(temperature=1.0), seed=args.seed,
                            capacity=cfg.rollout.max_episode_tokens)
    print(f"[{time.perf_counter() - t0:5.0f}s] rolling out {len(tasks)} tasks x "
          f"{args.group_size} at temperature 1", file=sys.stderr)
    result = run_episodes(sampler, fmt, suite.make_env, tasks, group_size=args.group_size,
                          config=builders.rollout_config(cfg), seed=args.seed)
    batch = result.batch
    t_roll = time.perf_counter() - t0
    print(f"[{t_roll:5.0f}s] rollout done: success {result.metrics.get('success_rate', 0):.1%}"
          f" over {batch.batch_size} episodes", file=sys.stderr)

    del sampler  # its KV cache: the judge's prefill needs the memory (16 x 4 was OOM-killed)
    judge_sampler = SamplerPolicy(policy.model.lm, policy.tokenizer,
                                  max_rows=min(len(tasks), args.judge_batch),
                                  params=SamplingParams(temperature=0.0, greedy=True),
                                  seed=args.seed, capacity=args.judge_context)
    engine = BatchingEngine(judge_sampler, window_s=0.05,
                            max_batch=min(len(tasks), args.judge_batch))
    replies: list[str] = []
    try:
        service = ChatService(engine, fmt, judge_service_config(args.judge_new_tokens,
                                                                args.judge_context))
        chat = ServiceChat(service, max_tokens=args.judge_new_tokens)

        def recording_chat(messages):
            out = chat(messages)
            replies.append(out)
            return out

        judge = Judge(recording_chat, JudgeConfig(
            max_prompt_tokens=args.judge_context - args.judge_new_tokens - 8,
            model_key=cfg.model.name), count_tokens=chat.count_tokens)
        t1 = time.perf_counter()
        judged = judge_batch(judge, list(batch.metadata), batch.turn_rewards, batch.turn_end,
                             Combine("weighted", 0.0, 1.0))
        t_judge = time.perf_counter() - t1
    finally:
        engine.close()
    agree = pairwise_agreement(judged.scores, judged.returns, judged.groups)
    m = judge.metrics
    summary = {
        "tasks": len(tasks), "group_size": args.group_size,
        "rollout_success_rate": result.metrics.get("success_rate"),
        "distinct_verifier_returns": sorted({round(r, 4) for r in judged.returns}),
        **agree,
        "malformed_rate": m["malformed"] / max(1.0, m["groups"]),
        "neutral_score_rate": m["neutral_scores"] / max(1, len(judged.scores)),
        "retries": m["retries"], "judge_calls": m["calls"], "judge_errors": m["errors"],
        "prompt_shrinks": m["shrunk"], "rollout_s": round(t_roll, 1),
        "judge_s": round(t_judge, 1),
        "scores": judged.scores, "returns": judged.returns, "groups": judged.groups,
        "sample_replies": replies[:4],
    }
    print(json.dumps({k: v for k, v in summary.items()
                      if k not in ("scores", "returns", "groups", "sample_replies")}, indent=1))
    print("first judge replies:", file=sys.stderr)
    for r in replies[:3]:
        print("  ---\n  " + r[:400].replace("\n", "\n  "), file=sys.stderr)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
