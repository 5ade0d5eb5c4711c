"""The policy side of the rollout: requests, generations, the `RolloutPolicy` protocol, a
scripted policy.

The rollout calls `policy.generate(requests)` with one request per live episode that
awaits an action, batched across episodes. A request carries the episode's *full*
token history plus how many trailing tokens are new since that episode's previous call,
so a KV-cache sampler can append those to its cache instead of re-prefilling:

    request.tokens[:-request.num_new_tokens]
        == previous request's tokens + previous generation's token_ids   (turn > 0)

i.e. the new suffix is the end-of-turn token the rollout may have appended (see
`chat_format`) followed by the observation segment. On the first call the whole prompt
is new. When an episode ends, the rollout calls `policy.release(ids)` so the sampler can
free its cache slots.

Imports: the rollout modules only; no jax, no model.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from agentic_rl.rollout.tokenizer import Tokenizer, as_tokenizer

FinishReason = Literal["stop", "length"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length")


@dataclass(frozen=True)
class GenerationRequest:
    """One episode's request for its next assistant turn.

    `tokens` is read-only history. Sampling must stop after `max_new_tokens` tokens, on
    any id in `stop_token_ids` (the stop token is included in the output), or once the
    decoded output contains one of `stop_strings` (output cut right after it).
    """

    episode_id: str
    tokens: Sequence[int]
    num_new_tokens: int
    max_new_tokens: int
    stop_token_ids: tuple[int, ...]
    stop_strings: tuple[str, ...] = ()
    turn: int = 0
    # The LoRA adapter to sample with, for a policy with several (one per agent);
    # -1: the base model. Ignored by a policy with one.
    adapter: int = 0
    # The episode id whose history this new episode rewrote (context management): its
    # sampler row holds a prefix of `tokens` the policy may reuse. A hint; None: none.
    continues: str | None = None

    @property
    def new_tokens(self) -> Sequence[int]:
        return self.tokens[len(self.tokens) - self.num_new_tokens :]


@dataclass(frozen=True)
class Generation:
    """Sampled ids (stop token included if one was hit), their log-probs, and why it ended."""

    token_ids: Sequence[int]
    logprobs: Sequence[float]
    finish_reason: FinishReason


# Streaming: `on_tokens(i, ids, logprobs)` is told request i's new tokens as they are
# sampled (the pieces add up to its Generation); returning False stops request i there
# (finish "length"). A policy that can stream takes it as `generate(..., on_tokens=)`.
OnTokens = Callable[[int, list[int], list[float]], "bool | None"]


def can_stream(policy: object) -> bool:
    """Whether `policy.generate` takes `on_tokens` (see `OnTokens`)."""
    try:
        return "on_tokens" in inspect.signature(policy.generate).parameters
    except (AttributeError, TypeError, ValueError):
        return False


@runtime_checkable
class RolloutPolicy(Protocol):
    """The interface the rollout runtime samples from: generate(requests) -> generations.
    Implemented by `ScriptedPolicy` and `rollout.sampler_policy.SamplerPolicy`."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One `Generation` per request, in request order."""
        ...

    def release(self, episode_ids: Sequence[str]) -> None:
        """The episodes ended: drop any per-episode state (e.g. KV-cache rows).

        When a rollout aborts (an exception), every live id is released, including ids
        this policy never generated for: unknown ids must be ignored.
        """
        ...


class PolicyContractError(ValueError):
    """The policy returned something the rollout cannot use (a bug, not an env failure)."""


def check_generation(request: GenerationRequest, gen: Generation) -> None:
    """Validates one generation against its request, with a message naming the problem."""
    where = f"policy output for episode {request.episode_id!r} turn {request.turn}"
    if not isinstance(gen, Generation):
        raise PolicyContractError(f"{where}: expected Generation, got {type(gen).__name__}")
    n = len(gen.token_ids)
    if n == 0:
        raise PolicyContractError(f"{where}: no tokens were generated")
    if n > request.max_new_tokens:
        raise PolicyContractError(f"{where}: {n} tokens > max_new_tokens={request.max_new_tokens}")
    if len(gen.logprobs) != n:
        raise PolicyContractError(f"{where}: {len(gen.logprobs)} logprobs for {n} tokens")
    if gen.finish_reason not in FINISH_REASONS:
        raise PolicyContractError(
            f"{where}: finish_reason {gen.finish_reason!r} not in {FINISH_REASONS}"
        )
    bad = [lp for lp in gen.logprobs if not (math.isfinite(lp) and lp <= 1e-4)]
    if bad:
        raise PolicyContractError(f"{where}: log-probs must be finite and <= 0, got {bad[:3]}")


# A script maps (request, decoded history) to the assistant's next text.
ScriptFn = Callable[[GenerationRequest, str], str]


@dataclass
class ScriptedPolicy:
    """A policy with fixed outputs, so environments and the rollout are testable without a model.
    Implements `RolloutPolicy`.

    `script` is either a list of texts (turn k of every episode says `script[k]`) or a
    function `(request, history_text) -> text`. Each text is tokenized and treated like a
    sample: cut right after the first stop string (finish "stop"), otherwise followed by
    the first stop token id (finish "stop"); longer than `max_new_tokens` is cut there
    (finish "length"). Every token gets log-prob `logprob`. `calls` records each batch.
    """

    tokenizer: Tokenizer
    script: Sequence[str] | ScriptFn
    logprob: float = 0.0
    calls: list[list[GenerationRequest]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.tokenizer = as_tokenizer(self.tokenizer)
        if not (math.isfinite(self.logprob) and self.logprob <= 0):
            raise ValueError(f"logprob must be finite and <= 0, got {self.logprob}")

    def _text(self, request: GenerationRequest) -> str:
        if callable(self.script):
            return self.script(request, self.tokenizer.decode(request.tokens))
        if request.turn >= len(self.script):
            raise IndexError(
                f"script has {len(self.script)} turns; episode {request.episode_id!r} asked for "
                f"turn {request.turn}"
            )
        return self.script[request.turn]

    def _sample(self, request: GenerationRequest) -> Generation:
        text = self._text(request)
        cuts = [text.find(s) + len(s) for s in request.stop_strings if s in text]
        if cuts:
            ids, reason = self.tokenizer.encode(text[: min(cuts)]), "stop"
        else:
            ids, reason = self.tokenizer.encode(text) + list(request.stop_token_ids[:1]), "stop"
        if len(ids) > request.max_new_tokens:
            ids, reason = ids[: request.max_new_tokens], "length"
        return Generation(ids, [self.logprob] * len(ids), reason)

    def generate(self, requests: Sequence[GenerationRequest], on_tokens: OnTokens | None = None
                 ) -> list[Generation]:
        """With `on_tokens`, each request's tokens are reported one at a time, request by
        request (a test can hold the policy between pieces)."""
        self.calls.append(list(requests))
        gens = [self._sample(r) for r in requests]
        if on_tokens is None:
            return gens
        out = []
        for i, g in enumerate(gens):
            n = len(g.token_ids)
            for j in range(n):
                if on_tokens(i, [g.token_ids[j]], [g.logprobs[j]]) is False and j + 1 < n:
                    g = Generation(g.token_ids[: j + 1], g.logprobs[: j + 1], "length")
                    break
            out.append(g)
        return out

    def release(self, episode_ids: Sequence[str]) -> None:
        self.released.extend(episode_ids)
