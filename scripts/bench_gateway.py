"""Gateway load benchmark: concurrent OpenAI-SDK clients against `python -m agentic_rl.serve`
(a separate process), and the same conversations through the in-process chat service.

    python scripts/bench_gateway.py --clients 64 --seconds 60            # tiny model
    python scripts/bench_gateway.py --model smollm2-135m-instruct --clients 16 --seconds 60

Phase 1 (load): `--clients` threads, each with its own `openai.OpenAI` client, run
three-turn conversations against the server for `--seconds`; every request's latency,
its completion tokens and any error are recorded. Phase 2 (ratio): the same number of
conversations, with the same turns and token budgets, first over HTTP and then through
the in-process `ChatService` (no HTTP) on an identical sampler in this process; the
ratio of tokens/s is the gateway's overhead (target >= 0.8). Prints one JSON object:
requests, errors, p50/p99 latency, tokens/s, and the ratio. Medians of noisy machines:
run it twice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def conversation(chat, k: int, max_tokens: int, turns: int = 3) -> tuple[list, int]:
    """One multi-turn conversation through `chat(messages, max_tokens) -> (text, tokens)`;
    returns the per-call latencies and the completion tokens."""
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"Conversation {k}: say something."}]
    latencies, tokens = [], 0
    for t in range(turns):
        t0 = time.perf_counter()
        text, n = chat(messages, max_tokens)
        latencies.append(time.perf_counter() - t0)
        tokens += n
        messages += [{"role": "assistant", "content": text},
                     {"role": "user", "content": f"And turn {t + 1}?"}]
    return latencies, tokens


def http_chat(client, model):
    def chat(messages, max_tokens):
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
        return r.choices[0].message.content or "", r.usage.completion_tokens
    return chat


def run_clients(make_chat, clients: int, *, seconds: float | None = None,
                conversations: int | None = None, max_tokens: int = 32):
    """Runs conversations on `clients` threads until `seconds` pass or `conversations` are
    done; returns (latencies, tokens, errors, wall)."""
    lock = threading.Lock()
    state = {"next": 0, "lat": [], "tokens": 0, "errors": []}
    deadline = time.monotonic() + seconds if seconds else None

    def worker():
        chat = make_chat()
        while True:
            with lock:
                k = state["next"]
                if conversations is not None and k >= conversations:
                    return
                state["next"] += 1
            if deadline and time.monotonic() > deadline:
                return
            try:
                lat, tok = conversation(chat, k, max_tokens)
            except Exception as e:  # noqa: BLE001 - counted, reported
                with lock:
                    state["errors"].append(f"{type(e).__name__}: {e}"[:200])
                continue
            with lock:
                state["lat"] += lat
                state["tokens"] += tok

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return state["lat"], state["tokens"], state["errors"], time.perf_counter() - t0


def start_server(args) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "agentic_rl.serve", "--model", args.model, "--port", "0",
           "--max-rows", str(args.clients), "--max-context", "1024",
           "--max-new-tokens", str(args.max_tokens), "--batch-window-ms", str(args.window_ms)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, line.split(" on ")[1].strip()


def in_process_service(args):
    from agentic_rl.agents import BatchingEngine, ChatService, ServiceConfig
    from agentic_rl.rollout import make_chat_format
    from agentic_rl.rollout.sampler_policy import SamplerPolicy
    from agentic_rl.serve import load

    ns = argparse.Namespace(model=args.model, workdir=None, checkpoint="latest", seed=0)
    model, tok, fmt_name, _, _ = load(ns)
    sampler = SamplerPolicy(model, tok, max_rows=args.clients, capacity=1024)
    engine = BatchingEngine(sampler, window_s=args.window_ms / 1000)
    return ChatService(engine, make_chat_format(fmt_name, tok), ServiceConfig(
        max_new_tokens=args.max_tokens, max_context_tokens=1024,
        max_open_chains=4 * args.clients))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--window-ms", type=float, default=50.0,
                    help="the batching window, for the server and the in-process service")
    ap.add_argument("--conversations", type=int, default=0,
                    help="conversations of the ratio phase (default: 2 x clients)")
    args = ap.parse_args()
    import openai

    proc, url = start_server(args)
    try:
        def make_http():
            return http_chat(openai.OpenAI(base_url=url, api_key="x", max_retries=0,
                                           timeout=300), "policy")

        # warm-up: compile the server's decode/prefill programs
        run_clients(make_http, args.clients, conversations=args.clients,
                    max_tokens=args.max_tokens)
        lat, tokens, errors, wall = run_clients(make_http, args.clients, seconds=args.seconds,
                                                max_tokens=args.max_tokens)
        n = args.conversations or 2 * args.clients
        _, http_tokens, http_errors, http_wall = run_clients(
            make_http, args.clients, conversations=n, max_tokens=args.max_tokens)
    finally:
        proc.terminate()
        proc.wait(30)

    service = in_process_service(args)

    def make_local():
        def chat(messages, max_tokens):
            r, _, _ = service.chat({"model": "policy", "messages": messages,
                                    "max_tokens": max_tokens})
            return r["choices"][0]["message"]["content"] or "", r["usage"]["completion_tokens"]
        return chat

    run_clients(make_local, args.clients, conversations=args.clients, max_tokens=args.max_tokens)
    _, local_tokens, local_errors, local_wall = run_clients(
        make_local, args.clients, conversations=n, max_tokens=args.max_tokens)
    service.engine.close()
    lat_ms = np.asarray(lat) * 1000
    out = {
        "model": args.model, "clients": args.clients, "window_ms": args.window_ms,
        "seconds": round(wall, 1),
        "requests": len(lat), "errors": len(errors), "first_errors": errors[:3],
        "latency_p50_ms": round(float(np.percentile(lat_ms, 50)), 1) if len(lat) else None,
        "latency_p99_ms": round(float(np.percentile(lat_ms, 99)), 1) if len(lat) else None,
        "tokens_per_s": round(tokens / wall, 1),
        "ratio_phase": {"conversations": n, "http_tokens_per_s": round(http_tokens / http_wall, 1),
                        "inprocess_tokens_per_s": round(local_tokens / local_wall, 1),
                        "http_errors": len(http_errors), "inprocess_errors": len(local_errors)},
    }
    out["ratio_http_vs_inprocess"] = round(
        (http_tokens / http_wall) / max(local_tokens / local_wall, 1e-9), 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
