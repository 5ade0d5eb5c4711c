"""`WebBrowser`: a text browser confined to one local site, and the `search`/`open`/`find` tools.

Fetching is real HTTP (`urllib.request`) to the env's own `WebServer`; pages are turned
into readable text by a real HTML parser (BeautifulSoup with the stdlib `html.parser`
backend), never by regular expressions. The rendering is lynx-like: each link is shown
inline as `text [n]` and listed under the page as `[n] text -> /wiki/Slug`, which is the
url to pass to `open`; tables become `| cell | cell |` rows; scripts, styles and the
head are dropped. A long page is cut into view pages of about `page_chars` characters
with a "page k of n" marker and the call that reads the next one (`open(url, page=k+1)`).

Confinement is by construction, not by filtering what urllib is about to fetch: the
browser only ever connects to its own origin `http://127.0.0.1:PORT`. A url argument is
parsed and must be either site-relative or name exactly that origin (`localhost:PORT`
is accepted as a spelling of it); anything else (another host or port, https, file:,
ftp:, userinfo such as `http://127.0.0.1:PORT@evil/`, IPv6 or decimal spellings of
loopback, backslashes, control characters) is refused with an error observation
before any socket is opened. Redirects are not followed by urllib: each `Location` goes
through the same check, so an open redirect on the site cannot lead off it. The opener
has no proxy handler (an `http_proxy` in the environment could otherwise route requests
elsewhere), responses are size-capped and every request has a timeout.

Imports: stdlib, bs4 and agentic_rl.envs.tools (base, web.site) only; never jax.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, urljoin, urlsplit

from agentic_rl.envs.tools.base import Tool, ToolExecutionError
from agentic_rl.envs.tools.web.site import MAX_QUERY_CHARS

MAX_URL_CHARS = 2000
MAX_FIND_CHARS = 200
_PATH_SAFE = "/%()_-.~!$&'*+,;=:@"
_QUERY_SAFE = "=&%+/:,()_-.~!$'*;@?"
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_SKIP = {"script", "style", "head", "noscript", "template", "iframe", "svg", "object", "embed"}
_CONTAINERS = {"html", "body", "div", "section", "article", "main", "nav", "header", "footer",
               "aside", "center", "figure", "details", "summary", "dl", "dd", "dt",
               "blockquote", "pre", "address", "fieldset", "caption"}  # fmt: skip


class UrlRefused(ToolExecutionError):
    """A url outside the site: refused before any connection is made."""


def _import_bs4():
    try:
        import bs4
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ImportError("the web environment needs beautifulsoup4: pip install "
                          "'beautifulsoup4>=4.12'") from e
    return bs4


# -- rendering -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedPage:
    """A page as text: `lines`, the link numbers each line shows, and the links
    (`links[n - 1]` is link [n]: (text, url), site-relative for the site's own pages)."""

    url: str
    title: str
    lines: tuple[str, ...]
    line_links: tuple[tuple[int, ...], ...]
    links: tuple[tuple[str, str], ...]
    page_chars: int

    def view_pages(self) -> list[range]:
        """Line ranges of the view pages (about `page_chars` characters each)."""
        pages, start, size, listed = [], 0, 0, set()
        for i, line in enumerate(self.lines):
            new = [r for r in self.line_links[i] if r not in listed]
            cost = len(line) + 1 + sum(len(self._link_line(r)) + 1 for r in new)
            if size and size + cost > self.page_chars:  # the page's Links list counts too
                pages.append(range(start, i))
                start, size, listed = i, 0, set()
                cost = len(line) + 1 + sum(len(self._link_line(r)) + 1 for r in self.line_links[i])
            size += cost
            listed.update(self.line_links[i])
        pages.append(range(start, len(self.lines)))
        return pages

    def _link_line(self, r: int) -> str:
        text, url = self.links[r - 1]
        return f"[{r}] {text} -> {url}"

    def view(self, page: int = 1) -> str:
        """View page `page` (1-based) with its header, links and "page k of n" marker."""
        pages = self.view_pages()
        n = len(pages)
        if not 1 <= page <= n:
            raise ToolExecutionError(f"{self.url} has {n} page{'s' * (n > 1)}; page {page} "
                                     f"does not exist")  # fmt: skip
        rows = pages[page - 1]
        out = [self.title, f"URL: {self.url}" + (f" (page {page} of {n})" if n > 1 else ""), ""]
        out += [self.lines[i] for i in rows]
        refs = sorted({r for i in rows for r in self.line_links[i]})
        if refs:
            out += ["", "Links:"] + [self._link_line(r) for r in refs]
        if page < n:
            more = f'open(url="{self.url}", page={page + 1})'
            out += ["", f"-- page {page} of {n}; more: {more} --"]
        elif n > 1:
            out += ["", f"-- page {page} of {n} (last) --"]
        return "\n".join(out)

    def find(self, text: str, max_hits: int = 10) -> str:
        needle = " ".join(text.split()).lower()
        if not needle:
            raise ToolExecutionError("find needs some text to look for")
        pages = self.view_pages()
        hits = []
        for p, rows in enumerate(pages, 1):
            hits += [(p, i) for i in rows if needle in self.lines[i].lower()]
        if not hits:
            return f"No match for {text[:80]!r} on {self.url} ({len(pages)} view page(s))."
        out = [f"{len(hits)} match(es) for {text[:80]!r} on {self.url}:"]
        shown = hits[:max_hits]
        out += [f"(page {p}) {self.lines[i]}" for p, i in shown]
        refs = sorted({r for _, i in shown for r in self.line_links[i]})
        if refs:
            out += ["Links:"] + [self._link_line(r) for r in refs]
        if len(hits) > max_hits:
            out.append(f"... and {len(hits) - max_hits} more")
        return "\n".join(out)


class _Renderer:
    def __init__(self, bs4, url: str, origin: str, page_chars: int):
        self.bs4, self.url, self.origin, self.page_chars = bs4, url, origin, page_chars
        self.lines: list[str] = []
        self.line_links: list[tuple[int, ...]] = []
        self.links: list[tuple[str, str]] = []
        self._by_href: dict[str, int] = {}

    def _link(self, href: str, text: str) -> int:
        absolute = urljoin(self.origin + self.url, href.strip())
        parts = urlsplit(absolute)
        shown = absolute
        if f"{parts.scheme}://{parts.netloc}" == self.origin:
            shown = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if shown not in self._by_href:
            self.links.append((text or shown, shown))
            self._by_href[shown] = len(self.links)
        return self._by_href[shown]

    def _is_text(self, node) -> bool:
        return type(node) is self.bs4.NavigableString  # Comment, Doctype, CData... are subclasses

    def inline(self, node, refs: list[int]) -> str:
        parts: list[str] = []
        for child in node.children:
            if self._is_text(child):
                parts.append(str(child))
            elif isinstance(child, self.bs4.Tag):
                name = child.name
                if name in _SKIP:
                    continue
                if name == "br":
                    parts.append(" ")
                elif name == "img":
                    alt = child.get("alt")
                    parts.append(f"[image: {alt}]" if alt else "")
                elif name == "a" and child.get("href"):
                    text = " ".join(self.inline(child, refs).split())
                    n = self._link(str(child.get("href")), text)
                    refs.append(n)
                    parts.append(f"{text} [{n}]" if text else f"[{n}]")
                elif name in ("input", "button", "select", "textarea"):
                    continue
                else:
                    parts.append(self.inline(child, refs))
        return "".join(parts)

    def add(self, text: str, refs: list[int], prefix: str = "") -> None:
        text = " ".join(text.split())
        if not text:
            return
        line = prefix + text
        while len(line) > self.page_chars:  # one huge line would make one huge view page
            cut = line.rfind(" ", 0, self.page_chars)
            cut = cut if cut > 0 else self.page_chars
            self.lines.append(line[:cut])
            self.line_links.append(tuple(refs))
            line = line[cut:].lstrip()
        self.lines.append(line)
        self.line_links.append(tuple(dict.fromkeys(refs)))

    def blocks(self, node) -> None:
        pending: list[str] = []
        pending_refs: list[int] = []

        def flush():
            self.add("".join(pending), pending_refs)
            pending.clear()
            pending_refs.clear()

        for child in node.children:
            if self._is_text(child):
                pending.append(str(child))
                continue
            if not isinstance(child, self.bs4.Tag) or child.name in _SKIP:
                continue
            name = child.name
            if name in _HEADINGS:
                flush()
                refs: list[int] = []
                self.add(self.inline(child, refs), refs, "#" * _HEADINGS[name] + " ")
            elif name in ("p", "li", "dt", "dd"):
                flush()
                refs = []
                self.add(self.inline(child, refs), refs)
            elif name in ("ul", "ol"):
                flush()
                self._list(child)
            elif name == "table":
                flush()
                self._table(child)
            elif name == "form":
                flush()
                action = str(child.get("action") or "")
                self.add("[search form: use the search tool]" if "search" in action
                         else "[form: not supported]", [])
            elif name == "hr":
                flush()
            elif name in _CONTAINERS:
                flush()
                self.blocks(child)
            else:
                pending.append(self.inline_tag(child, pending_refs))
        flush()

    def inline_tag(self, tag, refs: list[int]) -> str:
        wrapper = self.bs4.BeautifulSoup("", "html.parser")
        holder = wrapper.new_tag("span")
        holder.append(tag.__copy__())
        return self.inline(holder, refs)

    def _list(self, tag) -> None:
        ordered = tag.name == "ol"
        try:
            number = int(tag.get("start", 1))
        except (TypeError, ValueError):
            number = 1
        for li in tag.find_all("li", recursive=False):
            refs: list[int] = []
            self.add(self.inline(li, refs), refs, f"{number}. " if ordered else "- ")
            number += 1

    def _table(self, tag) -> None:
        caption = tag.find("caption")
        if caption is not None:
            refs: list[int] = []
            self.add(self.inline(caption, refs), refs, "Table: ")
        for tr in tag.find_all("tr"):
            refs = []
            cells = [" ".join(self.inline(c, refs).split())
                     for c in tr.find_all(["th", "td"], recursive=False)]
            if any(cells):
                self.add("| " + " | ".join(cells) + " |", refs)


def render_html(
    markup: str, url: str = "/", *, origin: str = "", page_chars: int = 2500
) -> RenderedPage:
    """Renders an HTML document to text (see the module docstring). `url` is the page's
    site-relative url, `origin` the site's `scheme://host:port` (links into it are shown
    site-relative)."""
    bs4 = _import_bs4()
    soup = bs4.BeautifulSoup(markup, "html.parser")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text(" ").split()) if title_tag else url
    r = _Renderer(bs4, url, origin, max(200, page_chars))
    body = soup.find("body")
    r.blocks(body if body is not None else soup)
    if not r.lines:
        r.add("(this page has no text)", [])
    return RenderedPage(url, title or url, tuple(r.lines), tuple(r.line_links), tuple(r.links),
                        r.page_chars)


# -- fetching, confined --------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError(3xx); the browser checks Location itself


class WebBrowser:
    """A text browser for one site at `base_url` (`http://127.0.0.1:PORT`); see the module
    docstring. Holds the open page (for `find` and relative links). Not thread-safe: one
    episode's tools call it one at a time."""

    def __init__(self, base_url: str, *, page_chars: int = 2500, timeout_s: float = 5.0,
                 max_bytes: int = 2_000_000, max_redirects: int = 5):  # fmt: skip
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname != "127.0.0.1" or parts.port is None:
            raise ValueError(f"base_url must be http://127.0.0.1:PORT, got {base_url!r}")
        self.origin = f"http://127.0.0.1:{parts.port}"
        self._netlocs = {f"127.0.0.1:{parts.port}", f"localhost:{parts.port}"}
        self.page_chars, self.timeout_s = page_chars, timeout_s
        self.max_bytes, self.max_redirects = max_bytes, max_redirects
        self.current: RenderedPage | None = None
        self.visited: list[str] = []
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)

    # A url argument -> the site-relative target "/path?query", or UrlRefused.
    def resolve(self, url: str, relative_to: str | None = None) -> str:
        if not isinstance(url, str):
            raise ToolExecutionError(f"url must be a string, got {type(url).__name__}")
        url = url.strip()
        if not url:
            raise ToolExecutionError("url is empty; pass a url like /wiki/Some_Page")
        if len(url) > MAX_URL_CHARS:
            raise ToolExecutionError(f"url is too long ({len(url)} > {MAX_URL_CHARS} characters)")
        if "\\" in url or any(ord(c) < 33 or ord(c) == 127 for c in url):
            raise UrlRefused(f"refused {url[:100]!r}: urls may not contain spaces, control "
                             "characters or backslashes")  # fmt: skip
        parts = urlsplit(url)
        if parts.scheme or parts.netloc:
            if parts.scheme not in ("http", "") or parts.netloc.lower() not in self._netlocs:
                raise UrlRefused(
                    f"refused {url[:100]!r}: only pages of this site ({self.origin}) can be "
                    "opened; use site-relative urls like /wiki/Some_Page")
        base = self.origin + (relative_to or (self.current.url if self.current else "/"))
        joined = urlsplit(urljoin(base, url))
        if joined.scheme != "http" or joined.netloc.lower() not in self._netlocs:
            raise UrlRefused(f"refused {url[:100]!r}: it resolves outside this site")
        path = quote(joined.path or "/", safe=_PATH_SAFE)
        query = quote(joined.query, safe=_QUERY_SAFE)
        return path + (f"?{query}" if query else "")

    def fetch(self, target: str) -> tuple[str, str]:
        """GETs site-relative `target`, following redirects that stay on the site; returns
        (final target, HTML). HTTP errors and refusals raise `ToolExecutionError`."""
        for _ in range(self.max_redirects + 1):
            request = urllib.request.Request(self.origin + target, headers={
                "User-Agent": "agentic-rl-web-env/1.0", "Accept": "text/html"})
            try:
                with self._opener.open(request, timeout=self.timeout_s) as response:
                    body = response.read(self.max_bytes + 1)
                    charset = response.headers.get_content_charset() or "utf-8"
            except urllib.error.HTTPError as e:
                if 300 <= e.code < 400:
                    location = e.headers.get("Location", "")
                    e.close()
                    try:
                        target = self.resolve(location, relative_to=target)
                    except UrlRefused:
                        raise UrlRefused(f"refused to follow a redirect from {target} to "
                                         f"{location[:100]!r}: it leads off this site") from None
                    continue
                e.close()
                if e.code == 404:
                    raise ToolExecutionError(f"404 Not Found: there is no page at {target[:200]}; "
                                             "use search to find pages") from None
                raise ToolExecutionError(f"HTTP {e.code} {e.reason} for {target[:200]}") from None
            except (urllib.error.URLError, OSError) as e:
                raise ToolExecutionError(f"could not fetch {target[:200]}: {e}") from None
            if len(body) > self.max_bytes:
                raise ToolExecutionError(f"{target[:200]} is larger than {self.max_bytes} bytes")
            return target, body.decode(charset, errors="replace")
        raise ToolExecutionError(f"too many redirects (> {self.max_redirects}) from {target[:200]}")

    def _show(self, target: str, page: int) -> str:
        final, markup = self.fetch(target)
        rendered = render_html(markup, final, origin=self.origin, page_chars=self.page_chars)
        text = rendered.view(page)  # raises for a page past the end, before the page changes
        self.current = rendered
        self.visited.append(final)
        return text

    def open(self, url: str, page: int = 1) -> str:
        if isinstance(page, bool) or not isinstance(page, (int, float)) or int(page) != page:
            raise ToolExecutionError(f"page must be a whole number, got {page!r}")
        if page < 1:
            raise ToolExecutionError(f"page must be >= 1, got {page}")
        return self._show(self.resolve(url), int(page))

    def search(self, query: str) -> str:
        if not isinstance(query, str):
            raise ToolExecutionError(f"query must be a string, got {type(query).__name__}")
        query = " ".join(query.split())
        if not query:
            raise ToolExecutionError("the query is empty; search for names or keywords")
        if len(query) > MAX_QUERY_CHARS:
            raise ToolExecutionError(f"the query is too long ({len(query)} > {MAX_QUERY_CHARS} "
                                     "characters)")  # fmt: skip
        return self._show("/search?q=" + quote_plus(query), 1)

    def find(self, text: str) -> str:
        if not isinstance(text, str):
            raise ToolExecutionError(f"text must be a string, got {type(text).__name__}")
        if len(text) > MAX_FIND_CHARS:
            raise ToolExecutionError(f"text is too long ({len(text)} > {MAX_FIND_CHARS})")
        if self.current is None:
            raise ToolExecutionError("no page is open yet; use search or open first")
        return self.current.find(text)


def web_tools(browser: Callable[[], WebBrowser], *, timeout_s: float = 15.0,
              max_output_chars: int = 6000) -> tuple[Tool, Tool, Tool]:  # fmt: skip
    """`search(query)`, `open(url, page)` and `find(text)` on the browser `browser()` returns
    (a callable, so an environment can give each episode a fresh browser and server)."""
    search = Tool(
        "search",
        "Search the website. Returns a results page: numbered links to articles with a "
        "snippet each, and a link to more results.",
        {"type": "object",
         "properties": {"query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS}},
         "required": ["query"], "additionalProperties": False},
        lambda query: browser().search(query), timeout_s, max_output_chars)  # fmt: skip
    open_ = Tool(
        "open",
        "Open a page of the website by its url (e.g. /wiki/Some_Page, as listed under "
        "Links) and read it as text. Long pages come in parts: page=2 reads the second.",
        {"type": "object",
         "properties": {"url": {"type": "string", "minLength": 1, "maxLength": MAX_URL_CHARS},
                        "page": {"type": "integer", "minimum": 1, "maximum": 1000}},
         "required": ["url"], "additionalProperties": False},
        lambda url, page=1: browser().open(url, page), timeout_s, max_output_chars)  # fmt: skip
    find = Tool(
        "find",
        "Find text in the page that is open (case-insensitive); lists the matching lines "
        "and which page of it they are on.",
        {"type": "object",
         "properties": {"text": {"type": "string", "minLength": 1, "maxLength": MAX_FIND_CHARS}},
         "required": ["text"], "additionalProperties": False},
        lambda text: browser().find(text), timeout_s, max_output_chars)  # fmt: skip
    return search, open_, find
