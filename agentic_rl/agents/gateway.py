"""The OpenAI-compatible HTTP gateway: a Starlette app over a `ChatService`, served by
uvicorn on a background thread of the trainer (or of `python -m agentic_rl.serve`).

Routes (each `/v1/...` route also exists under `/rollouts/{rollout_id}` and
`/rollouts/{rollout_id}/agents/{agent}`, which attribute the call to that rollout and
agent; without them a call goes to the serving scope):

    POST /v1/chat/completions      messages, tools, sampling, n, logprobs, stream (SSE,
                                   sent as the tokens are sampled)
    POST /v1/completions           raw-text prompts, stream (SSE, as for chat)
    GET  /v1/models
    POST /rollouts/{id}/reward     {"reward": r, "call_id": optional response id}
    GET  /health

Every error is an OpenAI-style JSON body with a 4xx status (bad JSON, bad fields,
unknown rollout, context overflow, unsupported parameter); an unexpected failure is a
500 JSON body, and the server keeps serving. A request body over `max_body_bytes` is a
413. A client that hangs up before its body is read is counted
(`app.state.client_disconnects`), not logged as a server error. Handlers wait for the
batching engine on a dedicated thread pool sized for many concurrent clients (the
default pool of 6 threads on 2 cores would cap a batch at 6).

Imports: agentic_rl.agents (the chat service), starlette and uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentic_rl.agents.openai_format import APIError, ChatStream, CompletionStream
from agentic_rl.agents.service import ChatService


def _error(e: APIError):
    from starlette.responses import JSONResponse

    return JSONResponse(e.body(), status_code=e.status)


def build_app(service: ChatService, *, max_body_bytes: int = 16 << 20,
              max_concurrency: int = 512):
    """The Starlette application (routes in the module docstring)."""
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="gateway")

    async def read_json(request: Request) -> Any:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > max_body_bytes:
            raise APIError(413, f"request body over {max_body_bytes} bytes",
                           code="request_too_large")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > max_body_bytes:
                raise APIError(413, f"request body over {max_body_bytes} bytes",
                               code="request_too_large")
        try:
            return json.loads(bytes(raw))
        except (ValueError, RecursionError):
            raise APIError(400, "the request body is not valid JSON") from None

    async def run(fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, lambda: fn(*args, **kwargs))

    def guarded(handler):
        async def endpoint(request: Request):
            try:
                return await handler(request)
            except APIError as e:
                return _error(e)
            except ClientDisconnect:  # nobody to answer, and no server bug: counted
                request.app.state.client_disconnects += 1
                return Response(status_code=400)
            except Exception as e:  # noqa: BLE001 - a bug must not take the server down
                traceback.print_exc()
                return JSONResponse({"error": {"message": f"internal error: {type(e).__name__}:"
                                               f" {e}", "type": "server_error", "param": None,
                                               "code": None}}, status_code=500)
        return endpoint

    def where(request: Request) -> tuple[str | None, str | None]:
        p = request.path_params
        return p.get("rollout_id"), p.get("agent")

    def sse(obj: Any) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    def sampling_route(method, make_stream):
        """A handler for `method` (`service.chat` or `service.completions`): the JSON
        response, or with `stream: true` its events (`make_stream`, see `stream_call`)."""
        async def handler(request: Request):
            body = await read_json(request)
            rollout_id, agent = where(request)
            if isinstance(body, dict) and body.get("stream") is True:
                return await stream_call(request, method, body, rollout_id, agent,
                                         make_stream)
            response, _, _ = await run(method, body, rollout_id=rollout_id, agent=agent)
            return JSONResponse(response)
        return handler

    def stop_ids() -> tuple[int, ...]:
        return (service.fmt.end_of_turn_id, *service.cfg.stop_token_ids)

    def token_text(t: int) -> str:
        return service.fmt.tok.decode([t])

    def chat_stream(req, request_id: str, n: int) -> ChatStream:
        return ChatStream(request_id, req.model or service.cfg.model_name, n,
                          decode=service.fmt.decode, token_text=token_text,
                          stop_ids=stop_ids(), stops=req.sampling.stop, tools=bool(req.tools),
                          logprobs=req.sampling.logprobs, include_usage=req.include_usage)

    def completion_stream(req, request_id: str, n: int) -> CompletionStream:
        echo = [p for p in req.prompts for _ in range(req.sampling.n)] if req.echo else None
        return CompletionStream(request_id, req.model or service.cfg.model_name, n,
                                decode=service.fmt.decode, token_text=token_text,
                                stop_ids=stop_ids(), stops=req.sampling.stop,
                                logprobs=req.sampling.logprobs,
                                include_usage=req.include_usage, echo=echo)

    async def stream_call(request: Request, method, body: dict, rollout_id, agent,
                          make_stream):
        """Server-sent events as the tokens are sampled (`method`: `service.chat` or
        `service.completions`; `make_stream(request, request_id, n)`: its `ChatStream` or
        `CompletionStream`). A request that is refused before sampling starts gets its 4xx
        JSON error, not a stream. A client that hangs up, at any time from when its body
        was read (also before the response started streaming: while the request waits
        in the batching engine), stops its rows at the sampler's next chunk and frees them."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        gone = threading.Event()
        opened: dict[str, Any] = {}
        state = {"complete": False}  # everything was sent: a hang-up now changes nothing

        def put(item) -> None:
            loop.call_soon_threadsafe(events.put_nowait, item)

        def listen(req, request_id: str, rows: list[str]):
            opened["stream"] = make_stream(req, request_id, len(rows))
            opened["rows"] = rows
            put(None)  # accepted: the stream opens

            def on_piece(i: int, ids, logprobs):
                if gone.is_set():
                    return False
                put((i, list(ids), list(logprobs)))
            return on_piece

        call = asyncio.ensure_future(run(method, body, rollout_id=rollout_id, agent=agent,
                                         listen=listen))

        def free_rows(_=None) -> None:
            if "rows" in opened:  # (a call refused before it was accepted has none)
                service.abandon(rollout_id, opened["rows"])

        def hang_up(counted: bool = True) -> None:
            """The client went away before the end (or the call failed): stop its rows,
            free them once the call returns."""
            if gone.is_set() or state["complete"]:
                return
            gone.set()
            if counted:
                service._count("stream_hangups")
            call.add_done_callback(free_rows)

        async def watch() -> None:
            # The body is read, so the next message is the disconnect (or the response's
            # end): a client that leaves is noticed at once, also while its call waits to
            # be planned or sampled and before its response started, without relying on
            # Starlette starting (and cancelling) the response's body generator.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            hang_up()

        watcher = asyncio.ensure_future(watch())
        first = asyncio.ensure_future(events.get())
        await asyncio.wait({call, first}, return_when=asyncio.FIRST_COMPLETED)
        if not first.done():  # refused before sampling: the error is the response
            first.cancel()
            watcher.cancel()
            call.result()
            raise RuntimeError("the call ended without opening its stream")
        stream = opened["stream"]

        async def events_out():
            checked = {"at": time.monotonic()}
            try:
                for chunk in stream.start():
                    yield sse(chunk)
                getter = None
                while not gone.is_set():
                    if getter is None:
                        getter = asyncio.ensure_future(events.get())
                    done, _ = await asyncio.wait({getter, call}, timeout=0.25,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        i, ids, logprobs = getter.result()
                        getter = None
                        chunk = stream.piece(i, ids, logprobs)
                        if chunk is not None:
                            yield sse(chunk)
                        now = time.monotonic()
                        if now - checked["at"] > 0.1:  # pieces keep coming: ask anyway
                            checked["at"] = now
                            if await request.is_disconnected():
                                return
                        continue
                    if call.done() and events.empty():
                        getter.cancel()
                        break
                    # uvicorn drops writes to a closed connection silently: ask
                    if await request.is_disconnected():
                        getter.cancel()
                        return
                if gone.is_set():
                    return
                try:
                    response, choices, _ = call.result()
                except APIError as e:
                    hang_up(counted=False)
                    yield sse(e.body())
                    return
                except Exception as e:  # noqa: BLE001 - reported in the stream, not a crash
                    traceback.print_exc()
                    hang_up(counted=False)
                    yield sse({"error": {"message": f"internal error: {type(e).__name__}: "
                                         f"{e}", "type": "server_error", "param": None,
                                         "code": None}})
                    return
                for chunk in stream.finish(response, choices):
                    yield sse(chunk)
                state["complete"] = True
                yield "data: [DONE]\n\n"
            finally:
                watcher.cancel()
                hang_up()  # unless complete: the client went away mid-stream

        return StreamingResponse(events_out(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    chat = sampling_route(service.chat, chat_stream)
    completions = sampling_route(service.completions, completion_stream)

    async def models(request: Request):
        return JSONResponse(service.models())

    async def reward(request: Request):
        body = await read_json(request)
        if not isinstance(body, dict) or "reward" not in body:
            raise APIError(400, "the body must be {'reward': number, 'call_id': optional id}",
                           param="reward")
        await run(service.post_reward, request.path_params["rollout_id"], body["reward"],
                  body.get("call_id"))
        return JSONResponse({"ok": True})

    async def health(request: Request):
        return JSONResponse({"ok": True, **service.metrics,
                             **{f"engine/{k}": v for k, v in service.engine.stats.items()}})

    routes = [Route("/health", guarded(health), methods=["GET"]),
              Route("/rollouts/{rollout_id}/reward", guarded(reward), methods=["POST"])]
    for prefix in ("", "/rollouts/{rollout_id}", "/rollouts/{rollout_id}/agents/{agent}",
                   "/agents/{agent}"):
        routes += [
            Route(f"{prefix}/v1/chat/completions", guarded(chat), methods=["POST"]),
            Route(f"{prefix}/v1/completions", guarded(completions), methods=["POST"]),
            Route(f"{prefix}/v1/models", guarded(models), methods=["GET"]),
        ]

    async def not_found(request: Request, exc):
        status = getattr(exc, "status_code", 404)
        kind = "not_found_error" if status == 404 else "invalid_request_error"
        return JSONResponse({"error": {"message": f"{request.method} {request.url.path}: "
                                       f"{getattr(exc, 'detail', 'not found')}", "type": kind,
                                       "param": None, "code": None}}, status_code=status)

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.pool = pool
    app.state.client_disconnects = 0
    return app


class Gateway:
    """The gateway served on `host:port` (port 0: a free port) from a daemon thread.

        with Gateway(service) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x")
    """

    def __init__(self, service: ChatService, *, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning"):
        import uvicorn

        self.service = service
        self.app = build_app(service)
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as e:
            self._sock.close()
            raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
        self._sock.listen(2048)
        self.host, self.port = host, self._sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level=log_level, lifespan="off",
                                access_log=False, timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> Gateway:
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]}, daemon=True,
                                        name="gateway-http")
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._thread = None
        self.app.state.pool.shutdown(wait=False, cancel_futures=True)
        self._sock.close()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
