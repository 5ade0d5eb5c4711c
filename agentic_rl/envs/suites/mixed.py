"""Tasks that need two different tools: search (retrieve numbers) + calculator (combine them).

Multi-tool, multi-turn use is where agents are weakest: the agent must search for two
or three entities of the generated world (`suites.search`), read the numbers off their
pages, and combine them exactly. The questions contain no numbers, so the calculator
alone cannot answer them; and the answers are sums, differences or means of large
numbers that appear in no document, so search alone cannot either (the generator
checks the second property for every task). Registers the `search_calc` suite.

Imports: stdlib and agentic_rl.envs (base, suite, tasks, tools, suites.math, suites.search)
only; never jax.
"""

from __future__ import annotations

import random
import re
from functools import partial

from agentic_rl.envs.base import Task
from agentic_rl.envs.suite import ENVS, EnvSuite
from agentic_rl.envs.suites.math import MathToolEnv, default_math_reward
from agentic_rl.envs.suites.search import World, generate_world
from agentic_rl.envs.tasks import TaskSet
from agentic_rl.envs.tools.calculator import calculator_tool, format_number
from agentic_rl.envs.tools.search import SearchIndex, search_tools

MIXED_INSTRUCTIONS = (
    "You are a research assistant with a document search engine and a calculator. Find the "
    "facts you need with search and open, compute with the calculator, and when you know the "
    "final answer reply with <answer>NUMBER</answer> and no tool call."
)
_NUMBER_RE = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _mixed_question(rng: random.Random, world: World, kind: int) -> tuple[str, float] | None:
    companies, cities = world.companies, world.cities
    if kind == 0:
        a, b = rng.sample(list(companies), 2)
        hq_a, hq_b = companies[a]["hq"], companies[b]["hq"]
        if hq_a == hq_b:
            return None
        total = cities[hq_a]["population"] + cities[hq_b]["population"]
        return (
            f"What is the combined population of the cities where {a} and {b} have their "
            "headquarters?",
            total,
        )
    if kind == 1:
        a, b = rng.sample(list(companies), 2)
        diff = companies[a]["employees"] - companies[b]["employees"]
        if diff <= 0:
            a, b, diff = b, a, -diff
        if diff == 0:
            return None
        return f"How many more employees does {a} have than {b}?", diff
    names = rng.sample(list(companies), 3)
    mean = sum(companies[c]["employees"] for c in names) / 3
    return (
        f"What is the average number of employees of {names[0]}, {names[1]} and {names[2]}? "
        "Give the exact value.",
        mean,
    )


MIXED_KINDS = 3


def corpus_numbers(world: World) -> set[float]:
    """Every number written in the world's documents (commas removed)."""
    numbers = set()
    for doc in world.documents:
        for token in _NUMBER_RE.findall(doc.text):
            numbers.add(float(token.replace(",", "")))
    return numbers


def generate_mixed_tasks(
    world: World, n: int, seed: int, *, id_prefix: str = "mixed", exclude: set[str] = frozenset()
) -> list[Task]:
    """`n` distinct search + calculator questions whose answers appear in no document."""
    rng = random.Random(seed)
    in_corpus = corpus_numbers(world)
    tasks: list[Task] = []
    seen = set(exclude)
    for _ in range(100 * n):
        if len(tasks) == n:
            break
        kind = rng.randrange(MIXED_KINDS)
        made = _mixed_question(rng, world, kind)
        if made is None or made[0] in seen or float(made[1]) in in_corpus:
            continue
        question, answer = made
        seen.add(question)
        tasks.append(
            Task(
                f"{id_prefix}-{seed}-{len(tasks)}",
                question,
                format_number(answer),
                {"kind": kind, "tools_needed": ("search", "calculator")},
            )
        )
    if len(tasks) < n:
        raise ValueError(f"could only make {len(tasks)} distinct questions; use a larger world")
    return tasks


def make_mixed_env_factory(index: SearchIndex, format_weight: float = 0.1):
    """A factory of search + calculator environments sharing one (read-only) index."""
    tools = (*search_tools(index), calculator_tool())
    return partial(
        MathToolEnv,
        tools=tools,
        reward=default_math_reward(format_weight),
        instructions=MIXED_INSTRUCTIONS,
    )


@ENVS.register("search_calc")
def search_calc_suite(
    *,
    num_train: int = 1000,
    num_eval: int = 200,
    world_seed: int = 0,
    seed: int = 0,
    num_people: int = 160,
    num_companies: int = 50,
    num_cities: int = 40,
    format_weight: float = 0.1,
    gamma: float = 1.0,
) -> EnvSuite:
    """Questions that need search (facts) and the calculator (arithmetic on them)."""
    world = generate_world(world_seed, num_people=num_people, num_companies=num_companies,
                           num_cities=num_cities)  # fmt: skip
    train = generate_mixed_tasks(world, num_train, seed, id_prefix="mixed-train")
    evals = generate_mixed_tasks(world, num_eval, seed + 1, id_prefix="mixed-eval",
                                 exclude={t.prompt for t in train})  # fmt: skip
    make = make_mixed_env_factory(SearchIndex(world.documents), format_weight)
    return EnvSuite("search_calc", make, TaskSet({"train": train, "eval": evals}), gamma)
