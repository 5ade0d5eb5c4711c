"""Search QA: an offline generator of a fictional world with multi-hop questions, corpus /
QA loaders, and the `search_qa` suite (a `MathToolEnv` with the `search`/`open` tools).

The generated world (people, companies, cities, plus news items that mention them) is
invented from syllables, so no model can answer from memory: every question needs the
corpus. Each question takes two hops (e.g. "In which city was the founder of X born?":
find X's page, read its founder, find the founder's page), so one search is not enough.
Mixed questions also need arithmetic on retrieved numbers (see `suites.mixed`).
The index and tools are in `agentic_rl.envs.tools.search`.

Imports: stdlib and agentic_rl.envs (base, rewards, suite, tasks, tools, suites.math) only;
never jax.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agentic_rl.envs.base import Task
from agentic_rl.envs.rewards import CompositeReward, format_reward, string_answer_reward
from agentic_rl.envs.suite import ENVS, EnvSuite
from agentic_rl.envs.suites.math import MathToolEnv
from agentic_rl.envs.tasks import TaskSet, unique_values
from agentic_rl.envs.tools.search import Document, SearchIndex, search_tools

SEARCH_INSTRUCTIONS = (
    "You answer questions about a document collection. Use search to find documents and open "
    "to read them; questions may need several searches (find one fact, then search for "
    "the next). When you know the answer, reply with <answer>ANSWER</answer> and no tool call."
)


# -- the generated world -----------------------------------------------------------------------

_ONSETS = "b br c d dr f g gr k l m n p r s st t tr v z".split()
_VOWELS = "a e i o u ai ea io".split()
_CODAS = ["", "", "n", "r", "l", "s", "th", "m"]
_COUNTRIES = ("Aldoria", "Brenmark", "Cestavia", "Dorune", "Elbaran", "Fenwyr", "Galmora")
_INDUSTRIES = ("Robotics", "Foods", "Textiles", "Energy", "Logistics", "Pharma", "Optics")
_PROFESSIONS = ("engineer", "chemist", "accountant", "designer", "pilot", "architect", "lawyer")


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


@dataclass(frozen=True)
class World:
    """A generated fictional world: its documents and the facts behind them."""

    documents: tuple[Document, ...]
    people: dict[str, dict[str, Any]]
    companies: dict[str, dict[str, Any]]
    cities: dict[str, dict[str, Any]]


def generate_world(
    seed: int, *, num_people: int = 120, num_companies: int = 40, num_cities: int = 30
) -> World:
    """A reproducible fictional world with one page per entity plus news items (distractors
    that mention several entities, so the first search hit is not always the answer)."""
    if min(num_people, num_companies, num_cities) < 2 or num_people < num_companies:
        raise ValueError("need >= 2 of each entity and at least as many people as companies")
    rng = random.Random(seed)
    taken: set[str] = set()
    city_names = unique_values(num_cities, lambda: _word(rng, rng.randint(2, 3)), taken)
    cities = {
        c: {
            "country": rng.choice(_COUNTRIES),
            "population": rng.randint(40_000, 4_900_000),
            "river": unique_values(1, lambda: _word(rng, 2), taken)[0],
            "founded": rng.randint(800, 1800),
        }
        for c in city_names
    }
    person_names = unique_values(
        num_people, lambda: f"{_word(rng, 2)} {_word(rng, rng.randint(2, 3))}", taken
    )
    company_names = unique_values(
        num_companies, lambda: f"{_word(rng, 2)} {rng.choice(_INDUSTRIES)}", taken
    )
    people = {
        p: {
            "born": rng.randint(1930, 1990),
            "birthplace": rng.choice(city_names),
            "profession": rng.choice(_PROFESSIONS),
        }
        for p in person_names
    }
    companies = {}
    for company, founder in zip(company_names, person_names):
        companies[company] = {
            "founder": founder,
            "founded": min(people[founder]["born"] + rng.randint(22, 55), 2024),
            "hq": rng.choice(city_names),
            "employees": rng.randint(120, 95_000),
        }
        people[founder]["employer"] = company
    for p in person_names[num_companies:]:
        people[p]["employer"] = rng.choice(company_names)
    documents = _world_documents(rng, people, companies, cities)
    return World(tuple(documents), people, companies, cities)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _world_documents(rng, people, companies, cities) -> list[Document]:
    docs = []
    for name, c in cities.items():
        docs.append(Document(f"city-{len(docs)}", name,
            f"{name} is a city in {c['country']} on the {c['river']} River. It was founded in "
            f"{c['founded']} and has a population of {c['population']:,}."))  # fmt: skip
    for name, c in companies.items():
        docs.append(Document(f"company-{len(docs)}", name,
            f"{name} is a company founded in {c['founded']} by {c['founder']}. Its headquarters "
            f"are in {c['hq']}. It has {c['employees']:,} employees."))  # fmt: skip
    for name, p in people.items():
        docs.append(Document(f"person-{len(docs)}", name,
            f"{name} is {_article(p['profession'])} {p['profession']} born in {p['born']} in "
            f"{p['birthplace']}. "
            f"{name} works at {p['employer']}."))  # fmt: skip
    names, places = list(people), list(cities)
    for _ in range(len(people) // 2):
        a, b = rng.sample(names, 2)
        place, year = rng.choice(places), rng.randint(1990, 2024)
        docs.append(Document(f"news-{len(docs)}", f"Meeting in {place}",
            f"In {year}, {a} of {people[a]['employer']} met {b} of {people[b]['employer']} "
            f"at a trade fair in {place}."))  # fmt: skip
    return docs


def _qa(rng: random.Random, world: World, kind: int) -> tuple[str, str, str, str] | None:
    """One two-hop question of type `kind`: (question, answer, kind name, the entity named
    in the question) or None."""
    companies, people, cities = world.companies, world.people, world.cities
    company = rng.choice(list(companies))
    c = companies[company]
    person = rng.choice(list(people))
    p = people[person]
    if kind == 0:
        founder = c["founder"]
        question = f"In which city was the founder of {company} born?"
        return question, people[founder]["birthplace"], "founder_birthplace", company
    if kind == 1:
        question = f"In which country are the headquarters of {company}?"
        return question, cities[c["hq"]]["country"], "hq_country", company
    if kind == 2:
        if companies[p["employer"]]["founder"] == person:
            return None
        question = f"Who founded the company that {person} works for?"
        return question, companies[p["employer"]]["founder"], "employer_founder", person
    if kind == 3:
        question = f"Which river flows through the city where {person} was born?"
        return question, cities[p["birthplace"]]["river"], "birthplace_river", person
    question = f"In what year was the company that employs {person} founded?"
    return question, str(companies[p["employer"]]["founded"]), "employer_founded", person


QA_KINDS = 5


def generate_search_tasks(
    world: World, n: int, seed: int, *, id_prefix: str = "search", exclude: set[str] = frozenset()
) -> list[Task]:
    """`n` distinct two-hop questions about `world` (none whose text is in `exclude`).

    A question is kept only if the page of the entity it names does not contain the
    answer, so one search can never suffice.
    """
    rng = random.Random(seed)
    pages = {d.title: d.text for d in world.documents if not d.id.startswith("news-")}
    tasks: list[Task] = []
    seen = set(exclude)
    for _ in range(100 * n):
        if len(tasks) == n:
            break
        made = _qa(rng, world, rng.randrange(QA_KINDS))
        if made is None or made[0] in seen or made[1] in pages[made[3]]:
            continue
        question, answer, kind, _ = made
        seen.add(question)
        tasks.append(Task(f"{id_prefix}-{seed}-{len(tasks)}", question, answer, {"kind": kind}))
    if len(tasks) < n:
        raise ValueError(f"could only make {len(tasks)} distinct questions; use a larger world")
    return tasks


# -- user corpora --------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {e}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            rows.append(row)
    return rows


def load_corpus_jsonl(path: str | os.PathLike) -> list[Document]:
    """Documents from JSONL lines `{"id", "title", "text"}` (title optional)."""
    path = Path(path)
    docs = []
    for i, row in enumerate(_read_jsonl(path), 1):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("text"), str):
            raise ValueError(f"{path}: document {i} needs string fields 'id' and 'text'")
        docs.append(Document(row["id"], str(row.get("title", row["id"])), row["text"]))
    if not docs:
        raise ValueError(f"{path}: no documents")
    return docs


def load_qa_jsonl(path: str | os.PathLike, *, id_prefix: str | None = None) -> list[Task]:
    """Questions from JSONL lines `{"question", "answer"}` (answers compared normalised)."""
    path = Path(path)
    prefix = id_prefix if id_prefix is not None else path.stem
    tasks = []
    for i, row in enumerate(_read_jsonl(path)):
        q, a = row.get("question"), row.get("answer")
        if not isinstance(q, str) or not isinstance(a, (str, int, float)):
            raise ValueError(f"{path}: line {i + 1} needs 'question' (str) and 'answer'")
        tasks.append(Task(f"{prefix}-{i}", q, str(a), {"kind": "file"}))
    if not tasks:
        raise ValueError(f"{path}: no questions")
    return tasks


# -- the suite ---------------------------------------------------------------------------------


def _search_reward(format_weight: float) -> CompositeReward:
    return CompositeReward(
        {"correct": (string_answer_reward(), 1.0), "format": (format_reward(), format_weight)}
    )


@ENVS.register("search_qa")
def search_qa_suite(
    *,
    corpus_path: str | os.PathLike | None = None,
    train_path: str | os.PathLike | None = None,
    eval_path: str | os.PathLike | None = None,
    num_train: int = 800,
    num_eval: int = 200,
    world_seed: int = 0,
    seed: int = 0,
    num_people: int = 400,
    num_companies: int = 100,
    num_cities: int = 60,
    max_k: int = 10,
    format_weight: float = 0.1,
    gamma: float = 1.0,
) -> EnvSuite:
    """Multi-hop QA with `search`/`open` over a BM25 index.

    Default: a generated fictional world (corpus + two-hop questions, eval questions
    disjoint from train). With `corpus_path` (JSONL {"id","title","text"}) the questions
    come from `train_path`/`eval_path` (JSONL {"question","answer"}).
    """
    if corpus_path is not None:
        if train_path is None or eval_path is None:
            raise ValueError("search_qa with corpus_path also needs train_path and eval_path")
        index = SearchIndex(load_corpus_jsonl(corpus_path))
        splits = {"train": load_qa_jsonl(train_path), "eval": load_qa_jsonl(eval_path)}
    else:
        world = generate_world(world_seed, num_people=num_people, num_companies=num_companies,
                               num_cities=num_cities)  # fmt: skip
        index = SearchIndex(world.documents)
        train = generate_search_tasks(world, num_train, seed, id_prefix="search-train")
        exclude = {t.prompt for t in train}
        evals = generate_search_tasks(world, num_eval, seed + 1, id_prefix="search-eval",
                                      exclude=exclude)  # fmt: skip
        splits = {"train": train, "eval": evals}
    make = partial(
        MathToolEnv,
        tools=search_tools(index, max_k=max_k),
        reward=_search_reward(format_weight),
        instructions=SEARCH_INSTRUCTIONS,
    )
    return EnvSuite("search_qa", make, TaskSet(splits), gamma)
