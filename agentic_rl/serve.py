"""Serve a policy on the OpenAI-compatible gateway, for inference by any client.

    python -m agentic_rl.serve --model smollm2-135m-instruct --port 8000
    python -m agentic_rl.serve --workdir runs/smollm2_calculator_grpo --checkpoint best

then e.g. `openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="x")`. `--model`
takes an embedded model name, a HF directory, a .gguf file, or `tiny` (the random test
model with the character tokenizer). A conversation's next request continues its KV-cache
row (the gateway matches it to the previous call), concurrent requests are batched into
one sampler call, and responses carry the sampled token ids. Prints one line,
`serving MODEL on URL/v1`, when ready; stops on SIGINT/SIGTERM.

Imports: any layer (an entry point): models, sampling, rollout, agents, train.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from agentic_rl.evaluate import _Parser


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m agentic_rl.serve", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None,
                    help="embedded model name, HF directory, .gguf file or 'tiny' "
                         "(default smollm2-135m-instruct)")
    ap.add_argument("--workdir", default=None, help="serve a training run's checkpoint")
    ap.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0 = a free port")
    ap.add_argument("--chat-format", default=None, help="smollm2, chatml, qwen2.5, qwen3")
    ap.add_argument("--max-rows", type=int, default=64,
                    help="conversations decoded at once (KV-cache rows)")
    ap.add_argument("--max-context", type=int, default=2048, help="tokens per conversation")
    ap.add_argument("--max-new-tokens", type=int, default=512, help="cap per completion")
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="default when a request gives none")
    ap.add_argument("--batch-window-ms", type=float, default=50.0,
                    help="how long a batch waits for more concurrent requests")
    ap.add_argument("--name", default=None, help="the model name /v1/models reports")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def _check(args) -> str | None:
    if args.workdir and args.model:
        return "pass either --model or --workdir, not both"
    if args.checkpoint not in ("latest", "best") and not args.checkpoint.isdigit():
        return f"--checkpoint must be latest, best or a step number, got {args.checkpoint!r}"
    if not 0 <= args.port < 65536:
        return f"--port must be in [0, 65535], got {args.port}"
    for flag, v in (("--max-rows", args.max_rows), ("--max-context", args.max_context),
                    ("--max-new-tokens", args.max_new_tokens)):
        if v < 1:
            return f"{flag} must be >= 1, got {v}"
    if not 0 <= args.temperature <= 2:
        return f"--temperature must be in [0, 2], got {args.temperature}"
    if args.batch_window_ms < 0:
        return "--batch-window-ms must be >= 0"
    return None


def load(args):
    """(transformer, tokenizer, chat format name, label, agents) for the arguments; agents:
    the names of a run trained with one LoRA adapter per agent (agent i uses adapter i;
    clients name the agent in the `model` field or the /agents/{name} route), else ()."""
    if args.workdir:
        from agentic_rl.train.checkpoint import load_trained_policy
        from agentic_rl.train.config import agent_names

        built, run_cfg, step = load_trained_policy(args.workdir, args.checkpoint)
        agents = agent_names(run_cfg) if run_cfg.model.lora_adapters == "per_agent" else ()
        return built.model.lm, built.tokenizer, run_cfg.model.chat_format, \
            f"{args.workdir}@{step}", agents
    name = args.model or "smollm2-135m-instruct"
    if name == "tiny":
        from flax import nnx

        from agentic_rl.models.transformer import Transformer
        from agentic_rl.rollout import CharTokenizer
        from agentic_rl.train.builders import tiny_model_config
        from agentic_rl.train.config import default_config

        model = Transformer(tiny_model_config(default_config()), rngs=nnx.Rngs(args.seed))
        return model, CharTokenizer(), "chatml", "tiny", ()
    from agentic_rl.models.loading import load_policy

    policy = load_policy(name)
    return policy.model.lm, policy.tokenizer, "smollm2", name, ()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = _check(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from agentic_rl import compile_cache
    from agentic_rl.agents import BatchingEngine, ChatService, Gateway, ServiceConfig
    from agentic_rl.models.loading import LOAD_ERRORS
    from agentic_rl.rollout import make_chat_format
    from agentic_rl.rollout.sampler_policy import SamplerPolicy
    from agentic_rl.sampling import SamplingParams
    from agentic_rl.train.checkpoint import CheckpointNotFoundError

    compile_cache.enable()
    try:
        model, tokenizer, chat_format, label, agents = load(args)
        fmt = make_chat_format(args.chat_format or chat_format, tokenizer)
    except (*LOAD_ERRORS, CheckpointNotFoundError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    sampler = SamplerPolicy(model, tokenizer, max_rows=args.max_rows, seed=args.seed,
                            capacity=args.max_context)
    engine = BatchingEngine(sampler, window_s=args.batch_window_ms / 1000)
    service = ChatService(engine, fmt, ServiceConfig(
        model_name=args.name or label, sampling=SamplingParams(temperature=args.temperature),
        max_new_tokens=args.max_new_tokens, max_context_tokens=args.max_context,
        max_open_chains=4 * args.max_rows, agents=tuple(agents),
        adapter_per_agent=bool(agents)))
    try:
        gateway = Gateway(service, host=args.host, port=args.port).start()
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if agents:
        print(f"agents (one LoRA adapter each; name one in the model field or the "
              f"/agents/NAME route): {', '.join(agents)}", flush=True)
    print(f"serving {label} on {gateway.url}/v1", flush=True)
    stop.wait()
    gateway.stop()
    engine.close()
    return 0


if __name__ == "__main__":
    from agentic_rl.compile_cache import exit_now

    exit_now(main())
