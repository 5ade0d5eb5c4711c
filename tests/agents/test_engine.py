"""The batching engine: concurrent requests share one policy call, sessions beyond the
policy's rows evict the least recently used idle one, and policy errors reach every
waiting caller without stopping the engine."""

from __future__ import annotations

import threading

import pytest

from agentic_rl.agents import BatchingEngine
from agentic_rl.rollout import Generation, GenerationRequest


class RowPolicy:
    """A policy with `max_rows` cache rows, like SamplerPolicy: generating for a session
    takes a row; more live sessions than rows is an error."""

    def __init__(self, max_rows=2, fail_on=None):
        self.max_rows, self.rows, self.calls, self.fail_on = max_rows, {}, [], fail_on
        self.released = []

    def generate(self, requests):
        self.calls.append([r.episode_id for r in requests])
        for r in requests:
            if r.episode_id == self.fail_on:
                raise RuntimeError("policy bug")
            self.rows.setdefault(r.episode_id, len(self.rows))
        if len(self.rows) > self.max_rows:
            raise RuntimeError(f"{len(self.rows)} live sessions > {self.max_rows} rows")
        return [Generation([1], [0.0], "stop") for _ in requests]

    def release(self, ids):
        self.released += list(ids)
        for i in ids:
            self.rows.pop(i, None)


def req(i):
    return GenerationRequest(str(i), (1, 2), 2, 4, (9,))


def test_concurrent_requests_share_one_call():
    policy = RowPolicy(max_rows=8)
    engine = BatchingEngine(policy, window_s=0.5, expected=lambda: 8)
    out = []
    threads = [threading.Thread(target=lambda i=i: out.append(engine.submit(req(i)).result()))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.close()
    assert len(out) == 8 and [len(c) for c in policy.calls] == [8]


def test_sessions_beyond_the_rows_evict_the_least_recently_used():
    policy = RowPolicy(max_rows=2)
    engine = BatchingEngine(policy, window_s=0.0)
    for i in ("a", "b", "a", "c", "d"):
        engine.submit(req(i)).result()
    engine.release(["d"])
    engine.submit(req("a")).result()
    engine.close()
    assert policy.released == ["b", "a", "d"]  # b was idle longest; then a; d on request
    assert engine.stats["evictions"] == 2


def test_policy_errors_reach_the_callers_and_the_engine_goes_on():
    policy = RowPolicy(max_rows=4, fail_on="bad")
    engine = BatchingEngine(policy, window_s=0.0)
    with pytest.raises(RuntimeError, match="policy bug"):
        engine.submit(req("bad")).result()
    assert engine.submit(req("ok")).result().token_ids == [1]
    assert engine.call(lambda p: len(p.calls)) == 2
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(req("late"))
