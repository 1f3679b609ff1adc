"""Typed registries for mpk's extension points.

One registry per extension point (exporters, quantizers, pruners, transports,
report writers, runners). Entries may be lazy ``"module:attr"`` strings so
``mpk --help`` and ``mpk backends`` import no torch. A miss never returns
None: it raises :class:`~mpk.errors.UnknownNameError` naming the nearest
known entry::

    >>> r = Registry("backend", object)
    >>> r.register("onnx", "builtins:object")
    >>> r.get("onxx")
    Traceback (most recent call last):
    ...
    mpk.errors.UnknownNameError: unknown backend 'onxx'; did you mean 'onnx'? known: onnx
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from mpk.errors import UnknownNameError

T = TypeVar("T")


def suggest(name: str, known: list[str] | tuple[str, ...], what: str) -> str:
    """The one-line message for an unknown ``name``, with the nearest match."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    msg = f"unknown {what} {name!r}"
    if close:
        msg += f"; did you mean {close[0]!r}?"
    return msg + f" known: {', '.join(sorted(known)) or '(none)'}"


class Registry(Generic[T]):
    """Name -> class (or object) registry with base-class checks and lazy entries."""

    def __init__(self, what: str, base: type) -> None:
        self.what = what
        self.base = base
        self._entries: dict[str, object] = {}

    def register(self, name: str, target: object | str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        if not isinstance(target, str):
            self._check(name, target)
        self._entries[name] = target

    def decorator(self, name: str):
        def wrap(target: T) -> T:
            self.register(name, target)
            return target

        return wrap

    def _check(self, name: str, target: object) -> None:
        ok = (isinstance(target, type) and issubclass(target, self.base)) or isinstance(target, self.base)
        if not ok:
            raise TypeError(f"{self.what} {name!r}: {target!r} is not a {self.base.__name__}")

    def get(self, name: str) -> T:
        try:
            target = self._entries[name]
        except KeyError:
            raise UnknownNameError(suggest(name, self.names(), self.what)) from None
        if isinstance(target, str):
            mod, _, attr = target.partition(":")
            target = getattr(importlib.import_module(mod), attr)
            self._check(name, target)
            self._entries[name] = target
        return target  # type: ignore[return-value]

    def check_name(self, name: str) -> str:
        """Validate ``name`` without importing the entry. Returns it unchanged."""
        if name not in self._entries:
            raise UnknownNameError(suggest(name, self.names(), self.what))
        return name

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
