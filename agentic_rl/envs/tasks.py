"""Task sources: GSM8K-format JSONL files, generators, and train/eval splits.

Tasks are data. Any file of `{"question", "answer"}` lines whose answer ends with
`#### <final answer>` (the GSM8K format) works, so any such file can serve as an
evaluation set. Generators are seeded, so a split is reproducible from its seed.

Imports: stdlib, agentic_rl.envs.base and agentic_rl.envs.tools.calculator only; never jax.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentic_rl.envs.base import Task
from agentic_rl.envs.tools.calculator import evaluate_expression, format_number


def unique_values(n: int, make, taken: set[str]) -> list[str]:
    """`n` values of `make()` not in `taken` (added to it): the distinct names, ids and
    words that the generated task worlds (search_qa, fs_investigation) are built from."""
    out: list[str] = []
    while len(out) < n:
        value = make()
        if value not in taken:
            taken.add(value)
            out.append(value)
    return out

GSM8K_DIR_ENV = "AGENTIC_RL_GSM8K_DIR"
_GSM8K_MARKER = "####"


def repo_root() -> Path:
    """The repository root (the directory holding the `agentic_rl` package)."""
    return Path(__file__).resolve().parents[2]


def resolve_gsm8k_dir(path: str | os.PathLike | None = None) -> Path:
    """Where the GSM8K files live: `path`, else $AGENTIC_RL_GSM8K_DIR, else
    `../shared/data/gsm8k` relative to the repository root. Existence is not checked."""
    if path is not None:
        return Path(path).expanduser().resolve()
    env = os.environ.get(GSM8K_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (repo_root() / ".." / "shared" / "data" / "gsm8k").resolve()


def parse_gsm8k_answer(answer: str) -> str:
    """The final answer after the last '#### ', thousands separators removed ('1,000' -> '1000')."""
    if not isinstance(answer, str) or _GSM8K_MARKER not in answer:
        raise ValueError(f"answer has no '{_GSM8K_MARKER} <final answer>' line: {answer!r:.80}")
    final = answer.rsplit(_GSM8K_MARKER, 1)[1].strip().replace(",", "")
    if not final:
        raise ValueError(f"empty final answer after '{_GSM8K_MARKER}': {answer!r:.80}")
    return final


def load_gsm8k_jsonl(
    path: str | os.PathLike, *, limit: int | None = None, id_prefix: str | None = None
) -> list[Task]:
    """Reads a GSM8K-format JSONL file into tasks with ids `f"{id_prefix}-{line_index}"`.

    Errors name the file and line, since a broken eval file should fail loudly at load
    time, not as a silent zero reward mid-run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    prefix = id_prefix if id_prefix is not None else path.stem
    tasks: list[Task] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and len(tasks) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("line is not a JSON object")
                question, answer = row.get("question"), row.get("answer")
                if not isinstance(question, str) or not isinstance(answer, str):
                    raise ValueError('needs string fields "question" and "answer"')
                final = parse_gsm8k_answer(answer)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: not a GSM8K-format line: {e}") from None
            tasks.append(
                Task(
                    id=f"{prefix}-{lineno - 1}",
                    prompt=question,
                    answer=final,
                    data={"solution": answer},
                )
            )
    if not tasks:
        raise ValueError(f"{path}: no tasks found")
    return tasks


def _arithmetic_expression(rng: random.Random, num_ops: int, max_operand: int) -> tuple[str, int]:
    """A random expression with integer intermediate results, and its value."""
    value = rng.randint(2, max_operand)
    expr = str(value)
    for _ in range(num_ops):
        op = rng.choice("+-*/")
        if op == "/":
            divisors = [d for d in range(2, 13) if value % d == 0 and value != 0]
            if not divisors:
                op = "+"
        if op in "*/" and ("+" in expr or "-" in expr[1:]):
            expr = f"({expr})"
        if op == "/":
            operand = rng.choice(divisors)
            value //= operand
        elif op == "*":
            operand = rng.randint(2, 12)
            value *= operand
        else:
            operand = rng.randint(2, max_operand)
            value = value + operand if op == "+" else value - operand
        expr = f"{expr} {op} {operand}"
    return expr, value


def generate_arithmetic_tasks(
    n: int,
    seed: int,
    *,
    min_ops: int = 2,
    max_ops: int = 4,
    max_operand: int = 99,
    id_prefix: str = "arith",
    subset: str | None = None,
) -> list[Task]:
    """`n` multi-step arithmetic problems (integer answers), reproducible from `seed`.

    Each answer is re-checked with the safe calculator, so the generator and the tool
    can never disagree about what is correct. `subset` (e.g. "larger_operands") goes in
    each task's data, where evaluation reads it to report metrics per subset.
    """
    if n < 0 or not 1 <= min_ops <= max_ops or max_operand < 2:
        raise ValueError(
            f"bad generator arguments n={n} ops={min_ops}..{max_ops} max={max_operand}"
        )
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        expr, value = _arithmetic_expression(rng, rng.randint(min_ops, max_ops), max_operand)
        assert format_number(evaluate_expression(expr)) == str(value), expr
        tasks.append(
            Task(
                id=f"{id_prefix}-{seed}-{i}",
                prompt=f"What is {expr}?",
                answer=str(value),
                data={"expression": expr, **({"subset": subset} if subset else {})},
            )
        )
    return tasks


@dataclass(frozen=True)
class TaskSet:
    """Named splits of tasks (e.g. "train", "eval")."""

    splits: Mapping[str, Sequence[Task]]

    def __post_init__(self):
        for name, tasks in self.splits.items():
            ids = [t.id for t in tasks]
            if len(set(ids)) != len(ids):
                raise ValueError(f"split {name!r} has duplicate task ids")

    def split(self, name: str) -> Sequence[Task]:
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; available: {', '.join(self.splits)}")
        return self.splits[name]

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[list[Task]]:
        """Endless batches from shuffled epochs of `split` (reshuffled each epoch, seeded)."""
        tasks = list(self.split(split))
        if not tasks or batch_size < 1:
            raise ValueError(f"split {split!r} is empty or batch_size {batch_size} < 1")
        rng = random.Random(seed)
        order: list[Task] = []
        while True:
            while len(order) < batch_size:
                epoch = tasks[:]
                rng.shuffle(epoch)
                order.extend(epoch)
            yield order[:batch_size]
            order = order[batch_size:]
