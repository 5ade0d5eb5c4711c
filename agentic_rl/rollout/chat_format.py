"""Chat formatting as *segments*: text pieces tokenized once, when they are produced.

An episode's tokens are the concatenation of segments, never a re-rendering of the
whole history (re-tokenizing history can merge tokens differently at boundaries and
silently break importance ratios). For ChatML models (SmolLM2, Qwen2.5, Qwen3):

  prompt       "<|im_start|>system\\n{sys}<|im_end|>\\n<|im_start|>user\\n{task}<|im_end|>\\n"
               + generation prompt "<|im_start|>assistant\\n"
  assistant    the sampled tokens; they end with "<|im_end|>". If sampling stopped on a
               stop string (e.g. "</tool_call>") or on the length limit, the rollout
               appends the "<|im_end|>" id itself, as a non-sampled token (loss_mask 0).
  observation  "\\n" + one ChatML block per message + generation prompt, e.g.
               "\\n<|im_start|>user\\n{obs}<|im_end|>\\n<|im_start|>assistant\\n".
               Tool results go in a user turn wrapped as "\\n<tool_response>\\n{result}
               \\n</tool_response>" (consecutive results share one turn), exactly as the
               Qwen2.5/Qwen3 templates render role "tool"; SmolLM2's template has no tool
               role, so it gets the same. `tool_role="tool"` renders a native tool turn.

Decoding the concatenated segments therefore yields the text the model's own chat
template would produce for the same messages (up to the final "\\n").

Imports: agentic_rl.envs (messages, tool-call rendering) and the rollout tokenizer
protocol; no jax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentic_rl.envs.base import Message
from agentic_rl.rollout.tokenizer import Tokenizer, as_tokenizer

_ROLES = ("system", "user", "assistant", "tool")


def _check_messages(messages: Sequence[Message], what: str) -> None:
    if not messages:
        raise ValueError(f"{what}: no messages to render")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"{what}: message {i} is a {type(m).__name__}, not a dict")
        if m.get("role") not in _ROLES:
            raise ValueError(f"{what}: message {i} has role {m.get('role')!r}; expected {_ROLES}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"{what}: message {i} content must be a str")


@dataclass(frozen=True)
class ChatMLFormat:
    """Renders ChatML segments and tokenizes each once (see module docstring).

    `default_system` is inserted when the initial messages have no system message (as
    SmolLM2's and Qwen2.5's templates do); `generation_prompt` opens every assistant turn.
    """

    tokenizer: Any
    tool_role: str = "user"
    default_system: str | None = None
    generation_prompt: str = "<|im_start|>assistant\n"
    im_start: str = "<|im_start|>"
    im_end: str = "<|im_end|>"
    end_of_turn_id: int = field(init=False)

    def __post_init__(self):
        tok = as_tokenizer(self.tokenizer)
        object.__setattr__(self, "tokenizer", tok)
        if self.tool_role not in ("user", "tool"):
            raise ValueError(f"tool_role must be 'user' or 'tool', got {self.tool_role!r}")
        for marker in (self.im_start, self.im_end):
            ids = tok.encode(marker)
            if len(ids) != 1:
                raise ValueError(
                    f"{marker!r} encodes to {len(ids)} tokens {ids}; the tokenizer must know "
                    "it as one special token (is this a ChatML model?)"
                )
        object.__setattr__(self, "end_of_turn_id", tok.encode(self.im_end)[0])

    @property
    def tok(self) -> Tokenizer:
        return self.tokenizer

    def _pieces(self, messages: Sequence[Message]) -> list[tuple[str, bool]]:
        """The ChatML text of `messages` as (text, trusted) pieces: markers and role headers
        are ours (trusted); message content is not (see `encode_pieces`)."""
        out: list[tuple[str, bool]] = []
        i = 0
        while i < len(messages):
            m = messages[i]
            if m["role"] == "tool" and self.tool_role == "user":
                out += [(self.im_start, True), ("user", True)]
                while i < len(messages) and messages[i]["role"] == "tool":
                    out += [("\n<tool_response>\n", True), (messages[i]["content"], False),
                            ("\n</tool_response>", True)]
                    i += 1
                out += [(self.im_end, True), ("\n", True)]
                continue
            out += [(self.im_start, True), (f"{m['role']}\n", True), (m["content"], False),
                    (self.im_end, True), ("\n", True)]
            i += 1
        return out

    def encode_pieces(self, pieces: Sequence[tuple[str, bool]]) -> list[int]:
        """Token ids of `pieces`: a marker is its special id; the text between two markers is
        one chunk, encoded with `encode` if all of it is ours and with `encode_literal` if
        it holds untrusted content. So a tool result, file or web page that contains
        "<|im_end|>\\n<|im_start|>assistant\\n" stays text and cannot forge a turn boundary,
        while for content without such strings the ids equal `encode` of the whole text
        (HF tokenizers split at special tokens before BPE, so the chunks are the same)."""
        markers = {self.im_start, self.im_end}
        ids: list[int] = []
        chunk: list[str] = []
        trusted = True

        def flush():
            if chunk:
                text = "".join(chunk)
                ids.extend(self.tok.encode(text) if trusted else self.tok.encode_literal(text))

        for text, is_ours in pieces:
            if is_ours and text in markers:
                flush()
                chunk, trusted = [], True
                ids.extend(self.tok.encode(text))
            elif text:
                chunk.append(text)
                trusted = trusted and is_ours
        flush()
        return ids

    def render_messages(self, messages: Sequence[Message]) -> str:
        """ChatML text of `messages` (each block ends with '<|im_end|>\\n')."""
        return "".join(text for text, _ in self._pieces(messages))

    def _prompt_pieces(self, messages: Sequence[Message]) -> list[tuple[str, bool]]:
        _check_messages(messages, "prompt")
        if self.default_system is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.default_system}, *messages]
        return [*self._pieces(messages), *self._generation_pieces()]

    def _observation_pieces(self, messages: Sequence[Message]) -> list[tuple[str, bool]]:
        _check_messages(messages, "observation")
        if any(m["role"] == "assistant" for m in messages):
            raise ValueError("observation: environments may not speak as the assistant")
        return [("\n", True), *self._pieces(messages), *self._generation_pieces()]

    def _generation_pieces(self) -> list[tuple[str, bool]]:
        gp = self.generation_prompt
        if gp.startswith(self.im_start):
            return [(self.im_start, True), (gp[len(self.im_start):], True)]
        return [(gp, True)]

    def prompt_text(self, messages: Sequence[Message]) -> str:
        """The first segment: initial messages + the generation prompt."""
        return "".join(text for text, _ in self._prompt_pieces(messages))

    def observation_text(self, messages: Sequence[Message]) -> str:
        """The segment after an assistant turn (which ended with '<|im_end|>')."""
        return "".join(text for text, _ in self._observation_pieces(messages))

    def encode_prompt(self, messages: Sequence[Message]) -> list[int]:
        return self.encode_pieces(self._prompt_pieces(messages))

    def encode_observation(self, messages: Sequence[Message]) -> list[int]:
        return self.encode_pieces(self._observation_pieces(messages))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(ids)


_PRESETS: dict[str, dict[str, Any]] = {
    "chatml": {},
    "smollm2": {
        "default_system": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    },
    "qwen2.5": {
        "default_system": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    },
    # Qwen3 with thinking disabled: its template opens the turn with an empty think block.
    "qwen3": {"generation_prompt": "<|im_start|>assistant\n<think>\n\n</think>\n\n"},
}


def make_chat_format(name: str, tokenizer: Any, **overrides: Any) -> ChatMLFormat:
    """A preset ChatML format by model family: chatml, smollm2, qwen2.5, qwen3."""
    if name not in _PRESETS:
        raise ValueError(f"unknown chat format {name!r}; valid names: {', '.join(_PRESETS)}")
    return ChatMLFormat(tokenizer, **{**_PRESETS[name], **overrides})
