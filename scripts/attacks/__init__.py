"""Attack cases against the tool APIs, one module per area, run by `scripts/attack.py`.

Each area module (`sql`, `sandbox`, `tools`, `chat`, `checkpoint`) defines
`ATTACKS: list[Attack]`. An attack plays a hostile policy (or a hostile file on disk):
it drives a public API the way a policy's output would, then checks whether the
defence held. Its `run()` returns None when the attack was blocked (the tool answered
with an error observation, refused, or the effect did not happen) and a short string
saying what escaped otherwise. It may raise only if the defence itself is broken (an
uncaught exception from a tool is an escape: the policy crashed the caller).

The harness runs every attack in a fresh child process with a wall-clock limit, so
a host crash (the child dies by a signal) or a hang (the limit passes) is classified
as such instead of taking the harness down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Attack:
    """One attack: `item` names the issue item it reproduces ("20.1"), or "new"."""

    name: str
    item: str
    run: Callable[[], str | None]
    timeout_s: float = 60.0
    description: str = ""


AREAS = ("sql", "sandbox", "tools", "chat", "checkpoint")


class Hung(AssertionError):
    """A host call did not return within its bound (an AssertionError, so a test using
    `bounded` fails instead of hanging; an attack that lets it escape counts as escaped)."""


def bounded(fn: Callable, timeout_s: float, *args):
    """fn(*args) on a daemon thread; raises `Hung` if it does not return in `timeout_s`,
    re-raises what it raised, else returns its value."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise Hung(f"{getattr(fn, '__name__', 'call')} did not return within {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")
