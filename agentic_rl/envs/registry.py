"""`ENVS`: environment suites by name, so a config string selects the environment.

A suite bundles what a run needs from an environment: a factory for fresh episode
instances (one per concurrent episode), the task splits, and the discount `gamma`
(part of the environment's config because it encodes how the task values time).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from agentic_rl.envs.base import Env
from agentic_rl.envs.calculator import calculator_tool
from agentic_rl.envs.guess_number import (
    GUESS_INSTRUCTIONS,
    TOO_HIGH_FEEDBACK,
    TOO_LOW_FEEDBACK,
    GuessNumberEnv,
    generate_guess_tasks,
)
from agentic_rl.envs.math_env import (
    COMPACT_CALCULATOR_INSTRUCTIONS,
    MathToolEnv,
    calculator_demonstrations,
    default_math_reward,
)
from agentic_rl.envs.tasks import (
    GSM8K_DIR_ENV,
    TaskSet,
    generate_arithmetic_tasks,
    load_gsm8k_jsonl,
    resolve_gsm8k_dir,
)
from agentic_rl.registry import Registry


@dataclass(frozen=True)
class EnvSuite:
    """A named environment: `make_env()` gives a fresh `Env`; `tasks` holds the splits."""

    name: str
    make_env: Callable[[], Env]
    tasks: TaskSet
    gamma: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"env {self.name!r}: gamma must be in (0, 1], got {self.gamma}")


SuiteFactory = Callable[..., EnvSuite]


# name -> suite factory (keyword arguments = the environment's config)
ENVS = Registry("environment")


def make_env_suite(name: str, config: Mapping[str, Any] | None = None, **kwargs: Any) -> EnvSuite:
    """Builds suite `name` from a config mapping (e.g. a ConfigDict) and/or keyword overrides."""
    options = {**dict(config or {}), **kwargs}
    return ENVS.get(name)(**options)


def _math_env_factory(
    format_weight: float, demonstrations: int = 0, compact_prompt: bool = False
) -> Callable[[], Env]:
    tool = calculator_tool()
    demos = tuple(calculator_demonstrations(demonstrations, tool))
    extra: dict[str, Any] = {"demonstrations": demos}
    if compact_prompt:
        extra.update(instructions=COMPACT_CALCULATOR_INSTRUCTIONS, describe_tools=False)
    return partial(MathToolEnv, tools=(tool,), reward=default_math_reward(format_weight), **extra)


@ENVS.register("calculator")
def calculator_suite(
    *,
    train_path: str | os.PathLike | None = None,
    eval_path: str | os.PathLike | None = None,
    num_train: int = 2000,
    num_eval: int = 200,
    seed: int = 0,
    min_ops: int = 2,
    max_ops: int = 4,
    limit: int | None = None,
    format_weight: float = 0.1,
    gamma: float = 1.0,
    demonstrations: int = 0,
    compact_prompt: bool = False,
    max_operand: int = 99,
    num_eval_hard: int = 0,
    hard_max_operand: int = 999,
) -> EnvSuite:
    """Multi-step arithmetic with the safe calculator tool.

    Splits are generated (train from `seed`, eval from `seed + 1`, operands up to
    `max_operand`) unless a GSM8K-format file is given for that split (`train_path` /
    `eval_path`, at most `limit` tasks). `num_eval_hard` more eval tasks (from `seed + 2`)
    have operands up to `hard_max_operand`, larger than any seen in training, so the eval
    number measures generalisation too; their `data["subset"]` is "larger_operands" (the
    others' "in_distribution"), and evaluation reports both subsets apart as well.
    `demonstrations` worked examples (0-4) precede each problem and `compact_prompt`
    replaces the JSON-schema tool prompt by a short shown format: what a small model
    needs to call the tool at all (see `calculator_demonstrations`).
    """
    if num_eval_hard < 0 or hard_max_operand < 2:
        raise ValueError(f"num_eval_hard={num_eval_hard} must be >= 0 and hard_max_operand="
                         f"{hard_max_operand} >= 2")
    subset = "in_distribution" if num_eval_hard else None

    def split(path, n, split_seed, prefix, subset=None):
        if path is not None:
            return load_gsm8k_jsonl(path, limit=limit)
        return generate_arithmetic_tasks(
            n, split_seed, min_ops=min_ops, max_ops=max_ops, max_operand=max_operand,
            id_prefix=prefix, subset=subset,
        )

    hard = generate_arithmetic_tasks(
        num_eval_hard, seed + 2, min_ops=min_ops, max_ops=max_ops,
        max_operand=hard_max_operand, id_prefix="arith-eval-hard", subset="larger_operands")
    tasks = TaskSet(
        {
            "train": split(train_path, num_train, seed, "arith-train"),
            "eval": [*split(eval_path, num_eval, seed + 1, "arith-eval", subset), *hard],
        }
    )
    factory = _math_env_factory(format_weight, demonstrations, compact_prompt)
    return EnvSuite("calculator", factory, tasks, gamma)


@ENVS.register("gsm8k")
def gsm8k_suite(
    *,
    data_dir: str | os.PathLike | None = None,
    train_file: str = "train.jsonl",
    eval_file: str = "test.jsonl",
    limit: int | None = None,
    format_weight: float = 0.1,
    gamma: float = 1.0,
) -> EnvSuite:
    """The real GSM8K problems with the calculator tool.

    Data directory: `data_dir`, else $AGENTIC_RL_GSM8K_DIR, else ../shared/data/gsm8k
    relative to the repository root.
    """
    root = resolve_gsm8k_dir(data_dir)
    train, test = root / train_file, root / eval_file
    missing = [str(p) for p in (train, test) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"GSM8K data not found: {', '.join(missing)}. Pass data_dir=... or set "
            f"${GSM8K_DIR_ENV} to the directory holding {train_file} and {eval_file}."
        )
    tasks = TaskSet(
        {
            "train": load_gsm8k_jsonl(train, limit=limit, id_prefix="gsm8k-train"),
            "eval": load_gsm8k_jsonl(test, limit=limit, id_prefix="gsm8k-test"),
        }
    )
    return EnvSuite("gsm8k", _math_env_factory(format_weight), tasks, gamma)


@ENVS.register("guess_number")
def guess_number_suite(
    *,
    low: int = 1,
    high: int = 100,
    num_train: int = 1000,
    num_eval: int = 100,
    seed: int = 0,
    max_guesses: int = 10,
    win_reward: float = 1.0,
    info_weight: float = 0.5,
    inconsistent_penalty: float = -0.1,
    gamma: float = 0.95,
    instructions: str = GUESS_INSTRUCTIONS,
    too_low_feedback: str = TOO_LOW_FEEDBACK,
    too_high_feedback: str = TOO_HIGH_FEEDBACK,
) -> EnvSuite:
    """Guess-the-number with higher/lower feedback (multi-turn, memory needed, dense reward).

    `instructions`: the prompt template ({low}, {high}); see `generate_guess_tasks`.
    `too_low_feedback` / `too_high_feedback`: the reply to a wrong guess ({guess})."""
    tasks = TaskSet(
        {
            "train": generate_guess_tasks(
                num_train,
                seed,
                low=low,
                high=high,
                id_prefix="guess-train",
                instructions=instructions,
            ),
            "eval": generate_guess_tasks(
                num_eval,
                seed + 1,
                low=low,
                high=high,
                id_prefix="guess-eval",
                instructions=instructions,
            ),
        }
    )
    make = partial(
        GuessNumberEnv,
        max_guesses=max_guesses,
        win_reward=win_reward,
        info_weight=info_weight,
        inconsistent_penalty=inconsistent_penalty,
        too_low_feedback=too_low_feedback,
        too_high_feedback=too_high_feedback,
    )
    return EnvSuite("guess_number", make, tasks, gamma)
