"""Verifiable rewards: answer extraction, number parsing, matching and composition."""

from __future__ import annotations

import pytest

from agentic_rl.envs import (
    CompositeReward,
    Task,
    extract_final_answer,
    format_reward,
    normalize_text,
    numeric_answer_reward,
    numeric_match,
    parse_number,
    string_answer_reward,
    string_match,
)

TASK = Task(id="t", prompt="?", answer="1234")


@pytest.mark.parametrize(
    "text, answer",
    [
        ("so <answer>42</answer>", "42"),
        ("<answer>1</answer> then <answer> 2 </answer>", "2"),
        (r"thus \boxed{7}", "7"),
        ("work\n#### 1,234", "1,234"),
        ("The answer is 12 apples.", "12 apples."),
        ("I got 3 then 5 and finally 1,000", "1000"),
        ("no number here", None),
    ],
)
def test_extract_final_answer(text, answer):
    assert extract_final_answer(text) == answer


@pytest.mark.parametrize(
    "text, value",
    [
        ("$1,234.50", 1234.5),
        ("3/4", 0.75),
        ("-2", -2.0),
        ("18 eggs", 18.0),
        ("1e3", 1000.0),
        ("5/0", None),
        ("none", None),
        (None, None),
        ("50%", 50.0),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_numeric_match_uses_tolerances():
    assert numeric_match("1234.00", "1,234")
    assert numeric_match("0.3333333", 1 / 3, rel_tol=1e-6)
    assert not numeric_match("0.33", 1 / 3)
    assert not numeric_match(None, "1")
    assert not numeric_match("abc", "1")


def test_string_match_normalises():
    assert normalize_text("The  Eiffel-Tower!") == "eiffeltower"
    assert string_match("the Paris.", "paris")
    assert not string_match("London", "paris")


def test_answer_rewards():
    assert numeric_answer_reward()("<answer>$1,234</answer>", TASK) == 1.0
    assert numeric_answer_reward()("<answer>1235</answer>", TASK) == 0.0
    assert string_answer_reward()("<answer>The Paris</answer>", Task("p", "?", "paris")) == 1.0
    with pytest.raises(ValueError, match="no reference answer"):
        numeric_answer_reward()("1", Task("x", "?"))


def test_format_reward_requires_exactly_one_tag():
    fr = format_reward()
    assert fr("<answer>1</answer>", TASK) == 1.0
    assert fr("1", TASK) == 0.0
    assert fr("<answer>1</answer><answer>2</answer>", TASK) == 0.0
    assert format_reward(r"^Final: \d+$")("Final: 3", TASK) == 1.0


def test_composite_reward_weights_and_components():
    reward = CompositeReward(
        {"correct": (numeric_answer_reward(), 1.0), "format": (format_reward(), 0.25)}
    )
    assert reward.components("<answer>1234</answer>", TASK) == {"correct": 1.0, "format": 1.0}
    assert reward("<answer>1234</answer>", TASK) == 1.25
    assert reward("1234", TASK) == 1.0
    assert reward("<answer>9</answer>", TASK) == 0.25


@pytest.mark.parametrize(
    "terms, fragment",
    [
        ({}, "at least one"),
        ({"a": (1.0, 1.0)}, "must be"),
        ({"a": (format_reward(), float("nan"))}, "non-finite"),
    ],
)
def test_composite_reward_validates_terms(terms, fragment):
    with pytest.raises(ValueError, match=fragment):
        CompositeReward(terms)
