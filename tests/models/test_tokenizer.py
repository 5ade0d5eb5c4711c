"""The GGUF-built tokenizer gives exactly the ids of transformers' own GGUF tokenizer."""

from __future__ import annotations

import gguf
import pytest

from agentic_rl.models.io.gguf import gguf_tokenizer
from tests.conftest import smollm2_gguf_path

TEXTS = [
    "Hello, world!",
    "What is the capital of France?",
    "  leading spaces and trailing   ",
    "I have 12345 apples and 3.14159 pies; 2024-11-21, -7e-3, 1,000,000.",
    "def f(x):\n    return x ** 2  # square\n\n\tprint(f'{x=}')",
    'SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name ORDER BY 2 DESC;',
    '<tool_call>{"name": "calculator", "arguments": {"expression": "(3+4)*5"}}</tool_call>',
    "Unicode: naïve café, Straße, 東京, Привет, 🙂🚀, ∑∫√, e\u0301",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "Mixed<|endoftext|>special<|im_end|>tokens<repo_name>",
    "contractions: don't, I'll, we've, they're, it's, I'd, you'RE",
    "\n\n\n   \r\n tabs\tand\u00a0nbsp",
    "",
]


@pytest.fixture(scope="module")
def ours():
    return gguf_tokenizer(gguf.GGUFReader(str(smollm2_gguf_path())))


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_transformers_gguf_tokenizer(ours, hf_gguf_tokenizer, text):
    want = hf_gguf_tokenizer.encode(text, add_special_tokens=False)
    got = ours.encode(text, add_special_tokens=False)
    assert got == want
    assert ours.decode(got) == hf_gguf_tokenizer.decode(want)


def test_chat_template_matches(ours, hf_gguf_tokenizer):
    msgs = [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "What is 17 * 23?"},
        {"role": "assistant", "content": "<tool_call>{\"name\": \"calc\"}</tool_call>"},
        {"role": "user", "content": "<tool_response>391</tool_response>"},
    ]
    kw = dict(add_generation_prompt=True, tokenize=True, return_dict=True)
    got = ours.apply_chat_template(msgs, **kw)["input_ids"]
    want = hf_gguf_tokenizer.apply_chat_template(msgs, **kw)["input_ids"]
    assert got == want
    suffix = ours.encode("<|im_start|>assistant\n", add_special_tokens=False)
    assert got[-len(suffix):] == suffix


def test_special_tokens(ours):
    assert ours.eos_token == "<|im_end|>" and ours.eos_token_id == 2
    assert ours.bos_token == "<|im_start|>" and ours.pad_token_id == 2
    assert len(ours) == 49152
    # control tokens stay whole; digits are split one by one (SmolLM2's pre-tokenizer)
    assert ours.encode("<|im_end|>", add_special_tokens=False) == [2]
    assert len(ours.encode("123456", add_special_tokens=False)) == 6


def test_converted_dir_tokenizer_equals_gguf_tokenizer(ours, smollm2_dir):
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(str(smollm2_dir))
    for text in TEXTS:
        assert reloaded.encode(text, add_special_tokens=False) == ours.encode(
            text, add_special_tokens=False
        )
    assert reloaded.chat_template == ours.chat_template
