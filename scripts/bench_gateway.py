"""Gateway load benchmark: concurrent clients against `python -m agentic_rl.serve` (a
separate process), and the same conversations through the in-process chat service.

    python scripts/bench_gateway.py --clients 64 --seconds 60 --client httpx   # tiny model
    python scripts/bench_gateway.py --clients 64 --seconds 60 --client async   # openai SDK
    python scripts/bench_gateway.py --model smollm2-135m-instruct --clients 16 --seconds 60

Clients (`--client`): `async`, one `openai.AsyncOpenAI` each on one event loop (how async
agent frameworks call an endpoint); `threads`, one thread with an `openai.OpenAI` each;
`httpx`, a bare `httpx.AsyncClient` each posting the same JSON (the least client-side
CPU, so the figure is closest to the gateway's own cost: the clients share this
machine's 2 cores with the server).

Phase 1 (load): `--clients` clients run three-turn conversations against the server for
`--seconds`; every request's latency, its completion tokens and any error are recorded.
Phase 2 (ratio): the same number of conversations, with the same turns and token budgets,
first over HTTP and then through the in-process `ChatService` (no HTTP) on an identical
sampler in this process; the ratio of tokens/s is the gateway's overhead (target >= 0.8).
The ratio phase also reports CPU milliseconds per request of the server, the clients and
the in-process path, and requests per sampler call on each side (a sampler call costs
about the same for any number of rows up to its bucket, so batch fill decides
throughput). Phase 3 (stream): one client alone times the first content chunk of
streamed completions against the whole stream and an unstreamed call. Prints one JSON
object. Medians of noisy machines: run it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
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


async def _async_conversations(url: str, clients: int, *, seconds: float | None,
                               conversations: int | None, max_tokens: int, kind: str):
    """`clients` concurrent conversations on one event loop, each with its own client:
    `openai.AsyncOpenAI` (kind "async") or a bare `httpx.AsyncClient` posting the same
    JSON (kind "httpx": no SDK-side request building and response models, so nearly all
    the client-side CPU left is HTTP itself)."""
    import httpx
    import openai

    state = {"next": 0, "lat": [], "tokens": 0, "errors": []}
    deadline = time.monotonic() + seconds if seconds else None
    if kind == "async":
        made = [openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=300)
                for _ in range(clients)]

        async def call(client, messages):
            r = await client.chat.completions.create(model="policy", messages=messages,
                                                     max_tokens=max_tokens)
            return r.choices[0].message.content or "", r.usage.completion_tokens
    else:
        made = [httpx.AsyncClient(base_url=url, timeout=300,
                                  headers={"Authorization": "Bearer x"})
                for _ in range(clients)]

        async def call(client, messages):
            r = await client.post("/chat/completions", json={
                "model": "policy", "messages": messages, "max_tokens": max_tokens})
            r.raise_for_status()
            body = r.json()
            return (body["choices"][0]["message"]["content"] or "",
                    body["usage"]["completion_tokens"])

    async def worker(client):
        while True:
            k = state["next"]
            if conversations is not None and k >= conversations:
                return
            if deadline and time.monotonic() > deadline:
                return
            state["next"] += 1
            messages = [{"role": "system", "content": "You are terse."},
                        {"role": "user", "content": f"Conversation {k}: say something."}]
            try:
                for t in range(3):
                    t0 = time.perf_counter()
                    text, n = await call(client, messages)
                    state["lat"].append(time.perf_counter() - t0)
                    state["tokens"] += n
                    messages += [{"role": "assistant", "content": text},
                                 {"role": "user", "content": f"And turn {t + 1}?"}]
            except Exception as e:  # noqa: BLE001 - counted, reported
                state["errors"].append(f"{type(e).__name__}: {e}"[:200])

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in made))
    wall = time.perf_counter() - t0
    for c in made:
        await (c.close() if kind == "async" else c.aclose())
    return state["lat"], state["tokens"], state["errors"], wall


def run_async_clients(url: str, clients: int, *, seconds: float | None = None,
                      conversations: int | None = None, max_tokens: int = 32,
                      kind: str = "async"):
    """`run_clients` on one event loop (how async agent frameworks call an endpoint; far
    less client CPU than 64 threads); see `_async_conversations`."""
    return asyncio.run(_async_conversations(url, clients, seconds=seconds,
                                            conversations=conversations,
                                            max_tokens=max_tokens, kind=kind))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _health(url: str) -> dict:
    import httpx

    return httpx.get(url.rsplit("/v1", 1)[0] + "/health", timeout=30).json()


def _fill(before: dict, after: dict, prefix: str = "engine/") -> float:
    calls = after[f"{prefix}calls"] - before[f"{prefix}calls"]
    return round((after[f"{prefix}requests"] - before[f"{prefix}requests"]) / max(calls, 1), 1)


def _per(seconds: float, requests: list) -> float:
    return round(1000 * seconds / max(len(requests), 1), 2)


def stream_probe(url: str, requests: int, max_tokens: int) -> dict:
    """One client alone: `requests` streamed completions of up to `max_tokens`, timing the
    first content chunk and the whole stream, then as many unstreamed ones (medians)."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=300)
    first, whole, plain, chunks = [], [], [], []
    for k in range(requests):
        messages = [{"role": "user", "content": f"Tell me a story, number {k}."}]
        t0 = time.perf_counter()
        got = None
        n = 0
        for chunk in client.chat.completions.create(model="policy", messages=messages,
                                                    max_tokens=max_tokens, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                n += 1
                got = got or time.perf_counter() - t0
        whole.append(time.perf_counter() - t0)
        first.append(got if got is not None else whole[-1])
        chunks.append(n)
        t0 = time.perf_counter()
        client.chat.completions.create(model="policy", messages=messages, max_tokens=max_tokens)
        plain.append(time.perf_counter() - t0)
    ms = lambda x: round(1000 * float(np.median(x)), 1)  # noqa: E731
    return {"requests": requests, "max_tokens": max_tokens,
            "first_chunk_ms_p50": ms(first), "stream_total_ms_p50": ms(whole),
            "unstreamed_ms_p50": ms(plain), "content_chunks_p50": float(np.median(chunks))}


def start_server(args) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "agentic_rl.serve", "--model", args.model, "--port", "0",
           "--max-rows", str(args.clients), "--max-context", "1024",
           "--max-new-tokens", str(max(args.max_tokens, args.stream_tokens)),
           "--batch-window-ms", str(args.window_ms)]
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
    ap.add_argument("--stream-requests", type=int, default=5,
                    help="streamed requests of the stream probe (one client alone)")
    ap.add_argument("--stream-tokens", type=int, default=64)
    ap.add_argument("--client", choices=("async", "threads", "httpx"), default="async",
                    help="async: openai.AsyncOpenAI clients on one event loop; threads: "
                         "one thread with an openai.OpenAI client each; httpx: bare "
                         "httpx.AsyncClient posts of the same JSON on one event loop")
    args = ap.parse_args()
    import openai

    proc, url = start_server(args)
    try:
        def make_http():
            return http_chat(openai.OpenAI(base_url=url, api_key="x", max_retries=0,
                                           timeout=300), "policy")

        def http_clients(**kw):
            if args.client in ("async", "httpx"):
                return run_async_clients(url, args.clients, max_tokens=args.max_tokens,
                                         kind=args.client, **kw)
            return run_clients(make_http, args.clients, max_tokens=args.max_tokens, **kw)

        # warm-up: compile the server's decode/prefill programs
        http_clients(conversations=args.clients)
        lat, tokens, errors, wall = http_clients(seconds=args.seconds)
        n = args.conversations or 2 * args.clients
        cpu0, h0 = (_cpu_s(proc.pid), _own_cpu_s()), _health(url)
        http_lat, http_tokens, http_errors, http_wall = http_clients(conversations=n)
        cpu1, h1 = (_cpu_s(proc.pid), _own_cpu_s()), _health(url)
        stream = stream_probe(url, args.stream_requests, args.stream_tokens)
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
    own0, e0 = _own_cpu_s(), dict(service.engine.stats)
    local_lat, local_tokens, local_errors, local_wall = run_clients(
        make_local, args.clients, conversations=n, max_tokens=args.max_tokens)
    own1, e1 = _own_cpu_s(), dict(service.engine.stats)
    service.engine.close()
    lat_ms = np.asarray(lat) * 1000
    out = {
        "model": args.model, "clients": args.clients, "client": args.client,
        "window_ms": args.window_ms,
        "seconds": round(wall, 1),
        "requests": len(lat), "errors": len(errors), "first_errors": errors[:3],
        "latency_p50_ms": round(float(np.percentile(lat_ms, 50)), 1) if len(lat) else None,
        "latency_p99_ms": round(float(np.percentile(lat_ms, 99)), 1) if len(lat) else None,
        "tokens_per_s": round(tokens / wall, 1),
        "ratio_phase": {"conversations": n, "http_tokens_per_s": round(http_tokens / http_wall, 1),
                        "inprocess_tokens_per_s": round(local_tokens / local_wall, 1),
                        "http_errors": len(http_errors), "inprocess_errors": len(local_errors),
                        # CPU time per request: where the HTTP path spends its extra work
                        "server_cpu_ms_per_request": _per(cpu1[0] - cpu0[0], http_lat),
                        "client_cpu_ms_per_request": _per(cpu1[1] - cpu0[1], http_lat),
                        "inprocess_cpu_ms_per_request": _per(own1 - own0, local_lat),
                        # requests per sampler call (a call costs about the same for any
                        # number of rows up to the bucket)
                        "http_requests_per_sampler_call": _fill(h0, h1),
                        "inprocess_requests_per_sampler_call": _fill(e0, e1, prefix="")},
    }
    out["stream"] = stream
    out["ratio_http_vs_inprocess"] = round(
        (http_tokens / http_wall) / max(local_tokens / local_wall, 1e-9), 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
