"""The safe calculator: correct arithmetic, every bound enforced, never an exception but
CalculatorError (and never one at all through the tool)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentic_rl.envs import (
    CalculatorError,
    CalculatorLimits,
    calculator_tool,
    evaluate_expression,
    execute_tool,
    format_number,
)


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 % 3", 2),
        ("2 ** 10", 1024),
        ("2 ** -1", 0.5),
        ("-(3 - 5)", 2),
        ("+4", 4),
        ("1.5e3 + 0.5", 1500.5),
        ("sqrt(16) + abs(-2)", 6.0),
        ("round(2.567, 2)", 2.57),
        ("floor(2.7) + ceil(2.1)", 5),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("log(e) + log10(1000) + log(8, 2)", 7.0),
        ("2 * pi", 2 * math.pi),
        ("(" * 100 + "1" + ")" * 100, 1),
    ],
)
def test_evaluates_arithmetic(expr, expected):
    assert evaluate_expression(expr) == pytest.approx(expected)


@pytest.mark.parametrize(
    "expr, fragment",
    [
        ("", "empty"),
        ("1 +", "cannot parse"),
        ("1/0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("2 ^ 3", "use '**'"),
        ("1,000", "commas"),
        ("10 ** 100", "too large"),
        ("9" * 25, "too large"),
        ("2 ** 2 ** 2 ** 2 ** 2", "too large"),
        ("1e308 * 10", "too large"),
        ("(-8) ** (1 / 3)", "not a real number"),
        ("sqrt(-1)", "sqrt()"),
        ("log(0)", "log()"),
        ("exp(1000)", "too large"),
        ("round(5, 10 ** 9)", "digits"),
        ("round(5, 1.5)", "digits"),
        ("__import__('os').system('ls')", "unknown function"),
        ("open('x')", "unknown function"),
        ("x + 1", "unknown name"),
        ("(1).real", "unsupported syntax"),
        ("[1, 2]", "unsupported syntax"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("1j", "only numbers"),
        ("1 if 1 else 2", "unsupported syntax"),
        ("lambda: 1", "unsupported syntax"),
        ("1 < 2", "unsupported syntax"),
        ("max()", "arguments"),
        ("sqrt(x=4)", "keyword"),
        ("1 + " * 100 + "1", "too long"),
        ("-" * 150 + "1", "too complex"),
        ("(" * 200 + "1" + ")" * 200, "too long"),
    ],
)
def test_rejects_bad_input_with_a_clear_error(expr, fragment):
    with pytest.raises(CalculatorError) as info:
        evaluate_expression(expr)
    assert fragment in str(info.value)


def test_rejects_non_string_input():
    with pytest.raises(CalculatorError, match="must be a string"):
        evaluate_expression(12)  # type: ignore[arg-type]


def test_limits_are_configurable():
    small = CalculatorLimits(max_abs_value=100.0)
    assert evaluate_expression("10 * 10", small) == 100
    with pytest.raises(CalculatorError, match="too large"):
        evaluate_expression("10 * 11", small)
    with pytest.raises(CalculatorError, match="too large"):
        evaluate_expression("3 ** 5", small)


@pytest.mark.parametrize(
    "value, text",
    [
        (3, "3"),
        (3.0, "3"),
        (-2.5, "-2.5"),
        (1 / 3, "0.333333333333"),
        (1e20, "1e+20"),
        (0.1 + 0.2, "0.3"),
    ],
)
def test_format_number(value, text):
    assert format_number(value) == text


def test_tool_returns_text_results_and_error_observations():
    tool = calculator_tool()
    assert execute_tool(tool, {"expression": "(12 + 7) * 3 / 4"}).content == "14.25"
    bad = execute_tool(tool, {"expression": "1/0"})
    assert not bad.ok and bad.error == "tool_error"
    assert bad.content == "Error: division by zero"


_CALC_ALPHABET = st.sampled_from(
    list("0123456789.+-*/%()e ,^_ajxsqrt") + ["**", "//", "pi", "sqrt(", "log(", "round("]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.lists(_CALC_ALPHABET, max_size=60).map("".join)))
def test_fuzz_calculator_only_raises_calculator_error(expr):
    tool = calculator_tool()
    try:
        value = evaluate_expression(expr)
    except CalculatorError:
        value = None
    if value is not None:
        assert isinstance(value, (int, float)) and math.isfinite(value)
        assert abs(value) <= CalculatorLimits().max_abs_value
    result = execute_tool(tool, {"expression": expr})
    assert isinstance(result.content, str)
    assert result.ok == (value is not None)
