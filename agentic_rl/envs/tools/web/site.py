"""The generated website: entities, their articles as real HTML, categories, search pages.

`generate_site(seed)` invents a small encyclopedia ("Localpedia") of companies, people,
cities and products, deterministically from the seed. Every article has an infobox
(an HTML table of its fields, relations as links to other articles), prose full of
distracting years and links, and kind-specific sections: a demographics table on city
pages, a products table on company pages, "Inventions" and "Companies founded" lists at
the END of person pages (on long pages they fall on a later view page). Distractors are
built in: two cities may share a name (titled "Name (Country)", with a disambiguation
page "Name"), some people have a near-namesake ("Mira Tolvan" / "Mira Tolvans") and some
companies a near-duplicate ("Tavor Optics" / "Tavor Optics Holdings"), so the top search
hit is not always the entity asked about. Names are invented from syllables, so no model
can answer from memory.

Pages are described once as blocks (`Page`) and written out twice: as HTML (what the
server sends) and as plain text (what the BM25 search page indexes). `WebSite.route`
answers a path + query with (status, headers, body): it is the whole site logic, so the
HTTP server in `server.py` is a thin adapter.

Imports: stdlib and agentic_rl.envs.tools.search only; never jax.
"""

from __future__ import annotations

import html
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union
from urllib.parse import parse_qs, quote, unquote

from agentic_rl.envs.tools.search import Document, SearchIndex

SITE_NAME = "Localpedia"
RESULTS_PER_PAGE = 5
MAX_RESULTS = 50
MAX_QUERY_CHARS = 500


@dataclass(frozen=True)
class Link:
    text: str
    href: str


Segment = Union[str, Link]  # noqa: UP007 - runtime alias on Python 3.10


@dataclass(frozen=True)
class Block:
    """One block of an article: kind "h2", "p", "ul" or "table" (`cls` is its HTML class)."""

    kind: str
    content: Any
    cls: str = ""


@dataclass(frozen=True)
class Page:
    path: str
    title: str
    kind: str  # company | person | city | product | disambiguation | category | home
    blocks: tuple[Block, ...]
    snippet: str = ""

    def html(self) -> str:
        return _html_document(self.title, [_block_html(b) for b in self.blocks])

    def text(self) -> str:
        """Plain text (for the search index): headings, paragraphs, list items, cells."""
        out = [self.title]
        for b in self.blocks:
            if b.kind in ("h2", "p"):
                out.append(_segments_text(b.content))
            elif b.kind == "ul":
                out += [_segments_text(item) for item in b.content]
            elif b.kind == "table":
                out += [" ".join(_segments_text(c) for c in row) for row in b.content]
        return "\n".join(out)


@dataclass(frozen=True)
class Entity:
    """One article's facts. Relation facts hold the target's slug (a str or a tuple)."""

    kind: str
    title: str
    slug: str
    facts: Mapping[str, Any]

    @property
    def path(self) -> str:
        return wiki_path(self.slug)


def wiki_path(slug: str) -> str:
    return "/wiki/" + slug


def slugify(title: str) -> str:
    return title.replace(" ", "_")


def _segments(content: Any) -> Sequence[Segment]:
    return content if isinstance(content, (list, tuple)) else [content]


def _segments_text(content: Any) -> str:
    return "".join(s.text if isinstance(s, Link) else str(s) for s in _segments(content))


def _segments_html(content: Any) -> str:
    out = []
    for s in _segments(content):
        if isinstance(s, Link):
            out.append(f'<a href="{html.escape(s.href, quote=True)}">{html.escape(s.text)}</a>')
        else:
            out.append(html.escape(str(s)))
    return "".join(out)


def _block_html(b: Block) -> str:
    cls = f' class="{b.cls}"' if b.cls else ""
    if b.kind == "h2":
        return f"<h2>{_segments_html(b.content)}</h2>"
    if b.kind == "p":
        return f"<p{cls}>{_segments_html(b.content)}</p>"
    if b.kind == "ul":
        items = "".join(f"<li>{_segments_html(item)}</li>" for item in b.content)
        return f"<ul{cls}>{items}</ul>"
    if b.kind == "ol":
        start, items = b.content
        lis = "".join(f"<li>{_segments_html(item)}</li>" for item in items)
        return f'<ol start="{start}"{cls}>{lis}</ol>'
    if b.kind == "table":
        rows = []
        for i, row in enumerate(b.content):
            if b.cls == "infobox":  # label cell is a header cell, the value a data cell
                label, value = row
                rows.append(f"<tr><th>{_segments_html(label)}</th><td>{_segments_html(value)}</td></tr>")
            else:
                tag = "th" if i == 0 else "td"
                cells = "".join(f"<{tag}>{_segments_html(c)}</{tag}>" for c in row)
                rows.append(f"<tr>{cells}</tr>")
        return f"<table{cls}>{''.join(rows)}</table>"
    if b.kind == "form":
        value = html.escape(b.content, quote=True)
        return (f'<form action="/search" method="get"><input type="text" name="q" '
                f'value="{value}"><button type="submit">Search</button></form>')
    if b.kind == "nav":
        return f'<nav class="pagination">{_segments_html(b.content)}</nav>'
    raise ValueError(f"unknown block kind {b.kind!r}")


def _html_document(title: str, body: Sequence[str]) -> str:
    t = html.escape(title)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{t} - {SITE_NAME}</title>\n<style>table{{border-collapse:collapse}}</style>\n"
        "<script>/* analytics stub: never rendered */ var seen = 1;</script>\n</head>\n<body>\n"
        f'<header><a href="/">{SITE_NAME}</a> | <a href="/search">Search</a></header>\n'
        f"<main>\n<h1>{t}</h1>\n" + "\n".join(body) + "\n</main>\n"
        f"<footer>{SITE_NAME} is a generated website. All content is fictional.</footer>\n"
        "</body>\n</html>\n"
    )


# -- the generated world ---------------------------------------------------------------------

_ONSETS = "b br c d dr f g gr h k l m n p r s st t tr v z".split()
_VOWELS = "a e i o u ai ea ou".split()
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "x"]
_COUNTRIES = ("Aldoria", "Brenmark", "Cestavia", "Dorune", "Elbaran", "Fenwyr", "Galmora",
              "Hestria")  # fmt: skip
_INDUSTRIES = ("Robotics", "Foods", "Textiles", "Energy", "Logistics", "Pharma", "Optics",
               "Motors", "Instruments")  # fmt: skip
_OCCUPATIONS = ("engineer", "chemist", "physicist", "designer", "inventor", "architect",
                "mathematician", "metallurgist")  # fmt: skip
_PRODUCT_TYPES = ("Lamp", "Engine", "Loom", "Valve", "Lens", "Press", "Scanner", "Pump",
                  "Battery", "Telescope")  # fmt: skip


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def _fresh(rng: random.Random, make, taken: set[str]) -> str:
    for _ in range(10_000):
        name = make()
        if name not in taken:
            taken.add(name)
            return name
    raise RuntimeError("could not invent a fresh name")


def _article_word(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


@dataclass
class _Builder:
    rng: random.Random
    entities: dict[str, Entity] = field(default_factory=dict)

    def add(self, kind: str, title: str, facts: dict[str, Any]) -> str:
        slug = slugify(title)
        assert slug not in self.entities, slug
        self.entities[slug] = Entity(kind, title, slug, facts)
        return slug

    def of(self, kind: str) -> list[Entity]:
        return [e for e in self.entities.values() if e.kind == kind]


def _make_entities(rng, num_cities, num_ambiguous, num_people, num_twins, num_companies,
                   num_duplicates, num_products) -> tuple[dict[str, Entity], dict[str, list[str]]]:
    b = _Builder(rng)
    taken: set[str] = set()
    ambiguous: dict[str, list[str]] = {}
    for i in range(num_cities):
        base = _fresh(rng, lambda: _word(rng, rng.randint(2, 3)), taken)
        countries = rng.sample(_COUNTRIES, 2) if i < num_ambiguous else [rng.choice(_COUNTRIES)]
        for country in countries:
            title = f"{base} ({country})" if len(countries) > 1 else base
            population = rng.randint(40_000, 4_900_000)
            history = [(y, int(population * rng.uniform(0.2, 0.95) ** ((2000 - y) / 50)))
                       for y in (1900, 1950, 2000)]  # fmt: skip
            slug = b.add("city", title, {"name": base, "country": country,
                                         "population": population,
                                         "founded": rng.randint(800, 1800),
                                         "history": tuple(history)})  # fmt: skip
            if len(countries) > 1:
                ambiguous.setdefault(base, []).append(slug)
    cities = [e.slug for e in b.of("city")]
    people = []
    for i in range(num_people):
        first = _word(rng, 2)
        last = _fresh(rng, lambda: _word(rng, rng.randint(2, 3)), taken)
        name = _fresh(rng, lambda first=first, last=last: f"{first} {last}", taken)
        people.append(name)
        if i < num_twins:  # a near-namesake: same first name, surname one letter longer
            twin = _fresh(rng, lambda first=first, last=last: f"{first} {last}{rng.choice('aes')}",
                          taken)  # fmt: skip
            people.append(twin)
    person_slugs = []
    for name in people:
        person_slugs.append(b.add("person", name, {
            "born": rng.randint(1890, 1985), "birthplace": rng.choice(cities),
            "occupation": rng.choice(_OCCUPATIONS), "founded_companies": [], "inventions": []}))
    founders = rng.sample(person_slugs, num_companies + num_duplicates)
    company_slugs = []
    for i in range(num_companies):
        name = _fresh(rng, lambda: f"{_word(rng, 2)} {rng.choice(_INDUSTRIES)}", taken)
        names = [name]
        if i < num_duplicates:
            names.append(_fresh(rng, lambda n=name: f"{n} {rng.choice(('Holdings', 'Group'))}",
                                taken))  # fmt: skip
        for title in names:
            founder = founders[len(company_slugs)]
            born = b.entities[founder].facts["born"]
            slug = b.add("company", title, {
                "industry": title.split()[1], "founder": founder,
                "founded": min(born + rng.randint(24, 60), 2023), "hq": rng.choice(cities),
                "employees": rng.randint(40, 95_000), "products": []})
            b.entities[founder].facts["founded_companies"].append(slug)
            company_slugs.append(slug)
    for _ in range(num_products):
        kind = rng.choice(_PRODUCT_TYPES)
        title = _fresh(rng, lambda kind=kind: f"{_word(rng, 2)} {kind}", taken)
        inventor = rng.choice(founders if rng.random() < 0.6 else person_slugs)
        maker = rng.choice(company_slugs)
        born = b.entities[inventor].facts["born"]
        slug = b.add("product", title, {"type": kind, "inventor": inventor, "manufacturer": maker,
                                        "introduced": min(born + rng.randint(20, 60), 2024)})
        b.entities[inventor].facts["inventions"].append(slug)
        b.entities[maker].facts["products"].append(slug)
    frozen = {}
    for slug, e in b.entities.items():
        facts = {k: tuple(v) if isinstance(v, list) else v for k, v in e.facts.items()}
        frozen[slug] = Entity(e.kind, e.title, slug, facts)
    return frozen, ambiguous


# -- articles ----------------------------------------------------------------------------------


def _filler(rng: random.Random, e: Entity, entities: Mapping[str, Entity], n: int) -> list[Block]:
    """`n` paragraphs of prose with distracting years and links to random other articles."""
    by_kind: dict[str, list[Entity]] = {}
    for other in entities.values():
        if other.slug != e.slug:
            by_kind.setdefault(other.kind, []).append(other)

    def link(kind: str) -> Link:
        other = rng.choice(by_kind[kind])
        return Link(other.title, other.path)

    short = e.title.split()[0] if e.kind == "person" else e.title
    templates = [
        lambda y: [f"In {y}, {short} signed a supply agreement with ", link("company"), "."],
        lambda y: [f"A {y} survey compared {short} with ", link("company"), " and ",
                   link("company"), "."],
        lambda y: [link("person"), f" described {short} in a {y} interview as remarkably steady."],
        lambda y: [f"Records from {y} place {short} near ", link("city"), " for several months."],
        lambda y: [f"Exhibitions in {y} showed {short} next to the ", link("product"), "."],
        lambda y: [f"Between {y} and {y + rng.randint(2, 9)}, {short} was discussed in ",
                   link("city"), f" by about {rng.randint(12, 900):,} people."],
    ]
    out = []
    for _ in range(n):
        sentences: list[Segment] = []
        for _ in range(rng.randint(3, 4)):
            sentences += [*rng.choice(templates)(rng.randint(1850, 2022)), " "]
        out.append(Block("p", tuple(sentences[:-1])))
    return out


def _ref(entities: Mapping[str, Entity], slug: str) -> Link:
    e = entities[slug]
    return Link(e.title, e.path)


def _article(rng: random.Random, e: Entity, entities: Mapping[str, Entity], long: bool) -> Page:
    f = e.facts
    paragraphs = _filler(rng, e, entities, 9 if long else 2)
    if e.kind == "company":
        lead = f"{e.title} is {_article_word(f['industry'])} {f['industry'].lower()} company."
        info = [("Industry", f["industry"]), ("Founded", str(f["founded"])),
                ("Founder", _ref(entities, f["founder"])),
                ("Headquarters", _ref(entities, f["hq"])),
                ("Employees", f"{f['employees']:,}")]  # fmt: skip
        rest = [Block("h2", "History"), *paragraphs]
        if f["products"]:
            rows = [("Product", "Introduced")] + [
                (_ref(entities, p), str(entities[p].facts["introduced"])) for p in f["products"]]
            rest += [Block("h2", "Products"), Block("table", tuple(rows), "wikitable")]
        site = f"http://www.{e.slug.lower().replace('_', '-')}.example/"
        rest += [Block("h2", "External links"),
                 Block("ul", ([Link("Official website", "/out?to=" + quote(site, safe=""))],))]
    elif e.kind == "person":
        lead = f"{e.title} is {_article_word(f['occupation'])} {f['occupation']}."
        info = [("Born", str(f["born"])), ("Birthplace", _ref(entities, f["birthplace"])),
                ("Occupation", f["occupation"].capitalize())]
        rest = [Block("h2", "Biography"), *paragraphs]
        if f["inventions"]:
            rest += [Block("h2", "Inventions"),
                     Block("ul", tuple([_ref(entities, p)] for p in f["inventions"]))]
        if f["founded_companies"]:
            rest += [Block("h2", "Companies founded"),
                     Block("ul", tuple([_ref(entities, c)] for c in f["founded_companies"]))]
    elif e.kind == "city":
        lead = f"{f['name']} is a city in {f['country']}."
        info = [("Country", f["country"]), ("Population", f"{f['population']:,}"),
                ("Founded", str(f["founded"]))]
        rows = [("Year", "Population")] + [(str(y), f"{p:,}") for y, p in f["history"]]
        rest = [Block("h2", "History"), *paragraphs, Block("h2", "Demographics"),
                Block("table", tuple(rows), "wikitable")]
        based = sorted(c.slug for c in entities.values()
                       if c.kind == "company" and c.facts["hq"] == e.slug)
        if based:
            rest += [Block("h2", "Companies headquartered here"),
                     Block("ul", tuple([_ref(entities, c)] for c in based))]
    elif e.kind == "product":
        lead = f"The {e.title} is {_article_word(f['type'])} {f['type'].lower()}."
        info = [("Inventor", _ref(entities, f["inventor"])),
                ("Manufacturer", _ref(entities, f["manufacturer"])),
                ("Introduced", str(f["introduced"]))]
        rest = [Block("h2", "Description"), *paragraphs]
    else:
        raise ValueError(f"unknown entity kind {e.kind!r}")
    blocks = (Block("p", lead, "lead"), Block("table", tuple(info), "infobox"), *rest)
    return Page(e.path, e.title, e.kind, blocks, lead)


def _disambiguation(base: str, slugs: Sequence[str], entities: Mapping[str, Entity]) -> Page:
    items = tuple([_ref(entities, s), f", a city in {entities[s].facts['country']}"] for s in slugs)
    lead = f"{base} may refer to:"
    blocks = (Block("p", lead), Block("ul", items))
    return Page(wiki_path(slugify(base)), base, "disambiguation", blocks, lead)


_CATEGORIES = {"company": "Companies", "person": "People", "city": "Cities", "product": "Products"}


def _category(kind: str, entities: Mapping[str, Entity]) -> Page:
    name = _CATEGORIES[kind]
    members = sorted((e for e in entities.values() if e.kind == kind), key=lambda e: e.title)
    lead = f"All {len(members)} articles in the category {name}."
    blocks = (Block("p", lead), Block("ul", tuple([Link(e.title, e.path)] for e in members)))
    return Page(wiki_path(f"Category:{name}"), f"Category:{name}", "category", blocks, lead)


def _home(n_articles: int) -> Page:
    blocks = (
        Block("p", f"Welcome to {SITE_NAME}, the encyclopedia of {n_articles} articles."),
        Block("form", ""),
        Block("h2", "Browse"),
        Block("ul", tuple([Link(f"All {name.lower()}", wiki_path(f"Category:{name}"))]
                          for name in _CATEGORIES.values())),
    )
    return Page("/", SITE_NAME, "home", blocks)


def _not_found(path: str) -> str:
    blocks = [Block("p", f"There is no page at {path}. Try the search."), Block("form", "")]
    return _html_document("Page not found", [_block_html(b) for b in blocks])


# -- the site ----------------------------------------------------------------------------------

Response = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class WebSite:
    """The generated site: `pages` by path, the `entities` behind them, the search index."""

    seed: int
    entities: Mapping[str, Entity]
    pages: Mapping[str, Page]
    index: SearchIndex = field(compare=False, repr=False)
    _canonical: Mapping[str, str] = field(compare=False, repr=False, default_factory=dict)

    def entity_by_title(self, title: str) -> Entity | None:
        e = self.entities.get(slugify(title))
        return e if e is not None and e.title == title else None

    def route(self, path: str, query: str = "") -> Response:
        """The response to GET `path?query` (path percent-encoded, as on the wire)."""
        path = unquote(path)
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if path == "/search":
            return self._search(params.get("q", ""), params.get("start", "0"))
        if path == "/out":  # an "external link" redirector, as real wikis have
            target = params.get("to", "")
            if not target:
                return _html(400, _html_document("Bad request", ["<p>Missing ?to=</p>"]))
            return 302, {"Location": target}, b""
        page = self.pages.get(path)
        if page is not None:
            return _html(200, page.html())
        canonical = self._canonical.get(path.lower().replace(" ", "_"))
        if canonical is not None and canonical != path:
            return 301, {"Location": canonical}, b""
        return _html(404, _not_found(path))

    def _search(self, q: str, start_arg: str) -> Response:
        try:
            start = max(0, int(start_arg))
        except ValueError:
            start = 0
        q = " ".join(q.split())
        if len(q) > MAX_QUERY_CHARS:
            body = _html_document("Search", [f"<p>The query is too long (more than "
                                             f"{MAX_QUERY_CHARS} characters).</p>"])
            return _html(400, body)
        blocks: list[Block] = [Block("form", q)]
        hits = self.index.search(q, MAX_RESULTS) if q else []
        if not q:
            blocks.append(Block("p", "Type a query to search the site."))
        elif not hits:
            blocks.append(Block("p", f"No results for \u201c{q}\u201d."))
        else:
            shown = hits[start : start + RESULTS_PER_PAGE]
            end = start + len(shown)
            blocks.append(Block("p", f"Results {start + 1}\u2013{end} of {len(hits)} for "
                                     f"\u201c{q}\u201d:" if shown else
                                f"No more results for \u201c{q}\u201d."))
            items = []
            for doc, _ in shown:
                items.append([Link(doc.title, doc.id), " \u2014 " + self.pages[doc.id].snippet])
            if items:
                blocks.append(Block("ol", (start + 1, tuple(items)), "results"))
            nav: list[Segment] = []
            qq = quote(q)
            if start > 0:
                prev = max(0, start - RESULTS_PER_PAGE)
                nav += [Link("\u00ab Previous results", f"/search?q={qq}&start={prev}"), " "]
            if end < len(hits):
                nav.append(Link("Next results \u00bb", f"/search?q={qq}&start={end}"))
            if nav:
                blocks.append(Block("nav", tuple(nav)))
        return _html(200, _html_document(f"Search: {q}" if q else "Search",
                                         [_block_html(b) for b in blocks]))


def _html(status: int, body: str) -> Response:
    return status, {"Content-Type": "text/html; charset=utf-8"}, body.encode("utf-8")


def generate_site(
    seed: int = 0,
    *,
    num_cities: int = 24,
    num_ambiguous_cities: int = 4,
    num_people: int = 60,
    num_near_namesakes: int = 12,
    num_companies: int = 36,
    num_near_duplicates: int = 8,
    num_products: int = 60,
    long_fraction: float = 0.25,
) -> WebSite:
    """A reproducible site (see the module docstring); `long_fraction` of the articles get
    long prose, so their later sections need a second view page."""
    if num_companies + num_near_duplicates > num_people + num_near_namesakes:
        raise ValueError("every company needs its own founder: add people or remove companies")
    if min(num_cities, num_people, num_companies, num_products) < 2:
        raise ValueError("need at least 2 cities, people, companies and products")
    if num_ambiguous_cities > num_cities or num_near_namesakes > num_people:
        raise ValueError("more ambiguous cities / namesakes than cities / people")
    if num_near_duplicates > num_companies:
        raise ValueError("more near-duplicate companies than companies")
    rng = random.Random(seed)
    entities, ambiguous = _make_entities(
        rng, num_cities, num_ambiguous_cities, num_people, num_near_namesakes, num_companies,
        num_near_duplicates, num_products)
    pages: dict[str, Page] = {}
    for e in entities.values():
        pages[e.path] = _article(rng, e, entities, long=rng.random() < long_fraction)
    for base, slugs in ambiguous.items():
        page = _disambiguation(base, slugs, entities)
        pages[page.path] = page
    searchable = [p for p in pages.values()]
    for kind in _CATEGORIES:
        page = _category(kind, entities)
        pages[page.path] = page
    pages["/"] = _home(len(searchable))
    index = SearchIndex([Document(p.path, p.title, p.text()) for p in searchable])
    canonical = {path.lower(): path for path in pages}
    return WebSite(seed, entities, pages, index, canonical)
