"""A safe calculator: arithmetic expressions parsed with `ast` and evaluated by a whitelist.

Never `eval`: the expression is parsed into a Python AST and only numeric literals,
+ - * / // % **, unary + -, parentheses, the constants `pi`/`e` and a few math
functions are interpreted. Length, node count, exponent size and every intermediate
magnitude are bounded, so no input can allocate a huge integer or spin the CPU.

Imports: stdlib and agentic_rl.envs.tools.base only; never jax.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentic_rl.envs.tools.base import Tool, ToolExecutionError

Number = int | float


class CalculatorError(ToolExecutionError):
    """The expression is invalid or out of bounds; the message says why."""


@dataclass(frozen=True)
class CalculatorLimits:
    max_chars: int = 256
    max_nodes: int = 128
    max_abs_value: float = 1e18
    max_round_digits: int = 15
    max_function_args: int = 16


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


# name -> (function, min args, max args)
_FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "sqrt": (math.sqrt, 1, 1),
    "abs": (abs, 1, 1),
    "round": (round, 1, 2),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1),
    "exp": (math.exp, 1, 1),
    "min": (min, 1, 16),
    "max": (max, 1, 16),
}


def _check(value: Any, limits: CalculatorLimits) -> Number:
    """Every intermediate result passes here: real, finite, bounded."""
    if isinstance(value, complex):
        raise CalculatorError("result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("result is not finite")
    if abs(value) > limits.max_abs_value:
        raise CalculatorError(f"result is too large (limit {limits.max_abs_value:g})")
    return value


def _check_pow(base: Number, exponent: Number, limits: CalculatorLimits) -> None:
    """Rejects powers whose result would exceed the bound, before computing them."""
    if base == 0 or abs(base) == 1:
        return
    log_result = float(exponent) * math.log10(abs(base))
    if log_result > math.log10(limits.max_abs_value) + 1:
        raise CalculatorError(f"result is too large (limit {limits.max_abs_value:g})")


class _Evaluator:
    def __init__(self, limits: CalculatorLimits):
        self.limits = limits

    def eval(self, node: ast.AST) -> Number:
        method = getattr(self, f"_eval_{type(node).__name__}", None)
        if method is None:
            raise CalculatorError(f"unsupported syntax: {type(node).__name__}")
        return _check(method(node), self.limits)

    def _eval_Expression(self, node: ast.Expression) -> Number:
        return self.eval(node.body)

    def _eval_Constant(self, node: ast.Constant) -> Number:
        if type(node.value) not in (int, float):
            raise CalculatorError(f"only numbers are allowed, got {type(node.value).__name__}")
        return node.value

    def _eval_Tuple(self, node: ast.Tuple) -> Number:
        raise CalculatorError("commas are not allowed (write 1000, not 1,000)")

    def _eval_Name(self, node: ast.Name) -> Number:
        if node.id not in _CONSTANTS:
            raise CalculatorError(
                f"unknown name {node.id[:32]!r}; constants: {', '.join(_CONSTANTS)}"
            )
        return _CONSTANTS[node.id]

    def _eval_UnaryOp(self, node: ast.UnaryOp) -> Number:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise CalculatorError(f"unsupported operator: {type(node.op).__name__}")
        return op(self.eval(node.operand))

    def _eval_BinOp(self, node: ast.BinOp) -> Number:
        if isinstance(node.op, ast.BitXor):
            raise CalculatorError("'^' is not a power operator here; use '**'")
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise CalculatorError(f"unsupported operator: {type(node.op).__name__}")
        left, right = self.eval(node.left), self.eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_pow(left, right, self.limits)
        try:
            return op(left, right)
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except OverflowError:
            raise CalculatorError("result is too large") from None

    def _eval_Call(self, node: ast.Call) -> Number:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise CalculatorError(f"unknown function; allowed: {', '.join(_FUNCTIONS)}")
        if node.keywords:
            raise CalculatorError("keyword arguments are not supported")
        fn, lo, hi = _FUNCTIONS[node.func.id]
        if not lo <= len(node.args) <= hi:
            raise CalculatorError(f"{node.func.id}() takes {lo}..{hi} arguments")
        args = [self.eval(a) for a in node.args]
        if node.func.id == "round" and len(args) == 2:
            if not isinstance(args[1], int) or abs(args[1]) > self.limits.max_round_digits:
                raise CalculatorError("round() digits must be a small integer")
        try:
            return fn(*args)
        except (ValueError, ZeroDivisionError) as e:
            raise CalculatorError(f"{node.func.id}(): {e}") from None
        except OverflowError:
            raise CalculatorError("result is too large") from None


def evaluate_expression(expression: Any, limits: CalculatorLimits | None = None) -> Number:
    """Evaluates an arithmetic expression string; raises `CalculatorError` on any bad input."""
    limits = limits or CalculatorLimits()
    if not isinstance(expression, str):
        raise CalculatorError(f"expression must be a string, got {type(expression).__name__}")
    expr = expression.strip()
    if not expr:
        raise CalculatorError("empty expression")
    if len(expr) > limits.max_chars:
        raise CalculatorError(f"expression is too long ({len(expr)} > {limits.max_chars} chars)")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        msg = getattr(e, "msg", None) or type(e).__name__
        raise CalculatorError(f"cannot parse expression: {msg}") from None
    n_nodes = sum(1 for _ in ast.walk(tree))
    if n_nodes > limits.max_nodes:
        raise CalculatorError(f"expression is too complex ({n_nodes} > {limits.max_nodes} nodes)")
    try:
        return _Evaluator(limits).eval(tree)
    except RecursionError:
        raise CalculatorError("expression is nested too deeply") from None
    except TypeError as e:  # e.g. a float where an int is required
        raise CalculatorError(f"invalid operands: {e}") from None


def format_number(value: Number) -> str:
    """Prints a result the way a person would: integral values without '.0', 12 digits max."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


def calculator_tool(limits: CalculatorLimits | None = None, timeout_s: float = 5.0) -> Tool:
    """The `calculator` tool: one string argument `expression`, returns the value as text."""
    limits = limits or CalculatorLimits()

    def calculator(expression: str) -> str:
        return format_number(evaluate_expression(expression, limits))

    return Tool(
        name="calculator",
        description=(
            "Evaluate an arithmetic expression. Supports + - * / // % ** and parentheses, "
            "the constants pi and e, and sqrt, abs, round, floor, ceil, log, log10, exp, "
            "min, max. Example: (12 + 7) * 3 / 4"
        ),
        parameters={
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "description": "the arithmetic expression to evaluate",
                    "maxLength": limits.max_chars,
                }
            },
            "required": ["expression"],
            "additionalProperties": False,
        },
        fn=calculator,
        timeout_s=timeout_s,
    )
