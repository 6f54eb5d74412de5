"""One registry type for everything sidrec builds by name: datasets, item encoders, tokenizers, models.

Each kind keeps one `Registry`. An entry is a factory (a class or a function) or a lazy
"module:attribute" path, so an optional dependency is imported only when its entry is built; an
unknown name fails the same way for every kind, listing the names that exist.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from sidrec.config import ConfigError


class UnknownNameError(ConfigError, KeyError):
    """A name no entry of the registry has (a `ValueError` for config checks, a `KeyError` for lookups)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(MutableMapping):
    """`name -> factory` for one `kind` of thing; `build(name, ...)` calls the factory.

    `populate`, when given, is called once before the first lookup (importing the modules whose
    decorators register the built-in entries).
    """

    def __init__(self, kind: str, populate: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._descriptions: dict[str, str] = {}
        self._populate = populate

    def register(self, name: str, target: Any = None, *, description: str = "") -> Any:
        """Add `target` under `name`; without a target, return a decorator that registers what it decorates."""
        if target is None:
            return lambda decorated: self.register(name, decorated, description=description)
        self._entries[name] = target
        if description:
            self._descriptions[name] = description
        return target

    def _ensure_populated(self) -> None:
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate()

    def __getitem__(self, name: str) -> Any:
        self._ensure_populated()
        if name not in self._entries:
            raise UnknownNameError(self.unknown(name))
        target = self._entries[name]
        if isinstance(target, str):  # lazy "module:attribute"
            module, _, attribute = target.partition(":")
            target = self._entries[name] = getattr(importlib.import_module(module), attribute)
        return target

    def __setitem__(self, name: str, target: Any) -> None:
        self.register(name, target)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        self._descriptions.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        self._ensure_populated()
        return iter(self._entries)

    def __len__(self) -> int:
        self._ensure_populated()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        self._ensure_populated()
        return name in self._entries

    def unknown(self, name: object) -> str:
        """The message for a name no entry has, listing those that exist."""
        return f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self))}"

    def describe(self, name: str) -> str:
        """The one-line description given at registration ('' when none was)."""
        return self._descriptions.get(name, "")

    def build(self, name: str, *args: Any, **options: Any) -> Any:
        """Call the factory registered as `name`."""
        return self[name](*args, **options)
