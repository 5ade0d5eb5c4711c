"""A name -> function registry with metadata, so a config string selects a variant.

One class serves every layer (advantage estimators, policy losses, aggregations, KL
estimators, off-policy corrections in rl/; environment suites in envs/). It imports
nothing, so envs/ can use it without pulling in jax.

Imports: the standard library only.

Adding a variant is adding one decorated function; a typo in a config fails loudly
with the list of valid names instead of silently falling back. Metadata declared at
registration says what a variant needs (an advantage estimator's `needs_values`, a
loss's `reads`), so the trainer asks the registry instead of keeping its own lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

Fn = Callable[..., Any]


class Registry:
    """Maps names to functions of one kind (e.g. "policy loss"), each with metadata.

    Example::

        POLICY_LOSSES = Registry("policy loss", defaults={"reads": ()})

        @POLICY_LOSSES.register("ppo")
        def ppo(...): ...

        @POLICY_LOSSES.register("gspo_turn", reads=("turn_index",))
        def gspo_turn(...): ...

        POLICY_LOSSES.get("ppo")               # -> the function
        POLICY_LOSSES.meta("gspo_turn")        # -> {"reads": ("turn_index",)}
        POLICY_LOSSES.get("ppo2")              # ValueError listing the valid names

    `defaults` are the metadata of an entry that declares nothing; a key outside them
    is refused at registration (a misspelt `need_values=` must not pass silently).
    """

    def __init__(self, kind: str, defaults: Mapping[str, Any] | None = None):
        self.kind = kind
        self.defaults = dict(defaults or {})
        self._fns: dict[str, Fn] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, fn: Fn | None = None, *, overwrite: bool = False, **meta):
        """Registers `fn` under `name`; usable as `@reg.register("name", **meta)` or directly.

        Registering an existing name raises unless `overwrite=True`, so a notebook cannot
        silently shadow a built-in (but can re-run its own cell with `overwrite=True`).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        unknown = sorted(set(meta) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "(none)"
            raise ValueError(
                f"{self.kind} {name!r}: unknown metadata {', '.join(unknown)}; valid keys: {valid}"
            )

        def decorator(f: Fn) -> Fn:
            if not callable(f):
                raise TypeError(f"{self.kind} {name!r} must be callable, got {type(f).__name__}")
            if name in self._fns and not overwrite:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it"
                )
            self._fns[name] = f
            self._meta[name] = {**self.defaults, **meta}
            return f

        return decorator if fn is None else decorator(fn)

    def get(self, name: str) -> Fn:
        """Returns the function registered as `name`; ValueError listing valid names if unknown."""
        try:
            return self._fns[name]
        except (KeyError, TypeError):
            valid = ", ".join(self.names()) or "(none registered)"
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    __getitem__ = get

    def meta(self, name: str) -> Mapping[str, Any]:
        """The metadata of `name` (read-only); ValueError listing valid names if unknown."""
        self.get(name)
        return MappingProxyType(self._meta[name])

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted."""
        return tuple(sorted(self._fns))

    def where(self, **meta) -> tuple[str, ...]:
        """Names whose metadata has every given value, e.g. `where(needs_values=True)`."""
        return tuple(n for n in self.names()
                     if all(self._meta[n].get(k) == v for k, v in meta.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._fns)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self.names())})"
