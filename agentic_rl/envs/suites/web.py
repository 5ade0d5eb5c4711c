"""Web browsing: search-and-extract tasks on a real local website, the `web_search_extract` suite.

Why this design. The other retrieval suite (`search_qa`) hands the agent documents by
id; a real web agent has to cope with HTTP, HTML, links, result pages, long pages and
look-alike pages. This environment keeps all of that real and still fully offline and
reproducible: a site generated from a seed (`agentic_rl.envs.tools.web.site`) is served
by a real HTTP server on 127.0.0.1 (one per environment instance, on a free port,
started at `reset` and stopped by `close()`), the tools fetch it with urllib and render
it with BeautifulSoup, and they can reach nothing but that server. The answers are
invented facts (no model knows them), they sit in infobox tables, and reaching them
takes 1, 2 or 3 articles (`hops`, the difficulty knob): search for the entity named in
the question, open it, follow the relation links (inventor, manufacturer, founder,
headquarters, birthplace, "Companies founded") and read the field on the last page.
Questions of 2 and 3 hops are kept only if no page before the last one states the
answer, so following the links is necessary.

Reward: exact match after SQuAD normalisation ("correct", which decides
`info["success"]`), token F1 ("f1", weight `f1_weight`, 0 by default: logged, and
available as partial credit) and the `<answer>` format bonus. The final answer is given
as in the other suites: `<answer>ANSWER</answer>` and no tool call.

`solve_web_task` is a scripted agent that answers through the tools only (real HTTP,
rendered text), which proves every generated task solvable and measures turns per hop.

Imports: stdlib and agentic_rl.envs (base, rewards, suite, tasks, tools) only; never jax.
"""

from __future__ import annotations

import random
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from agentic_rl.envs.base import Action, Message, StepResult, Task, message
from agentic_rl.envs.rewards import (
    CompositeReward,
    f1_answer_reward,
    format_reward,
    string_answer_reward,
)
from agentic_rl.envs.suite import ENVS, EnvSuite
from agentic_rl.envs.tasks import TaskSet
from agentic_rl.envs.tools.base import (
    Tool,
    ToolExecutionError,
    run_tool_calls,
    tool_error_step,
    tool_system_prompt,
)
from agentic_rl.envs.tools.parser import parse_action, render_tool_call
from agentic_rl.envs.tools.web import WebBrowser, WebServer, WebSite, generate_site, web_tools
from agentic_rl.envs.tools.web.site import Entity

WEB_INSTRUCTIONS = (
    "You answer questions by browsing a small website, Localpedia. Use search to find "
    "articles, open to read a page by its url (links are listed under each page as "
    "[n] title -> url) and find to look for text in the open page. Facts are in each "
    "article's table; a question may need several pages (follow the links). Long pages "
    "come in parts: open(url, page=2). When you know the answer, reply with "
    "<answer>ANSWER</answer> and no tool call."
)


# -- questions ---------------------------------------------------------------------------------

# A relation is followed through the link in the infobox row with this label, except
# "founded_company": the single link of the person page's "Companies founded" section.
RELATION_LABELS = {"inventor": "Inventor", "manufacturer": "Manufacturer", "founder": "Founder",
                   "hq": "Headquarters", "birthplace": "Birthplace"}  # fmt: skip
FOUNDED_SECTION = "Companies founded"


@dataclass(frozen=True)
class QuestionTemplate:
    """`question` names an entity of kind `start` as {}; the answer is the infobox row
    `label` of the article reached by following `relations` from it."""

    key: str
    question: str
    start: str
    relations: tuple[str, ...]
    label: str

    @property
    def hops(self) -> int:
        """Articles to read: the named one plus one per relation."""
        return 1 + len(self.relations)

    def pattern(self) -> re.Pattern[str]:
        before, after = self.question.split("{}")
        return re.compile(re.escape(before) + "(.+)" + re.escape(after))


TEMPLATES = (
    QuestionTemplate("company_founded", "In what year was {} founded?", "company", (), "Founded"),
    QuestionTemplate("company_employees", "How many employees does {} have?", "company", (),
                     "Employees"),
    QuestionTemplate("person_born", "In what year was {} born?", "person", (), "Born"),
    QuestionTemplate("city_population", "What is the population of {}?", "city", (),
                     "Population"),
    QuestionTemplate("product_introduced", "In what year was the {} introduced?", "product", (),
                     "Introduced"),
    QuestionTemplate("inventor_born", "In what year was the inventor of the {} born?", "product",
                     ("inventor",), "Born"),
    QuestionTemplate("hq_population", "What is the population of the city where {} is "
                     "headquartered?", "company", ("hq",), "Population"),
    QuestionTemplate("maker_founded", "In what year was the manufacturer of the {} founded?",
                     "product", ("manufacturer",), "Founded"),
    QuestionTemplate("birth_country", "In which country was {} born?", "person",
                     ("birthplace",), "Country"),
    QuestionTemplate("maker_founder", "Who founded the company that manufactures the {}?",
                     "product", ("manufacturer",), "Founder"),
    QuestionTemplate("hq_country", "In which country is {} headquartered?", "company", ("hq",),
                     "Country"),
    QuestionTemplate("inventor_company_founded", "In what year was the company founded by the "
                     "inventor of the {} founded?", "product", ("inventor", "founded_company"),
                     "Founded"),
    QuestionTemplate("inventor_company_employees", "How many employees does the company founded "
                     "by the inventor of the {} have?", "product",
                     ("inventor", "founded_company"), "Employees"),
    QuestionTemplate("founder_birth_population", "What is the population of the city where the "
                     "founder of {} was born?", "company", ("founder", "birthplace"),
                     "Population"),
    QuestionTemplate("maker_hq_country", "In which country is the manufacturer of the {} "
                     "headquartered?", "product", ("manufacturer", "hq"), "Country"),
    QuestionTemplate("inventor_birth_country", "In which country was the inventor of the {} "
                     "born?", "product", ("inventor", "birthplace"), "Country"),
)  # fmt: skip


def _follow(site: WebSite, entity: Entity, relation: str) -> Entity | None:
    if relation == "founded_company":
        founded = entity.facts.get("founded_companies", ())
        return site.entities[founded[0]] if len(founded) == 1 else None
    return site.entities[entity.facts[relation]]


def _field(site: WebSite, entity: Entity, label: str) -> str:
    f = entity.facts
    values = {"Founded": lambda: str(f["founded"]), "Born": lambda: str(f["born"]),
              "Introduced": lambda: str(f["introduced"]), "Country": lambda: f["country"],
              "Employees": lambda: f"{f['employees']:,}",
              "Population": lambda: f"{f['population']:,}",
              "Founder": lambda: site.entities[f["founder"]].title}  # fmt: skip
    return values[label]()


def make_question(site: WebSite, template: QuestionTemplate, start: Entity) -> Task | None:
    """The task `template` asks about `start`, or None when it is ill-posed there (a person
    who founded no company or several) or not multi-hop (an earlier page states the answer)."""
    chain = [start]
    for relation in template.relations:
        nxt = _follow(site, chain[-1], relation)
        if nxt is None:
            return None
        chain.append(nxt)
    answer = _field(site, chain[-1], template.label)
    if any(answer in site.pages[e.path].text() for e in chain[:-1]):
        return None
    data = {"hops": template.hops, "subset": f"{template.hops}_hop", "kind": template.key,
            "start": start.title, "path": tuple(e.path for e in chain)}  # fmt: skip
    return Task("", template.question.format(start.title), answer, data)


def generate_web_tasks(
    site: WebSite,
    n: int,
    seed: int,
    *,
    hops: Sequence[int] = (1, 2, 3),
    id_prefix: str = "web",
    exclude: set[str] = frozenset(),
) -> list[Task]:
    """`n` distinct questions about `site`, split as evenly as possible over `hops`
    (none whose text is in `exclude`); deterministic in (site, n, seed, hops)."""
    hops = tuple(dict.fromkeys(int(h) for h in hops))
    if not hops or any(h not in (1, 2, 3) for h in hops):
        raise ValueError(f"hops must be a non-empty subset of (1, 2, 3), got {hops}")
    rng = random.Random(seed)
    tasks: list[Task] = []
    for i, h in enumerate(hops):
        want = n // len(hops) + (i < n % len(hops))
        candidates = []
        for template in (t for t in TEMPLATES if t.hops == h):
            for e in sorted(site.entities.values(), key=lambda e: e.slug):
                if e.kind == template.start:
                    candidates.append((template, e))
        rng.shuffle(candidates)
        got = 0
        for template, e in candidates:
            if got == want:
                break
            task = make_question(site, template, e)
            if task is None or task.prompt in exclude:
                continue
            tasks.append(Task(f"{id_prefix}-{seed}-{len(tasks)}", task.prompt, task.answer,
                              task.data))  # fmt: skip
            got += 1
        if got < want:
            raise ValueError(f"could only make {got} of {want} distinct {h}-hop questions; "
                             "use a larger site or fewer tasks")  # fmt: skip
    rng.shuffle(tasks)
    return tasks


# -- the environment ---------------------------------------------------------------------------


def web_reward(em_weight: float = 1.0, f1_weight: float = 0.0,
               format_weight: float = 0.1) -> CompositeReward:  # fmt: skip
    """Exact match ("correct"), token F1 ("f1") and the `<answer>` format bonus."""
    return CompositeReward({"correct": (string_answer_reward(), em_weight),
                            "f1": (f1_answer_reward(), f1_weight),
                            "format": (format_reward(), format_weight)})  # fmt: skip


@dataclass
class WebEnv:
    """One browsing episode at a time over `site` (see the module docstring).

    The HTTP server starts at the first `reset` and serves every later episode of this
    instance; `close()` (also the context manager's exit, and a finaliser when the
    instance is collected) stops it. Each episode gets a fresh browser (no open page).
    """

    site: WebSite
    reward: CompositeReward = field(default_factory=web_reward)
    instructions: str = WEB_INSTRUCTIONS
    page_chars: int = 2500
    success_term: str = "correct"
    tools: tuple[Tool, ...] = field(init=False)
    _server: WebServer | None = field(default=None, init=False, repr=False)
    _browser: WebBrowser | None = field(default=None, init=False, repr=False)
    _task: Task | None = field(default=None, init=False, repr=False)
    _done: bool = field(default=False, init=False, repr=False)

    def __post_init__(self):
        if self.success_term not in self.reward.terms:
            raise ValueError(f"success_term {self.success_term!r} is not a reward term")
        self.tools = web_tools(self._current_browser)

    def _current_browser(self) -> WebBrowser:
        if self._browser is None:
            raise ToolExecutionError("no episode is running (reset() was not called)")
        return self._browser

    @property
    def server(self) -> WebServer | None:
        return self._server

    def reset(self, task: Task, seed: int) -> list[Message]:
        del seed  # the task and the site fully determine the episode
        if self._server is None:
            self._server = WebServer(self.site).start()
            weakref.finalize(self, self._server.close)
        self._browser = WebBrowser(self._server.base_url, page_chars=self.page_chars)
        self._task, self._done = task, False
        system = f"{self.instructions}\n\n{tool_system_prompt(self.tools)}"
        return [message("system", system), message("user", task.prompt)]

    def step(self, action: Action) -> StepResult:
        if self._task is None or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        if action.errors:
            return tool_error_step(action.errors)
        if action.tool_calls:
            return run_tool_calls(self.tools, action.tool_calls)
        self._done = True
        components = self.reward.components(action.text, self._task)
        info = {"success": components[self.success_term] > 0, "reward_components": components,
                "answer": self._task.answer,
                "pages_visited": list(self._browser.visited) if self._browser else []}
        return StepResult([], self.reward.total(components), True, info)

    def close(self) -> None:
        server, self._server, self._browser = self._server, None, None
        if server is not None:
            server.close()

    def __enter__(self) -> WebEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- a scripted agent --------------------------------------------------------------------------

_LINK_RE = re.compile(r"^\[(\d+)\] (.*) -> (\S+)$")
_MORE_RE = re.compile(r'^-- page (\d+) of (\d+); more: open\(url="([^"]+)", page=(\d+)\) --$')
_REF_RE = re.compile(r"^(.*) \[(\d+)\]$")


@dataclass
class WebSolveResult:
    answer: str | None
    result: StepResult
    turns: int
    tools_used: list[str]


class _Reader:
    """Drives an env with tool calls and accumulates the open page's lines and links over
    its view pages (link numbers are per page, shared by its view pages)."""

    def __init__(self, env, max_turns: int):
        self.env, self.max_turns, self.turns, self.tools_used = env, max_turns, 0, []
        self.lines: list[str] = []
        self.links: dict[int, str] = {}
        self.more: tuple[str, int] | None = None

    def call(self, name: str, **arguments) -> str:
        if self.turns >= self.max_turns:
            raise _GiveUp(f"out of turns ({self.max_turns})")
        result = self.env.step(parse_action(render_tool_call(name, arguments), self.env.tools))
        self.turns += 1
        self.tools_used.append(name)
        if result.done or not result.observation:
            raise _GiveUp("the episode ended during a tool call")
        return result.observation[0]["content"]

    def show(self, name: str, fresh: bool = True, **arguments) -> None:
        text = self.call(name, **arguments)
        if text.startswith("Error:"):
            raise _GiveUp(text)
        if fresh:
            self.lines, self.links = [], {}
        self.more = None
        body = text.split("\n")[3:]  # title, URL line, blank
        for line in body:
            if m := _LINK_RE.match(line):
                self.links[int(m[1])] = m[3]
            elif m := _MORE_RE.match(line):
                self.more = (m[3], int(m[4]))
            elif line != "Links:":
                self.lines.append(line)

    def next_view(self) -> bool:
        if self.more is None:
            return False
        url, page = self.more
        self.show("open", fresh=False, url=url, page=page)
        return True

    def scan(self, pick):
        """`pick(lines)` on the open page, reading further view pages until it answers."""
        while True:
            found = pick(self.lines)
            if found is not None:
                return found
            if not self.next_view():
                raise _GiveUp("not found on the page")


class _GiveUp(Exception):
    pass


def _row(label: str):
    prefix = f"| {label} | "

    def pick(lines):
        for line in lines:
            if line.startswith(prefix) and line.endswith(" |"):
                return line[len(prefix) : -2]
        return None

    return pick


def _section_first_item(heading: str):
    def pick(lines):
        if f"## {heading}" not in lines:
            return None
        after = lines[lines.index(f"## {heading}") + 1 :]
        items = [line[2:] for line in after if line.startswith("- ")]
        return items[0] if items and after and after[0].startswith("- ") else None

    return pick


def _linked(reader: _Reader, cell: str) -> str:
    m = _REF_RE.match(cell)
    if not m or int(m[2]) not in reader.links:
        raise _GiveUp(f"no link in {cell!r}")
    return reader.links[int(m[2])]


def solve_web_task(env, question: str, *, max_turns: int = 24,
                   max_result_pages: int = 6) -> WebSolveResult:  # fmt: skip
    """Answers a generated question through `env`'s tools only (the env must be reset):
    search for the named entity (paging through results until the exact title shows),
    open it, follow the relation links, read the field, answer. Gives up (answering
    "unknown") when something it needs is not on the pages."""
    reader = _Reader(env, max_turns)
    answer = None
    # the most specific template first: "In what year was {} founded?" also matches the
    # 3-hop "In what year was the company founded by the inventor of the {} founded?"
    by_specificity = sorted(TEMPLATES, key=lambda t: -len(t.question))
    template, name = next(((t, m[1]) for t in by_specificity
                           if (m := t.pattern().fullmatch(question))), (None, None))
    try:
        if template is None:
            raise _GiveUp("not a generated question")
        reader.show("search", query=name)
        url = None
        hit_re = re.compile(r"^\d+\. " + re.escape(name) + r" \[(\d+)\] \u2014 ")
        for _ in range(max_result_pages):
            hit = next((m for line in reader.lines if (m := hit_re.match(line))), None)
            if hit is not None and int(hit[1]) in reader.links:
                url = reader.links[int(hit[1])]
                break
            nxt = next((line for line in reader.lines if line.startswith("Next results")), None)
            if nxt is None:
                break
            reader.show("open", url=_linked(reader, nxt))
        if url is None:
            raise _GiveUp(f"{name!r} is not in the search results")
        reader.show("open", url=url)
        for relation in template.relations:
            if relation == "founded_company":
                cell = reader.scan(_section_first_item(FOUNDED_SECTION))
            else:
                cell = reader.scan(_row(RELATION_LABELS[relation]))
            reader.show("open", url=_linked(reader, cell))
        value = reader.scan(_row(template.label))
        m = _REF_RE.match(value)
        answer = m[1] if m else value
    except _GiveUp:
        pass
    result = env.step(parse_action(f"<answer>{answer or 'unknown'}</answer>", env.tools))
    return WebSolveResult(answer, result, reader.turns + 1, reader.tools_used)


# -- the suite ---------------------------------------------------------------------------------


@ENVS.register("web_search_extract")
def web_search_extract_suite(
    *,
    num_train: int = 300,
    num_eval: int = 90,
    hops: Sequence[int] = (1, 2, 3),
    site_seed: int = 0,
    seed: int = 0,
    num_people: int = 60,
    num_companies: int = 36,
    num_products: int = 60,
    num_cities: int = 24,
    page_chars: int = 2500,
    em_weight: float = 1.0,
    f1_weight: float = 0.0,
    format_weight: float = 0.1,
    gamma: float = 1.0,
) -> EnvSuite:
    """Search-and-extract questions answered by browsing the generated site over HTTP.

    `hops` picks the difficulty (articles to read: 1, 2, 3 or a mix; tasks are split
    evenly and `data["subset"]` is e.g. "2_hop", so evaluation reports each apart).
    Train questions come from `seed`, eval from `seed + 1`, disjoint from train.
    """
    site = generate_site(site_seed, num_people=num_people, num_companies=num_companies,
                         num_products=num_products, num_cities=num_cities)  # fmt: skip
    train = generate_web_tasks(site, num_train, seed, hops=hops, id_prefix="web-train")
    evals = generate_web_tasks(site, num_eval, seed + 1, hops=hops, id_prefix="web-eval",
                               exclude={t.prompt for t in train})  # fmt: skip
    make = partial(WebEnv, site, web_reward(em_weight, f1_weight, format_weight),
                   page_chars=page_chars)  # fmt: skip
    return EnvSuite("web_search_extract", make, TaskSet({"train": train, "eval": evals}), gamma)
