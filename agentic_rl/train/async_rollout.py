"""Asynchronous rollouts: the batches of the next steps are sampled while the learner trains.

With `train.max_off_policy_steps = S > 0` a producer thread samples the batch of step j
while the learner trains step j - 1 (and, when sampling is the slower side, up to S
steps ahead of it). Batch j is sampled with the weights of exactly version max(start,
j - S), where version v is the policy after v updates and `start` the step the producer
started at (a fresh run: 0; a resumed one, or a later `train()` call: the step it
resumed at, whose weights are the only ones at hand). Fixed lag, not "the newest
weights": which policy sampled a batch does not depend on which side was faster, so an
async run is as reproducible as a synchronous one (same seed and S, same metrics), and
the staleness is known: `async/staleness = step - version` (<= S).

By default a whole batch is sampled by one version (`train.partial_rollouts="finish"`:
episodes running when newer weights arrive finish on the version they started with), so
which policy sampled each token is known and reproducible. With "resume", the sampler
asks `newest()` before each batch of requests and switches running episodes to the
newest published version at their next turn (re-prefilled with it: rollout/
sampler_policy.py), which lowers the staleness of later turns at the price of exact
reproducibility. Either way every token's behaviour log-prob comes from the weights that
sampled it, which is all the learner's off-policy corrections (`rl.loss.off_policy`:
TIS / MIS / decoupled PPO) need, and each row records the version of its first turn
(`policy_version`) and of every turn (`policy_versions`).

The learner publishes a copy of its weights after every update (`publish`): its own
arrays are donated to the next update, so the sampler cannot share them (the frozen
ones, a LoRA base, are copied once and shared by every version: with LoRA only the
adapters are copied per update). At most S + 1 versions are held at once (older ones are
dropped as soon as no batch will need them).

The producer's rollouts and the trainer's evaluations share one sampler: `produce` must
take turns with them (the Trainer holds a lock around both: an evaluation waits for the
batch being sampled, and the producer for the evaluation). An error in the producer (a
rollout over its error budget, a policy bug) is re-raised by the learner's next `next()`.

Imports: stdlib only (the rollout and the weights are opaque to this module).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Produced:
    """One sampled batch: the step it is for, the weights version that sampled it, and
    what the rollout function returned."""

    step: int
    version: int
    value: Any
    sampled_at: float  # time.monotonic() when its rollout ended


class AsyncRollouts:
    """Samples the batches of steps `start`, `start + 1`, ... below `limit()` on a thread.

    produce(step, weights) -> value: the rollout of `step` with those weights (run on the
        producer thread).
    weights: the weights of version `start` (the learner's current ones, copied).
    lag: S = train.max_off_policy_steps (>= 1).
    limit: a callable returning the step count to stop before (read before each batch,
        so a horizon extended between `train()` calls is seen).
    """

    def __init__(self, produce: Callable[[int, Any], Any], *, start: int, weights: Any,
                 lag: int, limit: Callable[[], int]):
        if lag < 1:
            raise ValueError(f"lag must be >= 1 (0 is the synchronous loop), got {lag}")
        self.produce, self.start, self.lag, self.limit = produce, start, lag, limit
        self._cond = threading.Condition()
        self._weights: dict[int, Any] = {start: weights}
        self._ready: dict[int, Produced] = {}
        self._error: BaseException | None = None
        self._stop = False
        self._next_step = start  # the step the learner asks for next
        self.waited_s = 0.0  # the learner's total wait in next()
        self._thread = threading.Thread(target=self._run, name="async-rollouts", daemon=True)
        self._thread.start()

    def version_for(self, step: int) -> int:
        """The weights version that samples the batch of `step`."""
        return max(self.start, step - self.lag)

    # -- producer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        step = self.start
        try:
            while True:
                with self._cond:
                    version = self.version_for(step)
                    while not self._stop and step < self.limit() and \
                            version not in self._weights:
                        self._cond.wait()
                    if self._stop or step >= self.limit():
                        return
                    weights = self._weights[version]
                value = self.produce(step, weights)
                with self._cond:
                    self._ready[step] = Produced(step, version, value, time.monotonic())
                    # versions no later batch samples with
                    for v in [v for v in self._weights if v < self.version_for(step + 1)]:
                        del self._weights[v]
                    self._cond.notify_all()
                step += 1
        except BaseException as e:  # noqa: BLE001 - handed to the learner's next()
            with self._cond:
                self._error = e
                self._cond.notify_all()

    # -- learner side ------------------------------------------------------------------------

    def publish(self, version: int, weights: Any) -> None:
        """The learner's weights after `version` updates (a copy it will not donate)."""
        with self._cond:
            if version >= self.version_for(self._next_step):  # else no batch needs it
                self._weights[version] = weights
            self._cond.notify_all()

    def newest(self, after: int) -> tuple[int, Any] | None:
        """The newest published (version, weights) later than `after`, or None (a
        partial rollout resumed on newer weights; only versions a batch still to be
        sampled may start on are kept, and the newest published always is)."""
        with self._cond:
            newest = max(self._weights, default=after)
            return (newest, self._weights[newest]) if newest > after else None

    def wants(self, version: int) -> bool:
        """Whether a batch still to be sampled uses version `version` (else `publish`
        need not be called: the batch of step version + S is past the horizon)."""
        return version + self.lag < self.limit()

    def next(self) -> Produced:
        """The batch of the next step (blocks until it is sampled)."""
        step = self._next_step
        t0 = time.perf_counter()
        with self._cond:
            while step not in self._ready and self._error is None and \
                    self._thread.is_alive():
                self._cond.wait(timeout=1.0)
            if step not in self._ready:
                error = self._error or RuntimeError(
                    f"the rollout producer stopped before the batch of step {step + 1}")
                raise error
            produced = self._ready.pop(step)
        self.waited_s += time.perf_counter() - t0
        self._next_step = step + 1
        return produced

    def ready(self) -> int:
        """Batches sampled and not yet taken."""
        with self._cond:
            return len(self._ready)

    def close(self, timeout_s: float = 600.0) -> None:
        """Stops producing; waits for a rollout under way to end (its batch is dropped)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        with self._cond:
            self._ready.clear()
            self._weights.clear()
