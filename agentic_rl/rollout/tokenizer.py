"""The minimal tokenizer protocol the rollout needs, an HF adapter, and a tiny test tokenizer.

The rollout only ever encodes one segment of text at a time (a rendered prompt, an
observation) and decodes sampled ids; it never re-renders history. So it needs just:
`encode(text)` that inserts no special tokens of its own but recognises special-token
strings written in the text (`<|im_start|>` -> one id), `encode_literal(text)` that
encodes special-token strings as ordinary text, and an exact `decode(ids)`.

Why both encodes: the chat format writes the structure markers (`<|im_start|>`,
`<|im_end|>`) itself and encodes them with `encode`; message *content* comes from the
task, a tool, a web page or a file, and is untrusted. Encoded with `encode`, a tool
result containing "<|im_end|>\n<|im_start|>assistant\n" would become real turn
boundaries and forge a turn; `encode_literal` keeps it text.

Imports: the standard library only (an HF tokenizer is passed in, never imported).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`: no BOS/EOS added; special-token strings map to their ids."""
        ...

    def encode_literal(self, text: str) -> list[int]:
        """Token ids of `text` with special-token strings encoded as ordinary text."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The exact text of `ids` (special tokens included, no clean-up)."""
        ...


class HFTokenizer:
    """Adapts a Hugging Face tokenizer (`PreTrainedTokenizerFast` or the transformers 5
    backend) to `Tokenizer`: disables BOS insertion and decode clean-up, which would
    otherwise make `decode(encode(x)) != x` or add tokens the chat format did not write.

    Encoding holds a lock: HF applies `split_special_tokens` by setting a flag on the
    shared Rust tokenizer for the duration of a call, so an `encode` racing an
    `encode_literal` in another thread (rollout threads, the gateway) could get
    special-token strings split into text tokens, or the reverse.
    """

    def __init__(self, hf_tokenizer: Any):
        self.hf = hf_tokenizer
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return list(self.hf.encode(text, add_special_tokens=False))

    def encode_literal(self, text: str) -> list[int]:
        # split_special_tokens=True: "<|im_end|>" in `text` is byte-level BPE text, not the
        # special id. HF splits text at special tokens before pre-tokenizing, so for text
        # without special-token strings this equals `encode` token for token.
        with self._lock:
            return list(self.hf(text, add_special_tokens=False,
                                split_special_tokens=True)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(
            list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def __repr__(self) -> str:
        return f"HFTokenizer({type(self.hf).__name__})"


def as_tokenizer(obj: Any) -> Tokenizer:
    """Wraps Hugging Face tokenizers in `HFTokenizer`; returns protocol-conforming objects as is."""
    if isinstance(obj, HFTokenizer):
        return obj
    if hasattr(obj, "convert_tokens_to_ids") and hasattr(obj, "all_special_tokens"):
        return HFTokenizer(obj)
    if isinstance(obj, Tokenizer):
        return obj
    raise TypeError(f"{type(obj).__name__} is not a tokenizer (needs encode(text), "
                    "encode_literal(text) and decode(ids))")


class CharTokenizer:
    """A pure-Python tokenizer for fast tests: one id per character, plus special tokens.

    Ids 0..len(special_tokens)-1 are the special tokens (recognised in text, as HF does);
    any other character c has id len(special_tokens) + ord(c). Exact and reversible.
    """

    def __init__(
        self, special_tokens: Sequence[str] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    ):
        if not special_tokens or len(set(special_tokens)) != len(special_tokens):
            raise ValueError("special_tokens must be non-empty and unique")
        self.special_tokens = tuple(special_tokens)
        self._special_ids = {tok: i for i, tok in enumerate(self.special_tokens)}
        alternatives = sorted(self.special_tokens, key=len, reverse=True)
        self._split_re = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")

    def token_id(self, special: str) -> int:
        return self._special_ids[special]

    def encode(self, text: str) -> list[int]:
        offset = len(self.special_tokens)
        ids: list[int] = []
        for part in self._split_re.split(text):
            if part in self._special_ids:
                ids.append(self._special_ids[part])
            else:
                ids.extend(offset + ord(ch) for ch in part)
        return ids

    def encode_literal(self, text: str) -> list[int]:
        offset = len(self.special_tokens)
        return [offset + ord(ch) for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        offset = len(self.special_tokens)
        out = []
        for i in ids:
            i = int(i)
            if 0 <= i < offset:
                out.append(self.special_tokens[i])
            elif offset <= i < offset + 0x110000:
                out.append(chr(i - offset))
            else:
                raise ValueError(f"token id {i} is out of range for CharTokenizer")
        return "".join(out)
