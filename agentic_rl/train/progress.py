"""Console progress for the phases of a run that are not training steps.

A run on a CPU spends minutes outside the step bar: evaluating before the first step,
compiling the decode and update programs, saving checkpoints, exporting. `Progress`
shows each of them on stderr, so a screen is never silent for long:

  [ 0:11] evaluating step 0 on 96 'eval' tasks (greedy)
  [ 0:20] compiling decode (XLA, once per shape)...
  [ 0:21] compiled decode in 1.7 s
  eval @ step 0:  68%|██████▊   | 65/96 [03:02<01:11,  2.31s/ep, success=14.1%]
  [ 3:14] eval @ step 0: success 11.5% · valid tool calls 10.7% · ... · 182 s
  [11:26] saved the checkpoint of step 3 (0.3 s)

(lines from the README's main job, 2026-12-02; docs/results.md)

Everything goes through tqdm.write, so messages do not tear the step bar apart; with
`enabled=False` (log.progress=False, e.g. in tests) nothing is printed.

Imports: tqdm and jax.monitoring only.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

# recorded by jax (dispatch.log_elapsed_time) as a scalar when an XLA compile starts and as
# a duration when it ends, both with the jitted function's name
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _function_name(fun_name: str) -> str:
    """'jit(_decode_step)' -> 'decode_step'."""
    name = re.sub(r"^(?:jit|pjit|pmap)\((.*)\)$", r"\1", str(fun_name))
    return name.lstrip("_") or str(fun_name)


class Progress:
    """Timestamped phase messages, per-episode bars and compile notices on one stream."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None,
                 compile_notice_after_s: float = 1.0):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.notice_after_s = compile_notice_after_s
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        """One line, prefixed by the time since this Progress was made ([m:ss])."""
        if not self.enabled:
            return
        from tqdm import tqdm

        m, s = divmod(int(time.monotonic() - self.started), 60)
        with self._lock:
            tqdm.write(f"[{m:2d}:{s:02d}] {text}", file=self.stream)

    @contextmanager
    def phase(self, done: str, start: str | None = None) -> Iterator[None]:
        """Says `start` (if given) now and `done`, with the block's seconds, when it ends."""
        if start is not None:
            self.say(start)
        t0 = time.perf_counter()
        yield
        self.say(f"{done} ({time.perf_counter() - t0:.1f} s)")

    @contextmanager
    def episodes(self, total: int, desc: str, leave: bool = False
                 ) -> Iterator[Callable[[Mapping[str, Any] | None], None]]:
        """A bar over `total` episodes with the success rate so far; yields the callback
        `run_episodes(on_episode=...)` takes (metadata, or None for a dropped episode).
        The bar goes when done unless `leave` (a summary line via `say` stays instead)."""
        if not self.enabled:
            yield lambda meta: None
            return
        from tqdm import tqdm

        # smoothing=0: the rate since the start, since episodes end in bursts (a batch of
        # rows finishes together) and tqdm's default moving rate made ETAs of hours
        bar = tqdm(total=total, desc=desc, unit="ep", dynamic_ncols=True, file=self.stream,
                   leave=leave, smoothing=0.0)
        counts = {"done": 0, "ok": 0, "dropped": 0}

        def on_episode(meta: Mapping[str, Any] | None) -> None:
            counts["done"] += 1
            if meta is None:
                counts["dropped"] += 1
            else:
                counts["ok"] += bool(meta.get("success"))
            post = {"success": f"{counts['ok'] / counts['done']:.1%}"}
            if counts["dropped"]:
                post["dropped"] = str(counts["dropped"])
            bar.update(1)
            bar.set_postfix(post, refresh=False)

        try:
            yield on_episode
        finally:
            bar.close()

    @contextmanager
    def watch_compiles(self) -> Iterator[None]:
        """Announces an XLA compile that runs longer than `compile_notice_after_s` (so the
        many tiny eager-op compiles stay quiet), and says how long it took."""
        if not self.enabled:
            yield
            return
        import jax.monitoring as monitoring

        pending: dict[tuple[int, str], threading.Timer] = {}

        def on_start(event: str, value: float, **kwargs: Any) -> None:
            if event != BACKEND_COMPILE_EVENT:
                return
            name = _function_name(kwargs.get("fun_name", "?"))
            timer = threading.Timer(self.notice_after_s, self.say,
                                    (f"compiling {name} (XLA, once per shape)...",))
            timer.daemon = True
            pending[(threading.get_ident(), name)] = timer
            timer.start()

        def on_end(event: str, duration: float, **kwargs: Any) -> None:
            if event != BACKEND_COMPILE_EVENT:
                return
            name = _function_name(kwargs.get("fun_name", "?"))
            timer = pending.pop((threading.get_ident(), name), None)
            if timer is not None:
                timer.cancel()
            if duration >= self.notice_after_s:
                self.say(f"compiled {name} in {duration:.1f} s")

        monitoring.register_scalar_listener(on_start)
        monitoring.register_event_duration_secs_listener(on_end)
        try:
            yield
        finally:
            monitoring.unregister_scalar_listener(on_start)
            monitoring.unregister_event_duration_listener(on_end)
            for timer in pending.values():
                timer.cancel()
