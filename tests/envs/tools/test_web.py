"""The local website: generation, the real HTTP server's lifecycle, BeautifulSoup rendering,
view pages, the tools over HTTP, URL confinement (checked against a real foreign listener
that must see no connection) and bad input."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest
from bs4 import BeautifulSoup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentic_rl.envs import execute_tool, parse_action
from agentic_rl.envs.tools.base import ToolExecutionError
from agentic_rl.envs.tools.web import (
    UrlRefused,
    WebBrowser,
    WebServer,
    generate_site,
    render_html,
    web_tools,
)


@pytest.fixture(scope="module")
def site():
    return generate_site(0)


@pytest.fixture(scope="module")
def server(site):
    with WebServer(site) as srv:
        yield srv


@pytest.fixture
def browser(server):
    return WebBrowser(server.base_url, page_chars=2500)


def _connect_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# -- the site -------------------------------------------------------------------------------------


def test_site_is_deterministic_per_seed(site):
    again = generate_site(0)
    assert {p: page.html() for p, page in again.pages.items()} == {
        p: page.html() for p, page in site.pages.items()}
    other = generate_site(1)
    assert set(other.pages) != set(site.pages)


def test_pages_are_real_html_with_links_and_tables(site):
    kinds = {p.kind for p in site.pages.values()}
    assert kinds == {"company", "person", "city", "product", "disambiguation", "category", "home"}
    for path, page in site.pages.items():
        markup = page.html()
        assert markup.startswith("<!DOCTYPE html>"), path
        soup = BeautifulSoup(markup, "html.parser")
        assert soup.head.title.get_text().startswith(page.title) and soup.body is not None
        assert soup.find("a", href=True) is not None
        if page.kind in ("company", "person", "city", "product"):
            infobox = soup.find("table", class_="infobox")
            assert infobox is not None and len(infobox.find_all("tr")) >= 3, path
    city = next(p for p in site.pages.values() if p.kind == "city")
    assert BeautifulSoup(city.html(), "html.parser").find("table", class_="wikitable")


def test_site_has_distractors(site):
    titles = {e.title for e in site.entities.values()}
    dis = [p for p in site.pages.values() if p.kind == "disambiguation"]
    assert len(dis) == 4
    for page in dis:  # "Name" lists the cities "Name (Country)"
        hrefs = [a["href"] for a in BeautifulSoup(page.html(), "html.parser").select("main ul a")]
        assert len(hrefs) == 2 and all(h.startswith(f"/wiki/{page.title}_(") for h in hrefs)
    near = [t for t in titles if any(o != t and o.startswith(t) for o in titles)]
    assert len(near) >= 10  # "Tavor Optics" / "Tavor Optics Holdings", "Mira Tolvan" / "...s"


def test_routes(site):
    person = next(e for e in site.entities.values() if e.kind == "person")
    assert site.route(person.path)[0] == 200
    status, headers, _ = site.route(person.path.lower())
    assert status == 301 and headers["Location"] == person.path
    assert site.route("/wiki/Nowhere_At_All")[0] == 404
    assert site.route("/out", "to=http%3A%2F%2Fexample.org%2F")[:2] == (
        302, {"Location": "http://example.org/"})
    assert site.route("/search", "q=" + "x" * 501)[0] == 400


# -- the server -----------------------------------------------------------------------------------


def _server_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("web-server-")}


def test_server_lifecycle_frees_the_port(site):
    before = _server_threads()
    srv = WebServer(site)
    assert not srv.running
    with pytest.raises(RuntimeError):
        _ = srv.port
    with srv:
        port = srv.port
        assert srv.base_url == f"http://127.0.0.1:{port}"
        assert _server_threads() - before == {f"web-server-{port}"}
        with urllib.request.urlopen(srv.base_url + "/", timeout=5) as r:
            assert r.status == 200 and b"<title>Localpedia" in r.read()
        assert srv.requests == 1
    assert not srv.running and _server_threads() == before
    assert _connect_refused(port)
    srv.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        srv.start()
    with socket.socket() as s:  # the port can be listened on again (TIME_WAIT aside)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(1)


def test_two_servers_get_different_ports(site):
    with WebServer(site) as a, WebServer(site) as b:
        assert a.port != b.port


# -- rendering ------------------------------------------------------------------------------------

_MARKUP = """<!DOCTYPE html><html><head><title>T  page</title><style>p{color:red}</style>
<script>var hidden = "SCRIPT TEXT";</script></head><body>
<!-- a comment that must not show -->
<div><h1>Main <em>title</em></h1><p>See <a href="/wiki/A">the A page</a> and
<a href="b">B</a>, or <a href="http://elsewhere.example/x">away</a>.</p>
<ul><li>one <a href="/wiki/A">A again</a></li><li>two</li></ul>
<ol start="4"><li>four</li><li>five</li></ol>
<table><caption>Stats</caption><tr><th>Year</th><th>Count</th></tr>
<tr><td>1990</td><td>1,234</td></tr></table>
<form action="/search"><input name="q"></form>
loose <b>inline</b> text</div></body></html>"""


def test_render_html_with_bs4():
    page = render_html(_MARKUP, "/wiki/Here", origin="http://127.0.0.1:9")
    assert page.title == "T page"
    assert page.lines == (
        "# Main title",
        "See the A page [1] and B [2], or away [3].",
        "- one A again [1]",
        "- two",
        "4. four",
        "5. five",
        "Table: Stats",
        "| Year | Count |",
        "| 1990 | 1,234 |",
        "[search form: use the search tool]",
        "loose inline text",
    )
    assert page.links == (("the A page", "/wiki/A"), ("B", "/wiki/b"),
                          ("away", "http://elsewhere.example/x"))
    text = page.view()
    assert "SCRIPT" not in text and "comment" not in text and "color" not in text
    assert "[1] the A page -> /wiki/A" in text and "page 1 of" not in text


def test_view_pages_split_long_pages():
    items = "".join(f"<li><a href='/wiki/P{i}'>Person {i}</a> with some words</li>"
                    for i in range(60))
    page = render_html(f"<html><body><ul>{items}</ul></body></html>", "/long", page_chars=600)
    pages = page.view_pages()
    assert len(pages) > 3
    assert [i for r in pages for i in r] == list(range(len(page.lines)))  # each line once
    first = page.view(1)
    assert "(page 1 of" in first and 'open(url="/long", page=2)' in first
    assert all(len(page.view(k)) < 900 for k in range(1, len(pages) + 1))
    last = page.view(len(pages))
    assert "(last)" in last and "Person 59 [60]" in last and "[60] Person 59 -> /wiki/P59" in last
    with pytest.raises(ToolExecutionError, match="does not exist"):
        page.view(len(pages) + 1)
    found = page.find("person 59")
    assert f"(page {len(pages)}) - Person 59 [60]" in found


# -- the tools over HTTP --------------------------------------------------------------------------


def test_search_open_find_over_http(site, server, browser):
    company = next(e for e in site.entities.values() if e.kind == "company")
    before = server.requests
    results = browser.search(company.title)
    assert server.requests == before + 1
    assert f"1. {company.title} [" in results and f"-> {company.path}" in results
    page = browser.open(company.path)
    assert page.startswith(f"{company.title} - Localpedia\nURL: {company.path}")
    assert f"| Founded | {company.facts['founded']} |" in page
    founder = site.entities[company.facts["founder"]]
    assert f"| Founder | {founder.title} [" in page and f"-> {founder.path}" in page
    # a relative link from the open page, an absolute one, and localhost spelling
    assert browser.open(founder.path.split("/")[-1]).split("\n")[1].startswith(
        f"URL: {founder.path}")
    absolute = browser.open(f"{server.base_url}{company.path}")
    assert absolute == page
    assert browser.open(f"http://localhost:{server.port}{company.path}") == page
    # a case-insensitive url is redirected (on the site) to the canonical one
    assert browser.open(company.path.lower()).split("\n")[1].startswith(f"URL: {company.path}")
    hits = browser.find("| founder |")
    assert f"| Founder | {founder.title} [" in hits and f"-> {founder.path}" in hits
    assert "No match for 'zzqx'" in browser.find("zzqx")
    assert browser.visited[-1] == company.path


def test_search_results_are_paginated(browser):
    first = browser.search("company")
    assert "Results 1\u20135 of " in first
    nxt = next(line for line in first.splitlines()
               if line.startswith("[") and "Next results" in line)
    second = browser.open(nxt.split(" -> ")[1])
    assert "Results 6\u201310 of " in second and "Previous results" in second
    def titles(text):
        return [line.split(". ", 1)[1].split(" [")[0] for line in text.splitlines()
                if line[:1].isdigit() and ". " in line]

    assert len(titles(first)) == len(titles(second)) == 5
    assert set(titles(first)).isdisjoint(titles(second))


def test_long_articles_have_view_pages(site, browser):
    """On long person pages the "Companies founded" list is only on a later view page."""
    founders = [p for p in site.pages.values() if p.kind == "person"
                and "Companies founded" in p.text()]
    split = []
    for page in founders:
        first = browser.open(page.path)
        if "(page 1 of " in first:
            split.append(page.path)
            assert f'open(url="{page.path}", page=2)' in first
            assert "## Companies founded" not in first
            n = len(browser.current.view_pages())
            found = browser.find("companies FOUNDED")
            k = int(found.split("\n")[1].split(")")[0].removeprefix("(page "))
            assert 2 <= k <= n and f"(page {k}) ## Companies founded" in found
            later = browser.open(page.path, page=k)
            assert f"(page {k} of {n})" in later and "## Companies founded" in later
    assert 3 <= len(split) < len(founders)


# -- confinement ----------------------------------------------------------------------------------


class ForeignListener:
    """A real TCP server on another loopback port that records every connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nforeign")
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def foreign():
    listener = ForeignListener()
    yield listener
    listener.close()


def test_urls_off_the_site_are_refused_without_a_connection(server, browser, foreign,
                                                            monkeypatch):  # fmt: skip
    port, fp = server.port, foreign.port
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{fp}")  # no proxy may be used
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{fp}")
    browser = WebBrowser(server.base_url)
    bad = [
        f"http://127.0.0.1:{fp}/",
        f"http://localhost:{fp}/wiki/x",
        f"//127.0.0.1:{fp}/",
        f"http://127.0.0.1:{port}@127.0.0.1:{fp}/",
        f"http://user:pw@127.0.0.1:{port}/",
        f"http://[::1]:{port}/",
        f"http://[::ffff:127.0.0.1]:{fp}/",
        f"http://2130706433:{fp}/",
        f"http://0x7f000001:{fp}/",
        f"http://127.1:{fp}/",
        f"http://127.0.0.1:{fp}.example/",
        f"https://127.0.0.1:{port}/",
        "file:///etc/passwd",
        f"ftp://127.0.0.1:{fp}/",
        "gopher://127.0.0.1/",
        f"/\\127.0.0.1:{fp}/",
        "/wiki/A\r\nHost: evil",
        "http://example.com/",
        f"localhost:{fp}/",
        "javascript:alert(1)",
        "data:text/html,<p>x</p>",
    ]
    for url in bad:
        with pytest.raises(UrlRefused, match="refused"):
            browser.open(url)
    # an open redirect on the site, pointing at the foreign port, is not followed
    for target in (f"http://127.0.0.1:{fp}/", f"//localhost:{fp}/", "file:///etc/passwd"):
        with pytest.raises(UrlRefused, match="redirect"):
            browser.open("/out?to=" + urllib.request.quote(target, safe=""))
    # ...while a redirect that stays on the site is followed
    assert browser.open("/out?to=%2F").split("\n")[1] == "URL: /"
    time.sleep(0.2)
    assert foreign.connections == 0
    # the listener does see a direct connection (so the zero above means something)
    socket.create_connection(("127.0.0.1", fp), timeout=2).close()
    deadline = time.monotonic() + 2
    while foreign.connections == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert foreign.connections == 1


def test_refusals_are_observations(server, browser, foreign):
    tools = {t.name: t for t in web_tools(lambda: browser)}
    r = execute_tool(tools["open"], {"url": f"http://127.0.0.1:{foreign.port}/"})
    assert r.error == "tool_error" and r.content.startswith("Error: refused")
    assert "only pages of this site" in r.content
    assert foreign.connections == 0


# -- bad input ------------------------------------------------------------------------------------


def test_bad_input_gives_error_observations(server, browser):
    tools = {t.name: t for t in web_tools(lambda: browser)}
    r = execute_tool(tools["find"], {"text": "x"})
    assert r.error == "tool_error" and "no page is open" in r.content
    r = execute_tool(tools["open"], {"url": "/wiki/No_Such_Page"})
    assert r.error == "tool_error" and r.content.startswith("Error: 404 Not Found")
    r = execute_tool(tools["open"], {"url": "/", "page": 7})
    assert r.error == "tool_error" and "page 7 does not exist" in r.content
    for args in ({"url": 5}, {"url": None}, {"url": "/", "page": "2"}, {"url": "/", "page": 0},
                 {"url": "/", "page": True}, {"url": "   "}, {"url": "x" * 3000}):
        r = execute_tool(tools["open"], args)  # called directly, past the schema check
        assert r.error == "tool_error", args
    for args in ({"query": ["a"]}, {"query": "   "}, {"query": "q" * 10_000}):
        r = execute_tool(tools["search"], args)
        assert r.error == "tool_error", args
    assert execute_tool(tools["find"], {"text": {"a": 1}}).error == "tool_error"
    assert "No results" in execute_tool(tools["search"], {"query": "qqzzxx"}).content
    # through the parser, the schema refuses them before the tool runs
    tl = list(tools.values())
    for call in ('{"name": "search", "arguments": {"query": "%s"}}' % ("q" * 600),
                 '{"name": "open", "arguments": {"url": 3}}',
                 '{"name": "open", "arguments": {"url": "/", "page": -1}}',
                 '{"name": "open", "arguments": {"href": "/"}}'):
        action = parse_action(f"<tool_call>{call}</tool_call>", tl)
        assert not action.tool_calls and action.errors[0].kind == "bad_arguments", call


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(url=st.one_of(
    st.text(max_size=120),
    st.builds(lambda a, b: a + b,
              st.sampled_from(["http://127.0.0.1:", "http://localhost:", "//", "http://[::1]:",
                               "/out?to=http://127.0.0.1:", "http://127.0.0.1:1@", "/wiki/"]),
              st.text(max_size=40))),
       query=st.text(max_size=80), needle=st.text(min_size=1, max_size=40))  # fmt: skip
def test_fuzzed_arguments_give_observations_and_never_leave_the_site(
    server, browser, foreign, url, query, needle
):
    tools = {t.name: t for t in web_tools(lambda: browser)}
    for name, args in (("open", {"url": url}), ("search", {"query": query}),
                       ("find", {"text": needle})):  # fmt: skip
        r = execute_tool(tools[name], args)
        assert r.error in (None, "tool_error"), (name, args, r.content)
        assert r.content
    assert foreign.connections == 0
