"""Incremental streaming through the real gateway and the real `openai` SDK: chunks leave
the server while the completion is still being sampled (chat and text completions),
tool-call markup and client stop strings never leak into the streamed text, the streamed
text is the message the row continues from, a client that hangs up (also before its
stream started) stops its row early, and on the jitted sampler a streamed completion is
token for token the unstreamed one."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import numpy as np
import openai
import pytest

from agentic_rl.agents import Gateway
from agentic_rl.rollout import ScriptedPolicy
from tests.agents.conftest import ADD_TOOL, make_service


class HeldPolicy(ScriptedPolicy):
    """Streams its scripted text one token at a time, but holds after `hold_after` tokens
    until `go` is set: a test can prove a chunk reached the client mid-generation."""

    def __init__(self, tok, script, hold_after: int, token_s: float = 0.0):
        super().__init__(tok, script, logprob=-0.5)
        self.hold_after, self.go, self.stopped_at = hold_after, threading.Event(), None
        self.token_s = token_s  # time per token once released (a real sampler's pace)

    def generate(self, requests, on_tokens=None):
        if on_tokens is None:
            return super().generate(requests)
        sent = {"n": 0}

        def held(i, ids, logprobs):
            if sent["n"] == self.hold_after and not self.go.wait(30):
                raise AssertionError("the client never saw the first chunks")
            sent["n"] += 1
            if self.token_s and sent["n"] > self.hold_after:
                time.sleep(self.token_s)
            keep = on_tokens(i, ids, logprobs)
            if keep is False:
                self.stopped_at = sent["n"]
            return keep

        return super().generate(requests, on_tokens=held)


def _service(policy, fmt, **kw):
    return make_service(policy, fmt, max_new_tokens=400, max_context_tokens=4096, **kw)


def _wait_for(condition, timeout_s: float = 30.0) -> bool:
    """Polls `condition` until it holds or `timeout_s` passed (generous: CI is loaded)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_chunks_reach_the_client_while_sampling_continues(fmt):
    text = "Counting: one two three four five six seven."
    policy = HeldPolicy(fmt.tok, [text, text], hold_after=10)
    service = _service(policy, fmt)
    service.start_rollout("r")
    try:
        with Gateway(service) as gw:
            client = openai.OpenAI(base_url=f"{gw.url}/rollouts/r/v1", api_key="k",
                                   max_retries=0, timeout=60)
            got = []
            stream = client.chat.completions.create(
                model="policy", messages=[{"role": "user", "content": "count"}], stream=True)
            for chunk in stream:
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    got.append(delta)
                    # the policy waits for this before sampling token 11: without
                    # incremental streaming no content could arrive and it would time out
                    policy.go.set()
            assert "".join(got) == text
            assert "".join(got[:1]) == text[:len(got[0])] and len(got) > 5
            finish = chunk.choices[0].finish_reason
            assert finish == "stop"
            # the accumulated message continues the same row
            r2 = client.chat.completions.create(model="policy", messages=[
                {"role": "user", "content": "count"}, {"role": "assistant", "content": text},
                {"role": "user", "content": "again"}])
            assert r2.choices[0].message.content == text
        records, _ = service.finish_rollout("r")
        assert len(records) == 1 and records[0].metadata["num_turns"] == 2
        assert service.metrics["prefix_breaks"] == 0
    finally:
        service.engine.close()


def test_text_completions_stream_while_sampling_continues(fmt):
    text = "Counting: one two three four five six seven. END and more"
    policy = HeldPolicy(fmt.tok, [text], hold_after=10)
    service = _service(policy, fmt)
    try:
        with Gateway(service) as gw:
            client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="k", max_retries=0,
                                   timeout=60)
            got, finish, usage, lps, ids = [], None, None, [], None
            for chunk in client.completions.create(
                    model="policy", prompt="count", stop=["END"], logprobs=1, stream=True,
                    stream_options={"include_usage": True}):
                if chunk.usage is not None:
                    assert chunk.choices == []
                    usage = chunk.usage
                    continue
                (choice,) = chunk.choices
                assert chunk.object == "text_completion" and choice.index == 0
                if choice.text:
                    got.append(choice.text)
                    # the policy waits for this before sampling token 11: without
                    # incremental streaming no text could arrive and it would time out
                    policy.go.set()
                if choice.logprobs is not None:
                    lps += choice.logprobs.token_logprobs
                finish = choice.finish_reason or finish
                ids = chunk.model_extra.get("token_ids", ids)
            streamed = "".join(got)
            assert streamed == "Counting: one two three four five six seven. "
            assert len(got) > 5 and not any("E" in g for g in got)  # "E", "EN" held back
            assert finish == "stop"
            assert ids is not None and usage.completion_tokens == len(ids) == len(lps)
            assert lps == [-0.5] * len(ids)
            # the unstreamed completion of the same script is the same text
            policy.go.set()
            whole = client.completions.create(model="policy", prompt="count", stop=["END"])
            assert whole.choices[0].text == streamed
            # echo: the prompt comes first; two prompts are two choices
            texts = {0: "", 1: ""}
            for chunk in client.completions.create(model="policy", prompt=["p0", "p1"],
                                                   echo=True, stream=True):
                for c in chunk.choices:
                    texts[c.index] += c.text
            assert texts == {0: "p0" + text, 1: "p1" + text}
        assert service.metrics["stream_hangups"] == 0
    finally:
        service.engine.close()


@pytest.mark.parametrize("route, body", [
    ("chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("completions", {"prompt": "hi"}),
])
def test_a_client_that_leaves_before_its_stream_starts_stops_its_row(fmt, route, body):
    """The client sends its request and closes the socket before the server has opened its
    stream (the test holds the rollout's lock, so the call waits to be planned, as it
    would wait on a busy server): the gateway notices (a stream hang-up), and the row
    stops at its first token and is freed instead of being sampled to the end."""
    policy = ScriptedPolicy(fmt.tok, ["z" * 3000])
    service = make_service(policy, fmt, max_new_tokens=4000, max_context_tokens=8000)
    service.start_rollout("r")
    scope = service.scopes["r"]
    payload = json.dumps({**body, "stream": True}).encode()
    try:
        with Gateway(service) as gw:
            head = (f"POST /rollouts/r/v1/{route} HTTP/1.1\r\nHost: {gw.host}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n").encode()
            with scope.lock:  # the call cannot be planned until the client has gone
                sock = socket.create_connection((gw.host, gw.port), timeout=30)
                sock.sendall(head + payload)
                read = _wait_for(lambda: service.metrics["requests"] == 1)  # body read
                sock.close()
                noticed = _wait_for(lambda: service.metrics.get("stream_hangups") == 1)
            freed = _wait_for(lambda: policy.released)
            assert read and noticed and freed, (read, noticed, freed)
        assert policy.released == ["r"]
        (chain,) = scope.chains
        assert chain.closed and chain.truncated and chain.turn == 1
        assert chain.finish_reasons == ["length"]
        assert 1 <= sum(chain.record.loss_mask) <= 5  # stopped at once, not 3000 tokens
    finally:
        service.engine.close()


def test_tool_call_markup_and_stop_strings_are_never_streamed_as_text(fmt):
    call = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
    script = [f"Let me add these. {call}", "The answer is 5. END of story"]
    policy = ScriptedPolicy(fmt.tok, script, logprob=-0.5)
    service = _service(policy, fmt)
    service.start_rollout("r")
    try:
        with Gateway(service) as gw:
            client = openai.OpenAI(base_url=f"{gw.url}/rollouts/r/v1", api_key="k",
                                   max_retries=0)
            messages = [{"role": "user", "content": "2+3?"}]
            text, calls, finish = [], {}, None
            for chunk in client.chat.completions.create(model="policy", messages=messages,
                                                        tools=[ADD_TOOL], stream=True):
                d = chunk.choices[0].delta
                text.append(d.content or "")
                for tc in d.tool_calls or ():
                    e = calls.setdefault(tc.index, {"id": tc.id, "name": "", "arguments": ""})
                    e["name"] += tc.function.name or ""
                    e["arguments"] += tc.function.arguments or ""
                finish = chunk.choices[0].finish_reason or finish
            streamed = "".join(text)
            assert "<tool" not in streamed and "tool_call" not in streamed
            assert streamed.strip() == "Let me add these."
            assert finish == "tool_calls" and calls[0]["name"] == "add"
            assert json.loads(calls[0]["arguments"]) == {"a": 2, "b": 3}
            messages += [{"role": "assistant", "content": streamed, "tool_calls": [
                {"id": calls[0]["id"], "type": "function",
                 "function": {"name": "add", "arguments": calls[0]["arguments"]}}]},
                {"role": "tool", "tool_call_id": calls[0]["id"], "content": "5"}]
            pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model="policy", messages=messages, tools=[ADD_TOOL], stop=["END"],
                stream=True) if c.choices]
            # " E", "EN" were held back (they could have grown into the stop string)
            assert "".join(pieces) == "The answer is 5. "
            assert not any("E" in p for p in pieces)
        records, _ = service.finish_rollout("r")
        assert len(records) == 1  # the streamed messages continued the row
        assert service.metrics["prefix_breaks"] == 0
    finally:
        service.engine.close()


def test_a_client_that_hangs_up_stops_its_row_at_once(fmt):
    # 2 ms a token: the 3000 tokens take 6 s, far longer than the gateway needs to notice
    # (a scripted policy without a pace can finish before the first check under CI load)
    policy = HeldPolicy(fmt.tok, ["y" * 3000], hold_after=3, token_s=0.002)
    service = make_service(policy, fmt, max_new_tokens=4000, max_context_tokens=8000)
    service.start_rollout("r")
    try:
        with Gateway(service) as gw:
            body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
            with httpx.stream("POST", f"{gw.url}/rollouts/r/v1/chat/completions",
                              json=body) as r:
                lines = r.iter_lines()
                while "y" not in next(lines):
                    pass
                policy.go.set()
            for _ in range(200):
                if policy.released:
                    break
                time.sleep(0.05)
        assert policy.released == ["r"]
        assert policy.stopped_at is not None and policy.stopped_at < 3000
        (chain,) = service.scopes["r"].chains
        assert chain.closed and chain.truncated
        assert chain.finish_reasons == ["length"] and chain.turn == 1
    finally:
        service.engine.close()


def test_a_refused_stream_is_a_json_error_not_a_stream(fmt):
    service = _service(ScriptedPolicy(fmt.tok, ["hi"]), fmt)
    try:
        with Gateway(service) as gw:
            r = httpx.post(f"{gw.url}/rollouts/nope/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "hi"}], "stream": True})
            assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_rollout"
            r = httpx.post(f"{gw.url}/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "x" * 5000}], "stream": True})
            assert r.status_code == 400
            assert r.json()["error"]["code"] == "context_length_exceeded"
    finally:
        service.engine.close()


@pytest.mark.slow
def test_tiny_sampler_streams_exactly_the_unstreamed_completion(fmt):
    """Streamed (chunks of 4 tokens) vs one whole-budget call, same row id and turn: the
    same token ids and log-probs, the streamed text is the message, and it came in
    several chunks."""
    from flax import nnx

    from agentic_rl.models.transformer import Transformer
    from agentic_rl.rollout.sampler_policy import SamplerPolicy
    from agentic_rl.train.builders import tiny_model_config
    from agentic_rl.train.config import default_config

    model = Transformer(tiny_model_config(default_config()), rngs=nnx.Rngs(0))
    policy = SamplerPolicy(model, fmt.tok, max_rows=4, capacity=256, stream_chunk=4)
    service = make_service(policy, fmt, max_new_tokens=24, max_context_tokens=256,
                           stop_strings=())
    body = {"model": "policy", "messages": [{"role": "user", "content": "Hello"}],
            "temperature": 1.0, "logprobs": True}
    try:
        with Gateway(service) as gw:
            client = openai.OpenAI(base_url=f"{gw.url}/rollouts/s/v1", api_key="k",
                                   max_retries=0)
            service.start_rollout("s")
            whole = client.chat.completions.create(**body)
            service.finish_rollout("s")
            service.start_rollout("s")  # the same row id and turn: the same PRNG stream
            chunks = list(client.chat.completions.create(**body, stream=True))
            service.finish_rollout("s")
    finally:
        service.engine.close()
    ids = next(c.model_extra["token_ids"] for c in chunks if "token_ids" in c.model_extra)
    assert ids == whole.choices[0].model_extra["token_ids"]
    content = [c.choices[0].delta.content for c in chunks if c.choices and
               c.choices[0].delta.content]
    assert "".join(content) == whole.choices[0].message.content
    streamed_lps = [t.logprob for c in chunks if c.choices and c.choices[0].logprobs
                    for t in c.choices[0].logprobs.content]
    np.testing.assert_allclose(streamed_lps, [t.logprob for t in
                                              whole.choices[0].logprobs.content], rtol=1e-5)
    if len(ids) > 8:
        assert len(content) >= 2
    assert policy.stats["reprefills"] == 0
