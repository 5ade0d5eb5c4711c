"""Computation problems solved with the sandboxed `python` tool: the `python_code` environment.

The problems (sums of primes, inclusion-exclusion counts, Fibonacci numbers modulo m,
digit sums of large powers, Collatz chain lengths) are easy to program and tedious or
impossible to do by hand, so they reward using the interpreter. Answers are integers
computed here when the task is generated; the reward is a numeric match as in the
calculator environment.

Each episode owns one `CodeSandbox` (a persistent interpreter: variables survive across
turns); `close()` kills it, and `reset()` starts the next episode with a fresh one.
Registers the `python_code` suite.

Imports: stdlib and agentic_rl.envs (base, suite, tasks, tools.sandbox, suites.math) only;
never jax.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from functools import partial

from agentic_rl.envs.base import Message, Task
from agentic_rl.envs.suite import ENVS, EnvSuite
from agentic_rl.envs.suites.math import MathToolEnv, default_math_reward
from agentic_rl.envs.tasks import TaskSet
from agentic_rl.envs.tools.sandbox.sandbox import (
    CodeSandbox,
    SandboxLimits,
    python_tool,
    resolve_isolation,
)

CODE_INSTRUCTIONS = (
    "You are a careful programmer. Solve the problem by writing and running Python code with "
    "the python tool (its state persists between calls). When you know the final answer, "
    "reply with <answer>NUMBER</answer> and no tool call."
)


@functools.cache
def _prime_sums(limit: int = 200_001) -> list[int]:
    """prefix[n] = sum of the primes below n, for n < limit (one sieve, cached)."""
    sieve = bytearray([1]) * limit
    sieve[:2] = b"\x00\x00"
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, limit, i)))
    prefix, total = [0] * limit, 0
    for i in range(limit):
        prefix[i] = total
        total += i if sieve[i] else 0
    return prefix


def _count_divisible(n: int, a: int, b: int, c: int) -> int:
    """#{1 <= i <= n : (a | i or b | i) and not c | i}, by inclusion-exclusion."""
    lcm = math.lcm
    a_or_b = n // a + n // b - n // lcm(a, b)
    and_c = n // lcm(a, c) + n // lcm(b, c) - n // lcm(a, b, c)
    return a_or_b - and_c


def _fib_mod(n: int, m: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, (a + b) % m
    return a


def _collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def _code_problem(rng: random.Random, kind: int) -> tuple[str, int]:
    if kind == 0:
        n = rng.randrange(10_000, 200_000, 1000)
        return f"What is the sum of all prime numbers below {n}?", _prime_sums()[n]
    if kind == 1:
        n = rng.randrange(10_000, 1_000_000)
        a, b, c = rng.sample([3, 4, 5, 6, 7, 9, 11, 13], 3)
        count = _count_divisible(n, a, b, c)
        return (
            f"How many integers from 1 to {n} (inclusive) are divisible by {a} or {b} but not "
            f"by {c}?",
            count,
        )
    if kind == 2:
        n, m = rng.randint(500, 5000), rng.choice([1_000_003, 998_244_353, 10**9 + 7])
        return (
            f"Let F(0) = 0, F(1) = 1 and F(k) = F(k-1) + F(k-2). What is F({n}) modulo {m}?",
            _fib_mod(n, m),
        )
    if kind == 3:
        a, b = rng.randint(2, 99), rng.randint(50, 400)
        return f"What is the sum of the decimal digits of {a}^{b}?", sum(map(int, str(a**b)))
    n = rng.randint(1000, 1_000_000)
    return (
        f"Starting from {n}, repeatedly replace n by n/2 if n is even and by 3n+1 if n is odd. "
        "How many steps does it take to reach 1?",
        _collatz_steps(n),
    )


CODE_KINDS = 5


def generate_code_tasks(
    n: int, seed: int, *, id_prefix: str = "code", exclude: set[str] = frozenset()
) -> list[Task]:
    """`n` distinct computation problems with integer answers, reproducible from `seed`
    (none whose text is in `exclude`, e.g. the training questions)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    tasks: list[Task] = []
    seen = set(exclude)
    while len(tasks) < n:
        kind = rng.randrange(CODE_KINDS)
        question, answer = _code_problem(rng, kind)
        if question in seen:
            continue
        seen.add(question)
        tasks.append(
            Task(f"{id_prefix}-{seed}-{len(tasks)}", question, str(answer), {"kind": kind})
        )
    return tasks


@dataclass
class CodeToolEnv(MathToolEnv):
    """`MathToolEnv` whose tools run in the episode's own `CodeSandbox` (built lazily)."""

    sandbox: CodeSandbox | None = field(default=None, repr=False)

    def reset(self, task: Task, seed: int) -> list[Message]:
        if self.sandbox is not None:
            self.sandbox.reset()
        return super().reset(task, seed)

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()


def make_code_env(
    limits: SandboxLimits | None = None, *, isolation: str = "auto", format_weight: float = 0.1
) -> CodeToolEnv:
    """A fresh code environment with its own sandbox (the worker starts on the first call)."""
    sandbox = CodeSandbox(limits, isolation=isolation)
    return CodeToolEnv(
        tools=(python_tool(sandbox),),
        reward=default_math_reward(format_weight),
        instructions=CODE_INSTRUCTIONS,
        sandbox=sandbox,
    )


@ENVS.register("python_code")
def python_code_suite(
    *,
    num_train: int = 1000,
    num_eval: int = 200,
    seed: int = 0,
    isolation: str = "auto",
    wall_s: float = 10.0,
    memory_mb: int = 1024,
    max_processes: int = 32,
    format_weight: float = 0.1,
    gamma: float = 1.0,
) -> EnvSuite:
    """Computation problems solved with a sandboxed, stateful Python interpreter.

    `isolation`: "auto" (namespaces when available, else resource limits with a warning),
    "namespaces" (required) or "rlimits"; see `agentic_rl.envs.tools.sandbox.sandbox`.
    """
    limits = SandboxLimits(wall_s=wall_s, cpu_s=wall_s, memory_mb=memory_mb,
                           max_processes=max_processes)  # fmt: skip
    train = generate_code_tasks(num_train, seed, id_prefix="code-train")
    evals = generate_code_tasks(num_eval, seed + 1, id_prefix="code-eval",
                                exclude={t.prompt for t in train})  # fmt: skip
    isolation = resolve_isolation(isolation)  # once per suite: one warning, not one per episode
    make = partial(make_code_env, limits, isolation=isolation, format_weight=format_weight)
    return EnvSuite("python_code", make, TaskSet({"train": train, "eval": evals}), gamma)
