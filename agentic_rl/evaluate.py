"""Evaluate a policy on an environment's held-out split.

    python -m agentic_rl.evaluate --env calculator --tasks FILE.jsonl \\
        --model smollm2-135m-instruct --num-episodes 32 --json

prints success rate, tool-call validity rate, mean turns (and more) as JSON. `--tasks`
(any GSM8K-format JSONL for the math environments) becomes the evaluation split;
without it the environment's own eval split is used.

A trained policy is evaluated from its run directory instead of `--model`:

    python -m agentic_rl.evaluate --workdir runs/smollm2_calculator_grpo --checkpoint best

(`--checkpoint latest|best|STEP`); the environment, its settings and the chat format
then default to the run's own config.

Imports: any layer (an entry point): models, sampling, envs, rollout, agents, train.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


class _Parser(argparse.ArgumentParser):
    """A usage error is one `error:` line (exit 2), not usage + error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments that needs no model loaded, or None."""
    from pathlib import Path

    from agentic_rl.envs import ENVS
    from agentic_rl.rollout.chat_format import _PRESETS

    if args.workdir and args.model:
        return "pass either --model or --workdir, not both"
    if args.checkpoint not in ("latest", "best") and not args.checkpoint.isdigit():
        return (f"--checkpoint must be latest, best or a step number, got "
                f"{args.checkpoint!r}")
    if args.env is not None and args.env not in ENVS:
        return f"unknown env {args.env!r}; valid: {', '.join(sorted(ENVS))}"
    if args.env is None and not args.workdir:
        return "--env is required without --workdir"
    if args.chat_format is not None and args.chat_format not in _PRESETS:
        return (f"unknown chat format {args.chat_format!r} (--chat-format); valid names: "
                f"{', '.join(_PRESETS)}")
    for flag, value in (("--batch-size", args.batch_size), ("--max-turns", args.max_turns),
                        ("--max-new-tokens", args.max_new_tokens)):
        if value < 1:
            return f"{flag} must be >= 1, got {value}"
    if args.num_episodes is not None and args.num_episodes < 1:
        return f"--num-episodes must be >= 1, got {args.num_episodes}"
    if not args.temperature >= 0:
        return f"--temperature must be >= 0 (0 = greedy), got {args.temperature}"
    if not 0 < args.top_p <= 1:
        return f"--top-p must be in (0, 1], got {args.top_p}"
    if args.tasks and not Path(args.tasks).is_file():
        return f"--tasks file not found: {args.tasks}"
    if args.workdir and not Path(args.workdir).is_dir():
        return f"--workdir {args.workdir} is not a directory (no training run there)"
    return None


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m agentic_rl.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--env", default=None,
                    help="environment name (see agentic_rl.envs.ENVS); default with --workdir: "
                         "the run's environment")
    ap.add_argument("--tasks", default=None, help="JSONL task file used as the eval split")
    ap.add_argument("--model", default=None,
                    help="embedded model name, HF model directory or .gguf file "
                         "(default smollm2-135m-instruct)")
    ap.add_argument("--workdir", default=None,
                    help="a training run directory: evaluate its checkpoint instead of --model")
    ap.add_argument("--checkpoint", default="latest",
                    help="with --workdir: latest, best, or a step number")
    ap.add_argument("--num-episodes", type=int, default=None, help="default: the whole split")
    ap.add_argument("--batch-size", type=int, default=32, help="episodes run at once")
    ap.add_argument("--max-turns", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--chat-format", default=None,
                    help="chat/tool format: smollm2 (default), chatml, qwen2.5, qwen3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print only the JSON summary")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from agentic_rl.agents import evaluate_policy
    from agentic_rl.envs import ENVS
    from agentic_rl.models.loading import LOAD_ERRORS, load_policy
    from agentic_rl.rollout import RolloutConfig, make_chat_format
    from agentic_rl.rollout.chat_format import _PRESETS
    from agentic_rl.rollout.sampler_policy import SamplerPolicy
    from agentic_rl.sampling import SamplingParams

    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from agentic_rl import compile_cache

    compile_cache.enable()
    t0 = time.time()
    env_kwargs: dict = {}
    try:
        if args.workdir:
            from agentic_rl.train.checkpoint import CheckpointNotFoundError, load_trained_policy

            try:
                built, run_cfg, step = load_trained_policy(args.workdir, args.checkpoint)
            except (CheckpointNotFoundError, ValueError) as e:
                print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
                return 2
            lm, tokenizer = built.model.lm, built.tokenizer
            chat_format = args.chat_format or run_cfg.model.chat_format
            if args.env is None or args.env == run_cfg.env.name:
                env_kwargs = dict(run_cfg.env.kwargs)
            args.env = args.env or run_cfg.env.name
            label = f"{args.workdir}@{step}"
        else:
            policy = load_policy(args.model or "smollm2-135m-instruct")
            lm, tokenizer = policy.model.lm, policy.tokenizer
            chat_format = args.chat_format or "smollm2"
            label = str(args.model or "smollm2-135m-instruct")
    except LOAD_ERRORS as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if chat_format not in _PRESETS:  # a run directory's own config.json
        print(f"error: unknown chat format {chat_format!r}; valid names: "
              f"{', '.join(_PRESETS)}", file=sys.stderr)
        return 2
    if args.env is None:
        print("error: --env is required without --workdir", file=sys.stderr)
        return 2
    if args.env not in ENVS:
        print(f"error: unknown env {args.env!r}; valid: {', '.join(sorted(ENVS))}",
              file=sys.stderr)
        return 2
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p,
                            greedy=args.temperature == 0.0)
    sampler = SamplerPolicy(lm, tokenizer, max_rows=args.batch_size,
                            params=params, seed=args.seed)
    fmt = make_chat_format(chat_format, tokenizer)
    config = RolloutConfig(max_turns=args.max_turns, max_new_tokens=args.max_new_tokens)
    if args.tasks:
        env_kwargs["eval_path"] = args.tasks
    try:
        report = evaluate_policy(sampler, fmt, args.env, num_episodes=args.num_episodes,
                                 batch_size=args.batch_size, config=config, seed=args.seed,
                                 env_kwargs=env_kwargs or None)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    summary = dict(report.summary())
    summary.update(model=label, env=args.env, seconds=round(time.time() - t0, 1),
                   generated_tokens=sampler.stats["generated_tokens"],
                   reprefills=sampler.stats["reprefills"])
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:>28}: {v}")
    return 0


if __name__ == "__main__":
    from agentic_rl.compile_cache import exit_now

    exit_now(main())
