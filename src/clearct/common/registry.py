"""A name → plug-in registry (MIL models, dataset importers): one decorator registers, a misspelt or doubled name
is an error, and the names list what is there (the tests run over them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from clearct.common.errors import ClearctError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str):
        self.what = what  # e.g. "MIL model", for the messages
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering its object under ``name``."""

        def wrap(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._items[name] = item
            return item

        return wrap

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def get(self, name: str) -> T:
        """The registered object, or one line naming what is registered."""
        if name not in self._items:
            raise ClearctError(f"unknown {self.what} {name!r} (registered: {', '.join(self.names())})")
        return self._items[name]
