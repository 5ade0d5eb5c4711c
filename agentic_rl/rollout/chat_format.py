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

    def _block(self, role: str, content: str) -> str:
        return f"{self.im_start}{role}\n{content}{self.im_end}\n"

    def render_messages(self, messages: Sequence[Message]) -> str:
        """ChatML text of `messages` (each block ends with '<|im_end|>\\n')."""
        out: list[str] = []
        i = 0
        while i < len(messages):
            m = messages[i]
            if m["role"] == "tool" and self.tool_role == "user":
                responses = []
                while i < len(messages) and messages[i]["role"] == "tool":
                    responses.append(
                        f"\n<tool_response>\n{messages[i]['content']}\n</tool_response>"
                    )
                    i += 1
                out.append(f"{self.im_start}user{''.join(responses)}{self.im_end}\n")
                continue
            out.append(self._block(m["role"], m["content"]))
            i += 1
        return "".join(out)

    def prompt_text(self, messages: Sequence[Message]) -> str:
        """The first segment: initial messages + the generation prompt."""
        _check_messages(messages, "prompt")
        if self.default_system is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.default_system}, *messages]
        return self.render_messages(messages) + self.generation_prompt

    def observation_text(self, messages: Sequence[Message]) -> str:
        """The segment after an assistant turn (which ended with '<|im_end|>')."""
        _check_messages(messages, "observation")
        if any(m["role"] == "assistant" for m in messages):
            raise ValueError("observation: environments may not speak as the assistant")
        return "\n" + self.render_messages(messages) + self.generation_prompt

    def encode_prompt(self, messages: Sequence[Message]) -> list[int]:
        return self.tok.encode(self.prompt_text(messages))

    def encode_observation(self, messages: Sequence[Message]) -> list[int]:
        return self.tok.encode(self.observation_text(messages))

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
