"""An MCP server over a small invented atlas, for generating and training tasks from an MCP
server's tool list (`agentic_rl.envs.suites.mcp_tasks`) with nothing but this machine.

    python -m agentic_rl.envs.tools.mcp.atlas_server stdio [--seed 0]
    python -m agentic_rl.envs.tools.mcp.atlas_server http PORT [--seed 0]

Tools: `list_countries()`, `list_cities(country)`, `city_facts(city)` (country,
population, founding year, elevation) and `add(a, b)`, `subtract(a, b)`. The world is
generated from `--seed` (names from syllables, numbers drawn at random), so no model
knows the answers: a question about it needs the tools. Unknown names are errors (an
MCP tool error, which the client shows the agent as an error observation).

Built with the SDK's own server framework (`MCPServer` in mcp 2.x, `FastMCP` in 1.x).

Imports: stdlib and the `mcp` package only.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

_ONSETS = ("b", "br", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")


@dataclass(frozen=True)
class City:
    name: str
    country: str
    population: int
    founded: int
    elevation_m: int


def _name(rng: random.Random, used: set[str]) -> str:
    while True:
        syllables = rng.choice((2, 3))
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
        name = name.capitalize()
        if name not in used:
            used.add(name)
            return name


def generate_atlas(seed: int = 0, countries: int = 4, cities_per_country: int = 3
                   ) -> dict[str, list[City]]:
    """country -> its cities, all invented from `seed`."""
    rng, used = random.Random(seed), set()
    atlas: dict[str, list[City]] = {}
    for _ in range(countries):
        country = _name(rng, used) + rng.choice(("ia", "land", "mark"))
        atlas[country] = [City(_name(rng, used), country, rng.randrange(20, 900) * 1000,
                               rng.randrange(900, 1900), rng.randrange(5, 2500))
                          for _ in range(cities_per_country)]
    return atlas


def build_server(seed: int = 0):
    """The MCP server object (not started)."""
    try:
        from mcp.server.mcpserver import MCPServer
    except ImportError:  # mcp 1.x
        from mcp.server.fastmcp import FastMCP as MCPServer

    atlas = generate_atlas(seed)
    cities = {c.name.lower(): c for cs in atlas.values() for c in cs}
    countries = {k.lower(): k for k in atlas}
    server = MCPServer("agentic-rl-atlas")

    def _country(name: str) -> str:
        key = str(name).strip().lower()
        if key not in countries:
            raise ValueError(f"unknown country {name!r}; call list_countries")
        return countries[key]

    @server.tool()
    def list_countries() -> str:
        """The names of all countries in the atlas."""
        return ", ".join(atlas)

    @server.tool()
    def list_cities(country: str) -> str:
        """The cities of one country."""
        return ", ".join(c.name for c in atlas[_country(country)])

    @server.tool()
    def city_facts(city: str) -> str:
        """Facts about one city: its country, population, founding year and elevation."""
        c = cities.get(str(city).strip().lower())
        if c is None:
            raise ValueError(f"unknown city {city!r}; call list_cities")
        return (f"{c.name}: country {c.country}, population {c.population}, founded "
                f"{c.founded}, elevation {c.elevation_m} m")

    @server.tool()
    def add(a: float, b: float) -> float:
        """a + b."""
        return a + b

    @server.tool()
    def subtract(a: float, b: float) -> float:
        """a - b."""
        return a - b

    return server


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("transport", choices=("stdio", "http"))
    ap.add_argument("port", nargs="?", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    server = build_server(a.seed)
    if a.transport == "stdio":
        server.run("stdio")
        return
    try:
        server.run("streamable-http", host="127.0.0.1", port=a.port)
    except TypeError:  # mcp 1.x: host and port are settings
        server.settings.host, server.settings.port = "127.0.0.1", a.port
        server.run("streamable-http")


if __name__ == "__main__":
    main()
