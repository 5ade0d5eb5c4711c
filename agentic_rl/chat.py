"""Command-line smoke entry: load a policy and answer one prompt.

    python -m agentic_rl.chat --model smollm2-135m-instruct --greedy \
        "What is the capital of France?"

Imports: agentic_rl.models and agentic_rl.sampling (an entry point may import any
layer).
"""

from __future__ import annotations

import argparse
import sys
import time


class _Parser(argparse.ArgumentParser):
    """A usage error is one `error:` line (exit 2), not usage + error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments that needs no model loaded, or None."""
    if args.max_new_tokens < 1:
        return f"--max-new-tokens must be >= 1, got {args.max_new_tokens}"
    if not args.temperature >= 0:
        return f"--temperature must be >= 0, got {args.temperature}"
    if not 0 < args.top_p <= 1:
        return f"--top-p must be in (0, 1], got {args.top_p}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m agentic_rl.chat", description=__doc__.split("\n")[0])
    ap.add_argument("prompt", help="the user message")
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="embedded model name, HF model directory or .gguf file")
    ap.add_argument("--system", default=None, help="optional system message")
    ap.add_argument("--greedy", action="store_true", help="argmax decoding")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default=None,
                    choices=("float32", "fp32", "bfloat16", "bf16", "float16", "fp16"),
                    help="compute dtype: float32 or bfloat16")
    ap.add_argument("--verbose", action="store_true", help="print timings to stderr")
    args = ap.parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    from agentic_rl import compile_cache
    from agentic_rl.models.loading import LOAD_ERRORS, load_policy
    from agentic_rl.sampling import SamplingParams, generate

    compile_cache.enable()
    t0 = time.time()
    try:
        policy = load_policy(args.model, dtype=args.dtype)
    except LOAD_ERRORS as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    tok = policy.tokenizer
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                  return_dict=True)["input_ids"]
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, greedy=args.greedy)
    stop = [i for i in {tok.eos_token_id, policy.config.eos_token_id} if isinstance(i, int)]
    t1 = time.time()
    (out,) = generate(policy.model.lm, [ids], max_new_tokens=args.max_new_tokens, params=params,
                      stop_token_ids=stop, seed=args.seed)
    t2 = time.time()
    print(tok.decode(out.tokens, skip_special_tokens=True).strip())
    if args.verbose:
        print(f"[load {t1 - t0:.1f}s, generate {len(out.tokens)} tokens in {t2 - t1:.1f}s "
              f"(incl. compile), finish={out.finish_reason}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from agentic_rl.compile_cache import exit_now

    exit_now(main())
