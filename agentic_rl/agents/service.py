"""The chat service behind the gateway and the in-process client: OpenAI requests in,
completions from the batching engine out, and every call kept token-exactly.

Sessions and rows. Calls are grouped by scope: a rollout (training: its id is in the URL,
`/rollouts/{id}/v1`) or the shared serving scope (`/v1`). Within a scope, each agent
(its name from a path segment or the request's `model`) has *chains*: one chain is one
unbroken sequence of calls, and becomes one training row. A request continues a chain
when its messages are the chain's messages (prompt, every returned assistant message,
every observation) followed by new non-assistant messages; only those new messages are
rendered and tokenized, as one observation segment, and appended to the chain's tokens,
so history is never re-rendered or re-tokenized. Anything else starts a new chain from
the request's whole message list; when the request shares its first message with an
existing chain but not the rest (a client truncated, summarized or edited its history),
that is counted as a prefix break.

Rewritten histories (context management, issue #16). A rollout's request that shares its
first message with an idle chain of the same agent but not the rest (a sliding window
dropped old turns, a summary replaced them) starts a new chain that *continues* that
chain's episode: its row's `episode` is the first chain's and its `turn_offset` is the
number of calls the episode made before it, so the rows of one episode hold each sampled
token once, with the context it was sampled under, and the learner stitches their turns
back into one episode for credit (`rl.episodes`). Only the episode's last row gets the
rollout's final reward and may be truncated; `max_turns` counts the episode's calls. A
chain is continued at most once (a second rewrite of the same history is a branch: an
episode of its own), and the new chain's first request names the chain it continues
(`GenerationRequest.continues`) so the sampler can reuse the cached prefix they share.

Token layout of a chain (the rollout's layout, see `rollout.types`): the
prompt, then per call the sampled tokens (loss mask 1, with the sampler's log-probs),
the end-of-turn token when the sampler did not produce it (loss mask 0), and the next
call's new messages as an observation segment (loss mask 0).

Imports: agentic_rl.envs, agentic_rl.rollout, agentic_rl.sampling (sampling parameters)
and agentic_rl.agents.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agentic_rl.agents.engine import BatchingEngine
from agentic_rl.agents.openai_format import (
    APIError,
    ChatRequest,
    Choice,
    Message,
    chat_messages,
    chat_response,
    completion_response,
    parse_assistant,
    parse_chat_request,
    parse_completion_request,
    same_message,
)
from agentic_rl.envs.tools.base import schema_system_prompt
from agentic_rl.rollout.batch import EpisodeRecord
from agentic_rl.rollout.chat_format import ChatMLFormat
from agentic_rl.rollout.policy import Generation, GenerationRequest
from agentic_rl.sampling.params import SamplingParams

SERVE_SCOPE = "serve"


@dataclass(frozen=True)
class ServiceConfig:
    """Limits and sampling of the chat service.

    sampling: the settings every call samples with when `fixed_sampling` (training: the
        behaviour policy must be the one the learner assumes, so clients' temperature and
        top_p are ignored and counted); otherwise the defaults that requests override.
        None: the policy's own settings, untouched (`run_episodes`, whose caller set
        them on the policy); requests' sampling fields are then ignored.
    max_new_tokens: cap on a call's completion (requests may ask for fewer).
    max_context_tokens: cap on a chain's tokens (the KV-cache capacity).
    max_turns: calls per episode (a chain and the chains that rewrote its history; training:
        the batch's turn axis K); None = unbounded.
    stop_strings: always stop strings (the tool-call close tag), besides a request's.
    max_open_chains: chains kept per scope (the oldest idle ones are dropped beyond it).
    render_tools: put a request's `tools` into the system prompt (the Hermes schema text);
        False when the agent's own prompt shows the tool-call format (a small model copies
        a shown format but ignores a long schema); its tool calls are parsed either way.
    agents: agent names in a fixed order (their `agent_id`s); others get the next ids.
    adapter_per_agent: agent i samples with LoRA adapter i (see `add_lora(num_adapters)`).
    """

    model_name: str = "policy"
    sampling: SamplingParams | None = SamplingParams()
    fixed_sampling: bool = False
    max_new_tokens: int = 256
    max_context_tokens: int = 4096
    max_turns: int | None = None
    stop_strings: tuple[str, ...] = ("</tool_call>",)
    stop_token_ids: tuple[int, ...] = ()  # besides the chat format's end-of-turn id
    max_open_chains: int = 256
    agents: tuple[str, ...] = ()
    render_tools: bool = True
    # One LoRA adapter per agent (a policy built with len(agents) adapters): agent i of
    # `agents` samples with adapter i; calls from an agent not listed are refused.
    adapter_per_agent: bool = False


@dataclass
class Chain:
    """One unbroken sequence of calls of one agent: one training row."""

    id: str
    agent: str
    agent_id: int
    tools: str  # canonical JSON of the request tools
    messages: list[Message] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)  # per message: prompt|policy|environment
    record: EpisodeRecord = field(default_factory=EpisodeRecord)
    sent: int = 0  # tokens the sampler has seen or produced
    turn: int = 0
    pending: bool = False
    closed: bool = False  # a client dropped its last completion: nothing may extend it
    truncated: bool = False
    call_ids: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    malformed_tool_calls: int = 0
    kind: str = "chat"  # chat | completion
    last_used: float = field(default_factory=time.monotonic)
    # The episode this chain's row belongs to: its own id, or that of the chain whose
    # history it rewrote (see "Rewritten histories" in the module docstring); the
    # episode-global index of its first call; the chain that continued it, if any.
    episode: str = ""
    turn_offset: int = 0
    predecessor: str | None = None
    successor: str | None = None

    @property
    def episode_turns(self) -> int:
        """Calls of this chain's episode up to the end of this chain."""
        return self.turn_offset + self.turn

    def awaiting(self) -> bool:
        return not self.pending and not self.closed and bool(self.messages) and \
            self.messages[-1]["role"] == "assistant"


@dataclass
class Scope:
    """A rollout's (or the serving scope's) chains, rewards and counters."""

    id: str
    group_id: int = 0
    chains: list[Chain] = field(default_factory=list)
    call_rewards: dict[str, float] = field(default_factory=dict)  # call id -> reward
    reward: float = 0.0  # posted without a call id: added to every row's last turn
    rewards_posted: int = 0
    prefix_breaks: int = 0
    next_chain: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class ChatService:
    """OpenAI-style chat and text completions over a `BatchingEngine`, with traces.

    Thread-safe: HTTP handlers and agent threads call it concurrently; each call blocks
    until its completion is sampled (in a batch with whatever else is waiting).
    """

    def __init__(self, engine: BatchingEngine, chat_format: ChatMLFormat,
                 config: ServiceConfig | None = None):
        self.engine, self.fmt = engine, chat_format
        self.cfg = config or ServiceConfig()
        self.sampling = self.cfg.sampling  # the trainer switches it (sampling vs greedy eval)
        self._lock = threading.Lock()
        self.scopes: dict[str, Scope] = {SERVE_SCOPE: Scope(SERVE_SCOPE)}
        self.agent_ids: dict[str, int] = {name: i for i, name in enumerate(self.cfg.agents)}
        self._serial = itertools.count()
        # Response ids: a random per-service prefix and a counter. Not a fresh random id
        # per call: os.urandom releases the GIL, and with a hundred agent threads every
        # call then waited its turn for the GIL again (a third of a small rollout's time).
        self._id_prefix = secrets.token_hex(6)
        self._ids = itertools.count()
        self.metrics: dict[str, float] = {
            "requests": 0, "prefix_breaks": 0, "new_conversations": 0,
            "malformed_tool_calls": 0, "context_overflows": 0, "max_turns_refusals": 0,
            "ignored_sampling_params": 0, "bad_requests": 0, "completion_tokens": 0,
            "prompt_tokens": 0, "stream_hangups": 0,
        }

    # -- scopes ---------------------------------------------------------------------------

    def start_rollout(self, rollout_id: str, group_id: int = 0) -> None:
        with self._lock:
            if rollout_id in self.scopes:
                raise ValueError(f"rollout {rollout_id!r} is already running")
            self.scopes[rollout_id] = Scope(rollout_id, group_id)

    def _scope(self, rollout_id: str | None) -> Scope:
        with self._lock:
            scope = self.scopes.get(rollout_id or SERVE_SCOPE)
        if scope is None:
            raise APIError(404, f"unknown rollout {rollout_id!r} (finished, timed out, or never "
                           "started)", type="not_found_error", code="unknown_rollout")
        return scope

    def _agent_id(self, agent: str) -> int:
        if self.cfg.adapter_per_agent and agent not in self.cfg.agents:
            raise APIError(400, f"unknown agent {agent!r}: this policy has one adapter per "
                           f"agent of {list(self.cfg.agents)}; name the calling agent (the "
                           "route /rollouts/{id}/agents/{name}/v1 or the model field)",
                           param="model", code="unknown_agent")
        with self._lock:
            return self.agent_ids.setdefault(agent, len(self.agent_ids))

    def _next_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):012x}"

    def _count(self, key: str, n: float = 1) -> None:
        with self._lock:
            self.metrics[key] = self.metrics.get(key, 0) + n

    # -- rewards and finishing --------------------------------------------------------------

    def post_reward(self, rollout_id: str, reward: Any, call_id: str | None = None) -> None:
        """Adds `reward` to the turn of call `call_id` (a response id), or to the rollout's
        final reward (every row's last turn) when no call id is given."""
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or \
                not math.isfinite(reward):
            raise APIError(400, f"'reward' must be a finite number, got {reward!r}",
                           param="reward")
        if call_id is not None and not isinstance(call_id, str):
            raise APIError(400, "'call_id' must be a string", param="call_id")
        scope = self._scope(rollout_id)
        if scope.id == SERVE_SCOPE:
            raise APIError(400, "rewards are posted to a rollout: /rollouts/{id}/reward")
        with scope.lock:
            if call_id is not None:
                if not any(call_id in c.call_ids for c in scope.chains):
                    raise APIError(404, f"rollout {rollout_id!r} has no call {call_id!r}",
                                   type="not_found_error", param="call_id")
                scope.call_rewards[call_id] = scope.call_rewards.get(call_id, 0.0) + reward
            else:
                scope.reward += float(reward)
            scope.rewards_posted += 1

    def finish_rollout(self, rollout_id: str, reward: float | None = None) -> tuple[
            list[EpisodeRecord], Scope]:
        """Ends a rollout: its chains as records (rewards placed, metadata filled in; chains
        without a completed call are dropped) and the scope; frees their sampler rows."""
        with self._lock:
            scope = self.scopes.pop(rollout_id)
        with scope.lock:
            if reward is not None:
                scope.reward += float(reward)
            chains = [c for c in scope.chains if c.turn > 0]
            self.engine.release([c.id for c in scope.chains])
            records = []
            for c in chains:
                rec = c.record
                rec.turn_rewards = [scope.call_rewards.get(cid, 0.0) for cid in c.call_ids]
                continued = self._continued(scope, c)
                if not continued:  # the rollout's reward goes to its episodes' last rows
                    rec.turn_rewards[-1] += scope.reward
                rec.group_id = scope.group_id
                rec.truncated = c.truncated and not continued
                rec.episode, rec.turn_offset = (scope.id, c.episode), c.turn_offset
                rec.metadata = self._row_metadata(c, scope)
                records.append(rec)
        return records, scope

    @staticmethod
    def _continued(scope: Scope, c: Chain) -> bool:
        """Whether a later chain with a completed call continues `c`'s episode."""
        nxt = c.successor
        by_id = {x.id: x for x in scope.chains}
        while nxt is not None:
            if by_id[nxt].turn > 0:
                return True
            nxt = by_id[nxt].successor
        return False

    def _row_metadata(self, c: Chain, scope: Scope) -> dict[str, Any]:
        rec = c.record
        return {
            "episode_id": c.id, "rollout_id": scope.id, "agent": c.agent, "kind": c.kind,
            "group_id": scope.group_id, "messages": chat_messages(c.messages),
            "origins": list(c.origins),
            "num_turns": c.turn, "num_tokens": len(rec),
            "num_sampled_tokens": sum(rec.loss_mask), "return": float(sum(rec.turn_rewards)),
            "turn_rewards": list(rec.turn_rewards),
            "termination": "truncated" if c.truncated else "done", "truncated": c.truncated,
            "finish_reasons": list(c.finish_reasons), "tool_calls": list(c.tool_calls),
            "tool_errors": [{"turn": -1, "kind": "malformed"}] * c.malformed_tool_calls,
            "tool_call_attempts": len(c.tool_calls) + c.malformed_tool_calls,
            "tool_call_valid": len(c.tool_calls), "call_ids": list(c.call_ids),
            "prefix_breaks": scope.prefix_breaks, "episode": c.episode,
            "turn_offset": c.turn_offset, "continued": self._continued(scope, c),
        }

    def abandon(self, rollout_id: str | None, chain_ids: Sequence[str]) -> None:
        """A client went away before reading these chains' last completion (a dropped
        stream): free their rows. In a rollout the chain is kept (the tokens were sampled)
        but nothing can extend it; in the serving scope it is dropped."""
        scope = self.scopes.get(rollout_id or SERVE_SCOPE)
        self.engine.release(list(chain_ids))
        if scope is None:
            return
        with scope.lock:
            for c in scope.chains:
                if c.id in chain_ids:
                    c.closed = c.truncated = True
            if scope.id == SERVE_SCOPE:
                scope.chains = [c for c in scope.chains if c.id not in chain_ids]

    # -- chat -----------------------------------------------------------------------------

    def _render_prompt(self, messages: Sequence[Message], tools: Sequence[dict]) -> list[int]:
        msgs = chat_messages(messages)
        if tools and self.cfg.render_tools:
            prompt = schema_system_prompt(tools)
            if msgs[0]["role"] == "system":
                msgs[0] = {"role": "system", "content": f"{msgs[0]['content']}\n\n{prompt}"}
            else:
                head = self.fmt.default_system
                msgs.insert(0, {"role": "system",
                                "content": f"{head}\n\n{prompt}" if head else prompt})
        return self.fmt.encode_prompt(msgs)

    def _extends(self, chain: Chain, req: ChatRequest, tools: str) -> list[Message] | None:
        """The new messages if `req` continues `chain`, else None."""
        have = chain.messages
        if chain.tools != tools or len(req.messages) <= len(have) or not chain.awaiting():
            return None
        if not all(same_message(s, o) for s, o in zip(req.messages, have)):
            return None
        new = list(req.messages[len(have):])
        if any(m["role"] == "assistant" for m in new):
            return None
        return new

    def _new_chain(self, scope: Scope, agent: str, tools: str, kind: str = "chat",
                   continues: Chain | None = None) -> Chain:
        agent_id = self._agent_id(agent)
        k = scope.next_chain
        scope.next_chain += 1
        if scope.id == SERVE_SCOPE:
            cid = f"serve-{next(self._serial)}"
        else:
            cid = scope.id if k == 0 else f"{scope.id}.{k}"
        chain = Chain(cid, agent, agent_id, tools, kind=kind, episode=cid)
        if continues is not None:
            chain.episode, chain.turn_offset = continues.episode, continues.episode_turns
            chain.predecessor, continues.successor = continues.id, cid
        scope.chains.append(chain)
        if scope.id == SERVE_SCOPE and len(scope.chains) > self.cfg.max_open_chains:
            idle = [c for c in scope.chains if not c.pending]
            drop = sorted(idle, key=lambda c: c.last_used)[: len(scope.chains) -
                                                         self.cfg.max_open_chains]
            scope.chains = [c for c in scope.chains if c not in drop]
            self.engine.release([c.id for c in drop])
        return chain

    def _params(self, req_temperature: float | None, req_top_p: float | None
                ) -> SamplingParams | None:
        base = self.sampling
        if base is None:  # the policy's own settings
            return None
        if self.cfg.fixed_sampling:
            if req_temperature is not None and req_temperature != base.temperature or \
                    req_top_p is not None and req_top_p != base.top_p:
                self._count("ignored_sampling_params")
            return base
        t = base.temperature if req_temperature is None else req_temperature
        p = base.top_p if req_top_p is None or req_top_p == 0 else req_top_p
        return replace(base, temperature=t, top_p=p, greedy=base.greedy and req_temperature
                       is None)

    def _check_context(self, prompt: list[int], param: str) -> None:
        """`APIError` 400 (context_length_exceeded) for a prompt that leaves no room to
        sample (2 tokens: one sampled, one end-of-turn)."""
        if len(prompt) + 2 > self.cfg.max_context_tokens:
            self._count("context_overflows")
            raise APIError(400, f"the prompt has {len(prompt)} tokens; the context limit of "
                           f"{self.cfg.max_context_tokens} leaves no room for a turn", param=param,
                           code="context_length_exceeded")

    def _budget(self, n_tokens: int, max_tokens: int | None) -> int:
        room = self.cfg.max_context_tokens - n_tokens - 1
        want = self.cfg.max_new_tokens if max_tokens is None else min(max_tokens,
                                                                      self.cfg.max_new_tokens)
        return min(want, room)

    def _plan(self, scope: Scope, req: ChatRequest, agent: str) -> list[tuple[Chain, list[int],
                                                                              list[Message]]]:
        """Under the scope lock: (chain, its full token list for this call, the messages
        the call adds) for each of the request's `n` choices; marks the chains pending."""
        tools = json.dumps(req.tools, sort_keys=True)
        mine = [c for c in scope.chains if c.agent == agent and c.kind == "chat"]
        match, new = None, None
        for c in reversed(mine):  # the newest chain first
            new = self._extends(c, req, tools)
            if new is not None:
                match = c
                break
        plans = []
        if match is not None:
            new_ids = self.fmt.encode_observation(chat_messages(new))
            base_tokens = [*match.record.tokens, *new_ids]
            # the turn limit first: a row at both limits ended by its turns (as the
            # environment loop always said)
            if self.cfg.max_turns is not None and match.episode_turns >= self.cfg.max_turns:
                match.truncated = True
                self._count("max_turns_refusals")
                raise APIError(400, f"this conversation already had {match.episode_turns} "
                               f"calls, the limit (max_turns={self.cfg.max_turns})",
                               param="messages", code="max_turns_exceeded")
            if len(base_tokens) + 2 > self.cfg.max_context_tokens:
                match.truncated = True
                self._count("context_overflows")
                raise APIError(400, f"this call would make the conversation {len(base_tokens)} "
                               f"tokens, over the context limit of {self.cfg.max_context_tokens}",
                               param="messages", code="context_length_exceeded")
            forks = [match] + [self._fork(scope, match) for _ in range(req.sampling.n - 1)]
            plans = [(c, base_tokens, new) for c in forks]
        else:
            firsts = [c for c in mine if c.messages]
            broken = [c for c in firsts if same_message(req.messages[0], c.messages[0])]
            if broken:
                scope.prefix_breaks += 1
                self._count("prefix_breaks")
            elif firsts:
                self._count("new_conversations")
            prompt = self._render_prompt(req.messages, req.tools)
            self._check_context(prompt, "messages")
            pred = self._rewritten(scope, broken, tools) if req.sampling.n == 1 else None
            if pred is not None and self.cfg.max_turns is not None and \
                    pred.episode_turns >= self.cfg.max_turns:
                pred.truncated = True
                self._count("max_turns_refusals")
                raise APIError(400, f"this episode already had {pred.episode_turns} calls, "
                               f"the limit (max_turns={self.cfg.max_turns})",
                               param="messages", code="max_turns_exceeded")
            for _ in range(req.sampling.n):
                plans.append((self._new_chain(scope, agent, tools, continues=pred), prompt,
                              list(req.messages)))
        for c, _, _ in plans:
            c.pending = True
            c.last_used = time.monotonic()
        return plans

    def _rewritten(self, scope: Scope, broken: Sequence[Chain], tools: str) -> Chain | None:
        """The chain whose history a new request rewrote, if it is one (see "Rewritten
        histories" in the module docstring): the newest chain of the same agent and tools
        that starts with the request's first message, has a completed call, is not busy
        and was not continued yet. Only in a rollout (the serving scope has no episodes)."""
        if scope.id == SERVE_SCOPE:
            return None
        for c in reversed(broken):
            if c.tools == tools and c.turn > 0 and not c.pending and c.successor is None:
                return c
        return None

    def _fork(self, scope: Scope, chain: Chain) -> Chain:
        fork = self._new_chain(scope, chain.agent, chain.tools)
        # a branch: a row of its own (its own episode), numbered on from the chain's turns
        fork.turn_offset = chain.turn_offset
        fork.messages, fork.origins = list(chain.messages), list(chain.origins)
        r = chain.record
        fork.record = EpisodeRecord(list(r.tokens), list(r.loss_mask), list(r.logprobs),
                                    list(r.turn_index), list(r.agent_id), list(r.turn_ends))
        fork.turn, fork.call_ids = chain.turn, list(chain.call_ids)
        fork.finish_reasons, fork.tool_calls = list(chain.finish_reasons), list(chain.tool_calls)
        return fork

    def _request(self, chain: Chain, tokens: list[int], req_sampling, stops) -> GenerationRequest:
        return GenerationRequest(
            episode_id=chain.id, tokens=tuple(tokens),
            num_new_tokens=len(tokens) - chain.sent,
            max_new_tokens=self._budget(len(tokens), req_sampling.max_tokens),
            stop_token_ids=(self.fmt.end_of_turn_id, *self.cfg.stop_token_ids),
            stop_strings=stops, turn=chain.turn,
            adapter=chain.agent_id if self.cfg.adapter_per_agent else 0,
            continues=chain.predecessor if chain.turn == 0 else None)

    def _commit(self, chain: Chain, tokens: list[int], new: list[Message], gen: Generation,
                message: Message, call_id: str, finish: str) -> None:
        """Appends the call's new segment and its sampled turn to the chain's record."""
        rec, k = chain.record, chain.turn
        added = tokens[len(rec):]
        if added:
            first = not rec.tokens
            rec.append(added, sampled=False, turn=-1 if first else k - 1, agent=-1)
        ids = [int(i) for i in gen.token_ids]
        rec.append(ids, sampled=True, turn=k, agent=chain.agent_id, logprobs=list(gen.logprobs))
        rec.turn_ends.append(len(rec) - 1)
        chain.sent = len(rec)
        if ids[-1] != self.fmt.end_of_turn_id:
            rec.append([self.fmt.end_of_turn_id], sampled=False, turn=k, agent=chain.agent_id)
        # the first call's messages are the prompt; later ones are what the program added
        # after our completions (tool results, user turns): the environment
        chain.origins.extend(["environment" if chain.messages else "prompt"] * len(new))
        chain.origins.append("policy")
        chain.messages.extend(new)
        chain.messages.append(message)
        chain.turn += 1
        chain.call_ids.append(call_id)
        chain.finish_reasons.append(finish)
        for cid, name, args in message.get("tool_calls", ()):
            chain.tool_calls.append({"turn": k, "id": cid, "name": name, "arguments": args})

    def _text(self, gen: Generation, client_stops: Sequence[str]) -> str:
        """The completion's text: a final stop token (end-of-turn or a configured one)
        dropped, cut before a client stop string (which OpenAI does not return)."""
        ids = list(gen.token_ids)
        if ids and ids[-1] in (self.fmt.end_of_turn_id, *self.cfg.stop_token_ids):
            ids = ids[:-1]
        text = self.fmt.decode(ids)
        cuts = [i for i in (text.find(s) for s in client_stops) if i >= 0]
        return text[: min(cuts)] if cuts else text

    def _sample(self, scope: Scope, plans, sampling, stops: tuple[str, ...],
                on_piece=None) -> list[Generation]:
        """Submits every planned chain's request and waits; on any failure the chains are
        no longer pending (so a retry can extend them) and the error propagates.
        `on_piece(i, ids, logprobs)` streams choice i's tokens as they are sampled."""
        try:
            params = self._params(sampling.temperature, sampling.top_p)
            futures = [self.engine.submit(
                self._request(c, toks, sampling, stops), params,
                on_tokens=None if on_piece is None else
                (lambda ids, lps, i=i: on_piece(i, ids, lps)))
                for i, (c, toks, _) in enumerate(plans)]
            return [f.result() for f in futures]
        except BaseException:
            with scope.lock:
                for c, _, _ in plans:
                    c.pending = False
            raise

    def _choice(self, message: Message, gen: Generation, finish: str) -> Choice:
        tok = self.fmt.tok
        return Choice(message, tuple(gen.token_ids), tuple(gen.logprobs),
                      tuple(tok.decode([t]) for t in gen.token_ids), finish)

    def _accept(self, parse, body: Any, rollout_id: str | None, agent: str | None):
        """A request counted, parsed (`APIError`, counted, for a bad one), and placed:
        (request, its rollout's scope, the calling agent's name)."""
        self._count("requests")
        try:
            req = parse(body)
        except APIError:
            self._count("bad_requests")
            raise
        return req, self._scope(rollout_id), agent or req.model or self.cfg.model_name

    def _listen(self, scope: Scope, plans, listen, req, request_id: str):
        """The piece listener of a streamed call (`listen(request, request_id, chain_ids)`,
        see `chat`), or None; if `listen` raises, the chains are no longer pending."""
        if listen is None:
            return None
        try:
            return listen(req, request_id, [c.id for c, _, _ in plans])
        except BaseException:
            with scope.lock:
                for c, _, _ in plans:
                    c.pending = False
            raise

    def chat(self, body: Any, *, rollout_id: str | None = None, agent: str | None = None,
             listen=None) -> tuple[dict[str, Any], list[Choice], list[str]]:
        """One chat completion: (response body, choices, the chain id of each choice).
        Raises `APIError` for a bad request.

        Streaming: `listen(request, request_id, chain_ids)`, called once the request is
        accepted and before sampling starts, returns `on_piece(i, ids, logprobs)`, which
        is told choice i's tokens as they are sampled (on the engine's thread; False
        stops that choice there, e.g. for a client that went away)."""
        req, scope, agent = self._accept(parse_chat_request, body, rollout_id, agent)
        with scope.lock:
            plans = self._plan(scope, req, agent)
        stops = tuple(dict.fromkeys((*self.cfg.stop_strings, *req.sampling.stop)))
        request_id = f"chatcmpl-{self._next_id()}"
        on_piece = self._listen(scope, plans, listen, req, request_id)
        gens = self._sample(scope, plans, req.sampling, stops, on_piece)
        new_tokens = [len(t) - c.sent for c, t, _ in plans]
        choices = []
        with scope.lock:
            for (c, toks, new), gen in zip(plans, gens):
                text = self._text(gen, req.sampling.stop)
                message, malformed = parse_assistant(text, req.tools,
                                                     f"call_{c.id}_{c.turn}".replace(".", "_"))
                if malformed:
                    c.malformed_tool_calls += 1
                    self._count("malformed_tool_calls")
                finish = "tool_calls" if message.get("tool_calls") else gen.finish_reason
                self._commit(c, toks, new, gen, message, request_id, finish)
                c.pending = False
                choices.append(self._choice(message, gen, finish))
        prompt_tokens = len(plans[0][1])
        self._count("prompt_tokens", prompt_tokens)
        self._count("completion_tokens", sum(len(g.token_ids) for g in gens))
        extra = {"rollout_id": scope.id, "agent": agent, "rows": [c.id for c, _, _ in plans],
                 "new_prompt_tokens": new_tokens}
        response = chat_response(request_id, req.model or self.cfg.model_name, choices,
                                 prompt_tokens, logprobs=req.sampling.logprobs, extra=extra)
        return response, choices, [c.id for c, _, _ in plans]

    # -- text completions -------------------------------------------------------------------

    def completions(self, body: Any, *, rollout_id: str | None = None, agent: str | None = None,
                    listen=None) -> tuple[dict[str, Any], list[Choice], list[str]]:
        """A text completion per prompt (x n): raw text in, no chat template; each prompt
        is a row of its own. Returns (response body, choices, the chain id of each
        choice); choice i is prompt i // n. Streaming: `listen` as for `chat`."""
        req, scope, agent = self._accept(parse_completion_request, body, rollout_id, agent)
        plans = []
        with scope.lock:
            for prompt in req.prompts:
                ids = self.fmt.tok.encode(prompt)
                self._check_context(ids, "prompt")
                for _ in range(req.sampling.n):
                    c = self._new_chain(scope, agent, "[]", kind="completion")
                    c.pending = True
                    plans.append((c, ids, prompt))
        request_id = f"cmpl-{self._next_id()}"
        on_piece = self._listen(scope, plans, listen, req, request_id)
        gens = self._sample(scope, plans, req.sampling, tuple(dict.fromkeys(req.sampling.stop)),
                            on_piece)
        choices, texts = [], []
        with scope.lock:
            for (c, ids, prompt), gen in zip(plans, gens):
                text = self._text(gen, req.sampling.stop)
                message = {"role": "assistant", "content": text}
                self._commit(c, ids, [{"role": "user", "content": prompt}], gen, message,
                             request_id, gen.finish_reason)
                c.pending = False
                choices.append(self._choice(message, gen, gen.finish_reason))
                texts.append(prompt + text if req.echo else text)
        self._count("completion_tokens", sum(len(g.token_ids) for g in gens))
        rows = [c.id for c, _, _ in plans]
        response = completion_response(
            request_id, req.model or self.cfg.model_name, texts, choices,
            sum(len(ids) for _, ids, _ in plans[:: req.sampling.n]),
            logprobs=req.sampling.logprobs,
            extra={"rollout_id": scope.id, "agent": agent, "rows": rows})
        return response, choices, rows

    def models(self) -> dict[str, Any]:
        names = dict.fromkeys([self.cfg.model_name, *self.agent_ids])
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0,
                                            "owned_by": "agentic_rl"} for n in names]}
