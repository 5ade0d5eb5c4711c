"""Search and retrieval QA over a local corpus: a BM25 index (bm25s), the `search`/`open`
tools, an offline generator of a fictional world with multi-hop questions, and loaders.

The generated world (people, companies, cities, plus news items that mention them) is
invented from syllables, so no model can answer from memory: every question needs the
corpus. Each question takes two hops (e.g. "In which city was the founder of X born?":
find X's page, read its founder, find the founder's page), so one search is not enough.
Mixed questions also need arithmetic on retrieved numbers (see `mixed_env`).

bm25s is imported lazily, and with jax hidden from it: bm25s probes `import jax` at import
time to pick a top-k backend, but this package must not import jax. Scores come from
`BM25.get_scores` and the top-k is taken here with numpy, so no jax backend is ever used.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentic_rl.envs.base import Task
from agentic_rl.envs.tools import Tool, ToolExecutionError

_TOKEN_RE = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by did do does for from has have in is it its of on or that the "
    "their this to was were what when where which who whom whose why with how".split()
)
_IMPORT_LOCK = threading.Lock()


def import_bm25s():
    """Imports bm25s without letting it import jax (see the module docstring)."""
    with _IMPORT_LOCK:
        if "bm25s" in sys.modules:
            return sys.modules["bm25s"]
        hide = "jax" not in sys.modules
        if hide:
            sys.modules["jax"] = None  # makes `import jax` raise ImportError inside bm25s
        try:
            import bm25s
        except ImportError as e:
            raise ImportError("the search environments need bm25s: pip install 'bm25s>=0.2'") from e
        finally:
            if hide:
                del sys.modules["jax"]
        return bm25s


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric words without English stop words (corpus and queries alike)."""
    return [t for t in _TOKEN_RE.findall(text.lower()) if t not in _STOPWORDS]


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


class SearchIndex:
    """A BM25 index over `documents` (title + text). Read-only after construction, and
    thread-safe (episodes share one index)."""

    def __init__(self, documents: Sequence[Document]):
        if not documents:
            raise ValueError("SearchIndex needs at least one document")
        self.documents = list(documents)
        self._by_id = {d.id: d for d in self.documents}
        if len(self._by_id) != len(self.documents):
            raise ValueError("document ids must be unique")
        bm25s = import_bm25s()
        self._bm25 = bm25s.BM25()
        corpus = [tokenize(f"{d.title} {d.text}") or ["<empty>"] for d in self.documents]
        self._bm25.index(corpus, show_progress=False)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.documents)

    def search(self, query: str, k: int = 5) -> list[tuple[Document, float]]:
        """The top-`k` documents with a positive score, best first (ties: corpus order)."""
        import numpy as np

        tokens = tokenize(query)
        if not tokens:
            return []
        with self._lock:
            scores = np.asarray(self._bm25.get_scores(tokens), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[: max(0, k)]
        return [(self.documents[i], float(scores[i])) for i in order if scores[i] > 0]

    def get(self, doc_id: str) -> Document | None:
        return self._by_id.get(doc_id)


def _snippet(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 3].rsplit(" ", 1)[0] + "..."


def search_tools(
    index: SearchIndex, *, max_k: int = 10, snippet_chars: int = 160, max_open_chars: int = 3000
) -> tuple[Tool, Tool]:
    """`search(query, k)` lists matching documents with snippets; `open(doc_id)` reads one."""

    def search(query: str, k: int = 5) -> str:
        if not tokenize(query):
            raise ToolExecutionError("the query has no searchable words; use names or keywords")
        hits = index.search(query, int(k))
        if not hits:
            return f"No documents match {query!r}."
        return "\n".join(f"[{d.id}] {d.title}: {_snippet(d.text, snippet_chars)}" for d, _ in hits)

    def open_doc(doc_id: str) -> str:
        doc = index.get(doc_id.strip().strip("[]"))
        if doc is None:
            example = index.documents[0].id
            raise ToolExecutionError(
                f"no document with id {doc_id[:80]!r}; use an id from search results, "
                f"e.g. {example!r}"
            )
        text = doc.text if len(doc.text) <= max_open_chars else doc.text[:max_open_chars] + "..."
        return f"{doc.title}\n\n{text}"

    search_tool = Tool(
        "search",
        "Search the document collection (BM25 keyword search). Returns document ids, titles "
        "and snippets, best match first.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 500},
                "k": {"type": "integer", "minimum": 1, "maximum": max_k},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        search,
    )
    open_tool = Tool(
        "open",
        "Open a document by its id (from search results) and read its full text.",
        {
            "type": "object",
            "properties": {"doc_id": {"type": "string", "minLength": 1, "maxLength": 100}},
            "required": ["doc_id"],
            "additionalProperties": False,
        },
        open_doc,
    )
    return search_tool, open_tool


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


def _unique(rng: random.Random, n: int, make, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = make()
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


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
    city_names = _unique(rng, num_cities, lambda: _word(rng, rng.randint(2, 3)), taken)
    cities = {
        c: {
            "country": rng.choice(_COUNTRIES),
            "population": rng.randint(40_000, 4_900_000),
            "river": _unique(rng, 1, lambda: _word(rng, 2), taken)[0],
            "founded": rng.randint(800, 1800),
        }
        for c in city_names
    }
    person_names = _unique(
        rng, num_people, lambda: f"{_word(rng, 2)} {_word(rng, rng.randint(2, 3))}", taken
    )
    company_names = _unique(
        rng, num_companies, lambda: f"{_word(rng, 2)} {rng.choice(_INDUSTRIES)}", taken
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
