"""A tiny name -> function registry, so a config string selects a variant.

Adding an algorithm variant is adding one decorated function; a typo in a config
fails loudly with the list of valid names instead of silently falling back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

Fn = Callable[..., Any]


class Registry:
    """Maps names to functions of one kind (e.g. "policy loss").

    Example::

        POLICY_LOSSES = Registry("policy loss")

        @POLICY_LOSSES.register("ppo")
        def ppo(...): ...

        POLICY_LOSSES.get("ppo")      # -> the function
        POLICY_LOSSES.get("ppo2")     # ValueError listing the valid names
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._fns: dict[str, Fn] = {}

    def register(self, name: str, fn: Fn | None = None, *, overwrite: bool = False):
        """Registers `fn` under `name`; usable as `@reg.register("name")` or directly.

        Registering an existing name raises unless `overwrite=True`, so a notebook
        cannot silently shadow a built-in loss (but can re-run its own cell with
        `overwrite=True`).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorator(f: Fn) -> Fn:
            if name in self._fns and not overwrite:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it"
                )
            self._fns[name] = f
            return f

        return decorator if fn is None else decorator(fn)

    def get(self, name: str) -> Fn:
        """Returns the function registered as `name`; ValueError listing valid names if unknown."""
        try:
            return self._fns[name]
        except (KeyError, TypeError):
            valid = ", ".join(self.names()) or "(none registered)"
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted."""
        return tuple(sorted(self._fns))

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._fns)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self.names())})"
