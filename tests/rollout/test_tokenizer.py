"""Tokenizer protocol: the test CharTokenizer and the HF adapter are exact and add nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentic_rl.rollout import CharTokenizer, HFTokenizer, Tokenizer, as_tokenizer

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]


@given(
    st.lists(st.one_of(st.text(max_size=10), st.sampled_from(SPECIALS)), max_size=8).map("".join)
)
def test_char_tokenizer_round_trips(text):
    tok = CharTokenizer()
    assert tok.decode(tok.encode(text)) == text


def test_char_tokenizer_recognises_special_tokens():
    tok = CharTokenizer()
    ids = tok.encode("a<|im_end|>\n")
    assert ids == [3 + ord("a"), tok.token_id("<|im_end|>"), 3 + ord("\n")]
    assert isinstance(tok, Tokenizer)
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="unique"):
        CharTokenizer(("<a>", "<a>"))


def test_as_tokenizer():
    tok = CharTokenizer()
    assert as_tokenizer(tok) is tok
    with pytest.raises(TypeError, match="is not a tokenizer"):
        as_tokenizer(object())


def test_hf_adapter_is_exact_on_smollm2(smollm2_tokenizer, hf_gguf_tokenizer):
    assert isinstance(as_tokenizer(hf_gguf_tokenizer), HFTokenizer)
    tok = smollm2_tokenizer
    text = (
        '<|im_start|>user\n  Héllo ,  wörld 12+7=19 \t<tool_call>{"a": 1}</tool_call><|im_end|>\n'
    )
    ids = tok.encode(text)
    assert ids[0] == 1 and ids[-2] == 2  # <|im_start|>, <|im_end|>: no BOS inserted
    assert tok.decode(ids) == text


def test_hf_encode_and_encode_literal_are_safe_across_threads(hf_gguf_tokenizer):
    """HF's `split_special_tokens=True` flips a flag on the shared Rust tokenizer for the
    call; a thread encoding at the same moment got "<|im_start|>" split into 7 text tokens
    (seen once in CI as a wrong observation segment). `HFTokenizer` must serialize them."""
    import threading

    tok = HFTokenizer(hf_gguf_tokenizer)
    text = "<|im_start|>tool\n42<|im_end|>\n" * 20
    special, literal = tok.encode(text), tok.encode_literal(text)
    assert special != literal
    bad: list[str] = []

    def hammer(fn, want):
        for _ in range(300):
            if fn(text) != want:
                bad.append(fn.__name__)
                return

    threads = [threading.Thread(target=hammer, args=(tok.encode, special)) for _ in range(2)]
    threads += [threading.Thread(target=hammer, args=(tok.encode_literal, literal))
                for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad, f"wrong tokens under concurrent calls: {bad}"
