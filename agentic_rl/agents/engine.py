"""Dynamic batching in front of a `RolloutPolicy`: requests from many threads (agent programs,
HTTP handlers) become one `policy.generate` call.

One worker thread owns the policy (the KV-cache sampler is not thread-safe). It takes the
first waiting request, then keeps collecting until the batch is full (`max_batch`), or
no request came for `window_s`, or every request the caller expects is in (`expected()`:
e.g. the number of live rollouts, so a training rollout whose agents all wait on the LLM
batches as fully as the environment loop without waiting out the window). Requests with
different sampling settings go to separate calls. A row is released on request or,
when more sessions are alive than the sampler has rows, the least recently used idle one
is evicted (its next request re-prefills its whole history: exact, only slower).
A request may carry a token listener (streaming, `submit(on_tokens=)`): a batch with one
decodes in chunks and reports each piece as it is sampled (`RolloutPolicy` streaming).

Every generation is checked against its request (`check_generation`: the policy
contract). A policy that raises or breaks the contract is a bug, not an episode's
failure: each waiting caller gets the exception, and it is also reported to the
engine's error watchers (`watch_errors`), so `run_agents` can stop the whole rollout at
once with that exception instead of counting dropped episodes.

Imports: agentic_rl.rollout (the RolloutPolicy protocol and its requests).
"""

from __future__ import annotations

import collections
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from agentic_rl.rollout.policy import (
    Generation,
    GenerationRequest,
    PolicyContractError,
    RolloutPolicy,
    can_stream,
    check_generation,
)


@dataclass
class _Item:
    request: GenerationRequest
    params: object  # SamplingParams or None (the policy's own)
    future: Future = field(default_factory=Future)
    # streaming: told (ids, logprobs) as they are sampled; False stops the request
    on_tokens: Callable[[list[int], list[float]], bool | None] | None = None


class BatchingEngine:
    """Batches `submit`ted requests into `policy.generate` calls on one worker thread.

    max_batch: most requests per call (default: the policy's `max_rows`, else 64).
    window_s: how long to wait for the next request (idle window; see `_collect`).
    expected: optional callable, the number of requests worth waiting for.
    max_wait_windows: a batch waits at most this many windows after its first request.
        Requests already queued when the wait ends still join the batch (so a window of
        0 batches whatever is waiting, as the environment loop's straggler wait of 0 did).
    peak_batches: without `expected`, wait for as many requests as the largest of the
        last this many calls had (see `_collect`).
    """

    def __init__(self, policy: RolloutPolicy, *, max_batch: int | None = None,
                 window_s: float = 0.005, expected: Callable[[], int] | None = None,
                 max_wait_windows: float = 20.0, peak_batches: int = 3):
        self.policy = policy
        self.max_rows = getattr(policy, "max_rows", None)
        self.max_batch = max_batch or self.max_rows or 64
        if self.max_rows is not None and self.max_batch > self.max_rows:
            raise ValueError(f"max_batch={self.max_batch} > the policy's max_rows={self.max_rows}")
        self.window_s = window_s
        self.max_wait_windows = max_wait_windows
        self.expected = expected
        self._sizes: collections.deque[int] = collections.deque(maxlen=peak_batches)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._closed = threading.Event()
        self._watchers: list[Callable[[BaseException], None]] = []
        self._released: list[str] = []  # released sessions not yet passed to the policy
        self._collecting = False  # a batch is being collected (see notify)
        self.stats = {"calls": 0, "requests": 0, "evictions": 0, "max_batch_seen": 0,
                      "streamed_calls": 0}
        self._streams = can_stream(policy)
        self._thread = threading.Thread(target=self._work, name="batching-engine", daemon=True)
        self._thread.start()

    # -- public ---------------------------------------------------------------------------

    def submit(self, request: GenerationRequest, params=None, on_tokens=None) -> Future:
        """A future of the request's `Generation` (its exception if the policy raised).

        `on_tokens(ids, logprobs)`, if given, is called on the engine's thread with each
        piece of the completion as it is sampled, when the policy can stream (else once,
        with the whole completion); returning False (or raising) stops the request there.
        It must be quick: the whole batch waits for it."""
        if self._closed.is_set():
            raise RuntimeError("the batching engine is closed")
        item = _Item(request, params, on_tokens=on_tokens)
        self._queue.put(item)
        return item.future

    def generate(self, requests: Sequence[GenerationRequest], params=None) -> list[Generation]:
        """Blocking convenience: submit all and wait."""
        futures = [self.submit(r, params) for r in requests]
        return [f.result() for f in futures]

    def release(self, ids: Sequence[str]) -> None:
        """Frees the policy state (cache rows) of these sessions, on the worker thread."""
        if ids and not self._closed.is_set():
            self._queue.put(("release", list(ids)))

    def call(self, fn: Callable[[RolloutPolicy], object]) -> object:
        """Runs `fn(policy)` on the worker thread between batches (e.g. a weight update)
        and returns its result."""
        future: Future = Future()
        self._queue.put(("call", fn, future))
        return future.result()

    def notify(self) -> None:
        """`expected()` may have dropped (an episode ended): a batch being collected
        re-checks it now instead of at the end of its wait."""
        if self._collecting and not self._closed.is_set():  # idle: nothing to re-check
            self._queue.put(("notify",))

    def watch_errors(self, fn: Callable[[BaseException], None]) -> Callable[[], None]:
        """Calls `fn(exception)` (on the worker thread) whenever the policy raises or breaks
        its contract; returns the function that stops watching."""
        self._watchers.append(fn)
        return lambda: self._watchers.remove(fn) if fn in self._watchers else None

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._queue.put(None)
            self._thread.join(timeout=10)

    # -- worker ---------------------------------------------------------------------------

    def _control(self, msg) -> None:
        if msg[0] == "notify":
            return
        if msg[0] == "release":  # deferred: one policy.release for many (see _flush)
            for i in msg[1]:
                if i in self._recent:
                    del self._recent[i]
                    self._released.append(i)
        else:
            self._flush()
            _, fn, future = msg
            try:
                future.set_result(fn(self.policy))
            except BaseException as e:  # noqa: BLE001 - delivered to the caller
                future.set_exception(e)

    def _collect(self, first: _Item) -> list[_Item]:
        """The batch: `first` and what arrives until it is full, the expected requests are
        in, or no request came for `window_s` (an idle window: a steady trickle of requests,
        e.g. over HTTP, still fills one batch), at most `max_wait_windows` windows in all.

        Without `expected` (serving), the requests expected are as many as the largest of
        the last `peak_batches` calls, and only the overall limit ends the wait for them,
        not the idle window. Clients whose requests missed a batch (one slow client, a
        pause) would otherwise stay a group of their own: each group waits only for its
        own requests, so the sampler runs two half-full calls for every full one, and a
        call costs about the same for any number of rows. Waiting for the recent peak
        merges the groups again. When clients leave, the first wait that runs out resets
        the peak to what came. A lone client is not made to wait: its peak is 1."""
        batch = [first]
        start = last = time.monotonic()
        peak = max(self._sizes) if self.expected is None and self._sizes else None
        self._collecting = True
        try:
            batch = self._collect_more(batch, start, last, peak)
        finally:
            self._collecting = False
        if peak is not None and len(batch) < peak and len(batch) < self.max_batch:
            self._sizes.clear()  # the wait ran out: fewer clients now, expect fewer
        self._sizes.append(len(batch))
        return batch

    def _collect_more(self, batch: list[_Item], start: float, last: float,
                      peak: int | None) -> list[_Item]:
        while len(batch) < self.max_batch:
            want = self.expected() if self.expected is not None else peak
            if want is not None and len(batch) >= want:
                break
            now = time.monotonic()
            idle = last + self.window_s if peak is None else math.inf
            timeout = min(idle, start + self.max_wait_windows * self.window_s) - now
            try:  # the wait is over: what is already queued still joins
                msg = self._queue.get(timeout=timeout) if timeout > 0 else \
                    self._queue.get_nowait()
            except queue.Empty:
                break
            if msg is None:
                self._queue.put(None)
                break
            if isinstance(msg, tuple):
                self._control(msg)
                continue
            batch.append(msg)
            last = time.monotonic()
        return batch

    def _flush(self) -> None:
        """Passes the deferred releases to the policy in one call: before a batch, before a
        `call`, when the queue runs dry and at close. (One `SamplerPolicy.release` resets
        its cache rows in one device op; released one by one, 128 episodes ending together
        cost the sampler a few dozen milliseconds of a small rollout's critical path.)"""
        if self._released:
            ids, self._released = self._released, []
            self.policy.release(ids)

    def _make_room(self, batch: list[_Item]) -> None:
        """Evicts least recently used idle sessions so the batch's sessions fit the rows."""
        if self.max_rows is None:
            return
        ids = {it.request.episode_id for it in batch}
        live = getattr(self.policy, "rows", None)
        live_ids = set(live) if live is not None else set(self._recent)
        need = len(ids - live_ids) - (self.max_rows - len(live_ids))
        if need <= 0:
            return
        evict = [i for i in self._recent if i in live_ids and i not in ids][:need]
        for i in evict:
            del self._recent[i]
        self.stats["evictions"] += len(evict)
        self.policy.release(evict)

    def _run(self, batch: list[_Item]) -> None:
        groups: dict[object, list[_Item]] = {}
        for it in batch:
            groups.setdefault(it.params, []).append(it)
        for params, items in groups.items():
            for it in items:
                self._recent.pop(it.request.episode_id, None)
                self._recent[it.request.episode_id] = None
            try:
                self._flush()
                self._make_room(items)
                if params is not None and hasattr(self.policy, "params"):
                    self.policy.params = params
                gens = self._generate(items)
                if len(gens) != len(items):
                    raise PolicyContractError(f"policy returned {len(gens)} generations for "
                                              f"{len(items)} requests")
                for it, gen in zip(items, gens):
                    check_generation(it.request, gen)
            except BaseException as e:  # noqa: BLE001 - each waiting caller gets the error
                for fn in list(self._watchers):
                    fn(e)
                for it in items:
                    it.future.set_exception(e)
                continue
            self.stats["calls"] += 1
            self.stats["requests"] += len(items)
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(items))
            for it, gen in zip(items, gens):
                it.future.set_result(gen)

    def _generate(self, items: list[_Item]) -> list[Generation]:
        requests = [it.request for it in items]
        if not any(it.on_tokens for it in items):
            return self.policy.generate(requests)

        def tell(i: int, ids, logprobs) -> bool:
            fn = items[i].on_tokens
            if fn is None:
                return True
            try:
                return fn(ids, logprobs) is not False
            except Exception:  # noqa: BLE001 - a broken listener stops only its request
                items[i].on_tokens = None
                return False

        if self._streams:
            self.stats["streamed_calls"] += 1
            return self.policy.generate(requests, on_tokens=tell)
        gens = self.policy.generate(requests)
        for i, g in enumerate(gens):  # a policy that cannot stream: one piece at the end
            tell(i, list(g.token_ids), list(g.logprobs))
        return gens

    def _work(self) -> None:
        while True:
            try:
                msg = self._queue.get_nowait()
            except queue.Empty:  # idle: hand the deferred releases over, then wait
                self._flush()
                msg = self._queue.get()
            if msg is None:
                break
            if isinstance(msg, tuple):
                self._control(msg)
                continue
            self._run(self._collect(msg))
        self._flush()
        # closed: fail whatever is still queued
        while True:
            try:
                msg = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(msg, _Item):
                msg.future.set_exception(RuntimeError("the batching engine is closed"))
