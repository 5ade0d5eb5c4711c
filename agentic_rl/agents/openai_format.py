"""The OpenAI chat/completions wire format: request checking, message canonical forms,
and response bodies. Pure functions over dicts (no server, no model), so the gateway, the
in-process client and the tests share one reading of the format.

Requests are checked strictly where a wrong value would change what is sampled (types and
ranges of sampling parameters, message roles and contents, tool schemas) and leniently
elsewhere: fields a client sends that change nothing here (`user`, `metadata`, `store`,
`parallel_tool_calls`, `service_tier`, ...) are ignored, so a newer client still works.
A parameter that would change the output but is not implemented (`top_logprobs > 0`,
non-zero penalties, `logit_bias`, JSON response formats, a forced `tool_choice`) is a 400
that names it, never silently ignored. `seed` is accepted and not used: every row's
draws come from its own PRNG stream (the run seed, the row's id and its turn), so
samples are reproducible without it.

Imports: agentic_rl.envs (messages and the tool-call parser) only; no jax.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentic_rl.envs.tools.parser import TOOL_CALL_CLOSE, render_tool_call, split_tool_blocks

Message = dict[str, Any]
ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_N = 16
MAX_STOP = 4


class APIError(Exception):
    """An OpenAI-style error: HTTP `status` and the body `{"error": {...}}`."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type, param, code)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def _bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Sampling:
    """The sampling fields of a request (None: not given, the server's default applies)."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: bool = False
    seed: int | None = None


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]  # normalized (see `normalize_message`)
    tools: tuple[dict[str, Any], ...]  # canonical function descriptions
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompts: tuple[str, ...]
    sampling: Sampling
    echo: bool = False
    stream: bool = False
    include_usage: bool = False


def _number(body: Mapping, key: str, lo: float, hi: float) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(f"'{key}' must be a number, got {_short(v)}", key)
    if not lo <= v <= hi:
        raise _bad(f"'{key}' must be between {lo} and {hi}, got {v}", key)
    return float(v)


def _integer(body: Mapping, key: str, lo: int, hi: int) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"'{key}' must be an integer, got {_short(v)}", key)
    if not lo <= v <= hi:
        raise _bad(f"'{key}' must be between {lo} and {hi}, got {v}", key)
    return int(v)


def _short(v: Any, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sampling(body: Mapping) -> Sampling:
    for key in ("frequency_penalty", "presence_penalty"):
        if _number(body, key, -2.0, 2.0):
            raise _bad(f"'{key}' is not supported (only 0)", key, "unsupported_parameter")
    if body.get("logit_bias"):
        raise _bad("'logit_bias' is not supported", "logit_bias", "unsupported_parameter")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, Mapping) and fmt.get("type") == "text"):
        raise _bad("'response_format' other than {'type': 'text'} is not supported",
                   "response_format", "unsupported_parameter")
    max_tokens = _integer(body, "max_completion_tokens", 1, 1 << 20)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1, 1 << 20)
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise _bad("'stop' must be a string or a list of strings", "stop")
    if len(stops) > MAX_STOP or any(not s or len(s) > 256 for s in stops):
        raise _bad(f"'stop' takes at most {MAX_STOP} non-empty strings of <= 256 characters",
                   "stop")
    logprobs = body.get("logprobs", False)
    if logprobs is None:
        logprobs = False
    if not isinstance(logprobs, bool):
        raise _bad("'logprobs' must be a boolean", "logprobs")
    if _integer(body, "top_logprobs", 0, 20):
        raise _bad("'top_logprobs' > 0 is not supported (the sampler returns the log-prob of "
                   "the sampled token only; use logprobs=true)", "top_logprobs",
                   "unsupported_parameter")
    seed = _integer(body, "seed", -(1 << 63), (1 << 64) - 1)
    return Sampling(
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        max_tokens=max_tokens, stop=stops,
        n=_integer(body, "n", 1, MAX_N) or 1, logprobs=logprobs, seed=seed)


def _model(body: Mapping) -> str:
    model = body.get("model", "")
    if model is None:
        model = ""
    if not isinstance(model, str) or len(model) > 256:
        raise _bad("'model' must be a string of at most 256 characters", "model")
    return model


def _stream(body: Mapping) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, Mapping):
        raise _bad("'stream_options' must be an object", "stream_options")
    usage = opts.get("include_usage", False)
    if not isinstance(usage, bool):
        raise _bad("'stream_options.include_usage' must be a boolean", "stream_options")
    return stream, usage


def _text_content(content: Any, where: str, *, allow_none: bool) -> str | None:
    """A message's content as text: a string, or a list of text parts joined."""
    if content is None:
        if allow_none:
            return None
        raise _bad(f"{where}.content is required", where)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") not in ("text", "input_text",
                                                                        "output_text"):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise _bad(f"{where}.content[{j}] has type {_short(kind)}; only text parts are "
                           "supported", where, "unsupported_content")
            if not isinstance(part.get("text"), str):
                raise _bad(f"{where}.content[{j}].text must be a string", where)
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(f"{where}.content must be a string or a list of text parts", where)


def _arguments(raw: Any, where: str) -> Any:
    """A tool call's arguments as a value (clients send a JSON string)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):
            return raw  # kept as text: it still renders, and compares, as itself
    if isinstance(raw, (Mapping, list)) or raw is None:
        return raw if raw is not None else {}
    raise _bad(f"{where}.function.arguments must be a JSON string", where)


def normalize_message(m: Any, i: int) -> Message:
    """One request message as {role, content: str, tool_calls?: [(id, name, args)],
    tool_call_id?}; `developer` reads as `system`."""
    where = f"messages[{i}]"
    if not isinstance(m, Mapping):
        raise _bad(f"{where} must be an object", "messages")
    role = m.get("role")
    if role not in ROLES:
        raise _bad(f"{where}.role must be one of {', '.join(ROLES)}; got {_short(role)}",
                   "messages")
    role = "system" if role == "developer" else role
    calls = m.get("tool_calls") if role == "assistant" else None
    content = _text_content(m.get("content"), where, allow_none=role == "assistant")
    out: Message = {"role": role, "content": content or ""}
    if calls:
        if not isinstance(calls, list):
            raise _bad(f"{where}.tool_calls must be a list", "messages")
        parsed = []
        for j, c in enumerate(calls):
            w = f"{where}.tool_calls[{j}]"
            fn = c.get("function") if isinstance(c, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                raise _bad(f"{w} must be {{'type': 'function', 'function': {{'name': ..., "
                           "'arguments': ...}}", "messages")
            cid = c.get("id") or ""
            if not isinstance(cid, str):
                raise _bad(f"{w}.id must be a string", "messages")
            parsed.append((cid, fn["name"], _arguments(fn.get("arguments"), w)))
        out["tool_calls"] = parsed
    elif content is None:
        raise _bad(f"{where}: an assistant message needs content or tool_calls", "messages")
    if role == "tool":
        tid = m.get("tool_call_id", "")
        if tid is not None and not isinstance(tid, str):
            raise _bad(f"{where}.tool_call_id must be a string", "messages")
        out["tool_call_id"] = tid or ""
    return out


def _tools(body: Mapping) -> tuple[dict[str, Any], ...]:
    tools = body.get("tools")
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list", "tools")
    out, names = [], set()
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, Mapping) else None
        if not isinstance(t, Mapping) or t.get("type", "function") != "function" or \
                not isinstance(fn, Mapping):
            raise _bad(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}", "tools")
        name = fn.get("name")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise _bad(f"tools[{i}].function.name must be a non-empty string", "tools")
        if name in names:
            raise _bad(f"tools[{i}]: duplicate tool name {name!r}", "tools")
        names.add(name)
        desc = fn.get("description") or ""
        params = fn.get("parameters")
        if not isinstance(desc, str):
            raise _bad(f"tools[{i}].function.description must be a string", "tools")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, Mapping):
            raise _bad(f"tools[{i}].function.parameters must be a JSON schema object", "tools")
        out.append({"type": "function", "function": {"name": name, "description": desc,
                                                     "parameters": dict(params)}})
    choice = body.get("tool_choice")
    if choice not in (None, "auto", "none"):
        raise _bad("'tool_choice' other than 'auto' or 'none' is not supported (decoding is "
                   "not constrained to a tool call)", "tool_choice", "unsupported_parameter")
    return () if choice == "none" else tuple(out)


def parse_chat_request(body: Any) -> ChatRequest:
    """A checked `/v1/chat/completions` request body (APIError 400 naming the problem)."""
    if not isinstance(body, Mapping):
        raise _bad("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list", "messages")
    normalized = tuple(normalize_message(m, i) for i, m in enumerate(messages))
    if normalized[-1]["role"] == "assistant":
        raise _bad("the last message is an assistant message; continuing an assistant turn "
                   "is not supported", "messages")
    stream, usage = _stream(body)
    return ChatRequest(_model(body), normalized, _tools(body), _sampling(body), stream, usage)


def parse_completion_request(body: Any) -> CompletionRequest:
    """A checked `/v1/completions` request body."""
    if not isinstance(body, Mapping):
        raise _bad("the request body must be a JSON object")
    prompt = body.get("prompt")
    prompts = (prompt,) if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or \
            not all(isinstance(p, str) and p for p in prompts) or len(prompts) > MAX_N:
        raise _bad(f"'prompt' must be a non-empty string or a list of 1-{MAX_N} of them",
                   "prompt")
    echo = body.get("echo", False)
    if not isinstance(echo, bool):
        raise _bad("'echo' must be a boolean", "echo")
    if body.get("suffix"):
        raise _bad("'suffix' is not supported", "suffix", "unsupported_parameter")
    if body.get("logprobs") not in (None, False, 0, True, 1):
        raise _bad("'logprobs' > 1 is not supported (the sampled token's log-prob only)",
                   "logprobs", "unsupported_parameter")
    sampling = _sampling({**body, "logprobs": bool(body.get("logprobs"))})
    stream, usage = _stream(body)
    return CompletionRequest(_model(body), tuple(prompts), sampling, echo, stream, usage)


# ---------------------------------------------------------------------------- messages


def assistant_text(m: Message) -> str:
    """An assistant message as the text a model in our tool format would have written."""
    parts = [m["content"]] if m["content"] else []
    for _, name, args in m.get("tool_calls", ()):
        parts.append(render_tool_call(name, args if isinstance(args, Mapping) else {}))
    return "\n".join(parts)


def chat_messages(messages: Sequence[Message]) -> list[Message]:
    """Normalized messages as the plain {role, content} messages a `ChatMLFormat` renders
    (assistant tool calls written out in the tool-call format)."""
    out = []
    for m in messages:
        if m["role"] == "assistant":
            out.append({"role": "assistant", "content": assistant_text(m)})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def same_message(sent: Message, ours: Message) -> bool:
    """Whether a message a client sent back is the one we returned (or rendered): same
    role and content (ignoring surrounding whitespace; a client may drop the text of a
    message that carries tool calls), same tool calls by name and arguments (ids are
    ours, and clients echo them), the same tool-call id for tool results."""
    if sent["role"] != ours["role"]:
        return False
    a, b = sent["content"].strip(), ours["content"].strip()
    calls_a = [(n, json.dumps(x, sort_keys=True)) for _, n, x in sent.get("tool_calls", ())]
    calls_b = [(n, json.dumps(x, sort_keys=True)) for _, n, x in ours.get("tool_calls", ())]
    if calls_a != calls_b:
        return False
    if a != b and not (calls_b and not a):
        return False
    return sent.get("tool_call_id", "") == ours.get("tool_call_id", "") or ours["role"] != "tool"


def parse_assistant(text: str, tools: Sequence[Mapping[str, Any]], call_prefix: str
                    ) -> tuple[Message, bool]:
    """The generated `text` as an assistant message, and whether a tool-call attempt was
    malformed. With request `tools`, well-formed `<tool_call>` blocks naming one of them
    become `tool_calls`; anything else (no tools, bad JSON, an unknown name) stays text."""
    if not tools or "<tool_call>" not in text and TOOL_CALL_CLOSE not in text:
        return {"role": "assistant", "content": text}, False
    names = {t["function"]["name"] for t in tools}
    content, blocks, errors = split_tool_blocks(text, 64 * 1024)
    calls = []
    for i, body in enumerate(blocks):
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            return {"role": "assistant", "content": text}, True
        args = obj.get("arguments", {}) if isinstance(obj, dict) else None
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except (ValueError, RecursionError):
                args = None
        if not isinstance(obj, dict) or obj.get("name") not in names or \
                not isinstance(args, dict):
            return {"role": "assistant", "content": text}, True
        calls.append((f"{call_prefix}_{i}", obj["name"], args))
    if errors or not calls:
        return {"role": "assistant", "content": text}, True
    return {"role": "assistant", "content": content.strip(), "tool_calls": calls}, False


def wire_message(m: Message) -> dict[str, Any]:
    """A normalized assistant message in the response format."""
    out: dict[str, Any] = {"role": "assistant", "content": m["content"] or None}
    if m.get("tool_calls"):
        out["tool_calls"] = [
            {"id": cid, "type": "function",
             "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}
            for cid, name, args in m["tool_calls"]
        ]
    else:
        out["content"] = m["content"]
    return out


# ---------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class Choice:
    """One sampled completion: its message, token ids, log-probs, token texts and reason."""

    message: Message
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    token_texts: tuple[str, ...]
    finish_reason: str  # stop | length | tool_calls


def _logprob_entries(texts: Sequence[str], logprobs: Sequence[float]) -> list[dict[str, Any]]:
    return [{"token": t, "logprob": float(lp), "bytes": list(t.encode("utf-8", "replace")),
             "top_logprobs": []} for t, lp in zip(texts, logprobs)]


def _logprobs_content(c: Choice) -> list[dict[str, Any]]:
    return _logprob_entries(c.token_texts, c.logprobs)


def chat_response(request_id: str, model: str, choices: Sequence[Choice], prompt_tokens: int,
                  *, logprobs: bool, extra: Mapping[str, Any]) -> dict[str, Any]:
    """A `chat.completion` body; `extra` goes under the `agentic_rl` key."""
    completion = sum(len(c.token_ids) for c in choices)
    return {
        "id": request_id, "object": "chat.completion", "created": int(time.time()),
        "model": model, "system_fingerprint": "agentic_rl",
        "choices": [
            {"index": i, "message": wire_message(c.message), "finish_reason": c.finish_reason,
             "logprobs": {"content": _logprobs_content(c)} if logprobs else None,
             "token_ids": list(c.token_ids)}
            for i, c in enumerate(choices)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                  "total_tokens": prompt_tokens + completion},
        "agentic_rl": dict(extra),
    }


class _PieceStream:
    """What has been streamed of each of `n` choices, as their tokens arrive.

    `_advance(i, ids, logprobs)` adds choice i's newly sampled tokens and returns the text
    that can be sent now, with the (token text, log-prob) pairs gathered since the last
    text sent: the text decoded so far, less what was already sent, held back where it
    could still change. That is: from the first marker (a client stop string, never
    returned; a tool-call opening), a tail that may be the start of one, and a trailing
    partial UTF-8 character; a final stop token (`stop_ids`) is not text. `_rest(i, final)`
    is what the final text adds to the streamed text, once the response is complete.
    """

    def __init__(self, n: int, *, decode, token_text, stop_ids: Sequence[int],
                 markers: Sequence[str], logprobs: bool):
        self.decode, self.token_text, self.stop_ids = decode, token_text, frozenset(stop_ids)
        self.markers = tuple(m for m in markers if m)
        self.logprobs = logprobs
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.sent = [""] * n
        self.closed = [False] * n  # a marker was seen: nothing more is sent as it comes
        self.pending: list[list[tuple[str, float]]] = [[] for _ in range(n)]

    def _safe_text(self, i: int) -> str:
        ids = self.ids[i]
        text = self.decode(ids[:-1] if ids and ids[-1] in self.stop_ids else ids)
        cuts = [k for k in (text.find(m) for m in self.markers) if k >= 0]
        if cuts:
            self.closed[i] = True
            return text[: min(cuts)]
        hold = 0
        for m in self.markers:  # a tail that may grow into a marker
            for k in range(min(len(m) - 1, len(text)), 0, -1):
                if text.endswith(m[:k]):
                    hold = max(hold, k)
                    break
        text = text[: len(text) - hold]
        return text.rstrip("\ufffd")  # a multi-byte character not yet complete

    def _advance(self, i: int, ids: Sequence[int], logprobs: Sequence[float]
                 ) -> tuple[str, list[tuple[str, float]]] | None:
        if self.logprobs:
            self.pending[i] += [(self.token_text(t), float(lp)) for t, lp in zip(ids, logprobs)]
        self.ids[i] += ids
        if self.closed[i]:
            return None
        text = self._safe_text(i)
        if not text.startswith(self.sent[i]) or len(text) == len(self.sent[i]):
            return None
        delta, self.sent[i] = text[len(self.sent[i]):], text
        entries, self.pending[i] = self.pending[i], []
        return delta, entries

    def _rest(self, i: int, final: str) -> tuple[str, list[tuple[str, float]]]:
        sent = self.sent[i]
        if final.startswith(sent):
            rest = final[len(sent):]
        elif final.strip().startswith(sent.strip()):
            rest = final.strip()[len(sent.strip()):]
        else:  # cannot happen with a prefix-stable decoder; never send text twice
            rest = ""
        self.sent[i] += rest
        entries, self.pending[i] = self.pending[i], []
        return rest, entries


class ChatStream(_PieceStream):
    """The `chat.completion.chunk`s of one streamed response, built as tokens arrive.

    `piece(i, ids, logprobs)` turns choice i's newly sampled tokens into at most one
    content chunk (the text held back as `_PieceStream` says; the markers are the
    client's stop strings and, when the request has tools, `<tool_call>`: the call is
    sent as `tool_calls` at the end, not as text). `finish(response, choices)` sends what
    the final message adds to the streamed text (e.g. the text after a malformed call),
    the tool calls, the finish chunk (with the sampler's `token_ids`) and the usage. The
    streamed contents of a choice add up to its final message content (up to the
    surrounding whitespace that `same_message` ignores), so a client that sends the
    accumulated message back continues its row.
    """

    def __init__(self, request_id: str, model: str, n: int, *, decode, token_text,
                 stop_ids: Sequence[int], stops: Sequence[str], tools: bool, logprobs: bool,
                 include_usage: bool):
        super().__init__(n, decode=decode, token_text=token_text, stop_ids=stop_ids,
                         markers=(*stops, *(("<tool_call>",) if tools else ())),
                         logprobs=logprobs)
        self.base = {"id": request_id, "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": model,
                     "system_fingerprint": "agentic_rl"}
        self.include_usage = include_usage

    def _chunk(self, i: int, delta: dict[str, Any], finish: str | None = None,
               entries: list[tuple[str, float]] | None = None) -> dict[str, Any]:
        lp = _logprob_entries(*zip(*entries)) if entries else None
        return {**self.base, "choices": [{"index": i, "delta": delta, "finish_reason": finish,
                                          "logprobs": {"content": lp} if lp else None}]}

    def start(self) -> list[dict[str, Any]]:
        """The role chunk of every choice."""
        return [self._chunk(i, {"role": "assistant", "content": ""})
                for i in range(len(self.ids))]

    def piece(self, i: int, ids: Sequence[int], logprobs: Sequence[float]
              ) -> dict[str, Any] | None:
        """The content chunk for choice i's new tokens, or None (nothing to send yet)."""
        got = self._advance(i, ids, logprobs)
        return None if got is None else self._chunk(i, {"content": got[0]}, entries=got[1])

    def finish(self, response: Mapping[str, Any], choices: Sequence[Choice]
               ) -> list[dict[str, Any]]:
        """The closing chunks, once the response is complete."""
        out = []
        for i, (c, wire) in enumerate(zip(choices, response["choices"])):
            rest, entries = self._rest(i, c.message["content"] or "")
            if rest:
                out.append(self._chunk(i, {"content": rest}, entries=entries))
                entries = []
            if c.message.get("tool_calls"):
                out.append(self._chunk(i, {"tool_calls": [
                    {"index": k, **call} for k, call in enumerate(wire["message"]["tool_calls"])
                ]}))
            last = self._chunk(i, {}, c.finish_reason, entries=entries)
            last["token_ids"] = list(c.token_ids)
            out.append(last)
        if self.include_usage:
            out.append({**self.base, "choices": [], "usage": response["usage"]})
        return out


class CompletionStream(_PieceStream):
    """The `text_completion` chunks of one streamed text completion, built as tokens
    arrive (choice i is the i-th choice of the response: prompt-major, `n` per prompt).

    With `echo` (each choice's prompt) a choice's first chunk is its prompt. `piece`
    sends the text held back as `_PieceStream` says (the markers are the client's stop
    strings), with the new tokens' log-probs in the completions layout (`text_offset`
    counts from the start of the streamed text). `finish` sends what the final text adds,
    the finish chunk (with the sampler's `token_ids`) and, with `include_usage`, a last
    chunk with no choices and the usage. A choice's streamed texts add up to its text in
    the unstreamed response.
    """

    def __init__(self, request_id: str, model: str, n: int, *, decode, token_text,
                 stop_ids: Sequence[int], stops: Sequence[str], logprobs: bool,
                 include_usage: bool, echo: Sequence[str] | None = None):
        super().__init__(n, decode=decode, token_text=token_text, stop_ids=stop_ids,
                         markers=stops, logprobs=logprobs)
        self.base = {"id": request_id, "object": "text_completion",
                     "created": int(time.time()), "model": model}
        self.include_usage = include_usage
        self.echo = list(echo) if echo is not None else None
        self.offsets = [len(p) for p in self.echo] if self.echo else [0] * n

    def _chunk(self, i: int, text: str, finish: str | None = None,
               entries: list[tuple[str, float]] | None = None) -> dict[str, Any]:
        lp = None
        if entries:
            offsets = []
            for t, _ in entries:
                offsets.append(self.offsets[i])
                self.offsets[i] += len(t)
            lp = {"tokens": [t for t, _ in entries], "token_logprobs": [x for _, x in entries],
                  "top_logprobs": None, "text_offset": offsets}
        return {**self.base, "choices": [{"index": i, "text": text, "finish_reason": finish,
                                          "logprobs": lp}]}

    def start(self) -> list[dict[str, Any]]:
        """The echoed prompts (nothing without echo)."""
        return [self._chunk(i, p) for i, p in enumerate(self.echo or ())]

    def piece(self, i: int, ids: Sequence[int], logprobs: Sequence[float]
              ) -> dict[str, Any] | None:
        """The text chunk for choice i's new tokens, or None (nothing to send yet)."""
        got = self._advance(i, ids, logprobs)
        return None if got is None else self._chunk(i, got[0], entries=got[1])

    def finish(self, response: Mapping[str, Any], choices: Sequence[Choice]
               ) -> list[dict[str, Any]]:
        """The closing chunks, once the response is complete."""
        out = []
        for i, c in enumerate(choices):
            rest, entries = self._rest(i, c.message["content"] or "")
            if rest:
                out.append(self._chunk(i, rest, entries=entries))
                entries = []
            last = self._chunk(i, "", c.finish_reason, entries=entries)
            last["token_ids"] = list(c.token_ids)
            out.append(last)
        if self.include_usage:
            out.append({**self.base, "choices": [], "usage": response["usage"]})
        return out


def completion_response(request_id: str, model: str, texts: Sequence[str],
                        choices: Sequence[Choice], prompt_tokens: int, *, logprobs: bool,
                        extra: Mapping[str, Any]) -> dict[str, Any]:
    """A `text_completion` body (`texts`: each choice's text, with the prompt if echoed)."""
    completion = sum(len(c.token_ids) for c in choices)
    out = []
    for i, (text, c) in enumerate(zip(texts, choices)):
        lp = None
        if logprobs:
            offsets, pos = [], len(text) - sum(len(t) for t in c.token_texts)
            for t in c.token_texts:
                offsets.append(pos)
                pos += len(t)
            lp = {"tokens": list(c.token_texts), "token_logprobs": list(c.logprobs),
                  "top_logprobs": None, "text_offset": offsets}
        out.append({"index": i, "text": text, "finish_reason": c.finish_reason,
                    "logprobs": lp, "token_ids": list(c.token_ids)})
    return {"id": request_id, "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": out,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                      "total_tokens": prompt_tokens + completion},
            "agentic_rl": dict(extra)}
