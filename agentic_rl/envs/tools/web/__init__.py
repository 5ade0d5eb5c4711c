"""A real local website for web-browsing agents: the generated site, its HTTP server and a
confined text browser with the `search`/`open`/`find` tools.

- `site`: `generate_site(seed)` -> `WebSite` (entities, HTML pages, BM25 search, routing).
- `server`: `WebServer`, the site over HTTP on 127.0.0.1 at a free port.
- `browser`: `WebBrowser` (urllib fetches confined to that server, BeautifulSoup rendering,
  view pages) and `web_tools`.

The task suite built on it is `agentic_rl.envs.suites.web`.

Imports: stdlib, bs4 (in browser) and agentic_rl.envs.tools only; never jax.
"""

from agentic_rl.envs.tools.web.browser import (
    RenderedPage,
    UrlRefused,
    WebBrowser,
    render_html,
    web_tools,
)
from agentic_rl.envs.tools.web.server import WebServer
from agentic_rl.envs.tools.web.site import Entity, WebSite, generate_site

__all__ = [
    "Entity",
    "RenderedPage",
    "UrlRefused",
    "WebBrowser",
    "WebServer",
    "WebSite",
    "generate_site",
    "render_html",
    "web_tools",
]
