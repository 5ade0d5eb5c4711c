"""The padding and prefix rules of `agentic_rl.shapes`, as the sampler, the collator and
the learner use them."""

from __future__ import annotations

import numpy as np
import pytest

from agentic_rl import shapes
from agentic_rl.shapes import leading_rows, shared_prefix


def learner_prefix(tokens, mask, multiple=32):
    """The learner's call (train/loop.py `prefix_len`)."""
    return shared_prefix(leading_rows(tokens, mask), multiple, min_rows=1,
                         width=np.shape(tokens)[1])


@pytest.mark.parametrize(
    "n, bucket, expected",
    [
        (0, 64, 64),
        (1, 64, 64),
        (64, 64, 64),
        (65, 64, 128),
        (0, "pow2", 1),
        (5, "pow2", 8),
        (64, "pow2", 64),
        (65, "pow2", 128),
        (7, 3, 9),
    ],
)
def test_bucket_rounds_up_to_a_multiple_or_a_power_of_two(n, bucket, expected):
    assert shapes.bucket(n, bucket) == expected


@pytest.mark.parametrize("bucket", [0, -8, "p2", True, 1.5])
def test_bucket_rejects_bad_buckets(bucket):
    with pytest.raises(ValueError, match="bucket must be"):
        shapes.bucket(3, bucket)


@pytest.mark.parametrize("n, expected", [(0, 16), (1, 16), (16, 16), (17, 32), (100, 128)])
def test_sampler_bucket_is_a_power_of_two_from_16(n, expected):
    assert shapes.bucket(n, minimum=16) == expected


@pytest.mark.parametrize("n, expected", [(0, 1), (1, 1), (3, 4), (8, 8), (9, 16)])
def test_row_bucket_is_a_power_of_two(n, expected):
    assert shapes.bucket(n) == expected == shapes.bucket(n, "pow2")


def test_sampler_prefix_keeps_a_token_of_its_own():
    rng = np.random.default_rng(0)
    common = [int(x) for x in rng.integers(3, 128, 40)]
    prompts = [common + [5, 6, 7], common + [9], common + [11, 12]]
    assert shared_prefix(prompts, 8) == 40
    assert shared_prefix(prompts, 32) == 32
    assert shared_prefix([common, common], 8) == 32  # keeps one token of its own
    assert shared_prefix([common], 8) == 0


def test_learner_prefix_rounds_down_and_ignores_empty_rows():
    tokens = np.tile(np.arange(100), (3, 1))
    mask = np.ones((3, 100), bool)
    tokens[1, 70] = -1  # rows differ from position 70
    assert learner_prefix(tokens, mask, 32) == 64
    assert learner_prefix(tokens, mask, 16) == 64
    assert learner_prefix(tokens, mask, 7) == 70
    mask[2, 40:] = False  # a row ending early bounds the prefix (it must be real tokens)
    assert learner_prefix(tokens, mask, 8) == 40
    # an all-padding row (a dropped episode) does not count
    empty = np.zeros((1, 100), bool)
    t = np.concatenate([tokens[:2], np.zeros((1, 100), int)])
    assert learner_prefix(t, np.concatenate([np.ones((2, 100), bool), empty]), 8) == 64
    # identical rows keep at least one token of their own
    assert learner_prefix(np.ones((2, 65), int), np.ones((2, 65), bool), 32) == 64
    assert learner_prefix(np.ones((2, 64), int), np.ones((2, 64), bool), 32) == 32
    # nothing shared, or nothing real
    assert learner_prefix(np.arange(20).reshape(2, 10), np.ones((2, 10), bool), 2) == 0
    assert learner_prefix(tokens, np.zeros_like(mask), 8) == 0
