"""Cached daemon threads and a watchdog for the rollout runtime's per-episode work.

`run_agents` runs each episode's agent on a thread of its own, and `EnvAgent` each
environment call on another (so that a hung environment can be timed out). Starting a
thread costs far more than handing work to an idle one: `Thread.start` waits until the
new thread runs, and with a hundred busy threads that handshake takes about a
millisecond, which for a rollout of 128 short episodes was most of its time. So both
hand their work to `run_on_thread`, a process-wide cache of daemon threads: an idle
thread takes the work at once; when none is idle a new one starts. Work always starts
immediately (never queued behind other work), which is what the step timeout's
"counted from when the call starts" relies on. A thread idle for `IDLE_S` exits; one
stuck in a hung call simply never comes back, and as a daemon never keeps the process
alive.

`watch(timeout_s, on_timeout)` is one watchdog thread for every deadline: `EnvAgent`
runs each environment call on the agent's own thread (no hand-off to another thread
and back, which cost more than the call itself for small environments) and cancels the
watch when the call returns; a call that hangs past its deadline is reported by the
watchdog instead, and the run drops the episode without waiting for its thread.

Imports: the standard library only.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable

IDLE_S = 30.0

_idle: list[queue.SimpleQueue] = []  # the inboxes of idle threads
_lock = threading.Lock()
_started = [0]  # threads started (for tests and benchmarks)


def _work(inbox: queue.SimpleQueue) -> None:
    while True:
        try:
            fn = inbox.get(timeout=IDLE_S)
        except queue.Empty:
            with _lock:
                if inbox in _idle:  # nobody is handing us work: exit
                    _idle.remove(inbox)
                    return
            continue  # a caller took this inbox just now: its work is on the way
        try:
            fn()
        except BaseException:  # noqa: BLE001, S110 - callers catch their own errors
            pass
        del fn
        with _lock:
            _idle.append(inbox)


def run_on_thread(fn: Callable[[], object], name: str = "rollout") -> None:
    """Runs `fn()` now on an idle cached daemon thread, or on a new one. `fn` must handle
    its own exceptions (they are dropped) and report its result itself."""
    with _lock:
        inbox = _idle.pop() if _idle else None
    if inbox is None:
        inbox = queue.SimpleQueue()
        _started[0] += 1
        threading.Thread(target=_work, args=(inbox,), name=f"{name}-{_started[0]}",
                         daemon=True).start()
    inbox.put(fn)


def threads_started() -> int:
    """How many cached threads were started in this process so far."""
    return _started[0]


class Watch:
    """One deadline being watched (see `watch`)."""

    __slots__ = ("on_timeout", "state")

    def __init__(self, on_timeout: Callable[[], object]):
        self.on_timeout = on_timeout
        self.state = "pending"  # pending | cancelled | fired

    def cancel(self) -> bool:
        """Stops watching; False when the deadline already fired (too late)."""
        with _cond:
            if self.state == "pending":
                self.state = "cancelled"
            return self.state == "cancelled"


_heap: list[tuple[float, int, Watch]] = []
_cond = threading.Condition()
_seq = itertools.count()
_watchdog: list[threading.Thread] = []


def _watch_loop() -> None:
    with _cond:
        while True:
            while _heap and _heap[0][2].state != "pending":
                heapq.heappop(_heap)
            if not _heap:
                _cond.wait()
                continue
            wait = _heap[0][0] - time.monotonic()
            if wait > 0:
                _cond.wait(wait)
                continue
            _, _, w = heapq.heappop(_heap)
            w.state = "fired"
            _cond.release()
            try:
                w.on_timeout()
            except BaseException:  # noqa: BLE001, S110 - a callback's error is its own
                pass
            finally:
                _cond.acquire()


def watch(timeout_s: float, on_timeout: Callable[[], object]) -> Watch:
    """Calls `on_timeout()` (on the one watchdog thread; it must be quick) once
    `timeout_s` seconds have passed, unless the returned `Watch` is cancelled first.

    This is how a call that must not run past a limit (an environment step) can run on
    the calling thread itself, with no hand-off to another thread and back: if it
    hangs, the watchdog reports it, and the stuck thread (a daemon) is abandoned."""
    w = Watch(on_timeout)
    deadline = time.monotonic() + timeout_s
    with _cond:
        if not _watchdog:
            _watchdog.append(threading.Thread(target=_watch_loop, name="rollout-watchdog",
                                              daemon=True))
            _watchdog[0].start()
        heapq.heappush(_heap, (deadline, next(_seq), w))
        if _heap[0][2] is w:  # the earliest deadline now: the watchdog must wake sooner
            _cond.notify()
    return w
