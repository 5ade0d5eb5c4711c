"""Evaluate a policy on an environment's held-out split.

    python -m agentic_rl.evaluate --env calculator --tasks FILE.jsonl \\
        --model smollm2-135m-instruct --num-episodes 32 --json

prints success rate, tool-call validity rate, mean turns (and more) as JSON. `--tasks`
(any GSM8K-format JSONL for the math environments) becomes the evaluation split;
without it the environment's own eval split is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m agentic_rl.evaluate",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--env", required=True, help="environment name (see agentic_rl.envs.ENVS)")
    ap.add_argument("--tasks", default=None, help="JSONL task file used as the eval split")
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="embedded model name, HF model directory or .gguf file")
    ap.add_argument("--num-episodes", type=int, default=None, help="default: the whole split")
    ap.add_argument("--batch-size", type=int, default=32, help="episodes run at once")
    ap.add_argument("--max-turns", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--chat-format", default="smollm2",
                    help="chat/tool format: smollm2, chatml, qwen2.5, qwen3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print only the JSON summary")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from agentic_rl.envs import ENVS
    from agentic_rl.models.config import UnsupportedModelError
    from agentic_rl.models.hf_io import CheckpointError
    from agentic_rl.models.loading import ModelNotFoundError, load_policy
    from agentic_rl.rollout import RolloutConfig, evaluate_policy, make_chat_format
    from agentic_rl.rollout.sampler_policy import SamplerPolicy
    from agentic_rl.sampling import SamplingParams

    if args.env not in ENVS:
        print(f"error: unknown env {args.env!r}; valid: {', '.join(sorted(ENVS))}",
              file=sys.stderr)
        return 2
    t0 = time.time()
    try:
        policy = load_policy(args.model)
    except (ModelNotFoundError, CheckpointError, UnsupportedModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p,
                            greedy=args.temperature == 0.0)
    sampler = SamplerPolicy(policy.model.lm, policy.tokenizer, max_rows=args.batch_size,
                            params=params, seed=args.seed)
    fmt = make_chat_format(args.chat_format, policy.tokenizer)
    config = RolloutConfig(max_turns=args.max_turns, max_new_tokens=args.max_new_tokens)
    env_kwargs = {"eval_path": args.tasks} if args.tasks else None
    try:
        report = evaluate_policy(sampler, fmt, args.env, num_episodes=args.num_episodes,
                                 batch_size=args.batch_size, config=config, seed=args.seed,
                                 env_kwargs=env_kwargs)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = dict(report.summary())
    summary.update(model=str(args.model), env=args.env, seconds=round(time.time() - t0, 1),
                   generated_tokens=sampler.stats["generated_tokens"],
                   reprefills=sampler.stats["reprefills"])
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:>28}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
