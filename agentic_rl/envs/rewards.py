"""Verifiable rewards (RLVR): answer extraction, numeric and string matching, format checks.

A reward function maps (final assistant text, task) to a float. They compose with
weights through `CompositeReward`, which also reports each term so a run can log
"correct" and "format" separately instead of one opaque number.

Imports: stdlib and agentic_rl.envs.base only; never jax.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agentic_rl.envs.base import Task

RewardFn = Callable[[str, Task], float]

ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")
_HASHES_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:)\s*([^\n]+)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_FRACTION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def extract_final_answer(text: str) -> str | None:
    """The final answer in a response: the last `<answer>..</answer>`, `\\boxed{..}`,
    `#### ..` or "answer is ..", else the last number in the text, else None."""
    for pattern in (ANSWER_TAG_RE, _BOXED_RE, _HASHES_RE, _ANSWER_IS_RE):
        found = pattern.findall(text)
        if found:
            return found[-1].strip()
    numbers = _NUMBER_RE.findall(_THOUSANDS_RE.sub("", text))
    return numbers[-1] if numbers else None


def parse_number(text: str | None) -> float | None:
    """A number from answer text: '$1,234.50' -> 1234.5, '3/4' -> 0.75, '18 eggs' -> 18.

    Takes the last number when there are several (answers tend to end with the result).
    Returns None when there is no number.
    """
    if text is None:
        return None
    s = _THOUSANDS_RE.sub("", text)
    frac = _FRACTION_RE.match(s)
    if frac:
        den = float(frac.group(2))
        return float(frac.group(1)) / den if den else None
    numbers = _NUMBER_RE.findall(s)
    if not numbers:
        return None
    value = float(numbers[-1])
    return value if math.isfinite(value) else None


def numeric_match(
    predicted: str | None, target: str | float, rel_tol: float = 1e-4, abs_tol: float = 1e-6
) -> bool:
    """True if both parse as numbers that agree within the tolerances."""
    p = parse_number(predicted)
    t = target if isinstance(target, (int, float)) else parse_number(target)
    return p is not None and t is not None and math.isclose(p, t, rel_tol=rel_tol, abs_tol=abs_tol)


def normalize_text(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def string_match(predicted: str | None, target: str) -> bool:
    """Equality after `normalize_text`."""
    return predicted is not None and normalize_text(predicted) == normalize_text(target)


def token_f1(predicted: str | None, target: str) -> float:
    """SQuAD token F1 between the normalised answers: the harmonic mean of token precision
    and recall (tokens counted with multiplicity); 0.0 when `predicted` is None or empty."""
    if predicted is None:
        return 0.0
    pred, gold = normalize_text(predicted).split(), normalize_text(target).split()
    if not pred or not gold:
        return float(pred == gold)
    counts: dict[str, int] = {}
    for t in gold:
        counts[t] = counts.get(t, 0) + 1
    common = 0
    for t in pred:
        if counts.get(t, 0) > 0:
            counts[t] -= 1
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def _require_answer(task: Task) -> str:
    if task.answer is None:
        raise ValueError(f"task {task.id!r} has no reference answer; this reward needs one")
    return task.answer


def numeric_answer_reward(rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> RewardFn:
    """1.0 if the response's final answer numerically equals the task's answer, else 0.0."""

    def reward(text: str, task: Task) -> float:
        target = _require_answer(task)
        return float(numeric_match(extract_final_answer(text), target, rel_tol, abs_tol))

    return reward


def string_answer_reward() -> RewardFn:
    """1.0 if the response's final answer equals the task's answer after normalisation."""

    def reward(text: str, task: Task) -> float:
        return float(string_match(extract_final_answer(text), _require_answer(task)))

    return reward


def f1_answer_reward() -> RewardFn:
    """Token F1 (`token_f1`) between the response's final answer and the task's answer:
    partial credit for a partly right name ("Mira" for "Mira Tolvan" scores 2/3)."""

    def reward(text: str, task: Task) -> float:
        return token_f1(extract_final_answer(text), _require_answer(task))

    return reward


def format_reward(pattern: str | re.Pattern[str] = ANSWER_TAG_RE) -> RewardFn:
    """1.0 if the response contains `pattern` exactly once (e.g. one `<answer>` tag)."""
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern

    def reward(text: str, task: Task) -> float:
        return float(len(compiled.findall(text)) == 1)

    return reward


@dataclass(frozen=True)
class CompositeReward:
    """A weighted sum of named reward terms: {name: (fn, weight)}."""

    terms: Mapping[str, tuple[RewardFn, float]]

    def __post_init__(self):
        if not self.terms:
            raise ValueError("CompositeReward needs at least one term")
        for name, term in self.terms.items():
            if not (isinstance(term, tuple) and len(term) == 2 and callable(term[0])):
                raise ValueError(f"reward term {name!r} must be (fn, weight), got {term!r}")
            if not math.isfinite(term[1]):
                raise ValueError(f"reward term {name!r} has a non-finite weight {term[1]}")

    def components(self, text: str, task: Task) -> dict[str, float]:
        """Each term's unweighted value."""
        return {name: float(fn(text, task)) for name, (fn, _) in self.terms.items()}

    def total(self, components: Mapping[str, float]) -> float:
        return sum(self.terms[name][1] * value for name, value in components.items())

    def __call__(self, text: str, task: Task) -> float:
        return self.total(self.components(text, task))
